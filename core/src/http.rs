//! The I/O side of pg_ark's HTTP endpoint (`ark.http_listen`): a thread
//! that accepts connections and parses requests with `hyper`, and hands
//! each request to the HTTP worker's main thread, which alone talks to
//! PostgreSQL.
//!
//! The rules it keeps:
//! - It never calls PostgreSQL. A request goes to the main thread through a
//!   bounded channel, and the thread is woken by `wake` (the worker passes
//!   a `SIGUSR1` to its own process, whose PostgreSQL handler sets the
//!   worker's latch). The answer comes back on a one-shot channel.
//! - It is started inside [`crate::threads::with_signals_blocked`], so no
//!   PostgreSQL signal handler ever runs on it.
//! - Every request is bounded: 16 KiB of head, 5 s to send it, 10 s for
//!   the whole connection, at most 64 connections at once and 16 requests
//!   waiting for the main thread. A request the main thread does not answer
//!   within the deadline gets 503, as does one that finds the queue full.
//!   The token is checked once the head is read, so a client without it
//!   can still hold connections, each for at most 10 s.
//! - Only `GET` and `HEAD` of `/health`, `/metrics`, `/` (the dashboard)
//!   and `/dashboard.json` are served;
//!   anything else is 404 or 405, and the body of a request is never read.
//! - With a token, every request but the dashboard's page (which holds no
//!   data) must carry `Authorization: Bearer <token>` (compared in
//!   constant time), or it gets 401.
//! - When the address cannot be bound (the port is taken), it says so to
//!   the main thread, which logs it, and tries again every 10 s.
use crate::metrics::Format;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the main thread has to answer.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How long a client has to send a request's head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may last in all.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read.
pub const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests waiting for the main thread; more get 503.
pub const QUEUE: usize = 16;
/// How long to wait before binding again.
pub const RETRY_BIND: Duration = Duration::from_secs(10);

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: `ark.status()`; `?strict` makes degraded a 503.
    Health { strict: bool },
    /// `GET /metrics`, in the format the `Accept` header asks for.
    Metrics(Format),
    /// `GET /`: the dashboard's page. It holds no data (it reads
    /// `/dashboard.json`), so it is served by the I/O thread itself, and
    /// without the token: the page asks for it.
    Dashboard,
    /// `GET /dashboard.json`: what the dashboard shows.
    DashboardData,
}

impl Route {
    /// The route of a path and query, or `None` (404).
    pub fn parse(path: &str, query: Option<&str>) -> Option<Route> {
        let flag = |name: &str| {
            query.is_some_and(|q| {
                q.split('&').any(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    k == name && !matches!(v, "0" | "false" | "off" | "no")
                })
            })
        };
        match path {
            "/health" => Some(Route::Health {
                strict: flag("strict"),
            }),
            "/metrics" => Some(Route::Metrics(Format::Prometheus)),
            "/" => Some(Route::Dashboard),
            "/dashboard.json" => Some(Route::DashboardData),
            _ => None,
        }
    }
}

/// An answer from the main thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

/// A request waiting for the main thread's answer.
pub struct Request {
    pub route: Route,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

impl Request {
    /// Nobody waits for the answer any more: the I/O thread gave up at its
    /// deadline, or the client is gone.
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Send the answer (dropped if the client is gone or the deadline
    /// passed).
    pub fn answer(self, a: Answer) {
        let _ = self.reply.send(a);
    }
}

/// What the I/O thread hands the main thread.
pub enum Event {
    Request(Request),
    /// A line for the server log.
    Log(String),
}

/// The server's settings.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The bearer token every request must carry, when set. It can be
    /// changed while the server runs (a reload).
    pub token: Arc<Mutex<Option<String>>>,
}

/// A running I/O thread. Dropping it leaves the thread to end with its
/// process (a background worker exits without joining).
pub struct Server {
    pub thread: std::thread::JoinHandle<()>,
}

/// The dashboard's page: one file, no external resource.
pub const DASHBOARD_PAGE: &str = include_str!("http/dashboard.html");

/// The repository's archived WAL, for the dashboard, as a thread of its
/// own lists it (never the main thread, whose answers must stay fast).
pub struct WalWatch {
    /// The last listing ([`wal_timelines`], with `listed_at` and
    /// `segment_size`), `{"error": ...}` when it failed, or `{"listing":
    /// true}` before the first one ends.
    ///
    /// [`wal_timelines`]: crate::restore::inventory::wal_timelines
    pub view: Arc<Mutex<serde_json::Value>>,
    again: SyncSender<()>,
}

impl WalWatch {
    /// List again now (at most one request waits; more are one).
    pub fn poke(&self) {
        let _ = self.again.try_send(());
    }

