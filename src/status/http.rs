//! The HTTP status API (axum): jobs, live events (SSE and WebSocket),
//! job submission, health, readiness, Prometheus metrics and the dashboard.
//!
//! Everything is JSON except `/metrics` (Prometheus text) and `/` (the
//! dashboard, embedded in the binary: no CDN). Every request passes
//! [`crate::status::guard`] (no other site, no rebound name) and all but
//! `/`, `/health` and `/ready` need the token ([`crate::status::auth`]).
//!
//! Served by hyper directly rather than `axum::serve`, for what a daemon
//! that must keep its file descriptors needs: at most [`MAX_CONNECTIONS`]
//! at once, a request's head within [`HEAD_TIMEOUT`] (an idle keep-alive
//! connection included), its body within [`BODY_TIMEOUT`].

use crate::config::Config;
use crate::events::{Event, Events};
use crate::ftp::pool::Pool;
use crate::health::Health;
use crate::status::metrics::Metrics;
use crate::status::Board;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const DASHBOARD: &str = include_str!("dashboard.html");

/// What the handlers read.
pub(crate) struct Api {
    pub(crate) board: Arc<Board>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Events,
    pub(crate) health: Arc<Health>,
    pub(crate) pool: Arc<Pool>,
    /// The configuration in force (a reload swaps it).
    pub(crate) config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
    /// What a request must show; `None` only in tests of the handlers.
    pub(crate) auth: Option<crate::status::auth::Verifier>,
}

/// Connections served at once; more wait in the listen backlog. Far below
/// the 1,024 descriptors a service usually gets, which jobs need too.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// A request's head (or the next one, on a kept-alive connection) must
/// arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// What a WebSocket client may send: the feed is one way.
const WS_MAX_MESSAGE: usize = 4096;

/// The router, for [`serve`] and for tests.
pub(crate) fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/jobs", get(list_jobs).post(submit_job))
        .route("/api/jobs/{job}", get(job_detail).delete(cancel_job))
        .route("/api/jobs/{job}/retry", axum::routing::post(retry_job))
        .route("/api/servers", get(servers))
        .route("/api/throughput", get(throughput))
        .route("/api/limits", get(limits))
        .route("/api/events", get(sse))
        .route("/api/ws", get(ws))
        .route("/api/auth/nonce", get(nonce))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}

/// Serves the API on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = router(api);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("never closed"),
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors: wait instead of spinning.
                    tracing::warn!(error = %e, "status API: cannot accept");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        while conns.try_join_next().is_some() {}
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Reads the token file (see [`crate::status::auth`]), creating it with a
/// new token if it is the default one and does not exist yet.
pub(crate) fn load_token(config: &Config) -> anyhow::Result<crate::status::auth::Verifier> {
    let (path, generate) = match &config.status.token_file {
        Some(p) => (p.clone(), false),
        None => (
            crate::status::auth::default_token_file(&config.checked),
            true,
        ),
    };
    let token = crate::status::auth::load_or_create(&path, generate)
        .map_err(|e| e.context("status.token_file"))?;
    Ok(crate::status::auth::Verifier::new(&token))
}

fn refuse(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({"error": message}))).into_response()
}

async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    match refusal(&api, &req) {
        None => next.run(req).await,
        Some(refused) => refused,
    }
}

/// Why `req` is refused, if it is: the guard, then the token (see the
/// module doc).
fn refusal(api: &Api, req: &Request) -> Option<Response> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let seen = crate::status::guard::Seen {
        method: req.method().as_str(),
        path: req.uri().path(),
        host: h(header::HOST.as_str()),
        origin: h(header::ORIGIN.as_str()),
        fetch_site: h("sec-fetch-site"),
        content_type: h(header::CONTENT_TYPE.as_str()),
    };
    let allowed = (api.config)().status.allowed_hosts.clone();
    if let Err((code, why)) = crate::status::guard::check(&seen, &allowed) {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
        return Some(refuse(code, why));
    }
    let open = matches!(
        req.uri().path(),
        "/" | "/health" | "/ready" | "/api/auth/nonce"
    );
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let admitted = match &api.auth {
        None => true,
        Some(v) => {
            open || v.admits(
                h(header::AUTHORIZATION.as_str()),
                req.method().as_str(),
                target,
            )
        }
    };
    if admitted {
        return None;
    }
    Some((
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "the API token is required: `Authorization: Bearer <token>` (the token is in status.token_file, by default ftpdrop-api-token beside checked/)"})),
    )
        .into_response())
}

