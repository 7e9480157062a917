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

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode, header};
use bytes::{Buf, BytesMut};
use http_body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::sendfile::{CanSendfile, FileRange};
use super::wire::{self, Framing, Head, Rewind};

/// How long a connection may sit between requests (nginx keeps one 75 s;
/// here it is closed between one and two times this after its last request).
const IDLE: Duration = Duration::from_secs(75);
/// How long requests in flight may finish once shutdown begins (HTTPS too).
pub(super) const DRAIN: Duration = Duration::from_secs(5);
/// Body bytes gathered into the head's write (a whole iPXE script).
const COALESCE: usize = 16 * 1024;

/// What iPXE fetches. Paths only; the router decides what they mean.
pub(crate) fn is_boot_path(path: &str) -> bool {
    path.starts_with("/boot/") || path.starts_with("/assets/")
}

/// Serves `router` on `listener` until `cancel` fires, then lets requests
/// in flight finish (bounded by [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    while let Some((tcp, peer)) = accept(&listener, &cancel, "HTTP").await {
        // Heads go out on their own before a sendfile body; a script's
        // single write should not wait for an ACK either.
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            tcp,
            peer,
            read: BytesMut::with_capacity(4096),
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
}

/// What the boot path made of the next bytes.
enum Next {
    Boot(Box<Request<Body>>, bool),
    Hyper,
    Closed,
}

impl Connection {
    async fn run(mut self, router: Router, cancel: CancellationToken, watcher: Watcher) {
        // Both made once per connection, not per request: a script fetch
        // is a few microseconds, and a timer and a waiter set up and torn
        // down per request were a measurable part of it. The idle timer is
        // moved on only when it fires (the connection then lives between
        // IDLE and twice that after its last request).
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let idle = tokio::time::sleep(IDLE);
        tokio::pin!(idle);
        let mut last_request = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                _ = &mut cancelled => return,
                _ = &mut idle => {
                    if last_request.elapsed() >= IDLE {
                        return; // idle: iPXE opens another when it needs one
                    }
                    idle.as_mut().reset(last_request + IDLE);
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
            last_request = tokio::time::Instant::now();
            match next {
                Next::Closed => return,
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
                            tracing::debug!(peer = %self.peer, "HTTP response cut short: {e}");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reads until the buffer holds a whole request head.
    async fn next_request(&mut self) -> io::Result<Next> {
        loop {
            if !self.read.is_empty() {
                match wire::parse(&self.read, is_boot_path) {
                    Head::Partial => {}
                    Head::Other => return Ok(Next::Hyper),
                    Head::Boot { req, len, close } => {
                        self.read.advance(len);
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
    /// hyper's (keep-alive, bodies, HTTP/2, its own refusals).
    async fn hand_to_hyper(self, router: Router, watcher: Watcher) {
        let router = router.layer(axum::Extension(ConnectInfo(self.peer)));
        let io = TokioIo::new(Rewind::new(self.read.freeze(), self.tcp));
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(io, TowerToHyperService::new(router));
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(peer = %self.peer, "HTTP connection ended: {e}");
        }
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
            (Framing::None, _) => self.tcp.write_all(&out).await,
            (_, Some(file)) => {
                self.tcp.write_all(&out).await?;
                file.send(&self.tcp).await
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
                self.tcp.write_all(&out).await?;
                out.clear();
            }
        }
        if length.is_none() {
            wire::encode_chunk(&mut out, b"");
        }
        if length.is_some_and(|n| sent != n) {
            // What was promised cannot be kept: close rather than let the
            // client read the next response as this body.
            self.tcp.write_all(&out).await?;
            return Err(io::Error::other("body shorter than its Content-Length"));
        }
        self.tcp.write_all(&out).await
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
        tokio::spawn(serve(listener, router, cancel.clone()));
        (addr, cancel)
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
