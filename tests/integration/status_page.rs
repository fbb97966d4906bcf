//! The status page (`GET /`, issue 19) in headless chromium, against the
//! real daemon watching real processes: a live task, a task whose process
//! was killed (a `dead` finding, its evidence page), a task whose id is
//! markup; the timeline chart; the strict CSP holds (nothing logged); it
//! fits a phone; the poll refreshes `main` in place and the pause button
//! stops it. Screenshots go to `target/browser-artifacts/` (CI keeps them).
//!
//! The page polls every `?refresh=2` seconds here (15 by default).

use crate::browser::{artifacts_dir, Browser};
use crate::cli::{insert_task, now_text, wait_until, Running, Sleeper, World, PATIENCE};
use crate::http_client::{get, listener_config, listening};
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIVE: &str = "live-1";
const GONE: &str = "gone-1";
const HOSTILE: &str = "<script>document.title='pwned'</script>";

/// A daemon on a free loopback port over three tasks, and its processes.
struct Fixture {
    // Fields drop in order: the daemon ends before its directory goes.
    _daemon: Running,
    _live: Sleeper,
    _hostile: Sleeper,
    addr: SocketAddr,
    /// The `dead` finding of `GONE`.
    dead: i64,
    _w: World,
}

impl Fixture {
    fn start() -> Fixture {
        let w = World::new();
        listener_config(&w, "listen = \"127.0.0.1:0\"", "");
        // Dead within a second of its process's death, not after 30 s.
        let text = std::fs::read_to_string(w.config_path()).expect("read foreman.toml");
        w.write(
            "foreman.toml",
            &text.replace("[defaults]\n", "[defaults]\nexit_grace = \"1s\"\n"),
        );
        let live = Sleeper::start();
        let hostile = Sleeper::start();
        // A droid the test kills once the daemon watches it. (One already
        // gone when the daemon starts is an `orphan` of its startup scan.)
        let mut doomed = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        {
            let db = w.executor();
            let now = now_text();
            insert_task(&db, LIVE, "builder", Some(live.pid()), &now, Some(&now));
            insert_task(
                &db,
                HOSTILE,
                "builder",
                Some(hostile.pid()),
                &now,
                Some(&now),
            );
            insert_task(
                &db,
                GONE,
                "builder",
                Some(doomed.id() as i32),
                &now,
                Some(&now),
            );
        }
        let (daemon, addr) = listening(&w, &[]);
        wait_until("a first sweep", PATIENCE, || {
            w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL")
                .unwrap_or(0)
                >= 1
        });
        doomed.kill().expect("kill the droid");
        doomed.wait().expect("reap it");
        let deadline = Instant::now() + PATIENCE;
        let dead = loop {
            if let Some((id, _, _)) = w.finding(GONE, "dead") {
                break id;
            }
            assert!(
                Instant::now() < deadline,
                "no dead finding of {GONE} after {PATIENCE:?}; findings {:?}; daemon:\n{}",
                findings(&w),
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Fixture {
            _daemon: daemon,
            _live: live,
            _hostile: hostile,
            addr,
            dead,
            _w: w,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// (task, kind) of every finding recorded so far.
fn findings(w: &World) -> Vec<(String, String)> {
    let Some(db) = w.activity() else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT task_id, kind FROM findings ORDER BY id") else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// Open `/` and wait until the page's script has run once (the pause
/// button is shown only with JS) and the dead finding is listed.
fn open_status(b: &Browser, f: &Fixture) {
    b.goto(&f.url("/?refresh=2"));
    assert!(
        b.wait_for(
            &format!(
                "document.querySelector('#findings tr[data-finding=\"{}\"]') && \
                 document.querySelector('button#pause') && \
                 document.querySelector('button#pause').checkVisibility()",
                f.dead
            ),
            PATIENCE
        ),
        "the page never showed the dead finding and the pause button: {:?}",
        b.text("body")
    );
}

/// Nothing went wrong in the browser: no CSP violation, no JS error.
fn assert_clean_logs(b: &Browser) {
    assert_eq!(b.csp_violations(), Vec::<String>::new(), "CSP violations");
    assert_eq!(b.errors(), Vec::<String>::new(), "browser errors");
}

#[test]
fn status_page_shows_tasks_findings_and_timeline_under_its_csp() {
    let _g = crate::spawning();
    let f = Fixture::start();
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };

    // The strict CSP header, as the contract gives it.
    let resp = get(f.addr, "/");
    assert_eq!(resp.status, 200, "{resp:#?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{resp:#?}"
    );
    let csp = resp.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }

    open_status(&b, &f);

    // The overall state.
    let state_class = b.attr("#state", "class").unwrap_or_default();
    assert!(
        state_class
            .split_whitespace()
            .any(|c| c.starts_with("state-")),
        "#state class {state_class:?}"
    );
    let state = b.text("#state").unwrap_or_default();
    assert!(
        ["OK", "WARNING", "CRITICAL", "UNKNOWN"]
            .iter()
            .any(|s| state.trim_start().starts_with(s)),
        "#state text {state:?}"
    );
    assert!(b.count("#daemon") == 1, "no #daemon");

    // The live task is executing, with a verdict.
    let live_row = format!("#executing tr[data-task=\"{LIVE}\"]");
    assert_eq!(b.count(&live_row), 1, "no row for {LIVE}");
    let verdict = b
        .text(&format!("{live_row} td.verdict"))
        .unwrap_or_default();
    assert!(!verdict.trim().is_empty(), "{LIVE} has no verdict");
    let running = b
        .text("#by-type tr[data-type=\"builder\"] td.running")
        .unwrap_or_default();
    assert!(
        running.trim().parse::<u64>().is_ok_and(|n| n >= 1),
        "builder running {running:?}"
    );

    // The dead task's finding, linked to its evidence.
    let row = format!("#findings tr[data-finding=\"{}\"]", f.dead);
    assert_eq!(
        b.text(&format!("{row} td.kind")).as_deref().map(str::trim),
        Some("dead")
    );
    assert_eq!(
        b.text(&format!("{row} td.task")).as_deref().map(str::trim),
        Some(GONE)
    );
    let link = format!("{row} a[href=\"/findings/{}\"]", f.dead);
    assert!(b.count(&link) >= 1, "no link to the finding's evidence");

    // The timeline: one chart, a dead bar with its tooltip.
    assert_eq!(b.count("#timeline svg.timeline"), 1);
    assert!(
        b.count("#timeline svg.timeline rect.bar.k-dead") >= 1,
        "no dead bar in the timeline"
    );
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('#timeline rect.bar')]\
             .every(r => r.querySelector('title'));",
            &[]
        ),
        json!(true),
        "a bar without its <title>"
    );

    // The hostile task id is text, not markup.
    assert_ne!(b.execute("return document.title;", &[]), json!("pwned"));
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('script')]\
             .some(s => s.textContent.includes('pwned'));",
            &[]
        ),
        json!(false),
        "the hostile id became a script element"
    );
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('#executing tr[data-task]')]\
             .some(tr => tr.dataset.task === arguments[0] \
                         && tr.textContent.includes(arguments[0]));",
            &[json!(HOSTILE)]
        ),
        json!(true),
        "the hostile id is not shown as text: {:?}",
        b.text("#executing")
    );

    b.screenshot(&artifacts_dir().join("status-page.png"));
    assert_clean_logs(&b);

    // The evidence page, by clicking the finding's link.
    b.click(&link);
    let evidence = format!("/findings/{}", f.dead);
    assert!(
        b.wait_for(
            &format!("location.pathname === '{evidence}' && document.querySelector('pre#explain')"),
            PATIENCE
        ),
        "the link did not open {evidence}: at {}",
        b.url()
    );
    assert_eq!(
        b.attr("main#finding", "data-finding"),
        Some(f.dead.to_string())
    );
    assert!(b.text("h1").is_some_and(|h| !h.trim().is_empty()));
    for section in ["#row", "#probe", "#policy", "#replay", "#actions"] {
        assert_eq!(b.count(section), 1, "the evidence page has no {section}");
    }
    let explain = b.text("pre#explain").unwrap_or_default();
    assert!(
        explain.contains(GONE),
        "pre#explain does not name {GONE}:\n{explain}"
    );
    b.screenshot(&artifacts_dir().join("status-finding.png"));
    assert_clean_logs(&b);

    // A finding that does not exist is a 404 page.
    assert_eq!(get(f.addr, "/findings/999999").status, 404);
}

