//! Streaming assets out: how big a read is, and knowing when a whole file
//! has gone out.
//!
//! Kernels and initrds are hundreds of MB. Each read of the file is a trip
//! to tokio's blocking pool and back, so reads are large ([`READ_CHUNK`]):
//! a 256 MiB initrd is a thousand reads, not four thousand. Each connection
//! streams on its own (no lock is shared between downloads), so concurrent
//! downloads share the link as TCP shares it.
//!
//! [`OnEnd`] wraps a response body and runs a callback once the last byte
//! has been handed to the connection: that is when a node's last initrd
//! has gone out and its boot slot can go to the next node.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Bytes per read of an asset file. tokio's file reads go through a
/// buffer of at most 2 MiB; past a few hundred KiB the per-read overhead
/// is lost in the copy itself, and a larger chunk only holds more memory
/// per connection (1000 concurrent downloads: 256 MiB).
pub const READ_CHUNK: usize = 256 * 1024;

/// A body that calls `on_end` once `inner` has yielded its last byte (not
/// when it is dropped early: a download cut short did not finish).
///
/// "Last" is whichever comes first: `length` bytes (the response's
/// Content-Length; else the body's exact size, if it knows it), the body
/// saying it is at its end, or its end of stream. hyper stops polling a
/// body once it has written Content-Length bytes or the body says it is at
/// its end, so waiting for the end of stream alone would never fire.
pub struct OnEnd<B, F: FnOnce()> {
    inner: B,
    /// Bytes still to come, when the size is known.
    remaining: Option<u64>,
    on_end: Option<F>,
}

impl<B: Body, F: FnOnce()> OnEnd<B, F> {
    pub fn new(inner: B, length: Option<u64>, on_end: F) -> Self {
        OnEnd {
            remaining: length.or(inner.size_hint().exact()),
            inner,
            on_end: Some(on_end),
        }
    }

    fn end(&mut self) {
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl<B, F> Body for OnEnd<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce() + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.end(),
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(r) = self.remaining.as_mut() {
                    *r = r.saturating_sub(n);
                }
                if self.remaining == Some(0) || self.inner.is_end_stream() {
                    self.end();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn on_end_runs_once_after_the_last_byte_and_not_when_cut_short() {
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        let body = OnEnd::new(axum::body::Body::from("0123456789"), None, move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(body.size_hint().exact(), Some(10));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"0123456789");
        assert_eq!(ended.load(Ordering::SeqCst), 1);

        let e = ended.clone();
        let body = OnEnd::new(axum::body::Body::from("abc"), None, move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        drop(body);
        assert_eq!(ended.load(Ordering::SeqCst), 1, "dropped unread: not ended");

        // As hyper reads: one frame, then it stops because Content-Length
        // bytes are out (a file body does not know its own size).
        let e = ended.clone();
        let stream = futures_lite::stream::iter([Ok::<_, std::io::Error>(Bytes::from("xyz"))]);
        let mut body = OnEnd::new(axum::body::Body::from_stream(stream), Some(3), move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().map(|d| d.len()), Some(3));
        assert_eq!(ended.load(Ordering::SeqCst), 2, "ended at its last byte");
        assert!(body.frame().await.is_none());
        assert_eq!(ended.load(Ordering::SeqCst), 2, "and only once");
    }
}
