//! Attacks on the status page (`GET /`, `/findings/{id}`, issue 19), the
//! way real hosts and hostile users would make them, against the real
//! daemon on a loopback port: markup and bytes in every string the
//! executor controls (checked in the raw HTML and in headless Chromium),
//! damaged rows in the activity log, a huge fleet, a client that never
//! reads, odd paths and Authorization headers, an unreachable executor and
//! a writer holding the log.

use crate::browser::Browser;
use crate::cli::{now_text, reaped_pid, wait_for, wait_until, Sleeper, World, PATIENCE};
use crate::http_client::{get, listening, request, tiny_reader, Resp};
use crate::page_http::{first_sweep, world};
use rusqlite::{params, Connection};
use serde_json::json;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The interval of a `listener_config` world, replaced.
fn set_interval(w: &World, interval: &str) {
    let text = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace(
            "interval = \"500ms\"",
            &format!("interval = \"{interval}\""),
        );
    w.write("foreman.toml", &text);
}

/// A RUNNING task with every executor-supplied field given.
fn task(db: &Connection, id: &str, droid_type: &str, plan: &str, pid: Option<i32>) {
    let now = now_text();
    db.execute(
        "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at, last_progress_at)
         VALUES (?1, ?2, ?3, 'RUNNING', ?4, ?5, ?5)",
        params![id, plan, droid_type, pid, now],
    )
    .expect("insert task");
}

/// The activity log, writable beside the daemon (as another tool would).
fn log_rw(w: &World) -> Connection {
    let c = Connection::open(w.activity_path()).expect("open the log");
    c.busy_timeout(Duration::from_secs(10)).expect("busy");
    c
}

/// A finding written straight into the log, as a damaged or foreign row
/// would be: `evidence`, the type and the times as given.
fn raw_finding(
    log: &Connection,
    task: &str,
    droid_type: Option<&str>,
    evidence: &str,
    first_seen: &str,
) -> i64 {
    log.execute(
        "INSERT INTO findings (task_id, attempt, kind, droid_type, plan_id, pid, host, evidence,
             action, outcome, outcome_detail, first_sweep_id, last_sweep_id, first_seen_at,
             last_seen_at, acted_at, times_seen)
         VALUES (?1, 1, 'dead', ?2, NULL, NULL, NULL, ?3, 'none', 'already_finished', NULL,
             (SELECT MIN(id) FROM sweeps), (SELECT MIN(id) FROM sweeps), ?4, ?4, NULL, 1)",
        params![task, droid_type, evidence, first_seen],
    )
    .expect("insert finding");
    log.last_insert_rowid()
}

/// What markup from the input would leave in the raw HTML, were it not
/// escaped: only the page's own script, one chart, no image, style,
/// comment or event handler.
fn assert_inert_html(what: &str, body: &str) {
    let short = || body.chars().take(4000).collect::<String>();
    assert_eq!(
        body.matches("<script").count(),
        1,
        "{what}: only the page's own script: {}",
        short()
    );
    for bad in [
        "<img",
        "<style",
        "<iframe",
        "<!--",
        "onload=\"",
        "onerror=\"",
        "onload='",
        "<svg onload",
    ] {
        assert!(
            !body.contains(bad),
            "{what}: {bad:?} in the page: {}",
            short()
        );
    }
    assert!(
        body.matches("<svg").count() <= 1
            && body.matches("<svg").count() == body.matches("</svg>").count(),
        "{what}: the chart's SVG is one element: {} <svg, {} </svg>",
        body.matches("<svg").count(),
        body.matches("</svg>").count()
    );
}

