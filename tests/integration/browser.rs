//! A minimal W3C WebDriver client for the browser tests: Debian's
//! `chromedriver` on a free loopback port, driving headless `chromium` with
//! a fresh profile; JSON over HTTP with `ureq`. Where either binary is
//! missing, `Browser::start` skips (or fails under `CI`, see
//! `common::skip_or_fail`).
//!
//! Also the harness's self-test: a page served from a thread here, with a
//! strict CSP that must block its inline script but not its `/a.js`.

use serde_json::{json, Value};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Debian's packages (`chromium`, `chromium-driver`); `.ci/run` installs them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to come up, a session to start, a page
/// to load or a script to run.
const SLOW: Duration = Duration::from_secs(60);

/// The W3C name of an element reference in a JSON answer.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser tests leave their screenshots (CI keeps them):
/// `$CARGO_TARGET_DIR/browser-artifacts`, else `target/browser-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// One chromedriver, one session of headless chromium; both end on drop.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    agent: ureq::Agent,
    /// chromedriver's log and chromium's profile.
    scratch: TempDir,
    /// Every browser log entry read so far (reading them clears
    /// chromedriver's buffer, so they are kept here).
    logs: RefCell<Vec<String>>,
}

impl Browser {
    /// Chromium with a `width`×`height` window, or None (after
    /// `skip_or_fail`) when chromium or chromedriver is not installed.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                crate::common::skip_or_fail(&format!(
                    "{bin} is missing (Debian: apt-get install chromium chromium-driver)"
                ));
                return None;
            }
        }
        let scratch = tempfile::tempdir().expect("a scratch directory for the browser");
        let profile = scratch.path().join("profile");
        std::fs::create_dir(&profile).expect("create the browser profile directory");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                scratch.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so that drop ends chromium with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(SLOW))
            .http_status_as_error(false)
            .build()
            .into();
        let mut b = Browser {
            driver,
            session: format!("http://127.0.0.1:{port}"),
            agent,
            scratch,
            logs: RefCell::new(Vec::new()),
        };
        b.await_driver();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"script": SLOW.as_millis() as u64, "pageLoad": SLOW.as_millis() as u64},
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    // Headless chromium otherwise calls Google and waits.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created = b
            .send("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("create a chromium session: {e}\n{}", b.driver_log()));
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"))
            .to_string();
        b.session = format!("{}/session/{id}", b.session);
        b.set_window(width, height);
        Some(b)
    }

    /// Poll chromedriver's `/status` until it is ready.
    fn await_driver(&mut self) {
        let deadline = Instant::now() + SLOW;
        loop {
            if let Ok(v) = self.send("GET", "/status", None) {
                if v["ready"] == json!(true) {
                    return;
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before it was ready\n{}",
                    self.driver_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after {SLOW:?}\n{}",
                self.driver_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of chromedriver's log, for failure messages.
    fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self.scratch.path().join("chromedriver.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("chromedriver log (end):\n{}", tail.join("\n"))
    }

    /// One WebDriver command: `path` under the session (or under the
    /// driver's root before there is one); the answer's `value`, or the
    /// WebDriver error as text.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let answer = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(&json!({})).to_string()),
            _ => unreachable!("method {method}"),
        };
        let mut answer = answer.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {url}: HTTP {status}, not JSON ({e}): {text}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!(
                "{method} {url}: HTTP {status}: {}: {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or(&text)
            ));
        }
        // `POST /session` answers {value: {sessionId, capabilities}}.
        Ok(value)
    }

    fn cmd(&self, what: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.send(method, path, body)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Load `url` and wait for its `load` event.
    pub fn goto(&self, url: &str) {
        self.cmd(
            &format!("open {url}"),
            "POST",
            "/url",
            Some(&json!({"url": url})),
        );
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.cmd("read the URL", "GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Run `js` as a function body (`return ...` gives the value) with
    /// `arguments` = `args`.
    pub fn execute(&self, js: &str, args: &[Value]) -> Value {
        self.cmd(
            &format!("execute {js:?}"),
            "POST",
            "/execute/sync",
            Some(&json!({"script": js, "args": args})),
        )
    }

    /// `textContent` of the first element matching `css`.
    pub fn text(&self, css: &str) -> Option<String> {
        self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            &[json!(css)],
        )
        .as_str()
        .map(str::to_string)
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.execute(
            "return document.querySelectorAll(arguments[0]).length;",
            &[json!(css)],
        )
        .as_u64()
        .unwrap_or_else(|| panic!("count {css:?}: not a number")) as usize
    }

    /// Attribute `name` of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.execute(
            "const e = document.querySelector(arguments[0]); \
             return e ? e.getAttribute(arguments[1]) : null;",
            &[json!(css), json!(name)],
        )
        .as_str()
        .map(str::to_string)
    }

    /// A real click (WebDriver's, so the element must be shown and
    /// enabled) on the first element matching `css`. A click that
    /// navigates waits for the new page to load. An element replaced
    /// between finding and clicking it (a page that re-renders itself) is
    /// found again.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + SLOW;
        loop {
            let found = self.cmd(
                &format!("find {css:?}"),
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            );
            let id = found[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("find {css:?}: no element reference in {found}"));
            match self.send("POST", &format!("/element/{id}/click"), Some(&json!({}))) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") && Instant::now() < deadline => continue,
                Err(e) => panic!("click {css:?}: {e}"),
            }
        }
    }

    /// Poll the JavaScript expression `predicate` until it is truthy;
    /// false if `limit` passed first.
    pub fn wait_for(&self, predicate: &str, limit: Duration) -> bool {
        let js = format!("return !!({predicate});");
        let deadline = Instant::now() + limit;
        loop {
            // A navigation in flight can fail a script; that is "not yet".
            if let Ok(v) = self.send(
                "POST",
                "/execute/sync",
                Some(&json!({"script": js, "args": []})),
            ) {
                if v == json!(true) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport into `path` (its directory is created).
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("take a screenshot", "GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("the screenshot is a string"))
            .unwrap_or_else(|e| panic!("the screenshot's base64: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Every browser log entry so far (console messages, JS errors, CSP
    /// violations), each as `LEVEL source: message`.
    pub fn logs(&self) -> Vec<String> {
        let new = self.cmd(
            "read the browser log",
            "POST",
            "/se/log",
            Some(&json!({"type": "browser"})),
        );
        let mut logs = self.logs.borrow_mut();
        for e in new.as_array().into_iter().flatten() {
            logs.push(format!(
                "{} {}: {}",
                e["level"].as_str().unwrap_or("?"),
                e["source"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            ));
        }
        logs.clone()
    }

    /// The log entries that report a Content-Security-Policy violation.
    pub fn csp_violations(&self) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.contains("Content Security Policy"))
            .collect()
    }

    /// The log entries at level SEVERE: JavaScript errors, failed loads,
    /// CSP violations (chromium logs those as `SEVERE security: ...`).
    pub fn errors(&self) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.starts_with("SEVERE "))
            .collect()
    }

    /// Make the page's viewport exactly `width`×`height` CSS pixels.
    ///
    /// Resizing the window is not enough: headless chromium keeps windows
    /// at least 500px wide and takes 139px of the height for the browser's
    /// (invisible) chrome, so the viewport is also set through the
    /// DevTools protocol (desktop metrics, scale 1); it holds across
    /// navigations in this tab.
    pub fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            &format!("resize to {width}x{height}"),
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
        self.cmd(
            &format!("set the viewport to {width}x{height}"),
            "POST",
            "/goog/cdp/execute",
            Some(
                &json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false,
                }}),
            ),
        );
    }

    /// A DevTools protocol command in this tab: its result.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            &format!("DevTools {cmd}"),
            "POST",
            "/goog/cdp/execute",
            Some(&json!({"cmd": cmd, "params": params})),
        )
    }

    /// The page's viewport, `(innerWidth, innerHeight)`.
    pub fn viewport(&self) -> (u64, u64) {
        let v = self.execute("return [window.innerWidth, window.innerHeight];", &[]);
        (
            v[0].as_u64().expect("innerWidth"),
            v[1].as_u64().expect("innerHeight"),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.contains("/session/") {
            let _ = self.send("DELETE", "", None);
        }
        // chromedriver, and any chromium it left, in its process group.
        // SAFETY: kill(2) on the group of a child this struct started and
        // has not reaped.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The screenshot's standard base64.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------- self-test

const SELFTEST_CSP: &str = "default-src 'none'; script-src 'self'";

const SELFTEST_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>selftest</title></head>
<body>
<p id="inline">inline: did not run</p>
<p id="external">external: did not run</p>
<button id="b" type="button" aria-pressed="false">Pause</button>
<script>document.getElementById('inline').textContent = 'inline: ran';</script>
<script src="/a.js"></script>
</body></html>
"#;

const SELFTEST_JS: &str = r#"document.getElementById('external').textContent = 'external: ran';
const b = document.getElementById('b');
b.addEventListener('click', () => {
  const on = b.getAttribute('aria-pressed') !== 'true';
  b.setAttribute('aria-pressed', String(on));
  b.textContent = on ? 'Resume' : 'Pause';
});
"#;

/// Serve the self-test page from a thread, forever (the thread ends with
/// the test binary).
fn serve_selftest() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the self-test server");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = answer(conn);
        }
    });
    addr
}

fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", SELFTEST_PAGE),
        "/a.js" => ("200 OK", "text/javascript; charset=utf-8", SELFTEST_JS),
        _ => ("404 Not Found", "text/plain; charset=utf-8", "not found"),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {SELFTEST_CSP}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// The harness itself: a page under a strict CSP runs its `/a.js` but not
/// its inline script, and the browser logs the violation; a click, an
/// attribute, a resize and a screenshot.
#[test]
fn browser_harness_selftest() {
    let _spawning = crate::spawning();
    let Some(b) = Browser::start(1024, 768) else {
        return;
    };
    let addr = serve_selftest();
    b.goto(&format!("http://{addr}/"));
    assert!(
        b.wait_for(
            "document.getElementById('external').textContent === 'external: ran'",
            SLOW
        ),
        "/a.js did not run: {:?}",
        b.text("body")
    );
    assert_eq!(
        b.text("#inline").as_deref(),
        Some("inline: did not run"),
        "the CSP let the inline script run"
    );
    assert_eq!(b.execute("return document.title;", &[]), json!("selftest"));
    assert_eq!(b.count("p"), 2);
    assert_eq!(b.count("#nothing-here"), 0);
    assert_eq!(b.text("#nothing-here"), None);

    let violations = b.csp_violations();
    eprintln!("browser logs: {:#?}", b.logs());
    assert_eq!(
        b.errors(),
        violations,
        "errors other than the CSP violation"
    );
    assert!(
        violations
            .iter()
            .any(|l| l.contains("inline script") || l.contains("script-src")),
        "no CSP violation logged for the inline script; logs: {:#?}",
        b.logs()
    );

    assert_eq!(b.attr("#b", "aria-pressed").as_deref(), Some("false"));
    b.click("#b");
    assert_eq!(b.attr("#b", "aria-pressed").as_deref(), Some("true"));
    assert_eq!(b.text("#b").as_deref(), Some("Resume"));
    assert_eq!(b.attr("#b", "no-such-attribute"), None);

    let shot = artifacts_dir().join("selftest.png");
    b.screenshot(&shot);
    let png = std::fs::read(&shot).expect("read the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );

    assert_eq!(b.viewport(), (1024, 768));
    b.set_window(390, 844);
    assert_eq!(b.viewport(), (390, 844));
    b.goto(&format!("http://{addr}/"));
    assert_eq!(b.viewport(), (390, 844), "the viewport after a navigation");
    let shot = artifacts_dir().join("selftest-phone.png");
    b.screenshot(&shot);
    assert!(std::fs::read(&shot)
        .expect("read it")
        .starts_with(b"\x89PNG"));
    assert!(b.url().starts_with(&format!("http://{addr}/")));
}
