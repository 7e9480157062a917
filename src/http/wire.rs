//! HTTP/1.1 on the wire for the boot path: request heads in, response heads
//! out, and the bytes already read handed on when hyper takes a connection.
//!
//! iPXE fetches its script, kernel and initrds with plain GETs on keep-alive
//! connections. rackboot answers those itself ([`super::listener`]) so asset
//! bodies can go out by sendfile(2), which hyper cannot do. So this parses
//! only what the boot path needs and says [`Head::Other`] for anything else:
//! hyper then answers it, refusals of malformed requests included.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, Version, header, response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head the boot path reads before leaving the connection
/// to hyper (which refuses one too large with its own status).
pub const MAX_HEAD: usize = 16 * 1024;
/// More header lines than any boot client sends.
const MAX_HEADERS: usize = 64;

/// What the bytes read so far hold.
#[derive(Debug)]
pub enum Head {
    /// Not a whole head yet.
    Partial,
    /// A bodiless GET or HEAD of a boot path: the request, how many bytes
    /// its head took, and whether the client asked to close afterwards.
    Boot {
        req: Box<Request<Body>>,
        len: usize,
        close: bool,
    },
    /// Anything else (another path, a body, HTTP/1.0 or 2, an upgrade, a
    /// malformed head): hyper's to answer.
    Other,
}

/// Parses the head at the start of `buf`; `is_boot_path` says which paths
/// (without query) the boot path serves.
pub fn parse(buf: &[u8], is_boot_path: impl Fn(&str) -> bool) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Head::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Head::Other,
    };
    let method = match r.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Head::Other,
    };
    // HTTP/1.0 keep-alive and close-delimited bodies are hyper's business.
    if r.version != Some(1) {
        return Head::Other;
    }
    let Some(target) = r.path else {
        return Head::Other;
    };
    if !is_boot_path(target.split('?').next().unwrap_or(target)) {
        return Head::Other;
    }
    let Ok(uri) = Uri::try_from(target) else {
        return Head::Other;
    };
    let mut req = Request::new(Body::empty());
    let mut close = false;
    let map = req.headers_mut();
    map.reserve(r.headers.len());
    for h in r.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Head::Other;
        };
        match name {
            // A request body, or a protocol switch: not a boot fetch.
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => return Head::Other,
            header::CONTENT_LENGTH if value.as_bytes().trim_ascii() != b"0" => return Head::Other,
            header::CONNECTION => {
                for token in value.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return Head::Other;
                    }
                }
            }
            _ => {}
        }
        map.append(name, value);
    }
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    Head::Boot {
        req: Box::new(req),
        len,
        close,
    }
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows (HEAD, 1xx, 204, 304): the handler's own
    /// Content-Length, if any, passes through as the size of the entity.
    None,
    /// Exactly this many bytes follow.
    Length(u64),
    /// Chunked: the length is not known before the end.
    Chunked,
}

/// Appends the status line and headers of `parts` to `out`, with the
/// framing headers rackboot decides (any the handler set are replaced),
/// Date when the handler set none, and `Connection: close` when `close`.
pub fn encode_head(out: &mut Vec<u8>, parts: &response::Parts, framing: Framing, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing_header = matches!(
            *name,
            header::CONNECTION | header::TRANSFER_ENCODING | header::CONTENT_LENGTH
        );
        if framing_header && !(framing == Framing::None && *name == header::CONTENT_LENGTH) {
            continue;
        }
        header_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        DATE.with_borrow_mut(|d| header_line(out, b"date", d.now()));
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => header_line(out, b"content-length", n.to_string().as_bytes()),
        Framing::Chunked => header_line(out, b"transfer-encoding", b"chunked"),
    }
    if close {
        header_line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body (`data` empty: the last chunk).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    // After the last chunk (`0\r\n`) this ends the empty trailer section.
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The Date header changes once a second; formatting it per response
    /// would cost more than the rest of a script's head.
    static DATE: RefCell<DateCache> = const { RefCell::new(DateCache { second: u64::MAX, text: String::new() }) };
}

struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

/// A connection with bytes already read from it put back in front, for
/// hyper to read the request rackboot looked at and passed on.
pub struct Rewind<T> {
    read: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(read: Bytes, inner: T) -> Self {
        Rewind { read, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            let taken = self.read.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Response, StatusCode};
    use tokio::io::AsyncReadExt;

    fn boot(path: &str) -> bool {
        crate::routes::is_boot_path(path)
    }

    #[test]
    fn a_boot_get_is_parsed_with_its_headers_and_length() {
        let raw = b"GET /assets/vmlinuz?mac=52:54:00:00:00:01 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\nGET /boot/";
        let Head::Boot { req, len, close } = parse(raw, boot) else {
            panic!("not a boot request");
        };
        assert_eq!(
            len,
            raw.len() - b"GET /boot/".len(),
            "the next request is not part of it"
        );
        assert!(!close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/assets/vmlinuz");
        assert_eq!(req.uri().query(), Some("mac=52:54:00:00:00:01"));
        assert_eq!(req.headers()[header::RANGE], "bytes=0-9");
    }

    #[test]
    fn half_a_head_asks_for_more_and_too_much_goes_to_hyper() {
        assert!(matches!(
            parse(b"GET /boot/x.ipxe HTTP/1.1\r\nHo", boot),
            Head::Partial
        ));
        let mut big = b"GET /boot/x.ipxe HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert!(matches!(parse(&big, boot), Head::Other));
    }

    #[test]
    fn what_is_not_a_bodiless_boot_fetch_goes_to_hyper() {
        for raw in [
            &b"GET /api/v1/nodes HTTP/1.1\r\n\r\n"[..],
            b"POST /boot/x.ipxe HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /boot/x.ipxe HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /boot/x.ipxe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /boot/x.ipxe HTTP/1.0\r\n\r\n",
            b"GET /boot/x.ipxe HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /boot/x.ipxe HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, boot), Head::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn connection_close_is_honoured() {
        let raw = b"HEAD /assets/a HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        let Head::Boot { req, close, .. } = parse(raw, boot) else {
            panic!("not a boot request");
        };
        assert!(close);
        assert_eq!(req.method(), Method::HEAD);
    }

    #[test]
    fn the_head_carries_rackboots_framing_and_a_date() {
        let (parts, ()) = Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, "99")
            .header(header::CONTENT_RANGE, "bytes 0-9/100")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts, Framing::Length(10), true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{text}"
        );
        assert!(text.contains("content-range: bytes 0-9/100\r\n"));
        assert!(text.contains("content-length: 10\r\n"));
        assert!(
            !text.contains("99"),
            "the handler's length is replaced: {text}"
        );
        assert!(text.contains("\r\ndate: ") && text.contains(" GMT\r\n"));
        assert!(text.ends_with("connection: close\r\n\r\n"));

        // HEAD: no body, the entity's length passes through.
        let mut out = Vec::new();
        encode_head(&mut out, &parts, Framing::None, false);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("content-length: 99\r\n")
        );
    }

    #[test]
    fn chunks_are_framed_and_the_last_ends_the_body() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'x'; 26]);
        encode_chunk(&mut out, b"");
        assert_eq!(out, b"1a\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn rewind_replays_what_was_read_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
