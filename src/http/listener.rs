//! Plain HTTP connections: the boot path answered by rackboot's own
//! HTTP/1.1 loop, everything else by hyper.
//!
//! A connection starts on the boot path. While its requests are bodiless
//! GETs or HEADs of `/boot/` and `/assets/` (what iPXE sends), each goes
//! through the same router hyper would call, and the response is written
//! here: an asset's body by sendfile(2) ([`super::sendfile`]), a script's
//! head and body in one write. The first request that is anything else
//! hands the connection, with the bytes already read, to hyper for the rest
//! of its life. Routing, handlers, metrics and errors are the same either
//! way; only the wire differs.
//!
//! Both paths are bounded ([`super::bounds`]): a connection is admitted
//! against the connection caps before anything is read, its head must come
//! within `header_timeout`, its body within `body_timeout`, the next request
//! within `idle_timeout` (on hyper's path the wait and the next head share
//! `header_timeout`: hyper has one timer for both), and a response the
//! client stops taking is given up after `send_timeout`. hyper serves
//! HTTP/1.1 only: nothing that boots speaks HTTP/2 without TLS, and hyper's
//! HTTP/2 server has no idle or header timeout to hold a connection to.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode, header};
use bytes::{Buf, BytesMut};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::bounds::{DeadlineBody, Guarded, Limits, Ticket};
use super::metrics::HttpTimeout;
use super::sendfile::{CanSendfile, FileRange};
use super::wire::{self, Framing, Head, Rewind};

/// How long requests in flight may finish once shutdown begins (HTTPS too).
pub(super) const DRAIN: Duration = Duration::from_secs(5);
/// Body bytes gathered into the head's write (a whole iPXE script).
const COALESCE: usize = 16 * 1024;

/// Serves `router` on `listener` until `cancel` fires, then lets requests
/// in flight finish (bounded by [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<Limits>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    while let Some((tcp, peer)) = accept(&listener, &cancel, "HTTP").await {
        let ticket = match limits.admit(peer.ip()) {
            Ok(t) => t,
            Err(why) => {
                // Told why if the socket takes it at once, then closed: a
                // refusal must cost no wait and no task.
                tracing::debug!(%peer, ?why, "HTTP connection refused");
                let _ = tcp.try_write(limits.refusal(why, peer.ip()).as_bytes());
                continue;
            }
        };
        // Heads go out on their own before a sendfile body; a script's
        // single write should not wait for an ACK either.
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            tcp,
            peer,
            read: BytesMut::with_capacity(4096),
            head_started: None,
            limits: limits.clone(),
            _ticket: ticket,
        };
        connections.spawn(conn.run(router.clone(), cancel.clone(), graceful.watcher()));
    }
    connections.close();
    let drained = async {
        tokio::join!(graceful.shutdown(), connections.wait());
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::debug!("HTTP connections still open after {DRAIN:?}; closing them");
    }
    Ok(())
}

