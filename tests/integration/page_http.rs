//! The status page over plain HTTP, through the real daemon on a loopback
//! port: its headers (a strict Content-Security-Policy, no caching), its
//! files, the token by Basic or Bearer with a challenge a browser answers,
//! evidence pages for findings that exist and not for others, and that
//! viewing it never sweeps. What a browser renders is in `status_page`.

use crate::cli::{insert_task, wait_until, World, PATIENCE};
use crate::http_client::{get, listener_config, listening, request, Resp};
use std::net::SocketAddr;

/// A listener world (`listener_config`) on a free loopback port, `[http]`
/// as given, with the executor's database.
pub(crate) fn world(http: &str) -> World {
    let w = World::new();
    listener_config(&w, &format!("listen = \"127.0.0.1:0\"\n{http}"), "");
    w.executor();
    w
}

pub(crate) fn first_sweep(w: &World) {
    wait_until("a first sweep", PATIENCE, || {
        w.log_i64("SELECT COUNT(*) FROM sweeps WHERE finished_at IS NOT NULL")
            .unwrap_or(0)
            >= 1
    });
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn get_with(addr: SocketAddr, path: &str, auth: &str) -> Resp {
    request(addr, "GET", path, &[("Authorization", auth)], b"")
}

#[test]
fn page_http_the_page_carries_a_strict_policy_and_its_files_come_from_the_binary() {
    let _g = crate::spawning();
    let w = world("");
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);

    let r = get(addr, "/");
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.body.starts_with("<!DOCTYPE html>"), "{}", r.body);
    assert!(r.body.contains("<main id=\"status\""), "{}", r.body);
    // Nothing from elsewhere: every URL the page names is its own (the
    // SVG namespace is a name, never fetched).
    let page = r.body.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for outside in ["http://", "https://", "//cdn", "@import", "url("] {
        assert!(!page.contains(outside), "{outside} in the page");
    }

    for (path, ty, needle) in [
        (
            "/assets/status.css",
            "text/css",
            "prefers-color-scheme: dark",
        ),
        ("/assets/status.js", "text/javascript", "DOMParser"),
    ] {
        let a = get(addr, path);
        assert_eq!(a.status, 200, "{path}: {a:#?}");
        assert!(
            a.header("content-type").is_some_and(|t| t.starts_with(ty)),
            "{path}: {a:#?}"
        );
        assert!(a.body.contains(needle), "{path}");
        for outside in ["http://", "https://", "url(", "@import"] {
            assert!(!a.body.contains(outside), "{outside} in {path}");
        }
    }
}

#[test]
fn page_http_the_token_is_asked_for_by_basic_and_taken_by_basic_or_bearer() {
    let _g = crate::spawning();
    let w = world("protect_reads = true");
    let (_d, addr) = listening(&w, &[("FOREMAN_HTTP_TOKEN", "s3cret-token")]);
    first_sweep(&w);

    for path in ["/", "/findings/1"] {
        let r = get(addr, path);
        assert_eq!(r.status, 401, "{path}: {r:#?}");
        let challenge = r.header("www-authenticate").expect("a challenge");
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        assert!(r.header("content-security-policy").is_some());
        assert!(!r.body.contains("<main id=\"status\""));
        for wrong in [
            basic("admin", "s3cret-toke"),
            basic("admin", "s3cret-token!"),
            basic("s3cret-token", ""),
            "Basic !!!not-base64".to_string(),
            "Bearer wrong".to_string(),
            "s3cret-token".to_string(),
        ] {
            let r = get_with(addr, path, &wrong);
            assert_eq!(r.status, 401, "{path} with {wrong:?}: {r:#?}");
        }
    }
    let r = get_with(addr, "/", &basic("anyone", "s3cret-token"));
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.body.contains("<main id=\"status\""));
    let r = get_with(addr, "/", "Bearer s3cret-token");
    assert_eq!(r.status, 200, "{r:#?}");
    // A password with a colon in it is the whole rest.
    let r = get_with(addr, "/", &basic("a:b", "s3cret-token"));
    assert_eq!(
        r.status, 401,
        "the user name ends at the first colon: {r:#?}"
    );
    // The JSON endpoints take Basic too, and still challenge for Bearer.
    let r = get_with(addr, "/twin", &basic("x", "s3cret-token"));
    assert_eq!(r.status, 200, "{r:#?}");
    let r = get(addr, "/twin");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // The page's files say nothing of the state: served without the token.
    assert_eq!(get(addr, "/assets/status.css").status, 200);
    assert_eq!(get(addr, "/assets/status.js").status, 200);
}

#[test]
fn page_http_evidence_pages_exist_for_findings_and_only_for_them() {
    let _g = crate::spawning();
    let w = world("");
    // A task whose process is gone: its finding is the evidence page's.
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let pid = gone.id() as i32;
    gone.wait().expect("reap");
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    insert_task(&w.executor(), "gone-1", "worker", Some(pid), &started, None);
    let (_d, addr) = listening(&w, &[]);
    let id = crate::cli::wait_for("the task's finding", PATIENCE, || {
        w.log_i64("SELECT id FROM findings WHERE task_id = 'gone-1'")
    });

    let r = get(addr, &format!("/findings/{id}"));
    assert_eq!(r.status, 200, "{r:#?}");
    assert!(r.header("content-security-policy").is_some());
    assert!(r.body.contains(&format!("data-finding=\"{id}\"")));
    assert!(r.body.contains("gone-1"));
    assert!(r.body.contains("<pre id=\"explain\">"), "{}", r.body);
    assert!(r.body.contains("Snapshot row as read"), "{}", r.body);
    assert!(
        r.body.contains("Judged again from these inputs"),
        "{}",
        r.body
    );

    let page = get(addr, "/");
    assert!(
        page.body.contains(&format!("href=\"/findings/{id}\"")),
        "the page links the finding: {}",
        page.body
    );

    for (path, why) in [
        ("/findings/999999", "has no finding 999999"),
        ("/findings/abc", "is a number"),
        ("/findings/-1", "has no finding -1"),
        ("/findings/99999999999999999999999", "is a number"),
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}: {r:#?}");
        assert!(r.body.contains(why), "{path}: {}", r.body);
        assert!(r
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")));
    }
}

/// A page view reads what twin reads; it never sweeps, and a burst of
/// views makes no more sweeps than none would.
#[test]
fn page_http_viewing_the_page_never_sweeps() {
    let _g = crate::spawning();
    let w = World::new();
    listener_config(&w, "listen = \"127.0.0.1:0\"", "");
    // An hour between sweeps: after the first, any new sweep is the page's.
    let text = std::fs::read_to_string(w.config_path())
        .expect("config")
        .replace("interval = \"500ms\"", "interval = \"1h\"")
        .replace("timeout = \"1h\"", "timeout = \"2h\"");
    w.write("foreman.toml", &text);
    w.executor();
    let (_d, addr) = listening(&w, &[]);
    first_sweep(&w);
    let sweeps = || w.log_i64("SELECT COUNT(*) FROM sweeps").unwrap_or(-1);
    let before = sweeps();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || (0..5).map(|_| get(addr, "/").status).collect::<Vec<u16>>())
        })
        .collect();
    for t in threads {
        assert!(t.join().expect("join").iter().all(|s| *s == 200));
    }
    assert_eq!(get(addr, "/twin").status, 200);
    assert_eq!(sweeps(), before, "a page view made a sweep");
}
