//! Accepting and serving connections (hyper's HTTP/1.1 server under our own accept loop).
//!
//! Why not `axum::serve`: it has no header read timeout, no cap on connections, and at shutdown it waits
//! for connections that never finish sending a request. Here:
//! - a request head must arrive within `header_read_timeout` (this also bounds how long an idle
//!   keep-alive connection stays open), else the connection is closed;
//! - at most `connections_max` connections are open; beyond, a connection gets a JSON 503 and is
//!   closed, and a warning is logged (at most once per second);
//! - at shutdown a connection with no request in progress (idle, or a request head still incomplete)
//!   is closed at once; one with a request in progress finishes that request and then closes;
//! - a response the client does not read for `write_stall_timeout` is abandoned and the connection
//!   closed (a response body is streamed, so what it holds meanwhile is bounded by its chunk);
//! - hyper's own answers to unparsable requests (400 garbage request line, 414 URI too long, 431 headers
//!   too large), which carry no body, are rewritten to the `{"error": {...}}` JSON shape.

use crate::error::ErrorCode;
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    Router,
};
use http_body_util::BodyExt;
use hyper::{body::Incoming, rt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tower_service::Service;

use crate::error::error_json;

/// How the connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request's head must arrive within this long of the connection opening or of the previous
    /// response; also how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Most connections open at once; beyond, a new one gets a JSON 503 and is closed.
    pub connections_max: usize,
    /// A response write that makes no progress for this long (the client stopped reading) closes
    /// the connection, dropping what was still to be sent.
    pub write_stall_timeout: Duration,
    /// Named in logs and metrics: "http" or "raft".
    pub port: &'static str,
}

/// Serves `listener` until `stop` turns true; then stops accepting, closes connections without a
/// request in progress, and returns once every connection has ended. Returns the connection tasks
/// still running so the caller can abort them after its drain deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let refusing = Arc::new(Semaphore::new(REFUSALS_MAX));
    let mut conns = JoinSet::new();
    let refused = RefusalLog::default();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                if !is_per_connection_error(&e) {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                continue;
            }
        };
        // Responses are small and the clients keep connections alive: do not let Nagle hold them.
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.note(limits);
            match refusing.clone().try_acquire_owned() {
                Ok(slot) => {
                    conns.spawn(refuse(tcp, slot));
                }
                // Too many being refused: a best-effort answer without waiting, and close.
                Err(_) => {
                    let _ = tcp.try_write(&refusal());
                }
            }
            continue;
        };
        let router = router.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            serve_one(tcp, peer, router, limits, tls, stop).await;
            drop(permit);
        });
    }
    conns
}

/// Waits for every connection task to end.
pub async fn drain(conns: &mut JoinSet<()>) {
    while conns.join_next().await.is_some() {}
}

fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Logs "connection limit reached" at most once per second, with how many were refused meanwhile.
#[derive(Default)]
struct RefusalLog {
    refused: AtomicU64,
    /// When the last warning was logged.
    last_log: std::sync::Mutex<Option<Instant>>,
}

impl RefusalLog {
    fn note(&self, limits: ConnLimits) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED_TOTAL.name).increment(1);
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(
                port = limits.port,
                connections_max = limits.connections_max,
                refused_total = n,
                "connection limit reached (KYRODB_CONNECTIONS_MAX, sized from the open-file limit): answering 503 and closing new connections"
            );
        }
    }
}

/// Refusals answered at once at most: a flood of connections holds at most the cap plus these.
const REFUSALS_MAX: usize = 32;

/// A whole answer written below the router: a status line, extra header lines, a JSON error, close.
fn closing_answer(status: &str, headers: &str, code: ErrorCode, message: &str) -> Vec<u8> {
    let body = error_json(code, message);
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}x-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// The answer to a connection over the limit.
fn refusal() -> Vec<u8> {
    closing_answer(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        ErrorCode::TooManyConnections,
        "the server's connection limit (connections_max) is reached; retry later",
    )
}