/// A nonce for one signed request ([`crate::status::auth`]).
async fn nonce(State(api): State<Arc<Api>>) -> Response {
    match &api.auth {
        Some(v) => Json(json!({"nonce": v.issue()})).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no token is in use"),
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

/// `GET /api/jobs?state=&server=&since=&until=&q=&after=&offset=&limit=`.
#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    server: Option<String>,
    /// RFC 3339 (`2026-12-01T00:00:00Z`): jobs that ended at or after it.
    since: Option<String>,
    /// RFC 3339: jobs that ended before it.
    until: Option<String>,
    /// Text the job's error contains.
    q: Option<String>,
    /// The next page: the jobs after this one (the last of the previous page).
    after: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl ListQuery {
    /// The index's query, or what is wrong with the parameters.
    fn parse(self) -> Result<crate::history::Query, String> {
        const STATES: [&str; 6] = [
            "running",
            "done",
            "partial",
            "failed",
            "invalid",
            "cancelled",
        ];
        if let Some(s) = &self.state {
            if !STATES.contains(&s.as_str()) {
                return Err(format!("state {s:?} is not one of {}", STATES.join(", ")));
            }
        }
        let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, String> {
            v.as_deref()
                .map(|t| {
                    humantime::parse_rfc3339_weak(t)
                        .map(crate::history::millis)
                        .map_err(|e| format!("{name} {t:?} is not an RFC 3339 time ({e})"))
                })
                .transpose()
        };
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(crate::history::Query {
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            state: nonempty(self.state),
            server: nonempty(self.server),
            text: nonempty(self.q),
            after: nonempty(self.after),
            ended_only: false,
            offset: self.offset.unwrap_or(0).min(1_000_000),
            limit: self.limit.unwrap_or(100).clamp(1, 10_000),
        })
    }
}

async fn list_jobs(State(api): State<Arc<Api>>, Query(q): Query<ListQuery>) -> Response {
    let q = match q.parse() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let board = api.board.clone();
    let jobs = tokio::task::spawn_blocking(move || board.list(&q)).await;
    match jobs {
        Ok(jobs) => Json(jobs).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing jobs: {e}"),
        ),
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({"error": message}))).into_response()
}

/// A job name as it may appear in a URL: a file stem in `checked/`, nothing that walks.
fn valid_name(job: &str) -> bool {
    !job.is_empty() && !job.starts_with('.') && !job.contains(['/', '\\', '\0'])
}

/// `?offset=&limit=` of `GET /api/jobs/{job}`: a window of its entries.
#[derive(serde::Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Entries per page unless asked: a whole 100,000-entry job per request
/// would cost the daemon hundreds of megabytes and the browser seconds.
const PAGE_DEFAULT: usize = 1_000;
const PAGE_MAX: usize = 10_000;

async fn job_detail(
    State(api): State<Arc<Api>>,
    UrlPath(job): UrlPath<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    if !valid_name(&job) {
        return error(StatusCode::NOT_FOUND, format!("no job {job:?}"));
    }
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let path = (api.config)().checked.join(format!("{job}.report.json"));
    let page =
        tokio::task::spawn_blocking(move || crate::report::Page::load(&path, offset, limit)).await;
    let mut v = match page {
        Ok(Ok(page)) => {
            let mut top = page.top;
            let entries: Vec<Value> = page
                .entries
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
                    // Each done entry gets its link, without credentials.
                    if e.state == crate::report::EntryState::Done {
                        let host = e.server.rsplit('@').next().unwrap_or(&e.server);
                        let host = host.rsplit("://").next().unwrap_or(host);
                        v["url"] = json!(crate::status::ftp_url(host, &e.remote_path));
                    }
                    v
                })
                .collect();
            top.insert("entries".into(), Value::Array(entries));
            top.insert("entries_total".into(), json!(page.total));
            Value::Object(top)
        }
        _ => {
            if !api.board.is_running(&job) {
                return error(StatusCode::NOT_FOUND, format!("no job {job:?}"));
            }
            json!({"job": job, "state": "running", "entries": []})
        }
    };
    v["entries_offset"] = json!(offset);
    v["entries_limit"] = json!(limit);
    if let Some(p) = api.board.progress(&job, offset, limit) {
        v["progress"] = serde_json::to_value(p).unwrap_or(Value::Null);
    }
    Json(v).into_response()
}

