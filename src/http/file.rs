//! One asset as an HTTP response: Content-Type, Content-Length,
//! Last-Modified, HEAD, a single Range (206, or 416 past the end or for
//! several ranges), If-Modified-Since (304) and If-Unmodified-Since (412),
//! as tower-http's ServeFile answered before.
//!
//! It serves the bytes or the descriptor it is given ([`AssetFiles`] opened
//! it beneath the assets directory) and never opens a path: ServeFile opened
//! the path again, and what was checked need not have been what was sent.
//! A small file's bytes go out with the head in one write; a larger file's,
//! on rackboot's own boot-path connections, by sendfile(2) from the same
//! descriptor ([`FileRange`]); elsewhere (TLS, hyper) it is read in
//! [`READ_CHUNK`]s.
//!
//! [`AssetFiles`]: crate::assets::cache::AssetFiles

use std::fs::File;
use std::io::SeekFrom;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use httpdate::HttpDate;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::sendfile::FileRange;
use super::stream::READ_CHUNK;
use crate::assets::cache::Asset;

/// The response for `asset` (named `name` for its type) to a request with
/// `method` and `headers`. With `sendfile`, a 200/206 GET of a file too
/// large to be kept in memory carries a [`FileRange`] in its extensions in
/// place of a body.
pub fn respond(
    asset: Asset,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
    sendfile: bool,
) -> Response {
    let meta = asset.meta();
    let size = meta.len();
    let modified = meta.modified().ok().map(HttpDate::from);
    let date = |name| {
        let v = headers.get(name)?.to_str().ok()?;
        httpdate::parse_http_date(v).ok().map(HttpDate::from)
    };
    if let (Some(m), Some(since)) = (modified, date(header::IF_UNMODIFIED_SINCE))
        && since < m
    {
        return status(StatusCode::PRECONDITION_FAILED);
    }
    if let (Some(m), Some(since)) = (modified, date(header::IF_MODIFIED_SINCE))
        && since >= m
    {
        return status(StatusCode::NOT_MODIFIED);
    }

    let mime = mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, HeaderValue::from_static(mime))
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(m) = modified {
        builder = builder.header(header::LAST_MODIFIED, m.to_string());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| http_range_header::parse_range_header(r).and_then(|r| r.validate(size)));
    let unsatisfiable = |builder: axum::http::response::Builder, body: &'static str| {
        builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{size}"))
            .body(Body::from(body))
            .expect("static headers")
    };
    let (start, len) = match range {
        None => {
            builder = builder.header(header::CONTENT_LENGTH, size);
            (0, size)
        }
        Some(Ok(ranges)) => match ranges.as_slice() {
            [r] => {
                let len = if size == 0 {
                    0
                } else {
                    r.end() - r.start() + 1
                };
                builder = builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{size}", r.start(), r.end()),
                    )
                    .header(header::CONTENT_LENGTH, len);
                (*r.start(), len)
            }
            _ => return unsatisfiable(builder, "Cannot serve multipart range requests"),
        },
        Some(Err(_)) => return unsatisfiable(builder, ""),
    };
    if method == Method::HEAD {
        return builder.body(Body::empty()).expect("valid headers");
    }
    let file = match asset {
        // A small file (a loader's config, a script, an answer file) is in
        // memory and goes out with its headers in one write: less than
        // sendfile after a separate write of the headers (two segments on
        // the wire for a few hundred bytes).
        Asset::Small { bytes, .. } => {
            let body = bytes.slice(start as usize..(start + len) as usize);
            return builder.body(Body::from(body)).expect("valid headers");
        }
        Asset::File(opened) => opened.file,
    };
    if sendfile {
        return builder
            .extension(FileRange::new(file, start, len))
            .body(Body::empty())
            .expect("valid headers");
    }
    builder
        .body(stream(file, start, len))
        .expect("valid headers")
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

