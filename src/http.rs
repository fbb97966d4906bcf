//! The daemon's HTTP listener (`[http]`): the status page `GET /` and
//! `/findings/{id}`, `GET /metrics`, `/healthz`, `/twin`, `/plans`,
//! `/plans/{id}`, and `POST /events` and `/heartbeat`. Its own accept
//! loop (not `axum::serve`) so that a connection has a deadline for its
//! headers and the number of connections is capped: a slow or flooding
//! client cannot hold the watcher's listener. A response not drained
//! within `request_timeout` closes its connection (a reader that stops
//! reading frees its slot); blocking work for requests is bounded
//! (`max_read_jobs`), and concurrent scrapes share one rendering.

use crate::activity::{ActivityLog, Deferral};
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::monitor::{event, queue, store, Batch};
use crate::status::{self, page};
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

/// What the daemon tells the listener about its sweeps, for `/healthz`.
#[derive(Debug, Default)]
pub struct Liveness {
    last: Mutex<Option<(Instant, Swept)>>,
    /// Sweeps finished (a `/metrics` rendering from before one is stale).
    sweeps: std::sync::atomic::AtomicU64,
}

/// What one finished sweep tells `/healthz`.
#[derive(Debug, Clone)]
pub struct Swept {
    /// One line on the sweep, shown as `last_sweep`.
    pub summary: String,
    /// The executor could not be read (`snapshot_error`).
    pub snapshot_error: Option<String>,
    /// Hung verdicts deferred for starvation, as the activity log had it
    /// after this sweep (`activity::sweep_health`); `Err` when it could not
    /// be read.
    pub deferral: Result<Option<Deferral>, String>,
}

impl Liveness {
    /// A sweep finished.
    pub fn swept(&self, sweep: Swept) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some((Instant::now(), sweep));
        }
        self.sweeps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the activity log's state has been through: sweeps finished and
    /// monitor batches recorded. A rendering made at another is stale.
    fn generation(&self) -> (u64, u64) {
        (
            self.sweeps.load(std::sync::atomic::Ordering::SeqCst),
            queue::recorded_batches(),
        )
    }

    fn last(&self) -> Option<(Duration, Swept)> {
        let l = self.last.lock().ok()?;
        l.as_ref().map(|(at, s)| (at.elapsed(), s.clone()))
    }
}

/// The configuration in force; SIGHUP replaces it.
pub type LiveConfig = Arc<std::sync::RwLock<Arc<Config>>>;

/// Everything a request may need.
pub struct Shared {
    pub config: LiveConfig,
    pub metrics: Arc<Metrics>,
    pub queue: mpsc::Sender<Batch>,
    pub liveness: Arc<Liveness>,
}

