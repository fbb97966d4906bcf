//! The daemon's HTTP listener (`[http]`): `GET /metrics`, `/healthz`,
//! `/twin`, `/plans`, `/plans/{id}`, and `POST /events`. Its own accept
//! loop (not `axum::serve`) so that a connection has a deadline for its
//! headers and the number of connections is capped: a slow or flooding
//! client cannot hold the watcher's listener.

use crate::activity::{ActivityLog, Deferral};
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::monitor::{event, store, Batch};
use crate::twin;
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, error, info, warn};

/// What the daemon tells the listener about its sweeps, for `/healthz`.
#[derive(Debug, Default)]
pub struct Liveness {
    last: Mutex<Option<(Instant, Swept)>>,
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

type St = Arc<Shared>;

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
    let app = router(Arc::new(shared));
    info!(address = %bound, "http: listening (/metrics, /healthz, /twin, /plans, POST /events)");
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
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(peer = %peer, error = %e, "http: connection ended with an error");
            }
            drop(permit);
        });
    }
}

pub fn router(st: St) -> Router {
    let limit = st.config().http.max_body_bytes;
    let timeout = st.config().http.request_timeout;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/twin", get(twin_doc))
        .route("/plans", get(plans))
        .route("/plans/{id}", get(plan))
        .route(
            "/events",
            axum::routing::post(events)
                .route_layer(middleware::from_fn_with_state(st.clone(), events_gate)),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such path; see /metrics, /healthz, /twin, /plans, /plans/{id}, POST /events",
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

/// The whole request, body included, within `request_timeout`.
async fn deadline(req: Request, next: Next, timeout: Duration) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "the request took longer than [http] request_timeout",
        ),
    }
}

/// `Authorization: Bearer <token>`, compared in constant time: the refusal
/// to send, if the request may not pass.
fn refused(st: &Shared, headers: &HeaderMap, write: bool) -> Option<Response> {
    let config = st.config();
    let token = config.http.token.as_ref()?;
    if !write && !config.http.protect_reads {
        return None;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.0.as_bytes()) {
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Blocking work (SQLite, /proc) off the runtime's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("the request's worker panicked")?
}

fn read_log(config: &Config) -> Result<ActivityLog> {
    ActivityLog::open_read_only(&config.activity.path)?.with_context(|| {
        format!(
            "the activity log {} has no data yet",
            config.activity.path.display()
        )
    })
}

async fn metrics(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    let depth = st.queue.max_capacity() - st.queue.capacity();
    let shared = st.clone();
    // Prometheus asks for OpenMetrics; curl, promtool and older scrapers
    // get the classic text format.
    let om = metrics::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match blocking(move || {
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
    .await
    {
        Ok(body) if om => ([(header::CONTENT_TYPE, metrics::OPENMETRICS)], body).into_response(),
        Ok(body) => (
            [(header::CONTENT_TYPE, metrics::TEXT)],
            metrics::to_classic_text(&body),
        )
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
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
    // access(2) and /proc, off the runtime's thread.
    let (writable, blindness) =
        match blocking(move || Ok((writable(&path), cfg.proc_blindness()))).await {
            Ok(checks) => checks,
            Err(e) => (Err(format!("{e:#}")), None),
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
    let config = st.config().clone();
    match blocking(move || twin::take(&config, config.twin.window)).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

async fn plans(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    let config = st.config().clone();
    match blocking(move || store::views(read_log(&config)?.conn(), Utc::now())).await {
        Ok(v) => Json(json!({ "plans": v })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

async fn plan(State(st): State<St>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Response {
    if let Some(r) = refused(&st, &headers, false) {
        return r;
    }
    let config = st.config().clone();
    let wanted = id.clone();
    match blocking(move || store::view(read_log(&config)?.conn(), &wanted)).await {
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
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let json = ct
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send Content-Type: application/json",
            );
        }
    }
    next.run(req).await
}

async fn events(State(st): State<St>, body: Bytes) -> Response {
    let batch = match event::parse_batch(&body, Utc::now()) {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let n = batch.len();
    if n == 0 {
        return (StatusCode::ACCEPTED, Json(json!({ "accepted": 0 }))).into_response();
    }
    match st.queue.try_send(Batch::Pushed(batch)) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "accepted": n }))).into_response(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            st.metrics.on_rejected();
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the monitor's queue is full; nothing was taken, send the batch again",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(mpsc::error::TrySendError::Closed(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the monitor is stopping; nothing was taken",
        ),
    }
}