    /// When the last listing ended (Unix seconds), if one has.
    pub fn listed_at(&self) -> Option<i64> {
        self.view.lock().ok()?.get("listed_at")?.as_i64()
    }
}

/// Start the listing thread: it lists when it starts, every `every`, and
/// when poked. `open` opens the repository (it may change on reload), or
/// says why there is none.
pub fn watch_wal(
    open: impl Fn() -> Result<crate::repo::ClusterRepo, String> + Send + 'static,
    every: Duration,
) -> std::io::Result<WalWatch> {
    let view = Arc::new(Mutex::new(serde_json::json!({"listing": true})));
    let out = view.clone();
    let (again, poked) = std::sync::mpsc::sync_channel::<()>(1);
    crate::threads::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("pg_ark wal list".into())
            .spawn(move || loop {
                let listed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    open().and_then(|cluster| {
                        crate::restore::plan::Archive::load(&cluster)
                            .map_err(|e| e.to_string())
                            .map(|a| {
                                serde_json::json!({
                                    "listed_at": crate::logical::now_epoch(),
                                    "segment_size": a.segment_size.bytes(),
                                    "timelines": crate::restore::inventory::wal_timelines(&a),
                                })
                            })
                    })
                }))
                .unwrap_or_else(|_| Err("the WAL listing failed unexpectedly (a panic)".into()));
                let doc = listed.unwrap_or_else(|e| {
                    serde_json::json!({
                        "listed_at": crate::logical::now_epoch(),
                        "error": e,
                    })
                });
                if let Ok(mut v) = out.lock() {
                    *v = doc;
                }
                match poked.recv_timeout(every) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // The worker is gone.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            })
    })?;
    Ok(WalWatch { view, again })
}

/// Wake the main thread of this PostgreSQL process from the I/O thread:
/// `SIGUSR1` to the process itself. PostgreSQL's handler for it
/// (`procsignal_sigusr1_handler`, which a background worker with shared
/// memory access has) ends by setting the process's latch; the I/O thread
/// blocks every signal, so the main thread takes it.
pub fn wake_postgres_main_thread() {
    // SAFETY: getpid and kill are plain, async-signal-safe libc calls.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGUSR1);
    }
}

/// The address `ark.http_listen` names: `host:port` (`[::1]:8080` for
/// IPv6), or a port alone, which is loopback's (`127.0.0.1`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.parse::<SocketAddr>().map_err(|_| {
        format!(
            "ark.http_listen \"{text}\" is not an address and port such as 127.0.0.1:8080 or [::1]:8080, or a port alone (on loopback)"
        )
    })
}

/// Whether `addr` is a loopback address: anything else needs a token.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Start the I/O thread. `to_main` is the bounded channel to the main
/// thread; `wake` tells the main thread there is something in it.
pub fn start(
    config: Config,
    to_main: SyncSender<Event>,
    wake: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<Server> {
    let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
    let thread = crate::threads::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("pg_ark http".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = to_main.try_send(Event::Log(format!(
                            "the HTTP endpoint could not start its runtime: {e}"
                        )));
                        wake();
                        return;
                    }
                };
                runtime.block_on(serve(config, to_main, wake));
            })
    })?;
    Ok(Server { thread })
}