/// In Chromium: the title is the page's, no element the input could have
/// made, nothing the CSP refused, no script error.
fn assert_inert_dom(b: &Browser, what: &str) {
    let title = b.execute("return document.title;", &[]);
    assert!(
        title.as_str().is_some_and(|t| t.contains("Foreman on")),
        "{what}: document.title {title}"
    );
    assert_eq!(
        b.execute("return document.querySelectorAll('script').length;", &[]),
        json!(1),
        "{what}: a script element from the input"
    );
    assert_eq!(
        b.execute(
            "return document.querySelectorAll('img, style, iframe, object, embed, base, [onload], [onerror], [onclick], [style]').length;",
            &[]
        ),
        json!(0),
        "{what}: an element or attribute from the input"
    );
    assert!(
        b.execute("return document.querySelectorAll('svg').length;", &[])
            .as_u64()
            .is_some_and(|n| n <= 1),
        "{what}: more than the one chart"
    );
    assert_eq!(b.csp_violations(), Vec::<String>::new(), "{what}: CSP");
    assert_eq!(b.errors(), Vec::<String>::new(), "{what}: errors");
}

const PWN: &str = "document.title='pwned'";

/// Task ids, types and plans full of markup, bytes and controls: the page
/// and every evidence page answer 200, and what they show is text.
#[test]
fn page_attacks_hostile_executor_strings_are_inert_in_the_html_and_in_chromium() {
    let _g = crate::spawning();
    let w = world("");
    let ids = [
        format!("</title><script>{PWN}</script>"),
        format!("</pre><img src=x onerror=\"{PWN}\">"),
        "]]><!--<style>body{display:none}</style>-->".to_string(),
        format!("</svg><svg onload=\"{PWN}\">"),
        "nul\0esc\u{1b}[31mred\nnew\rline\u{202e}evil".to_string(),
    ];
    let chart_type = format!("x\" onload=\"{PWN}\" y=\"</svg><script>{PWN}</script>");
    let long_id = "L".repeat(100_000);
    let sleepers: Vec<Sleeper> = (0..ids.len() + 1).map(|_| Sleeper::start()).collect();
    {
        let db = w.executor();
        for (i, id) in ids.iter().enumerate() {
            // Alive: in the executing table, with a hostile type and plan.
            task(
                &db,
                id,
                &ids[(i + 1) % ids.len()],
                id,
                Some(sleepers[i].pid()),
            );
            // Dead at the start: a finding for the chart and the table.
            task(
                &db,
                &format!("{id}-dead"),
                &chart_type,
                id,
                Some(reaped_pid()),
            );
        }
        task(
            &db,
            &long_id,
            "long",
            "long",
            Some(sleepers[ids.len()].pid()),
        );
        // An id that is not UTF-8: Foreman shows its bytes.
        db.execute(
            "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at)
             VALUES (CAST(x'3c2f7469746c653eff3c7363726970743e' AS TEXT), 'p', 'bytes', 'RUNNING', ?1, ?2)",
            params![reaped_pid(), now_text()],
        )
        .expect("insert a non-UTF-8 id");
    }
    let (d, addr) = listening(&w, &[]);
    first_sweep(&w);
    wait_until("a finding of every dead task", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM findings").unwrap_or(0) > ids.len() as i64
    });

    let r = get(addr, "/");
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(3000)]);
    eprintln!("page bytes with a 100 kB task id: {}", r.body.len());
    assert_inert_html("/", &r.body);
    assert!(
        r.body.len() < 1 << 20,
        "the page is {} bytes for one 100 kB id",
        r.body.len()
    );
    let finding_ids: Vec<i64> = {
        let log = w.activity().expect("log");
        let mut stmt = log.prepare("SELECT id FROM findings").expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("ids")
    };
    for id in &finding_ids {
        let r = get(addr, &format!("/findings/{id}"));
        assert_eq!(r.status, 200, "/findings/{id}: {}", r.body);
        assert_inert_html(&format!("/findings/{id}"), &r.body);
    }

    let Some(b) = Browser::start(1280, 900) else {
        return;
    };
    b.goto(&format!("http://{addr}/"));
    assert!(
        b.wait_for("document.querySelector('main#status')", PATIENCE),
        "no main#status; daemon:\n{}",
        d.stderr()
    );
    assert_inert_dom(&b, "/");
    // Each hostile id is shown as the text it is.
    for id in &ids[..4] {
        assert_eq!(
            b.execute(
                "return [...document.querySelectorAll('#executing tr[data-task]')]\
                 .some(tr => tr.dataset.task === arguments[0]);",
                &[json!(id)]
            ),
            json!(true),
            "{id:?} is not a row's data-task"
        );
    }
    // The chart's hostile type is a label, not attributes.
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('svg *')].some(e => \
             [...e.attributes].some(a => a.name.startsWith('on') || a.name === 'y\"'));",
            &[]
        ),
        json!(false),
        "the chart's droid type became an attribute"
    );
    for id in &finding_ids {
        b.goto(&format!("http://{addr}/findings/{id}"));
        assert!(
            b.wait_for("document.querySelector('pre#explain')", PATIENCE),
            "/findings/{id} has no pre#explain"
        );
        assert_inert_dom(&b, &format!("/findings/{id}"));
    }
    drop(sleepers);
}