/// `len` bytes of `file` from `start`, read [`READ_CHUNK`] at a time.
fn stream(file: File, start: u64, len: u64) -> Body {
    let file = tokio::fs::File::from_std(file);
    let chunks = futures_lite::stream::unfold(
        (Some(file), start, len),
        move |(file, at, left)| async move {
            let mut file = file?;
            if left == 0 {
                return None;
            }
            let read = async {
                if at == start {
                    file.seek(SeekFrom::Start(at)).await?;
                }
                let mut buf = vec![0; READ_CHUNK.min(left as usize)];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "asset file shrank while it was being sent",
                    ));
                }
                buf.truncate(n);
                Ok(Bytes::from(buf))
            };
            match read.await {
                Ok(b) => {
                    let n = b.len() as u64;
                    Some((Ok(b), (Some(file), at + n, left - n)))
                }
                Err(e) => Some((Err(e), (None, at, 0))),
            }
        },
    );
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::Opened;
    use http_body_util::BodyExt;

    /// `bytes` as a file on disk, served from its descriptor.
    fn file(bytes: &[u8]) -> (tempfile::NamedTempFile, Asset) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        let file = f.reopen().unwrap();
        let meta = file.metadata().unwrap();
        (f, Asset::File(Opened { file, meta }))
    }

    /// `bytes` as a small file kept in memory.
    fn small(bytes: &[u8]) -> (tempfile::NamedTempFile, Asset) {
        let (f, asset) = file(bytes);
        let meta = asset.meta().clone();
        let bytes = Bytes::copy_from_slice(bytes);
        (f, Asset::Small { bytes, meta })
    }

    async fn get(headers: &[(&str, &str)], method: Method) -> (StatusCode, HeaderMap, Vec<u8>) {
        let bytes: Vec<u8> = (0..READ_CHUNK as u32 * 2 + 10).map(|i| i as u8).collect();
        let (_keep, f) = file(&bytes);
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let resp = respond(f, "vmlinuz", &method, &h, false);
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn a_small_file_is_sent_whole_or_in_part_from_memory() {
        let all: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let (_keep, f) = small(&all);
        let resp = respond(f, "a.cfg", &Method::GET, &HeaderMap::new(), false);
        let (parts, body) = resp.into_parts();
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body.collect().await.unwrap().to_bytes().to_vec(), all);
        let (_keep, f) = small(&all);
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, "bytes=290-".parse().unwrap());
        let resp = respond(f, "a.cfg", &Method::GET, &h, true);
        let (parts, body) = resp.into_parts();
        assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            body.collect().await.unwrap().to_bytes().to_vec(),
            &all[290..]
        );
    }

    #[tokio::test]
    async fn whole_ranges_head_and_conditions() {
        let all: Vec<u8> = (0..READ_CHUNK as u32 * 2 + 10).map(|i| i as u8).collect();
        let (s, h, b) = get(&[], Method::GET).await;
        assert_eq!((s, b.len()), (StatusCode::OK, all.len()));
        assert_eq!(b, all);
        assert_eq!(h[header::CONTENT_LENGTH], all.len().to_string().as_str());
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");

        let from = READ_CHUNK - 3;
        let range = format!("bytes={from}-{}", from + 9);
        let (s, h, b) = get(&[("range", &range)], Method::GET).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT);
        assert_eq!(b, &all[from..from + 10]);
        assert_eq!(
            h[header::CONTENT_RANGE],
            format!("bytes {from}-{}/{}", from + 9, all.len()).as_str()
        );

        let (s, h, _) = get(&[("range", "bytes=99999999-")], Method::GET).await;
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            h[header::CONTENT_RANGE],
            format!("bytes */{}", all.len()).as_str()
        );
        let (s, _, _) = get(&[("range", "bytes=0-1,4-5")], Method::GET).await;
        assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);

        let (s, h, b) = get(&[], Method::HEAD).await;
        assert_eq!((s, b.len()), (StatusCode::OK, 0));
        assert_eq!(h[header::CONTENT_LENGTH], all.len().to_string().as_str());

        let future = httpdate::fmt_http_date(
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        let (s, _, _) = get(&[("if-modified-since", &future)], Method::GET).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        let past = "Mon, 01 Jan 2001 00:00:00 GMT";
        let (s, _, _) = get(&[("if-modified-since", past)], Method::GET).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = get(&[("if-unmodified-since", past)], Method::GET).await;
        assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    }
}