async fn submit_job(State(api): State<Arc<Api>>, body: axum::body::Body) -> Response {
    let config = (api.config)();
    let limit = usize::try_from(config.max_job_bytes).unwrap_or(usize::MAX);
    // Read within BODY_TIMEOUT and never past the limit: a slow or endless
    // body holds neither a connection nor memory.
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"problems": [format!(
                    "the job is over the limit of {} bytes (max_job_bytes), or its body broke off",
                    config.max_job_bytes
                )]})),
            )
                .into_response(),
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                )
            }
        };
    if let Err(problems) = crate::job::parse(&body, &config) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "problems": problems })),
        )
            .into_response();
    }
    let stem = format!(
        "api-{}",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace([':', '.'], "")
    );
    let written = tokio::task::spawn_blocking(move || {
        crate::intake::submit::into_inbox(&config.inbox, &config.checked, &stem, &body)
    })
    .await;
    match written {
        Ok(Ok(job)) => (
            StatusCode::CREATED,
            Json(json!({"job": job, "status_url": format!("/api/jobs/{job}")})),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/throughput`: the last hour, per minute (see
/// [`crate::status::throughput`]).
async fn throughput(State(api): State<Arc<Api>>) -> Response {
    Json(json!({ "minutes": api.board.throughput.last_hour() })).into_response()
}

/// `DELETE /api/jobs/{job}`: cancels the job, whichever instance runs it.
async fn cancel_job(State(api): State<Arc<Api>>, UrlPath(job): UrlPath<String>) -> Response {
    job_request(&api, job, crate::intake::request::Request::Cancel).await
}

/// `POST /api/jobs/{job}/retry`: the job's waiting entries try now.
async fn retry_job(State(api): State<Arc<Api>>, UrlPath(job): UrlPath<String>) -> Response {
    job_request(&api, job, crate::intake::request::Request::Retry).await
}

/// Leaves an operator's request for the job (see `intake::request`): 202,
/// as the instance that runs the job acts on it a moment later.
async fn job_request(api: &Api, job: String, what: crate::intake::request::Request) -> Response {
    use crate::intake::request::{request, Refused, Requested};
    let config = (api.config)();
    let name = job.clone();
    let left =
        tokio::task::spawn_blocking(move || request(&config.inbox, &config.checked, &name, what))
            .await;
    match left {
        Ok(Ok(at)) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "job": job.strip_suffix(".json").unwrap_or(&job),
                "request": what.word(),
                "job_is": match at {
                    Requested::Claimed => "claimed",
                    Requested::Queued => "queued",
                },
            })),
        )
            .into_response(),
        Ok(Err(e)) => {
            let code = match e {
                Refused::BadName(_) => StatusCode::BAD_REQUEST,
                Refused::NoJob { .. } => StatusCode::NOT_FOUND,
                Refused::Ended { .. } => StatusCode::CONFLICT,
                Refused::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(code, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The live feed as text messages, ending with `lagged` for a subscriber
/// that fell too far behind (it never slows the uploads).
fn feed(events: &Events) -> impl futures_util::Stream<Item = String> + Send + 'static {
    let rx = events.subscribe();
    futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(ev) => {
                let text = serde_json::to_string(&*ev).unwrap_or_default();
                Some((text, Some(rx)))
            }
            Err(RecvError::Lagged(missed)) => {
                let text = serde_json::to_string(&Event::Lagged { missed }).unwrap_or_default();
                Some((text, None))
            }
            Err(RecvError::Closed) => None,
        }
    })
}

async fn sse(State(api): State<Arc<Api>>) -> impl IntoResponse {
    use futures_util::StreamExt;
    let stream = feed(&api.events).map(|text| {
        Ok::<_, std::convert::Infallible>(axum::response::sse::Event::default().data(text))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn ws(State(api): State<Arc<Api>>, upgrade: WebSocketUpgrade) -> Response {
    let events = api.events.clone();
    upgrade
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| ws_feed(socket, events))
}

async fn ws_feed(mut socket: WebSocket, events: Events) {
    use futures_util::StreamExt;
    let feed = feed(&events);
    tokio::pin!(feed);
    loop {
        tokio::select! {
            next = feed.next() => {
                let Some(text) = next else { break };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn servers(State(api): State<Arc<Api>>) -> Response {
    let (_, rates) = api.pool.limits.current();
    let load: Vec<Value> = api
        .pool
        .load()
        .into_iter()
        .map(|l| {
            let max_rate = rates.get(&l.server).copied().filter(|r| *r > 0);
            json!({"server": l.server, "busy": l.busy, "idle": l.idle,
                   "abandoned": l.abandoned, "limit": l.limit, "max_rate": max_rate,
                   "full_for_ms": (l.full_for_ms > 0).then_some(l.full_for_ms)})
        })
        .collect();
    Json(load).into_response()
}

/// The bandwidth limits in force now, bytes per second (null: none).
async fn limits(State(api): State<Arc<Api>>) -> Response {
    let (global, servers) = api.pool.limits.current();
    let servers: serde_json::Map<String, Value> = servers
        .into_iter()
        .map(|(k, v)| (k, if v > 0 { json!(v) } else { Value::Null }))
        .collect();
    Json(json!({"max_rate": (global > 0).then_some(global), "servers": servers})).into_response()
}

async fn health(State(api): State<Arc<Api>>) -> Response {
    let max_age = (api.health.beat_every() * 4).max(Duration::from_secs(5));
    match api.health.check(max_age) {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "reason": why})),
        )
            .into_response(),
    }
}

async fn ready(State(api): State<Arc<Api>>) -> Response {
    if api.health.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "reason": "resuming unfinished jobs"})),
        )
            .into_response()
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let inbox = (api.config)().inbox.clone();
    let waiting = tokio::task::spawn_blocking(move || crate::intake::scan(&inbox).len())
        .await
        .unwrap_or(0);
    let body = api.metrics.render(
        &api.pool.load(),
        &api.pool.limits.current(),
        api.board.running(),
        waiting,
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
            .parse()
            .expect("a valid header value"),
    );
    (headers, body).into_response()
}