impl Shared {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// What the routes share: the daemon's `Shared`, the bound on blocking
/// jobs, and the last `/metrics` rendering.
pub struct Listener {
    shared: Shared,
    /// Blocking jobs for requests (`[http] max_read_jobs`): a job holds its
    /// permit until it ends, even when its request was abandoned, so jobs
    /// cannot pile up on the blocking pool.
    jobs: Arc<Semaphore>,
    /// The last `/metrics` rendering (OpenMetrics text) and when it was
    /// made; the lock is held while rendering, so concurrent scrapes wait
    /// for one rendering instead of each making their own.
    scrape: tokio::sync::Mutex<Option<Rendering>>,
    /// The last status read (`/`, `/twin`), shared the same way.
    status: tokio::sync::Mutex<Option<StatusRead>>,
}

impl std::ops::Deref for Listener {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Listener {
    pub fn new(shared: Shared) -> Listener {
        let jobs = shared.config().http.max_read_jobs;
        Listener {
            shared,
            jobs: Arc::new(Semaphore::new(jobs)),
            scrape: tokio::sync::Mutex::new(None),
            status: tokio::sync::Mutex::new(None),
        }
    }
}

type St = Arc<Listener>;

/// One `/metrics` rendering: when, at which generation of the log's
/// state (`Liveness::generation`), the OpenMetrics text.
type Rendering = (Instant, (u64, u64), Arc<String>);

/// One status read: when it ended, how long it took, at which generation
/// of the log's state, when its count of the day's findings was made.
struct StatusRead {
    at: Instant,
    took: Duration,
    generation: (u64, u64),
    timeline_at: Instant,
    status: Arc<crate::status::Status>,
}

/// How long a scrape's rendering is served to other scrapes.
const SCRAPE_FRESH: Duration = Duration::from_secs(1);

/// Bind now (so a taken port fails the start, with the address named),
/// serve in the background on the current runtime. The default address
/// being taken is logged and the daemon goes on without a listener: the
/// watchdog matters more than its window.
pub async fn start(shared: Shared) -> Result<Option<std::net::SocketAddr>> {
    let Some(addr) = shared.config().http.listen else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if !shared.config().http.listen_explicit => {
            error!(address = %addr, error = %e, "http: cannot listen on the default address; running without /metrics, /healthz and POST /events (set [http] listen)");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("listening on {addr} ([http] listen)")),
    };
    let bound = listener.local_addr().context("reading the bound address")?;
    let http = shared.config().http.clone();
    let app = router(Arc::new(Listener::new(shared)));
    info!(address = %bound, "http: listening (/ the status page, /metrics, /healthz, /twin, /plans, POST /events, POST /heartbeat)");
    tokio::spawn(accept(
        listener,
        app,
        http.request_timeout,
        http.max_connections,
    ));
    Ok(Some(bound))
}

async fn accept(listener: TcpListener, app: Router, timeout: Duration, max: usize) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(Semaphore::new(max));
    loop {
        // At the cap, stop accepting: the kernel's backlog holds the rest.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(Deadlined::new(stream, timeout)), service);
            if let Err(e) = conn.await {
                debug!(peer = %peer, error = %e, "http: connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// A connection whose writes must drain within `timeout`: from the first
/// write after the client last sent something, the response must be
/// taken within the timeout, else the write fails and the connection
/// closes (a client that stops reading cannot hold its slot).
struct Deadlined {
    stream: TcpStream,
    timeout: Duration,
    /// Armed by the first write of a response, disarmed by a read.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadlined {
    fn new(stream: TcpStream, timeout: Duration) -> Deadlined {
        Deadlined {
            stream,
            timeout,
            deadline: None,
        }
    }

    /// The write did not complete: fail it if its deadline passed, else
    /// wait for the socket or the deadline.
    fn pending<T>(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not take the response within [http] request_timeout",
            ))),
            _ => Poll::Pending,
        }
    }

    fn arm(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.timeout)));
        }
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.deadline = None;
        }
        r
    }
}

impl AsyncWrite for Deadlined {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.arm();
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            r => r,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.arm();
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            r => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            r => r,
        }
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_shutdown(cx) {
            Poll::Pending => self.pending(cx),
            r => r,
        }
    }
}

pub fn router(st: St) -> Router {
    let limit = st.config().http.max_body_bytes;
    let timeout = st.config().http.request_timeout;
    Router::new()
        .route("/", get(status_page))
        .route("/findings/{id}", get(finding_page))
        .route("/assets/status.css", get(|| async { asset("text/css; charset=utf-8", page::CSS) }))
        .route("/assets/status.js", get(|| async { asset("text/javascript; charset=utf-8", page::JS) }))
        .route("/assets/favicon.svg", get(|| async { asset("image/svg+xml", page::FAVICON) }))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/twin", get(twin_doc))
        .route("/plans", get(plans))
        .route("/plans/{id}", get(plan))
        .route(
            "/heartbeat",
            axum::routing::post(heartbeat)
                .route_layer(middleware::from_fn_with_state(st.clone(), events_gate)),
        )
        .route(
            "/events",
            axum::routing::post(events)
                .route_layer(middleware::from_fn_with_state(st.clone(), events_gate)),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such path; see / (the status page), /metrics, /healthz, /twin, /plans, /plans/{id}, POST /events, POST /heartbeat",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            deadline(req, next, timeout)
        }))
        .with_state(st)
}