#[test]
fn status_page_fits_a_phone() {
    let _g = crate::spawning();
    let f = Fixture::start();
    let Some(b) = Browser::start(390, 844) else {
        return;
    };
    open_status(&b, &f);
    assert_eq!(b.viewport(), (390, 844));
    let (scroll, inner) = {
        let v = b.execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            &[],
        );
        (
            v[0].as_u64().unwrap_or(u64::MAX),
            v[1].as_u64().unwrap_or(0),
        )
    };
    b.screenshot(&artifacts_dir().join("status-page-phone.png"));
    assert!(
        scroll <= inner + 1,
        "the page scrolls sideways on a phone: scrollWidth {scroll} > innerWidth {inner}"
    );
    assert_clean_logs(&b);
}

/// `body[data-polls]` as a number.
fn polls(b: &Browser) -> u64 {
    b.attr("body", "data-polls")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn status_page_polls_in_place_and_pauses() {
    let _g = crate::spawning();
    let f = Fixture::start();
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    open_status(&b, &f);

    // The poll replaces main's contents with a newer rendering, without a
    // reload (the marker on window survives).
    b.execute("window.__notReloaded = true;", &[]);
    let generated = b
        .attr("main#status", "data-generated")
        .expect("main#status has data-generated");
    let before = polls(&b);
    let t0 = Instant::now();
    assert!(
        b.wait_for(
            &format!(
                "+document.body.dataset.polls > {before} && \
                 document.querySelector('main#status').dataset.generated !== '{generated}'"
            ),
            PATIENCE
        ),
        "no poll refreshed main#status (data-polls {before}, data-generated {generated})"
    );
    let second = polls(&b);
    assert!(
        b.wait_for(
            &format!("+document.body.dataset.polls > {second}"),
            PATIENCE
        ),
        "the poll stopped after one"
    );
    // One poll period, measured (at least 1 s, whatever the page's is).
    let period = (t0.elapsed() / 2).max(Duration::from_secs(1));
    assert_eq!(
        b.execute("return window.__notReloaded === true;", &[]),
        json!(true),
        "the page reloaded instead of polling"
    );
    assert_eq!(
        b.attr("main#status", "id").as_deref(),
        Some("status"),
        "main#status is gone after a poll"
    );

    // Pause: the button says so, and no poll lands for three periods.
    assert_eq!(
        b.attr("button#pause", "aria-pressed").as_deref(),
        Some("false")
    );
    b.click("button#pause");
    assert_eq!(
        b.attr("button#pause", "aria-pressed").as_deref(),
        Some("true")
    );
    assert_eq!(
        b.text("button#pause")
            .map(|t| t.trim().to_string())
            .as_deref(),
        Some("Resume")
    );
    // A poll already in flight when the button was pressed may land.
    let paused = polls(&b) + 1;
    assert!(
        !b.wait_for(
            &format!("+document.body.dataset.polls > {paused}"),
            period * 3
        ),
        "data-polls kept increasing while paused ({paused} -> {})",
        polls(&b)
    );

    // Resume: polling starts again.
    b.click("button#pause");
    assert_eq!(
        b.attr("button#pause", "aria-pressed").as_deref(),
        Some("false")
    );
    assert_eq!(
        b.text("button#pause")
            .map(|t| t.trim().to_string())
            .as_deref(),
        Some("Pause")
    );
    let resumed = polls(&b);
    assert!(
        b.wait_for(
            &format!("+document.body.dataset.polls > {resumed}"),
            PATIENCE
        ),
        "no poll after resuming"
    );
    assert_clean_logs(&b);
}

/// Without JavaScript the page is whole: the same tasks and findings, a
/// `<meta refresh>` to follow the state, and no pause button (it needs
/// the script). The DOM is read through the DevTools protocol, since the
/// page's own scripts are off.
#[test]
fn status_page_works_without_javascript() {
    let _g = crate::spawning();
    let f = Fixture::start();
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    b.cdp(
        "Emulation.setScriptExecutionDisabled",
        json!({"value": true}),
    );
    b.goto(&f.url("/?refresh=9"));
    let root = b.cdp("DOM.getDocument", json!({"depth": 0}));
    let node = root["root"]["nodeId"].clone();
    let dom = b.cdp("DOM.getOuterHTML", json!({"nodeId": node}))["outerHTML"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(dom.contains(&format!("data-task=\"{LIVE}\"")), "{dom}");
    assert!(
        dom.contains(&format!("data-finding=\"{}\"", f.dead)),
        "{dom}"
    );
    assert!(dom.contains("class=\"timeline\""), "{dom}");
    assert!(
        dom.contains("http-equiv=\"refresh\" content=\"9\""),
        "{dom}"
    );
    // The script did not run: the button stays hidden, the line as served.
    assert!(
        dom.contains("<span id=\"polling\">Reloading every 9 s</span>"),
        "{dom}"
    );
    assert!(dom.contains("hidden=\"\">Pause</button>"), "{dom}");
    assert!(dom.contains("data-polls=\"0\""), "{dom}");
    b.screenshot(&artifacts_dir().join("status-page-nojs.png"));
}

/// Light and dark follow the system's preference; the page offers nothing
/// that changes state: no form and no input, one button (pause) that only
/// stops the poll, and every link stays on this listener.
#[test]
fn status_page_follows_the_colour_scheme_and_changes_nothing() {
    let _g = crate::spawning();
    let f = Fixture::start();
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    let background = |scheme: &str| {
        b.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
        b.goto(&f.url("/"));
        b.execute(
            "return getComputedStyle(document.body).backgroundColor;",
            &[],
        )
    };
    assert_eq!(background("light"), json!("rgb(251, 251, 250)"));
    assert_eq!(background("dark"), json!("rgb(13, 17, 23)"));
    b.screenshot(&artifacts_dir().join("status-page-dark.png"));
    assert_eq!(
        b.execute(
            "return document.forms.length \
             + document.querySelectorAll('input, select, textarea, [contenteditable]').length;",
            &[]
        ),
        json!(0)
    );
    assert_eq!(b.count("button"), 1);
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('a[href]')]\
             .every(a => new URL(a.href).origin === location.origin);",
            &[]
        ),
        json!(true)
    );
    assert_clean_logs(&b);
}