/// Rows a Foreman would not write, but an older or newer one, a restore
/// or a hand might: no type, times that do not parse or are out of range,
/// an unknown kind. Each costs at most its own cell, never the page.
#[test]
fn page_attacks_odd_finding_rows_are_listed_not_fatal() {
    let _g = crate::spawning();
    let w = world("");
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let log = log_rw(&w);
    let ev = r#"{"reason":"odd"}"#;
    let ids = [
        raw_finding(&log, "no-type", None, ev, &now_text()),
        raw_finding(&log, "garbage-time", Some("t"), ev, "garbage"),
        raw_finding(&log, "year-58000", Some("t"), ev, "58000-01-01T00:00:00Z"),
        raw_finding(&log, "year-1", Some("t"), ev, "0001-01-01T00:00:00Z"),
        raw_finding(
            &log,
            "far-future",
            Some("t"),
            ev,
            "9999-12-31T23:59:59.999Z",
        ),
        raw_finding(&log, "not-json-object", Some("t"), "[1,2,3]", &now_text()),
        raw_finding(&log, "json-null", Some("t"), "null", &now_text()),
    ];
    log.execute(
        "UPDATE findings SET kind = 'no_such_kind\"<b>', attempt = 9223372036854775807, times_seen = -1
         WHERE task_id = 'far-future'",
        [],
    )
    .expect("update");
    let r = get(addr, "/");
    assert_eq!(r.status, 200, "{}", r.body);
    for id in ids {
        assert!(
            r.body.contains(&format!("data-finding=\"{id}\"")),
            "finding {id} not listed"
        );
        let f = get(addr, &format!("/findings/{id}"));
        assert_eq!(f.status, 200, "/findings/{id}: {}", f.body);
        assert!(f.header("content-security-policy").is_some());
    }
    assert_eq!(get(addr, "/twin").status, 200);
}