/// The next connection on `listener` (`what` names it in the log), or
/// `None` once `cancel` fires. A failed accept (out of file descriptors and
/// the like) is logged and tried again after a pause, not spun on.
pub(super) async fn accept(
    listener: &TcpListener,
    cancel: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!("{what} accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

struct Connection {
    tcp: TcpStream,
    peer: SocketAddr,
    /// Read from the socket and not yet used.
    read: BytesMut,
    /// When the first bytes of a head not yet whole arrived.
    head_started: Option<tokio::time::Instant>,
    limits: Arc<Limits>,
    /// Its place among the open connections, given back when it ends.
    _ticket: Ticket,
}

/// What the boot path made of the next bytes.
enum Next {
    Boot(Box<Request<Body>>, bool),
    Hyper,
    Closed,
    /// The first bytes of a head came, not the whole head.
    Started,
}

impl Connection {
    async fn run(mut self, router: Router, cancel: CancellationToken, watcher: Watcher) {
        // Both made once per connection, not per request: a script fetch
        // is a few microseconds, and a timer and a waiter set up and torn
        // down per request were a measurable part of it. The timer is moved
        // later only when it fires early (see `deadline`), and earlier only
        // when a head arrives in pieces, which iPXE's never do.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let opened = tokio::time::Instant::now();
        let header = self.limits.timeouts.header;
        let mut armed = opened + header;
        let timer = tokio::time::sleep_until(armed);
        tokio::pin!(timer);
        // The end of the last response; `None` before the first request.
        let mut answered: Option<tokio::time::Instant> = None;
        loop {
            let next = tokio::select! {
                _ = &mut cancelled => return,
                _ = &mut timer => {
                    let (due, phase) = self.deadline(opened, answered);
                    if tokio::time::Instant::now() >= due {
                        // Idle: iPXE opens another when it needs one.
                        tracing::debug!(peer = %self.peer, phase = phase.as_str(), "HTTP connection timed out");
                        self.limits.timed_out(phase);
                        return;
                    }
                    armed = due;
                    timer.as_mut().reset(due);
                    continue;
                }
                next = self.next_request() => match next {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, "HTTP connection: {e}");
                        return;
                    }
                },
            };
            match next {
                Next::Closed => return,
                Next::Started => {
                    // A head in pieces after an idle wait: it has
                    // header_timeout from its first byte, which may be
                    // sooner than the timer is set for.
                    let (due, _) = self.deadline(opened, answered);
                    if due < armed {
                        armed = due;
                        timer.as_mut().reset(due);
                    }
                }
                Next::Hyper => return self.hand_to_hyper(router, watcher).await,
                Next::Boot(mut req, close) => {
                    let extensions = req.extensions_mut();
                    extensions.insert(ConnectInfo(self.peer));
                    extensions.insert(CanSendfile);
                    let head_only = req.method() == Method::HEAD;
                    let Ok(resp) = router.clone().oneshot(*req).await;
                    match self.respond(resp, head_only, close).await {
                        Ok(()) if !close && !cancel.is_cancelled() => {}
                        Ok(()) => return,
                        Err(e) => {
                            if e.kind() == io::ErrorKind::TimedOut {
                                self.limits.timed_out(HttpTimeout::Send);
                            }
                            tracing::debug!(peer = %self.peer, "HTTP response cut short: {e}");
                            return;
                        }
                    }
                    answered = Some(tokio::time::Instant::now());
                }
            }
        }
    }

    /// When the wait for the next request runs out, and which wait it is:
    /// the first head `header_timeout` after the connection opened, a later
    /// one `header_timeout` after its first byte, and the next request's
    /// first byte `idle_timeout` after the last response.
    fn deadline(
        &self,
        opened: tokio::time::Instant,
        answered: Option<tokio::time::Instant>,
    ) -> (tokio::time::Instant, HttpTimeout) {
        let t = &self.limits.timeouts;
        match (answered, self.head_started) {
            (None, _) => (opened + t.header, HttpTimeout::Header),
            (Some(_), Some(started)) => (started + t.header, HttpTimeout::Header),
            (Some(last), None) => (last + t.idle, HttpTimeout::Idle),
        }
    }

    /// Reads until the buffer holds a whole request head, or a head has
    /// begun to arrive ([`Next::Started`], once per head).
    async fn next_request(&mut self) -> io::Result<Next> {
        loop {
            if !self.read.is_empty() {
                match wire::parse(&self.read, crate::routes::is_boot_path) {
                    Head::Partial if self.head_started.is_none() => {
                        self.head_started = Some(tokio::time::Instant::now());
                        return Ok(Next::Started);
                    }
                    Head::Partial => {}
                    Head::Other => return Ok(Next::Hyper),
                    Head::Boot { req, len, close } => {
                        self.read.advance(len);
                        self.head_started = None;
                        return Ok(Next::Boot(req, close));
                    }
                }
            }
            self.read.reserve(4096);
            if self.tcp.read_buf(&mut self.read).await? == 0 {
                // Closed between requests, or mid-head: nobody to answer.
                return Ok(Next::Closed);
            }
        }
    }

    /// The rest of the connection, with what was read and not used, is
    /// hyper's (keep-alive, bodies, its own refusals).
    async fn hand_to_hyper(self, router: Router, watcher: Watcher) {
        let io = Rewind::new(self.read.freeze(), self.tcp);
        serve_hyper(io, router, self.peer, &self.limits, watcher, "HTTP").await;
    }

    /// Writes `resp`: head, then the body by sendfile (a [`FileRange`]),
    /// or the body's own frames. An error means the body was cut short and
    /// the connection must close.
    async fn respond(
        &mut self,
        resp: Response<Body>,
        head_only: bool,
        close: bool,
    ) -> io::Result<()> {
        let (mut parts, body) = resp.into_parts();
        let file = parts.extensions.remove::<FileRange>();
        let bodiless = head_only
            || parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            Framing::None
        } else if let Some(f) = &file {
            Framing::Length(f.len())
        } else if let Some(n) = content_length(&parts.headers).or(body.size_hint().exact()) {
            Framing::Length(n)
        } else {
            Framing::Chunked
        };
        let mut out = Vec::with_capacity(512);
        wire::encode_head(&mut out, &parts, framing, close);
        match (framing, file) {
            (Framing::None, _) => self.write(&out).await,
            (_, Some(file)) => {
                self.write(&out).await?;
                file.send(&self.tcp, self.limits.timeouts.send).await
            }
            (Framing::Length(n), None) => self.write_frames(out, body, Some(n)).await,
            (Framing::Chunked, None) => self.write_frames(out, body, None).await,
        }
    }

    /// Writes the body's frames after `out` (the head): gathered into one
    /// write while small, then as they come. `length` is what the head
    /// promised (`None`: chunked).
    async fn write_frames(
        &mut self,
        mut out: Vec<u8>,
        mut body: Body,
        length: Option<u64>,
    ) -> io::Result<()> {
        let mut sent = 0u64;
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(io::Error::other)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers: not sent on HTTP/1.1 boot responses
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if length.is_some_and(|n| sent > n) {
                return Err(io::Error::other("body longer than its Content-Length"));
            }
            match length {
                Some(_) => out.extend_from_slice(&data),
                None => wire::encode_chunk(&mut out, &data),
            }
            if out.len() >= COALESCE {
                self.write(&out).await?;
                out.clear();
            }
        }
        if length.is_none() {
            wire::encode_chunk(&mut out, b"");
        }
        if length.is_some_and(|n| sent != n) {
            // What was promised cannot be kept: close rather than let the
            // client read the next response as this body.
            self.write(&out).await?;
            return Err(io::Error::other("body shorter than its Content-Length"));
        }
        self.write(&out).await
    }

    /// Writes `bytes` whole, or fails once the client has left them
    /// untaken for `send_timeout` (each write is at most [`COALESCE`] plus
    /// a frame, so this is a bound on a stall, not on a long download).
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let send = self.limits.timeouts.send;
        match tokio::time::timeout(send, self.tcp.write_all(bytes)).await {
            Ok(done) => done,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing for {} (http.send_timeout)",
                    humantime::format_duration(send)
                ),
            )),
        }
    }
}