async fn serve(config: Config, to_main: SyncSender<Event>, wake: Arc<dyn Fn() + Send + Sync>) {
    let log = |msg: String| {
        // A full queue drops the line rather than block the I/O thread.
        let _ = to_main.try_send(Event::Log(msg));
        wake();
    };
    let listener = loop {
        match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => break l,
            Err(e) => {
                log(format!(
                    "the HTTP endpoint could not listen on {}: {e}; trying again in {} s",
                    config.listen,
                    RETRY_BIND.as_secs()
                ));
                tokio::time::sleep(RETRY_BIND).await;
            }
        }
    };
    log(format!(
        "the HTTP endpoint listens on http://{}",
        config.listen
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of descriptors, or the peer reset before accept: wait a
            // little rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (to_main, wake, token) = (to_main.clone(), wake.clone(), config.token.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (to_main, wake, token) = (to_main.clone(), wake.clone(), token.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(req, &to_main, &*wake, &token).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

/// `a == b`, in a time that depends on neither where they differ nor the
/// secret's length: their SHA-256 digests are compared, every byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The credentials of an `Authorization: Bearer <token>` header (the
/// scheme's name is case-insensitive, RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn respond(a: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(a.body)));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r.headers_mut().insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The dashboard page's Content-Security-Policy: nothing from elsewhere
/// (no CDN, no frame, no form, no other origin), and no script but the
/// page's own, by its SHA-256 digest.
pub fn dashboard_csp() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let inline = |open: &str, close: &str| -> String {
            let body = DASHBOARD_PAGE
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map_or("", |(b, _)| b);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()))
            )
        };
        // Styles inline as well: the timeline places its bars with style
        // attributes, which no digest can name.
        format!(
            "default-src 'none'; script-src {}; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
            inline("<script>", "</script>")
        )
    })
}

/// Whether a request's `Host` names this server as an address (or
/// `localhost`), not as some other name: without a token, that is what
/// keeps a web page elsewhere from reading the endpoint through a name it
/// points at 127.0.0.1 (DNS rebinding).
fn host_is_an_address(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn handle(
    req: hyper::Request<Incoming>,
    to_main: &SyncSender<Event>,
    wake: &(dyn Fn() + Send + Sync),
    token: &Mutex<Option<String>>,
) -> Response<Full<Bytes>> {
    let route = Route::parse(req.uri().path(), req.uri().query());
    if route == Some(Route::Dashboard)
        && (req.method() == Method::GET || req.method() == Method::HEAD)
    {
        let mut r = respond(Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD_PAGE.as_bytes().to_vec(),
        });
        if let Ok(csp) = HeaderValue::from_str(dashboard_csp()) {
            r.headers_mut()
                .insert(hyper::header::CONTENT_SECURITY_POLICY, csp);
        }
        return r;
    }
    let expected = token.lock().map(|t| t.clone()).unwrap_or(None);
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok());
    if expected.is_none() && !host_is_an_address(host) {
        return respond(Answer::text(
            421,
            "without a token (ark.http_token_file), pg_ark answers only requests that name it by address or as localhost\n",
        ));
    }
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        if !same_secret(given.as_bytes(), expected.as_bytes()) {
            let mut r = respond(Answer::text(401, "a bearer token is required\n"));
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(Answer::text(405, "only GET and HEAD are served\n"));
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(mut route) = route else {
        return respond(Answer::text(
            404,
            "not found: pg_ark serves /health, /metrics, / and /dashboard.json\n",
        ));
    };
    if let Route::Metrics(format) = &mut route {
        *format = Format::from_accept(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    match to_main.try_send(Event::Request(Request { route, reply })) {
        Ok(()) => wake(),
        Err(TrySendError::Full(_)) => {
            return respond(Answer::text(
                503,
                "pg_ark's HTTP worker has too many requests waiting; try again\n",
            ))
        }
        Err(TrySendError::Disconnected(_)) => {
            return respond(Answer::text(503, "pg_ark's HTTP worker is stopping\n"))
        }
    }
    match tokio::time::timeout(DEADLINE, answer).await {
        Ok(Ok(a)) => respond(a),
        _ => respond(Answer::text(
            503,
            format!(
                "pg_ark's HTTP worker did not answer within {} s\n",
                DEADLINE.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