/// One finding whose evidence is not JSON (a truncated write restored from
/// a backup, a foreign tool): /twin, which never read findings before the
/// page, must still answer, and the page should show the rest.
#[test]
fn page_attacks_one_damaged_finding_does_not_take_down_twin_or_the_page() {
    let _g = crate::spawning();
    let w = world("");
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let log = log_rw(&w);
    let good = raw_finding(&log, "good", Some("t"), r#"{"reason":"fine"}"#, &now_text());
    let bad = raw_finding(
        &log,
        "damaged",
        Some("t"),
        "{\"reason\": \"trunc",
        &now_text(),
    );
    drop(log);

    // A read made before the rows were written may be served for up to a
    // second (the shared status read): wait for one that saw them.
    let (twin, page) = wait_for("a status read that saw the rows", PATIENCE, || {
        let page = get(addr, "/");
        let saw = page.status != 200 || page.body.contains(&format!("data-finding=\"{good}\""));
        saw.then(|| (get(addr, "/twin"), page))
    });
    let evidence = get(addr, &format!("/findings/{bad}"));
    eprintln!(
        "damaged evidence: /twin {} {:?}; / {} {:?}; /findings/{bad} {} {:?}",
        twin.status,
        &twin.body[..twin.body.len().min(300)],
        page.status,
        &page.body[..page.body.len().min(600)],
        evidence.status,
        &evidence.body[..evidence.body.len().min(600)]
    );
    assert_ne!(evidence.status, 500, "{}", evidence.body);
    assert!(evidence.header("content-security-policy").is_some());
    assert_eq!(
        twin.status, 200,
        "/twin fails for one damaged finding: {}",
        twin.body
    );
    assert_eq!(
        page.status, 200,
        "the page fails for one damaged finding: {}",
        page.body
    );
    assert!(page.body.contains(&format!("data-finding=\"{good}\"")));
}

fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 5,000 RUNNING tasks of 5,000 droid types, 200,000 findings of 20,000
/// types in the last day: the page stays bounded, like the chart, whatever
/// a hostile or runaway executor invents. Sizes, times and memory printed.
#[test]
fn page_attacks_a_huge_fleet_keeps_the_page_bounded() {
    let _g = crate::spawning();
    let w = world("request_timeout = \"30s\"");
    set_interval(&w, "3s");
    {
        let mut db = w.executor();
        let tx = db.transaction().expect("tx");
        let now = now_text();
        for i in 0..5000 {
            tx.execute(
                "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at, last_progress_at)
                 VALUES (?1, ?2, ?3, 'RUNNING', NULL, ?4, ?4)",
                params![
                    format!("task-{i:05}"),
                    format!("plan-{:04}", i % 3000),
                    format!("type-{i:05}-{}", "t".repeat(200)),
                    now
                ],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let (d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let pid = d.pid();
    let log = log_rw(&w);
    let t = Instant::now();
    log.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
         INSERT INTO findings (task_id, attempt, kind, droid_type, evidence, action, outcome,
             first_sweep_id, last_sweep_id, first_seen_at, last_seen_at, times_seen)
         SELECT 'old-' || i, 1, 'dead', 'dt-' || (i % 20000), '{\"reason\":\"x\"}', 'none',
             'already_finished', (SELECT MIN(id) FROM sweeps), (SELECT MIN(id) FROM sweeps),
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (i % 86000) || ' seconds'),
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (i % 86000) || ' seconds'), 1
         FROM n",
        [],
    )
    .expect("200,000 findings");
    drop(log);
    eprintln!("inserted 200,000 findings in {:?}", t.elapsed());
    let before = vm_hwm_kib(pid);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = get(addr, "/");
        assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(2000)]);
        sizes.push((r.body.len(), t.elapsed()));
        assert_eq!(r.body.matches("<tr data-task=").count(), 200);
    }
    let t = Instant::now();
    let twin = get(addr, "/twin");
    let twin_took = t.elapsed();
    let after = vm_hwm_kib(pid);
    let by_type = get(addr, "/").body.matches("<tr data-type=").count();
    eprintln!(
        "huge fleet: / {sizes:?}; /twin {} bytes in {twin_took:?}; by-type rows {by_type}; VmHWM {before} kB -> {after} kB",
        twin.body.len()
    );
    assert_eq!(
        request(addr, "GET", "/healthz", &[], b"").status / 100,
        2,
        "healthz"
    );
    let biggest = sizes.iter().map(|(n, _)| *n).max().unwrap_or(0);
    assert_eq!(by_type, foreman::status::page::MAX_TYPE_ROWS - 1);
    assert!(
        biggest < 600 << 10,
        "the page is {biggest} bytes for 5,000 tasks ({by_type} rows of droid types): the by-type table is not bounded as the executing table and the chart are"
    );
}