/// Serves the rest of a connection with hyper (HTTP/1.1 only), bounded as
/// [`Limits::timeouts`] says: header and idle by hyper's header timer, the
/// body by [`DeadlineBody`], writes by [`Guarded`]. `what` names the
/// listener in the log.
pub(super) async fn serve_hyper<I>(
    io: I,
    router: Router,
    peer: SocketAddr,
    limits: &Arc<Limits>,
    watcher: Watcher,
    what: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = router.layer(axum::Extension(ConnectInfo(peer)));
    let deadlines = limits.clone();
    let service = tower::util::MapRequest::new(router, move |req: Request<Incoming>| {
        let limits = deadlines.clone();
        req.map(|body| DeadlineBody::new(body, limits))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeouts.header);
    let io = Guarded::new(io, limits.clone());
    let read_since_write = io.read_since_write();
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        let timed_out = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            // hyper's one timer covers the wait for the next request and
            // its head: nothing read since the last answer is an idle end.
            let phase = match read_since_write.load(Ordering::Relaxed) {
                true => HttpTimeout::Header,
                false => HttpTimeout::Idle,
            };
            limits.timed_out(phase);
        }
        tracing::debug!(%peer, "{what} connection ended: {e}");
    }
}

fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A server on loopback with a route whose body has no known length.
    async fn server() -> (SocketAddr, CancellationToken) {
        let router = Router::new()
            .route("/boot/{x}", get(|| async { "script\n" }))
            .route(
                "/assets/stream",
                get(|| async {
                    let parts = futures_lite::stream::iter(["ab", "cd"].map(|s| {
                        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(s.as_bytes()))
                    }));
                    Body::from_stream(parts)
                }),
            )
            .route(
                "/api/echo",
                axum::routing::post(|b: String| async move { b }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, router, test_limits(), cancel.clone()));
        (addr, cancel)
    }

    fn test_limits() -> Arc<Limits> {
        let bounds = super::super::bounds::Bounds::default();
        Arc::new(Limits::new(
            bounds.resolve(1024),
            bounds.timeouts,
            Arc::new(crate::metrics::Metrics::new(&[])),
        ))
    }

    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(raw).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
            .await
            .expect("the server closed the connection")
            .unwrap();
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn pipelined_boot_requests_are_answered_in_order_then_hyper_takes_over() {
        let (addr, cancel) = server().await;
        let got = exchange(
            addr,
            b"GET /boot/a.ipxe HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /assets/stream HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              HEAD /boot/b.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let answers: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 4, "{got}");
        assert!(answers[0].starts_with("200 OK\r\n"), "{got}");
        assert!(
            answers[0].contains("content-length: 7\r\n")
                && answers[0].ends_with("\r\n\r\nscript\n")
        );
        assert!(
            answers[1].contains("transfer-encoding: chunked\r\n"),
            "{got}"
        );
        assert!(
            answers[1].ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
            "{got}"
        );
        // hyper's answers (its header names are lower case too).
        assert!(
            answers[2].starts_with("200 OK\r\n") && answers[2].ends_with("hello"),
            "{got}"
        );
        assert!(
            answers[3].starts_with("200 OK\r\n") && answers[3].ends_with("\r\n\r\n"),
            "{got}"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn connection_close_closes_after_the_answer() {
        let (addr, cancel) = server().await;
        let got = exchange(
            addr,
            b"GET /boot/a.ipxe HTTP/1.1\r\nConnection: close\r\n\r\nGET /boot/b.ipxe HTTP/1.1\r\n\r\n",
        )
        .await;
        assert_eq!(got.matches("HTTP/1.1 200").count(), 1, "{got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
        cancel.cancel();
    }
}
