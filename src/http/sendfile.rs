//! Asset bodies by sendfile(2): the kernel hands the file's cached pages to
//! the socket, and no byte of a kernel or initrd is copied through rackboot.
//! With 50 nodes pulling a 64 MiB initrd, reading into a buffer and writing
//! it out again cost a fifth of the throughput a sendfile server gets.
//!
//! Only rackboot's own boot-path connections ([`super::listener`]) can do
//! it: TLS needs the bytes, and hyper never hands its socket over. The
//! request says the connection can ([`CanSendfile`]); the asset handler
//! then adds a [`FileRange`] to its response, and the connection sends that
//! instead of the response's body.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes per sendfile(2) call at most: a fast client on an idle server
/// still yields the thread between calls.
const PER_CALL: usize = 4 << 20;

/// In a request's extensions: its connection sends a [`FileRange`] in
/// place of the response body.
#[derive(Debug, Clone, Copy)]
pub struct CanSendfile;

type OnEnd = Box<dyn FnOnce() + Send>;

/// In a response's extensions: its body is `len` bytes of `file` from
/// `start` (the response's own body is dropped unread). `on_end` runs once
/// the last byte has been handed to the socket.
#[derive(Clone)]
pub struct FileRange(Arc<Inner>);

struct Inner {
    file: File,
    start: u64,
    len: u64,
    on_end: Mutex<Option<OnEnd>>,
}

impl FileRange {
    pub fn new(file: File, start: u64, len: u64) -> Self {
        FileRange(Arc::new(Inner {
            file,
            start,
            len,
            on_end: Mutex::new(None),
        }))
    }

    /// Runs `f` once the whole range has gone out (not if it was cut short).
    pub fn on_end(self, f: impl FnOnce() + Send + 'static) -> Self {
        *self.0.on_end.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
        self
    }

    pub fn len(&self) -> u64 {
        self.0.len
    }

    /// Sends the range on `tcp`. An error leaves the connection mid-body:
    /// the caller must close it. A client that leaves its receive window
    /// shut for `stall` (`http.send_timeout`) has the transfer given up (its
    /// boot slot then frees by `[admission] slot_timeout`).
    pub async fn send(&self, tcp: &TcpStream, stall: Duration) -> io::Result<()> {
        let Inner {
            file, start, len, ..
        } = &*self.0;
        let end = start + len;
        // Readahead as far as the kernel will for a sequential reader: a
        // file not yet in the page cache is read ahead of the socket, not
        // a page at a time on the worker thread.
        let _ = nix::fcntl::posix_fadvise(
            file.as_fd(),
            *start as i64,
            *len as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        let mut offset = *start as i64;
        while (offset as u64) < end {
            let want = (end - offset as u64).min(PER_CALL as u64) as usize;
            tokio::time::timeout(stall, tcp.writable())
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took nothing for {} (http.send_timeout)",
                            humantime::format_duration(stall)
                        ),
                    )
                })??;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(tcp.as_fd(), file.as_fd(), Some(&mut offset), want)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    // The file is shorter than when its length was sent.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the asset file shrank while it was sent",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let on_end = self
            .0
            .on_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(f) = on_end {
            f();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_range_of_the_file_arrives_whole_and_on_end_runs_once() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        });
        let (server, _) = listener.accept().await.unwrap();
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        let range = FileRange::new(f, 1000, 2_500_000).on_end(move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        range.send(&server, Duration::from_secs(60)).await.unwrap();
        drop(server);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 2_500_000);
        assert!(
            got == data[1000..2_501_000],
            "the bytes of the range, in order"
        );
        assert_eq!(ended.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_and_not_an_end() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"short").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        let range = FileRange::new(f, 0, 100).on_end(move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        let err = range
            .send(&server, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(ended.load(Ordering::SeqCst), 0);
    }
}