/// A client that asks for the page over and over and never reads holds
/// its connection slot only until `request_timeout`: /healthz and the
/// page still answer meanwhile.
#[test]
fn page_attacks_a_reader_that_never_reads_frees_its_slot() {
    let _g = crate::spawning();
    let w = world("request_timeout = \"2s\"\nmax_connections = 2");
    let sleepers: Vec<Sleeper> = (0..40).map(|_| Sleeper::start()).collect();
    {
        let db = w.executor();
        for (i, s) in sleepers.iter().enumerate() {
            task(
                &db,
                &format!("{i:03}-{}", "x".repeat(500)),
                "builder",
                "p",
                Some(s.pid()),
            );
        }
    }
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let one = get(addr, "/");
    assert_eq!(one.status, 200);
    let n = (8 << 20) / one.body.len().max(1) + 1;
    let ask = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(n);
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = tiny_reader(addr);
        s.set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let _ = s.write_all(ask.as_bytes());
        hogs.push(s);
    }
    for path in ["/healthz", "/"] {
        let t = Instant::now();
        let r = request(addr, "GET", path, &[], b"");
        let took = t.elapsed();
        assert!(matches!(r.status, 200 | 503), "{path}: {r:#?}");
        assert!(
            took < Duration::from_secs(5),
            "{path} answered after {took:?}, not within request_timeout (2s) and a margin"
        );
    }
    drop(hogs);
    drop(sleepers);
}

fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Odd paths, methods and queries: refusals are clear, nothing outside the
/// binary is served, every HTML answer carries the policy, no cookie.
#[test]
fn page_attacks_paths_methods_and_headers() {
    let _g = crate::spawning();
    let w = world("");
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let long = format!("/findings/{}", "9".repeat(6000));
    let cases: &[(&str, &[u16])] = &[
        ("/findings/1%2F..", &[404]),
        ("/findings/%00", &[404]),
        ("/findings/%2e%2e", &[404]),
        ("/findings/", &[404]),
        ("/findings", &[404]),
        ("/findings/1/2", &[404]),
        ("/findings/0x10", &[404]),
        ("/findings/1e3", &[404]),
        ("/findings/%20", &[404]),
        (&long, &[404, 414, 431]),
        ("//", &[404]),
        ("/assets/../foreman.db", &[404]),
        ("/assets/%2e%2e/foreman.db", &[404]),
        ("/assets/..%2fforeman.db", &[404]),
        ("/assets/", &[404]),
        ("/foreman.db", &[404]),
        ("/?refresh=-5", &[200]),
        ("/?refresh=99999999999999999999", &[200]),
        ("/?refresh=0", &[200]),
        ("/?refresh=%00", &[200]),
        ("/?refresh=1&refresh=4000", &[200]),
    ];
    let refresh = regex::Regex::new(r#"data-refresh="(\d+)""#).expect("re");
    for (path, want) in cases {
        let r = get(addr, path);
        assert!(
            want.contains(&r.status),
            "{path}: {} not in {want:?}: {}",
            r.status,
            &r.body[..r.body.len().min(500)]
        );
        assert!(!r.body.contains("SQLite format"), "{path} served the log");
        assert!(r.header("set-cookie").is_none(), "{path} sets a cookie");
        if r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
        {
            assert!(
                r.header("content-security-policy").is_some(),
                "{path}: an HTML answer without the policy"
            );
        }
        if r.status == 200 {
            let every: u32 = refresh
                .captures(&r.body)
                .and_then(|c| c[1].parse().ok())
                .unwrap_or(0);
            assert!((2..=3600).contains(&every), "{path}: refresh {every}");
        }
    }
    // HEAD: the headers, no body.
    let head = raw(
        addr,
        format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    assert!(!head.contains("<!DOCTYPE"), "HEAD has a body: {head}");
    // Nothing changes state from the page's paths.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/findings/1", "/assets/status.js"] {
            let r = request(addr, method, path, &[], b"x");
            assert_eq!(r.status, 405, "{method} {path}: {r:#?}");
        }
    }
    // The page's files: typed, not sniffed, no cookie.
    for path in [
        "/assets/status.css",
        "/assets/status.js",
        "/assets/favicon.svg",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(r.header("set-cookie").is_none());
    }
    // The favicon is an SVG served same-origin: it must carry no script.
    let fav = get(addr, "/assets/favicon.svg").body;
    assert!(!fav.contains("<script") && !fav.contains(" on"), "{fav}");
}