/// Writes `answer` and closes, within 1 s, without reading the request.
async fn answer_and_close(mut tcp: TcpStream, answer: &[u8]) {
    let write = async {
        tcp.write_all(answer).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Answers a connection over the limit with a JSON 503 and closes it (`slot` bounds how many are
/// being refused at once).
async fn refuse(tcp: TcpStream, _slot: tokio::sync::OwnedSemaphorePermit) {
    answer_and_close(tcp, &refusal()).await;
}

/// Counts requests whose response has not been written completely yet.
/// With it, for the HTTP/2 watchdog, when a request last started, answered or sent a body frame.
struct InFlight(AtomicUsize, ActivityClock);

impl Default for InFlight {
    fn default() -> Self {
        InFlight(AtomicUsize::new(0), ActivityClock::new())
    }
}

/// Milliseconds since the connection began at its last sign of progress. Kept only once
/// [`ActivityClock::start`]ed (HTTP/2, which the watchdog reads): an HTTP/1.1 request does not pay
/// for reading the clock.
struct ActivityClock {
    origin: Instant,
    last_ms: AtomicU64,
    on: std::sync::atomic::AtomicBool,
}

impl ActivityClock {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            on: Default::default(),
        }
    }

    fn start(&self) {
        self.on.store(true, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(c: &Arc<InFlight>) -> Self {
        c.0.fetch_add(1, Ordering::AcqRel);
        c.1.touch();
        Self(c.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .1.touch();
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(InFlight::default());
    let svc_in_flight = in_flight.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // From here until the response body is written (or dropped), the request is in progress.
        let guard = InFlightGuard::new(&svc_in_flight);
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            let resp = router.call(req.map(Body::new)).await?;
            guard.0 .1.touch();
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(b.map_frame(move |f| {
                    guard.0 .1.touch();
                    f
                }))
            }))
        }
    });
    // HTTP/1.1: hyper's head timeout bounds idle connections and the IO's stall timer bounds a
    // client that stops reading.
    macro_rules! serve_h1 {
        ($io:expr) => {{
            let io = JsonParseErrors::new($io, in_flight.clone(), limits.write_stall_timeout);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(io, svc);
            drive(
                conn,
                |c| c.graceful_shutdown(),
                &in_flight,
                peer,
                None,
                stop,
            )
            .await;
        }};
    }
    let Some(acceptor) = tls else {
        serve_h1!(TokioIo::new(tcp));
        return;
    };
    let Some(tls) = handshake(tcp, &acceptor, limits, peer).await else {
        return;
    };
    // The protocol is what ALPN chose (no sniffing of the first bytes, which would wait unbounded).
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        serve_h1!(TokioIo::new(tls));
        return;
    }
    let io = JsonParseErrors::new(
        TokioIo::new(tls),
        in_flight.clone(),
        limits.write_stall_timeout,
    );
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS_MAX)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(io, svc);
    // HTTP/2 has no head timeout and its flow control can hold a response without blocking a
    // socket write: the watchdog closes an idle connection after the head timeout and one whose
    // requests made no progress (no answer, no body frame) for the write stall timeout.
    in_flight.1.start();
    let watchdog = Watchdog {
        idle: limits.header_read_timeout,
        stall: limits.write_stall_timeout,
    };
    drive(
        conn,
        |c| c.graceful_shutdown(),
        &in_flight,
        peer,
        Some(watchdog),
        stop,
    )
    .await;
}

/// When [`drive`] closes an HTTP/2 connection on its own.
#[derive(Debug, Clone, Copy)]
struct Watchdog {
    idle: Duration,
    stall: Duration,
}

/// Requests one HTTP/2 connection may have open at once.
const H2_STREAMS_MAX: u32 = 128;

/// The TLS handshake, within the head timeout. A client that speaks plain HTTP to the TLS port (its
/// first byte is not a TLS handshake record) gets a plain 400 saying to use https, then the close.
async fn handshake(
    tcp: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    limits: ConnLimits,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            refuse_plain_http(tcp).await;
            return None;
        }
        _ => return None, // closed, failed or silent
    }
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            metrics::counter!(crate::metrics::TLS_HANDSHAKE_FAILURES_TOTAL.name).increment(1);
            tracing::debug!(%peer, port = limits.port, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// The answer to plain HTTP on the TLS port.
async fn refuse_plain_http(tcp: TcpStream) {
    let answer = closing_answer(
        "400 Bad Request",
        "",
        ErrorCode::TlsRequired,
        "this port speaks HTTPS (TLS): use an https:// URL",
    );
    answer_and_close(tcp, &answer).await;
}

/// Runs a connection until it ends or `stop` turns true; then closes it at once when no request is
/// in progress, else lets it finish what is in progress (`shut`: the connection's graceful shutdown).
/// With a `watchdog`, also closes it when idle or stalled (see [`Watchdog`]).
async fn drive<C, E>(
    conn: C,
    shut: impl FnOnce(Pin<&mut C>),
    in_flight: &InFlight,
    peer: SocketAddr,
    watchdog: Option<Watchdog>,
    mut stop: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let every = watchdog.map_or(Duration::from_secs(3600), |w| {
        (w.idle.min(w.stall) / 4).max(Duration::from_millis(50))
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick(), if watchdog.is_some() => {
                let Some(w) = watchdog else { continue };
                let quiet = in_flight.1.quiet_for();
                let busy = in_flight.0.load(Ordering::Acquire) > 0;
                if !busy && quiet >= w.idle {
                    return; // idle: close
                }
                if busy && quiet >= w.stall {
                    metrics::counter!(crate::metrics::HTTP_WRITE_STALLS_TOTAL.name).increment(1);
                    tracing::debug!(%peer, "HTTP/2 requests made no progress: closing");
                    return;
                }
            }
        }
    }
    // Shutdown. While we run here the connection is not being polled, so no request can start.
    if in_flight.0.load(Ordering::Acquire) == 0 {
        return; // idle or an incomplete request head: close now
    }
    shut(conn.as_mut());
    let _ = conn.await;
}

/// The IO of one connection. Reads pass through; a write that is hyper's automatic answer to an
/// unparsable request (a 4xx head with `content-length: 0` and no content type, written while no
/// request of ours is in progress) is replaced by the same status with a JSON error body. A write
/// that stays blocked for `stall_timeout` fails with `TimedOut`, which ends the connection.
struct JsonParseErrors<T> {
    inner: T,
    in_flight: Arc<InFlight>,
    /// Replacement bytes still to write, and how many are written.
    pending: Option<(Vec<u8>, usize)>,
    stall_timeout: Duration,
    /// Armed while a write is blocked; reset whenever bytes go out.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> JsonParseErrors<T> {
    fn new(inner: T, in_flight: Arc<InFlight>, stall_timeout: Duration) -> Self {
        Self {
            inner,
            in_flight,
            pending: None,
            stall_timeout,
            stall: None,
        }
    }

    /// After a write or flush returned `poll`: progress disarms the stall timer; `Pending` arms it
    /// (once) and fails the write when it has fired.
    fn watch_stall<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timeout = self.stall_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            self.stall = None;
            metrics::counter!(crate::metrics::HTTP_WRITE_STALLS_TOTAL.name).increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response within the write stall timeout",
            )));
        }
        Poll::Pending
    }
}