/// Behind the token (`protect_reads`), a browser signed in by HTTP Basic
/// (here through the URL's credentials, as a prompt would) sees the page,
/// and its polls carry the same sign-in: they keep refreshing, none is
/// refused.
#[test]
fn status_page_behind_the_token_keeps_polling_once_signed_in() {
    let _g = crate::spawning();
    let w = World::new();
    listener_config(&w, "listen = \"127.0.0.1:0\"\nprotect_reads = true", "");
    w.executor();
    let live = Sleeper::start();
    let now = now_text();
    insert_task(
        &w.executor(),
        LIVE,
        "builder",
        Some(live.pid()),
        &now,
        Some(&now),
    );
    let (_daemon, addr) = listening(&w, &[("FOREMAN_HTTP_TOKEN", "s3cret-token")]);
    assert_eq!(get(addr, "/").status, 401);
    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    b.goto(&format!("http://operator:s3cret-token@{addr}/?refresh=2"));
    assert!(
        b.wait_for(
            &format!("document.querySelector('#executing tr[data-task=\"{LIVE}\"]')"),
            PATIENCE
        ),
        "the signed-in page does not list {LIVE}: {:?}",
        b.text("body")
    );
    assert!(
        b.wait_for("+document.body.dataset.polls >= 2", PATIENCE),
        "the polls stopped: {:?} (offline: {:?})",
        b.text("#polling"),
        b.attr("body", "class")
    );
    assert_eq!(b.attr("body", "class"), None, "a poll was refused");
}