fn basic_bytes(user_pass: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// Authorization as browsers, scrapers and attackers send it.
#[test]
fn page_attacks_authorization_edge_cases() {
    let _g = crate::spawning();
    let token = "s3cret-token";
    let w = world("protect_reads = true");
    let (d, addr) = listening(&w, &[("FOREMAN_HTTP_TOKEN", token)]);
    first_sweep(&w);
    let with = |auth: &str| request(addr, "GET", "/", &[("Authorization", auth)], b"");
    // Refused, with a page and a challenge, never a 400 or 500.
    for auth in [
        "Basic".to_string(),
        "Basic ".to_string(),
        "Basic    ".to_string(),
        basic_bytes(b"\xff\xfe:s3cret-token"),
        basic_bytes(b"user:"),
        basic_bytes(b":"),
        basic_bytes(b"no-colon-s3cret-token"),
        basic_bytes(b"user:s3cret-token\0"),
        basic_bytes(b"user:s3cret-token\n"),
        format!("Bearer  {token}"),
        format!("Digest {token}"),
        format!("Basic {}", "A".repeat(60_000)),
    ] {
        let r = with(&auth);
        assert!(
            matches!(r.status, 401 | 431),
            "{:?}: {}",
            &auth[..auth.len().min(60)],
            r.status
        );
        if r.status == 401 {
            assert!(r.header("www-authenticate").is_some());
            assert!(r.header("content-security-policy").is_some());
            assert!(!r.body.contains("<main id=\"status\""));
        }
    }
    // Raw bytes that are not a header value at all.
    let mut bytes =
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Basic ")
            .into_bytes();
    bytes.extend_from_slice(&[0xc3, 0x28, 0x80]);
    bytes.extend_from_slice(b"\r\n\r\n");
    assert!(matches!(status_of(&raw(addr, &bytes)), 400 | 401));
    // Accepted: the scheme is case-insensitive (RFC 9110 §11.1), for
    // Basic as for Bearer.
    for auth in [
        basic_bytes(format!("u:{token}").as_bytes()),
        basic_bytes(format!(":{token}").as_bytes()),
        format!(
            "basic {}",
            &basic_bytes(format!("u:{token}").as_bytes())[6..]
        ),
        format!(
            "BASIC {}",
            &basic_bytes(format!("u:{token}").as_bytes())[6..]
        ),
        format!("Bearer {token}"),
    ] {
        assert_eq!(with(&auth).status, 200, "{auth:?}");
    }
    assert!(d.stderr().len() < 1 << 20);
    let lower = with(&format!("bearer {token}"));
    assert_eq!(
        lower.status, 200,
        "`bearer TOKEN` is refused while `basic ...` is taken: the scheme is case-insensitive"
    );
}

/// `protect_reads = false` with a token: the page is open, as /twin is.
#[test]
fn page_attacks_open_reads_with_a_token_open_the_page() {
    let _g = crate::spawning();
    let w = world("protect_reads = false");
    let (_d, addr) = listening(&w, &[("FOREMAN_HTTP_TOKEN", "s3cret-token")]);
    first_sweep(&w);
    assert_eq!(get(addr, "/twin").status, 200);
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(get(addr, "/findings/424242").status, 404);
    // Writes still need it.
    let r = request(
        addr,
        "POST",
        "/events",
        &[("Content-Type", "application/json")],
        b"[]",
    );
    assert_eq!(r.status, 401, "{r:#?}");
}

/// The executor's database gone: the page says UNKNOWN or CRITICAL and
/// why, with a 200; /healthz fails and says the same. A writer holding
/// the activity log's write lock longer than request_timeout blocks
/// neither.
#[test]
fn page_attacks_an_unreachable_executor_and_a_held_log_are_shown_not_fatal() {
    let _g = crate::spawning();
    let w = world("request_timeout = \"3s\"");
    let (d, addr) = listening(&w, &[]);
    first_sweep(&w);
    std::fs::rename(w.executor_path(), w.path("executor.db.moved")).expect("move");
    let r: Resp = wait_for("the page to show the executor's loss", PATIENCE, || {
        let r = get(addr, "/");
        (r.status == 200 && r.body.contains("executor.db")).then_some(r)
    });
    let state = regex::Regex::new(r#"<span class="word">(\w+)</span>"#)
        .expect("re")
        .captures(&r.body)
        .map(|c| c[1].to_string())
        .unwrap_or_default();
    assert!(
        matches!(state.as_str(), "UNKNOWN" | "CRITICAL"),
        "state {state:?} with no executor"
    );
    let h = wait_for("healthz to fail", PATIENCE, || {
        let h = get(addr, "/healthz");
        (h.status == 503).then_some(h)
    });
    assert!(h.body.contains("snapshot_error"), "{}", h.body);

    // Another process holds the log's write lock for 5 s.
    let holder = log_rw(&w);
    holder
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO findings (task_id, attempt, kind, evidence, action, outcome, first_sweep_id, last_sweep_id, first_seen_at, last_seen_at) VALUES ('held', 1, 'dead', '{}', 'none', 'already_finished', 1, 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');")
        .expect("hold the write lock");
    let t = Instant::now();
    for path in ["/", "/healthz", "/twin", "/findings/1"] {
        let r = get(addr, path);
        assert!(
            matches!(r.status, 200 | 404 | 503),
            "{path} while the log is held: {} {}",
            r.status,
            &r.body[..r.body.len().min(400)]
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path} waited for the writer: {:?}",
            t.elapsed()
        );
    }
    holder.execute_batch("ROLLBACK").expect("release");
    assert!(d.stderr().len() < 4 << 20);
    std::fs::rename(w.path("executor.db.moved"), w.executor_path()).expect("back");
}

/// Many more page loads at once than `max_read_jobs`, over a big fleet
/// (the page is rendered per request, on the listener's own threads):
/// every load answers, and /healthz stays quick meanwhile. Timings are
/// printed: one cold read against the burst shows whether the read is
/// shared.
#[test]
fn page_attacks_a_burst_of_page_loads_beyond_max_read_jobs_spares_healthz() {
    let _g = crate::spawning();
    let w = world("max_read_jobs = 1\nrequest_timeout = \"20s\"");
    {
        let mut db = w.executor();
        let tx = db.transaction().expect("tx");
        let now = now_text();
        for i in 0..2000 {
            tx.execute(
                "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at, last_progress_at)
                 VALUES (?1, 'p', ?2, 'RUNNING', NULL, ?3, ?3)",
                params![format!("task-{i:05}-{}", "i".repeat(300)), format!("type-{i:05}"), now],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    std::thread::sleep(Duration::from_millis(1100)); // let the cached read age
    let t = Instant::now();
    let cold = get(addr, "/");
    let cold_took = t.elapsed();
    assert_eq!(cold.status, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..16)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    statuses.push(get(addr, "/").status);
                }
                statuses
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let h = Instant::now();
        let r = get(addr, "/healthz");
        assert!(matches!(r.status, 200 | 503), "{r:#?}");
        worst = worst.max(h.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses: Vec<u16> = loaders
        .into_iter()
        .flat_map(|l| l.join().expect("join"))
        .collect();
    eprintln!(
        "burst: cold read+render {cold_took:?} ({} bytes); {} page loads in 5 s by 16 clients, statuses {:?}; worst /healthz {worst:?}",
        cold.body.len(),
        statuses.len(),
        statuses.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        worst < Duration::from_secs(1),
        "/healthz took {worst:?} during a burst of page loads"
    );
}

/// Ids and types of 300 characters without a space, live and dead, on a
/// 390 px phone: the page does not scroll sideways (tables scroll in
/// their own box), on `/` and on an evidence page.
#[test]
fn page_attacks_long_unbroken_ids_do_not_widen_the_page_on_a_phone() {
    let _g = crate::spawning();
    let w = world("");
    let long = |c: &str| c.repeat(300);
    let sleeper = Sleeper::start();
    {
        let db = w.executor();
        task(&db, &long("a"), &long("T"), &long("P"), Some(sleeper.pid()));
        task(&db, &long("d"), &long("D"), &long("Q"), Some(reaped_pid()));
    }
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let id = wait_for("the dead task's finding", PATIENCE, || {
        w.log_i64(&format!(
            "SELECT id FROM findings WHERE task_id = '{}'",
            long("d")
        ))
    });
    let Some(b) = Browser::start(390, 844) else {
        return;
    };
    for path in ["/".to_string(), format!("/findings/{id}")] {
        b.goto(&format!("http://{addr}{path}"));
        assert!(
            b.wait_for("document.querySelector('main')", PATIENCE),
            "{path}: no main"
        );
        let v = b.execute(
            "return [document.documentElement.scrollWidth, window.innerWidth, \
             [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 \
               && !e.closest('.scroll') && !e.closest('pre')).slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)];",
            &[],
        );
        let (scroll, inner) = (
            v[0].as_u64().unwrap_or(u64::MAX),
            v[1].as_u64().unwrap_or(0),
        );
        b.screenshot(
            &crate::browser::artifacts_dir()
                .join(format!("page-attacks-phone{}.png", path.replace('/', "-"))),
        );
        assert!(
            scroll <= inner + 1,
            "{path} scrolls sideways on a phone: scrollWidth {scroll} > innerWidth {inner}; wide: {}",
            v[2]
        );
        assert_eq!(b.csp_violations(), Vec::<String>::new());
    }
}

/// A fleet whose status read takes longer than `request_timeout`: the
/// read a timed-out request started is interrupted with it, so no read
/// ever lands in the shared cache and every later view times out too.
/// The page should show (the last read, or a page saying it is slow), not
/// a JSON 408 without the page's policy every time.
#[test]
fn page_attacks_a_read_slower_than_request_timeout_still_shows_a_page() {
    let _g = crate::spawning();
    let w = world("request_timeout = \"300ms\"");
    set_interval(&w, "1h");
    let text = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace("timeout = \"1h\"", "timeout = \"2h\"");
    w.write("foreman.toml", &text);
    {
        let mut db = w.executor();
        let tx = db.transaction().expect("tx");
        let now = now_text();
        for i in 0..5000 {
            tx.execute(
                "INSERT INTO tasks (id, plan_id, droid_type, state, pid, started_at, last_progress_at)
                 VALUES (?1, 'p', ?2, 'RUNNING', NULL, ?3, ?3)",
                params![format!("task-{i:05}"), format!("type-{}", i % 50), now],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let log = log_rw(&w);
    log.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
         INSERT INTO findings (task_id, attempt, kind, droid_type, evidence, action, outcome,
             first_sweep_id, last_sweep_id, first_seen_at, last_seen_at, times_seen)
         SELECT 'old-' || i, 1, 'dead', 'dt-' || (i % 20000), '{\"reason\":\"x\"}', 'none',
             'already_finished', (SELECT MIN(id) FROM sweeps), (SELECT MIN(id) FROM sweeps),
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (i % 86000) || ' seconds'),
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (i % 86000) || ' seconds'), 1
         FROM n",
        [],
    )
    .expect("200,000 findings");
    drop(log);
    let mut seen = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let r = get(addr, "/");
        seen.push((
            r.status,
            t.elapsed(),
            r.header("content-type").unwrap_or("").to_string(),
            r.header("content-security-policy").is_some(),
        ));
    }
    eprintln!("slow read, request_timeout 300ms: {seen:?}");
    assert!(
        seen.iter().any(|(s, ..)| *s == 200),
        "no view ever showed the page: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(_, _, ty, csp)| ty.starts_with("text/html") && *csp),
        "a page route answered without HTML or its policy: {seen:?}"
    );
}