fn error(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

/// The whole request, body included, within `request_timeout`. A page
/// (`/`, `/findings/…`) that runs out of time is told as a page.
async fn deadline(req: Request, next: Next, timeout: Duration) -> Response {
    let path = req.uri().path();
    let page = path == "/" || path.starts_with("/findings/");
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) if page => html(
            StatusCode::REQUEST_TIMEOUT,
            page::problem(
                "Foreman took too long to answer",
                "Reading the state took longer than [http] request_timeout. The read goes on, and a reload in a few seconds shows it.",
            ),
        ),
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "the request took longer than [http] request_timeout",
        ),
    }
}

/// `Authorization: Bearer <token>`, or HTTP Basic with the token as the
/// password (what a browser can send, and Prometheus's `basic_auth`),
/// compared in constant time: the refusal to send, if the request may not
/// pass.
fn refused(st: &Listener, headers: &HeaderMap, write: bool) -> Option<Response> {
    if may_pass(st, headers, write) {
        return None;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required (Authorization: Bearer <token>)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// The request carries the token, or needs none.
fn may_pass(st: &Listener, headers: &HeaderMap, write: bool) -> bool {
    let config = st.config();
    let Some(token) = config.http.token.as_ref() else {
        return true;
    };
    if !write && !config.http.protect_reads {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(presented)
        .unwrap_or_default();
    constant_time_eq(given.as_bytes(), token.0.as_bytes())
}

/// The secret an `Authorization` value presents: a bearer token, or a
/// Basic password (whatever the user name).
fn presented(value: &str) -> Option<String> {
    use base64::Engine as _;
    // Schemes are case-insensitive (RFC 9110, 11.1).
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// `given` equals `want`, in time that depends on `given`'s length only:
/// every byte of `given` is compared (against `want`'s, or 0 past its
/// end) into one accumulator, with no early return, so neither the
/// token's bytes nor its length show in the time taken.
fn constant_time_eq(given: &[u8], want: &[u8]) -> bool {
    let mut acc = u8::from(given.len() != want.len());
    for (i, g) in given.iter().enumerate() {
        acc |= g ^ want.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(acc) == 0
}

/// Blocking work (SQLite, /proc) off the runtime's thread, holding one of
/// `[http] max_read_jobs` permits until it ends: waiting for a permit is
/// abandoned with the request; a job already running finishes, but no
/// more than the bound run at once.
async fn blocking<T: Send + 'static>(
    st: &Listener,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let permit = st
        .jobs
        .clone()
        .acquire_owned()
        .await
        .context("the listener is stopping")?;
    run_blocking(permit, f).await
}

/// The job a blocking thread runs for a request: where `read_log` leaves
/// its connection's interrupt handle.
type JobSlot = Arc<Mutex<Option<rusqlite::InterruptHandle>>>;

thread_local! {
    static JOB: std::cell::RefCell<Option<JobSlot>> = const { std::cell::RefCell::new(None) };
}

/// Interrupts the SQLite statement of a job whose request was abandoned
/// (its future dropped, a 408 say): the job ends with an error instead of
/// running on for nobody.
struct InterruptOnDrop(JobSlot);

impl InterruptOnDrop {
    /// The job ended: nothing to interrupt.
    fn disarm(self) {
        if let Ok(mut h) = self.0.lock() {
            h.take();
        }
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Ok(h) = self.0.lock() {
            if let Some(h) = h.as_ref() {
                h.interrupt();
            }
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let slot = JobSlot::default();
    let guard = InterruptOnDrop(slot.clone());
    let r = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        JOB.with(|j| *j.borrow_mut() = Some(slot));
        let r = f();
        JOB.with(|j| j.borrow_mut().take());
        r
    })
    .await;
    guard.disarm();
    r.context("the request's worker panicked")?
}

/// The activity log, read-only; in a request's job, interrupted if the
/// request is abandoned.
fn read_log(config: &Config) -> Result<ActivityLog> {
    let log = ActivityLog::open_read_only(&config.activity.path)?.with_context(|| {
        format!(
            "the activity log {} has no data yet",
            config.activity.path.display()
        )
    })?;
    JOB.with(|j| {
        if let Some(slot) = j.borrow().as_ref() {
            if let Ok(mut h) = slot.lock() {
                *h = Some(log.conn().get_interrupt_handle());
            }
        }
    });
    Ok(log)
}

async fn metrics(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    // Prometheus asks for OpenMetrics; curl, promtool and older scrapers
    // get the classic text format.
    let om = metrics::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match render(&st).await {
        Ok(body) if om => (
            [(header::CONTENT_TYPE, metrics::OPENMETRICS)],
            String::clone(&body),
        )
            .into_response(),
        Ok(body) => (
            [(header::CONTENT_TYPE, metrics::TEXT)],
            metrics::to_classic_text(&body),
        )
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

/// The OpenMetrics text: the last rendering if under `SCRAPE_FRESH` old
/// and no sweep or recorded batch came since, else a new one (other
/// scrapes wait for it and share it).
async fn render(st: &St) -> Result<Arc<String>> {
    let mut cached = st.scrape.lock().await;
    let generation = st.liveness.generation();
    if let Some((at, made_at, body)) = cached.as_ref() {
        if at.elapsed() < SCRAPE_FRESH && *made_at == generation {
            return Ok(body.clone());
        }
    }
    let depth = st.queue.max_capacity() - st.queue.capacity();
    let shared = st.clone();
    let body = Arc::new(
        blocking(st, move || {
            let config = shared.config();
            shared
                .metrics
                .set_max_deferral(config.defaults.max_deferral());
            shared
                .metrics
                .set_proc_blind(config.proc_blindness().is_some());
            let log = read_log(&config)?;
            shared.metrics.scrape(log.conn(), depth, Utc::now())
        })
        .await?,
    );
    *cached = Some((Instant::now(), generation, body.clone()));
    Ok(body)
}

/// `/healthz`: 200 `ok`, or 503 `failing` with every reason, when no sweep
/// has finished within twice the interval, the last sweep could not read
/// the executor (`snapshot_error`), `/proc` cannot show the executor's
/// processes, hung verdicts have been deferred for starvation without a
/// break for longer than `[defaults] max_deferral`, or the activity log is
/// not writable.
async fn healthz(State(st): State<St>) -> Response {
    let config = st.config();
    let interval = config.interval;
    let max_deferral = config.defaults.max_deferral();
    let path = config.activity.path.clone();
    let cfg = config.clone();
    // access(2) and /proc, off the runtime's thread; not behind
    // max_read_jobs (it is quick), so slow scrapes cannot silence it.
    let checks = tokio::task::spawn_blocking(move || {
        // What silences and maintenance windows hold now: said, never a
        // failure (holding is what the operator asked for).
        let holds = crate::activity::ActivityLog::open_read_only(&path)
            .ok()
            .flatten()
            .and_then(|l| crate::silence::active(Some(l.conn()), &cfg, Utc::now()).ok())
            .unwrap_or_default();
        (writable(&path), cfg.proc_blindness(), holds)
    });
    let (writable, blindness, holds) = match checks.await.context("the request's worker panicked") {
        Ok(checks) => checks,
        Err(e) => (Err(format!("{e:#}")), None, Vec::new()),
    };
    let now = Utc::now();
    let last = st.liveness.last();
    let mut reasons: Vec<String> = Vec::new();
    match &last {
        None => reasons.push("no sweep has finished yet (the startup scan is running)".to_string()),
        Some((age, _)) if *age > interval * 2 => reasons.push(format!(
            "the last sweep finished {} ago, more than twice the interval ({})",
            human(*age),
            humantime::format_duration(interval)
        )),
        Some(_) => {}
    }
    let swept = last.as_ref().map(|(_, s)| s);
    let snapshot_error = swept.and_then(|s| s.snapshot_error.clone());
    if let Some(e) = &snapshot_error {
        reasons.push(format!(
            "snapshot_error: the last sweep could not read the executor, so nothing was judged: {e}"
        ));
    }
    if let Some(b) = &blindness {
        reasons.push(format!(
            "/proc cannot show the executor's processes, so no task can be judged gone: {b}"
        ));
    }
    let deferral = match swept.map(|s| &s.deferral) {
        Some(Ok(Some(d))) => {
            let lasted = d.lasted(now);
            let exceeded = lasted > max_deferral;
            if exceeded {
                reasons.push(format!(
                    "hung verdicts deferred for starvation for {} without a break (since {}), longer than max_deferral ({}): {}",
                    human(lasted),
                    crate::activity::ts(d.since),
                    humantime::format_duration(max_deferral),
                    d.reason
                ));
            }
            json!({
                "reason": d.reason,
                "since": crate::activity::ts(d.since),
                "seconds": lasted.as_secs_f64(),
                "hung_deferred": d.hung_deferred,
                "max_deferral_seconds": max_deferral.as_secs_f64(),
                "exceeded": exceeded,
            })
        }
        Some(Err(e)) => {
            reasons.push(format!(
                "cannot tell whether hung verdicts are being deferred: {e}"
            ));
            serde_json::Value::Null
        }
        Some(Ok(None)) | None => serde_json::Value::Null,
    };
    if let Err(why) = &writable {
        reasons.push(why.clone());
    }
    let ok = reasons.is_empty();
    let body = json!({
        "status": if ok { "ok" } else { "failing" },
        "reason": (!ok).then(|| reasons.join("; ")),
        "last_sweep_age_seconds": last.as_ref().map(|(age, _)| age.as_secs_f64()),
        "last_sweep": swept.map(|s| s.summary.clone()),
        "interval_seconds": interval.as_secs_f64(),
        "activity_log_writable": writable.is_ok(),
        "snapshot_error": snapshot_error,
        "proc_blindness": blindness,
        "deferral": deferral,
        "silences": holds,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A duration to the millisecond, for people.
fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

/// The activity log and its directory (SQLite writes -wal and -shm beside
/// it) are writable by this process: access(2), which takes no lock.
fn writable(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    for p in [path, dir] {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid NUL-terminated path; access only reads it.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "the activity log is not writable: {}: {e}",
                p.display()
            ));
        }
    }
    Ok(())
}

async fn twin_doc(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    match status_read(&st).await {
        Ok(s) => Json(&s.twin).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

/// What `/` and `/twin` show: the last read while it is fresh, else a
/// new one (other requests wait for it and share it). A read probes /proc
/// and the executor as twin does; it never sweeps.
///
/// A read is fresh for `SCRAPE_FRESH` while no sweep or recorded batch
/// came since, and in any case for twice as long as it took: on a fleet
/// where a read takes longer than a request may wait, the read still
/// finishes (it runs in a task of its own, so the request that gave up
/// does not interrupt it) and the views that follow are served from it,
/// while reads take at most about half of the listener's time.
async fn status_read(st: &St) -> Result<Arc<status::Status>> {
    let st = st.clone();
    tokio::spawn(async move {
        let mut cached = st.status.lock().await;
        let generation = st.liveness.generation();
        let mut timeline = None;
        if let Some(read) = cached.as_ref() {
            let age = read.at.elapsed();
            if (age < SCRAPE_FRESH && read.generation == generation) || age < read.took * 2 {
                return Ok(read.status.clone());
            }
            if read.timeline_at.elapsed() < status::TIMELINE_FRESH {
                timeline = Some((read.timeline_at, read.status.timeline.clone()));
            }
        }
        let config = st.config();
        let started = Instant::now();
        let kept = timeline.as_ref().map(|(_, t)| t.clone());
        let s = Arc::new(blocking(&st, move || status::take(&config, kept)).await?);
        // The day's count is as old as the read that made it.
        let timeline_at = match timeline {
            Some((at, t)) if t == s.timeline => at,
            _ => started,
        };
        *cached = Some(StatusRead {
            at: Instant::now(),
            took: started.elapsed(),
            generation,
            timeline_at,
            status: s.clone(),
        });
        Ok(s)
    })
    .await
    .context("the status read panicked")?
}

/// The headers every page carries: no script or style but the binary's
/// own, no framing, no referrer, never cached (it is a live view).
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Only this binary's script, style and the page's own fetches; nothing
/// inline (an injected `<script>` would not run even if it got through).
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A page's refusal: the browser is asked for the token by HTTP Basic
/// (any user name, the token as the password).
fn refused_page(st: &Listener, headers: &HeaderMap) -> Option<Response> {
    if may_pass(st, headers, false) {
        return None;
    }
    let mut r = html(
        StatusCode::UNAUTHORIZED,
        page::problem(
            "The token is required",
            "Sign in with any user name and the [http] token as the password, or send Authorization: Bearer <token>.",
        ),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Foreman\", charset=\"UTF-8\""),
    );
    Some(r)
}

/// `GET /[?refresh=SECONDS]`: the status page.
async fn status_page(
    State(st): State<St>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if let Some(r) = refused_page(&st, &headers) {
        return r;
    }
    match status_read(&st).await {
        Ok(s) => {
            let last = st.liveness.last();
            let live = page::ThisSweep {
                age: last.as_ref().map(|(age, _)| *age),
                summary: last.map(|(_, s)| s.summary),
            };
            let every = page::refresh(query.as_deref());
            html(
                StatusCode::OK,
                page::index(&s, &st.config().host, &live, every),
            )
        }
        Err(e) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            page::problem("Foreman cannot read its state", &format!("{e:#}")),
        ),
    }
}

/// `GET /findings/{id}`: `foreman explain`'s evidence as a page.
async fn finding_page(
    State(st): State<St>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(r) = refused_page(&st, &headers) {
        return r;
    }
    let Ok(id) = id.parse::<i64>() else {
        return html(
            StatusCode::NOT_FOUND,
            page::problem(
                "No such finding",
                "A finding's id is a number, as in /findings/42.",
            ),
        );
    };
    let config = st.config();
    let host = config.host.clone();
    let found = blocking(&st, move || {
        let log = read_log(&config)?;
        Ok(crate::explain::load(&log, id, &config.fingerprint)?
            .map(|e| (crate::explain::text(&e), e)))
    })
    .await;
    match found {
        Ok(Some((text, e))) => html(StatusCode::OK, page::finding(&e, &text, &host)),
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            page::problem(
                "No such finding",
                &format!("The activity log has no finding {id}: it may have been pruned (see [activity] retention)."),
            ),
        ),
        Err(e) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            page::problem("Foreman cannot read its activity log", &format!("{e:#}")),
        ),
    }
}

/// A file of the page, from the binary. Not behind the token: it is the
/// same for everyone and says nothing of the state.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /plans?limit=&after=`: a page of plans in plan id order
/// (`limit` 100 by default, at most 1000), with `next`, the `after` of the
/// next page (`null` on the last).
async fn plans(
    State(st): State<St>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    let page = match crate::monitor::view::page_request(query.as_deref()) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let config = st.config().clone();
    match blocking(&st, move || {
        store::views_page(
            read_log(&config)?.conn(),
            Utc::now(),
            page.after.as_deref(),
            page.limit,
        )
    })
    .await
    {
        Ok(p) => Json(p).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

async fn plan(State(st): State<St>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    let config = st.config().clone();
    let wanted = id.clone();
    match blocking(&st, move || store::view(read_log(&config)?.conn(), &wanted)).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            &format!("no plan {id:?} in the activity log"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

/// The token and the content type, checked before the body is read: a
/// client without the token cannot make the daemon buffer a body.
async fn events_gate(State(st): State<St>, req: Request, next: Next) -> Response {
    if let Some(r) = refused(&st, req.headers(), true) {
        return r;
    }
    // A missing Content-Type is refused like a wrong one.
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json",
        );
    }
    next.run(req).await
}

/// A 503 with `Retry-After: 1`: nothing was taken, send it again.
fn busy(reason: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, reason);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// How long a push waits for the activity log's write lock (and for a
/// job's permit) before it is refused: half of `request_timeout`, at most
/// 2 s, so the 503 comes well within the request's deadline.
fn keep_wait(request_timeout: Duration) -> Duration {
    (request_timeout / 2).min(Duration::from_secs(2))
}

/// `POST /events`: 202 only once the batch is in the activity log's inbox
/// (synced), from which it is recorded even across a crash; 503 with
/// `Retry-After` when the queue is full (in batches or bytes) or the log
/// cannot take it in time, with nothing taken.
async fn events(State(st): State<St>, body: Bytes) -> Response {
    let batch = match event::parse_batch(&body, Utc::now()) {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    drop(body);
    let n = batch.len();
    if n == 0 {
        return (StatusCode::ACCEPTED, Json(json!({ "accepted": 0 }))).into_response();
    }
    let config = st.config();
    let wait = keep_wait(config.http.request_timeout);
    // Room first (a slot and the bytes), so nothing is kept that cannot
    // be queued at once.
    let slot = match st.queue.clone().try_reserve_owned() {
        Ok(slot) => slot,
        Err(mpsc::error::TrySendError::Full(_)) => {
            st.metrics.on_rejected();
            return busy("the monitor's queue is full; nothing was taken, send the batch again");
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the monitor is stopping; nothing was taken",
            )
        }
    };
    let Some(charge) = queue::Charge::take(
        queue::bytes_of_events(&batch),
        config.monitor.queue_max_bytes,
    ) else {
        st.metrics.on_rejected();
        return busy(
            "the monitor's queue holds [monitor] queue_max_bytes; nothing was taken, send the batch again",
        );
    };
    let Ok(Ok(permit)) = tokio::time::timeout(wait, st.jobs.clone().acquire_owned()).await else {
        st.metrics.on_rejected();
        return busy("the listener is busy; nothing was taken, send the batch again");
    };
    let path = config.activity.path.clone();
    let max_plans = config.monitor.max_plans;
    match run_blocking(permit, move || queue::keep(&path, &batch, wait, max_plans)).await {
        Ok(rows) => {
            charge.queued();
            slot.send(Batch::Pulled(rows));
            (StatusCode::ACCEPTED, Json(json!({ "accepted": n }))).into_response()
        }
        // Counted by the store (foreman_plans_refused_total), not as a
        // full queue.
        Err(e)
            if e.downcast_ref::<crate::monitor::store::PlansFull>()
                .is_some() =>
        {
            busy(&e.to_string())
        }
        Err(e) => {
            st.metrics.on_rejected();
            warn!(error = %format!("{e:#}"), events = n, "http: a pushed batch could not be kept; refused (503)");
            busy(&format!(
                "the activity log cannot take the batch now ({e:#}); nothing was taken, send the batch again"
            ))
        }
    }
}

/// `POST /heartbeat`: a task's heartbeat, for executors that cannot write
/// their task table (the same token and content-type rules as `/events`).
/// 202 once kept in the activity log; the next sweep counts it.
async fn heartbeat(State(st): State<St>, body: Bytes) -> Response {
    let beats = match crate::heartbeat::parse(&body) {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    drop(body);
    let config = st.config();
    let wait = keep_wait(config.http.request_timeout);
    let Ok(Ok(permit)) = tokio::time::timeout(wait, st.jobs.clone().acquire_owned()).await else {
        return busy("the listener is busy; nothing was taken, send the heartbeat again");
    };
    let path = config.activity.path.clone();
    let at = Utc::now();
    match run_blocking(permit, move || {
        crate::heartbeat::keep(&path, &beats, at, wait)
    })
    .await
    {
        Ok(n) => (StatusCode::ACCEPTED, Json(json!({ "accepted": n }))).into_response(),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "http: pushed heartbeats could not be kept; refused (503)");
            busy(&format!(
                "the activity log cannot take the heartbeat now ({e:#}); nothing was taken, send it again"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_token_comparison_is_exact_whatever_the_lengths() {
        let token = b"s3cret-token";
        assert!(constant_time_eq(token, token));
        for given in [
            &b""[..],
            b"s3cret-toke",
            b"s3cret-token\0",
            b"s3cret-tokeN",
            b"S3cret-token",
            b"s3cret-token-and-more",
        ] {
            assert!(!constant_time_eq(given, token), "{given:?}");
        }
        // A byte past the token compares against 0, yet a longer input
        // with a NUL there is still refused (the lengths differ).
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn http_a_push_waits_for_the_log_well_within_the_request_deadline() {
        assert_eq!(keep_wait(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(
            keep_wait(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    /// A request dropped while its job reads SQLite interrupts the read:
    /// the job ends at once instead of running on for nobody.
    #[test]
    fn http_an_abandoned_request_interrupts_its_read() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("foreman.db");
            ActivityLog::open(&path).expect("log");
            let text = format!(
                "[executor]\nkind = \"sqlite\"\npath = \"executor.db\"\n\n[activity]\npath = {:?}\n",
                path.display().to_string()
            );
            let config = Config::parse(&text, &dir.path().join("foreman.toml")).expect("config");
            let permits = Arc::new(Semaphore::new(1));
            let permit = permits.clone().acquire_owned().await.expect("permit");
            let (tx, rx) = std::sync::mpsc::channel();
            let job = run_blocking(permit, move || {
                let log = read_log(&config)?;
                // A query that would run for a long while.
                let r = log.conn().query_row(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000000)
                     SELECT COUNT(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                );
                let _ = tx.send(r.map_err(|e| e.to_string()));
                Ok(())
            });
            // The request gives up after 300 ms.
            let t = Instant::now();
            assert!(tokio::time::timeout(Duration::from_millis(300), job)
                .await
                .is_err());
            let ended = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)))
                .await
                .expect("join");
            let r = ended.expect("the job ended soon after its request was dropped");
            assert!(r.expect_err("interrupted").contains("interrupt"));
            assert!(t.elapsed() < Duration::from_secs(5));
            // Its permit came back with it.
            let _again = permits.acquire_owned().await.expect("permit back");
        });
    }

    /// A peer that never reads: the write fails once `timeout` passed,
    /// instead of waiting for ever.
    #[test]
    fn http_a_write_not_drained_within_the_timeout_fails() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let _peer = TcpStream::connect(addr).await.expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            let mut conn = Deadlined::new(stream, Duration::from_millis(300));
            let big = vec![0u8; 64 << 20];
            let t = Instant::now();
            let write_all = async {
                let mut off = 0;
                while off < big.len() {
                    off +=
                        std::future::poll_fn(|cx| Pin::new(&mut conn).poll_write(cx, &big[off..]))
                            .await?;
                }
                Ok::<(), std::io::Error>(())
            };
            let r = tokio::time::timeout(Duration::from_secs(10), write_all).await;
            let took = t.elapsed();
            let err = r
                .expect("the write gave up by itself")
                .expect_err("not drained");
            assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
            assert!(took < Duration::from_secs(3), "{took:?}");
        });
    }
}