/// If `buf` is hyper's bodiless automatic error head, the JSON answer that replaces it.
fn rewrite_parse_error(buf: &[u8]) -> Option<Vec<u8>> {
    let status_line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..status_line_end]).ok()?;
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..500).contains(&code) || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = String::from_utf8_lossy(buf).to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") || head.contains("\r\ncontent-type:") {
        return None;
    }
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    let (err_code, message) = match code {
        400 => (
            ErrorCode::BadRequest,
            "the request could not be parsed as HTTP/1.1 (request line or headers malformed)",
        ),
        414 => (
            ErrorCode::UriTooLong,
            "the request URI is longer than the server accepts (64 KiB)",
        ),
        431 => (
            ErrorCode::HeadersTooLarge,
            "the request headers are larger than the server accepts",
        ),
        _ => (
            crate::error::code_for_status(status),
            status.canonical_reason().unwrap_or("bad request"),
        ),
    };
    let body = error_json(err_code, message);
    let mut out = format!(
        "{line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<T: rt::Write + Unpin> JsonParseErrors<T> {
    /// Writes what is pending; Ready(Ok) once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: rt::Write + Unpin> JsonParseErrors<T> {
    /// Before a write or flush: the pending replacement first. `Some` is the answer when it is not
    /// all out (still blocked, under the stall timer, or failed).
    fn flush_pending<R>(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<R>>> {
        match self.poll_pending(cx) {
            Poll::Pending => Some(self.watch_stall(cx, Poll::Pending)),
            Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
            Poll::Ready(Ok(())) => None,
        }
    }
}

impl<T: rt::Read + Unpin> rt::Read for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: rt::Write + Unpin> rt::Write for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(blocked) = this.flush_pending(cx) {
            return blocked;
        }
        if this.in_flight.0.load(Ordering::Acquire) == 0 {
            if let Some(json) = rewrite_parse_error(buf) {
                this.pending = Some((json, 0));
                // hyper's bytes count as written; ours go out now or at the next flush.
                let _ = this.poll_pending(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_stall(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(blocked) = this.flush_pending(cx) {
            return blocked;
        }
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_stall(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(blocked) = this.flush_pending(cx) {
            return blocked;
        }
        // TLS's close_notify has to be written too: a client that stopped reading cannot hold it.
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch_stall(cx, r)
    }

    // Not vectored: hyper then hands each head to `poll_write` in one piece, which the rewrite needs.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_parse_error;

    #[test]
    fn hypers_bodiless_parse_errors_become_json_and_our_answers_pass() {
        let h = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 25 Nov 2026 13:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_parse_error(h).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(out.contains("content-type: application/json\r\n"));
        assert!(out.ends_with("\"code\":\"bad_request\",\"message\":\"the request could not be parsed as HTTP/1.1 (request line or headers malformed)\"}}"));
        let u = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert!(String::from_utf8(rewrite_parse_error(u).unwrap())
            .unwrap()
            .contains("uri_too_long"));
        // Our own answers carry a content type or a body: left alone.
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_parse_error(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_parse_error(ok).is_none());
        let partial = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n";
        assert!(rewrite_parse_error(partial).is_none());
    }
}
