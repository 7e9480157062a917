//! How much of the HTTP service one client can hold: connections (in all,
//! per client address, and a reserve kept for addresses that hold few) and
//! time (to send a request head, to send a body, to take a response, and to
//! sit idle between requests).
//!
//! Every connection rackboot accepts costs a file descriptor until it
//! closes. Left unbounded, a host on the boot network that opens a thousand
//! connections and says nothing takes every descriptor the process has, and
//! the boot scripts and kernels of every machine behind it stop being served.
//! So the listeners (plain HTTP in [`super::listener`], HTTPS in
//! [`super::tls`]) ask [`Limits::admit`] before serving a connection, hold
//! the [`Ticket`] it gives while the connection lives, and apply the
//! [`Timeouts`] on both of their paths: rackboot's own boot-path loop and
//! hyper's. What was refused or timed out is counted in `/metrics`.
//!
//! The reserve: past `max_connections - reserve` open connections, only an
//! address that holds fewer than [`RESERVE_HELD`] may open another. A booting
//! machine (one keep-alive connection for its script, kernel and initrds),
//! a Prometheus scraper and an admin's curl hold one or none; a flooding host
//! holds many. Many flooding hosts can still fill the reserve, each slowly,
//! but not hold it: the timeouts close what they do not use.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::metrics::{ConnRefusal, HttpTimeout};
use crate::metrics::Metrics;

/// An address holding fewer connections than this may use the reserve.
pub const RESERVE_HELD: usize = 2;
/// The most connections `max_connections` defaults to, however high the
/// open-files limit: each costs memory as well as a descriptor.
const AUTO_MAX: u64 = 8192;

/// How long a client may take, per phase (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a connection's opening, or from the first byte of a later
    /// request, to the end of the request head (`header_timeout`).
    pub header: Duration,
    /// From the end of the head to the end of the request body (`body_timeout`).
    pub body: Duration,
    /// Between a response and the next request's first byte (`idle_timeout`).
    pub idle: Duration,
    /// How long a response may wait for the client to take more of it (`send_timeout`).
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(20),
            send: Duration::from_secs(30),
        }
    }
}

/// The connection bounds as configured (`[http]`); `None` is "from the
/// open-files limit", resolved at start-up by [`Bounds::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// Connections open at once, HTTP and HTTPS together (`max_connections`).
    pub max_connections: Option<usize>,
    /// Connections one client address may hold (`max_connections_per_address`; 0: no limit).
    pub per_address: usize,
    /// The last connections of `max_connections`, kept for addresses
    /// holding fewer than [`RESERVE_HELD`] (`reserved_connections`).
    pub reserve: Option<usize>,
    pub timeouts: Timeouts,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            max_connections: None,
            per_address: 32,
            reserve: None,
            timeouts: Timeouts::default(),
        }
    }
}

/// The numbers [`Limits`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub max_connections: usize,
    pub per_address: usize,
    pub reserve: usize,
}

impl Bounds {
    /// Fills in what the config left to the open-files limit (`open_files`,
    /// the soft `RLIMIT_NOFILE` rackboot runs with): half of it for HTTP
    /// connections (the other half for TFTP transfers, asset files, DNS over
    /// TCP and the store), at most 8192, and an eighth of that as the reserve.
    pub fn resolve(&self, open_files: u64) -> Resolved {
        let max = self
            .max_connections
            .unwrap_or_else(|| (open_files / 2).clamp(16, AUTO_MAX) as usize)
            .max(1);
        let reserve = self.reserve.unwrap_or(max / 8).min(max - 1);
        Resolved {
            max_connections: max,
            per_address: self.per_address,
            reserve,
        }
    }
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `max_connections_per_address` already.
    PerAddress,
    /// Only the reserve is left, and its address holds connections already.
    Reserve,
    /// `max_connections` are open.
    Full,
}

impl Refused {
    fn metric(self) -> ConnRefusal {
        match self {
            Refused::PerAddress => ConnRefusal::PerAddress,
            Refused::Reserve => ConnRefusal::Reserve,
            Refused::Full => ConnRefusal::Full,
        }
    }
}

/// Whether one more connection may open from an address holding `held`
/// while `open` are open in all.
pub fn decide(open: usize, held: usize, r: &Resolved) -> Result<(), Refused> {
    if r.per_address > 0 && held >= r.per_address {
        Err(Refused::PerAddress)
    } else if open >= r.max_connections {
        Err(Refused::Full)
    } else if open >= r.max_connections - r.reserve && held >= RESERVE_HELD {
        Err(Refused::Reserve)
    } else {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The connection bounds and timeouts every HTTP and HTTPS listener
/// shares: one budget of descriptors.
#[derive(Debug)]
pub struct Limits {
    pub resolved: Resolved,
    pub timeouts: Timeouts,
    metrics: Arc<Metrics>,
    open: Mutex<Open>,
}

impl Limits {
    pub fn new(resolved: Resolved, timeouts: Timeouts, metrics: Arc<Metrics>) -> Limits {
        Limits {
            resolved,
            timeouts,
            metrics,
            open: Mutex::new(Open::default()),
        }
    }

    /// A ticket for one more connection from `ip`, or why not (counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.by_address.get(&ip).copied().unwrap_or(0);
        if let Err(why) = decide(open.total, held, &self.resolved) {
            drop(open);
            self.metrics.http_connection_refused(why.metric());
            return Err(why);
        }
        open.total += 1;
        *open.by_address.entry(ip).or_default() += 1;
        drop(open);
        self.metrics.http_connections(1);
        Ok(Ticket {
            limits: self.clone(),
            ip,
        })
    }

    /// Counts a connection closed for taking too long.
    pub fn timed_out(&self, phase: HttpTimeout) {
        self.metrics.http_timed_out(phase);
    }

    /// What a refused plain-HTTP client is told before the connection
    /// closes (written if the socket takes it at once; never waited for).
    pub fn refusal(&self, why: Refused, ip: IpAddr) -> String {
        let (status, text) = match why {
            Refused::PerAddress => (
                "429 Too Many Requests",
                format!(
                    "too many connections from {ip}: at most {} at once (http.max_connections_per_address)",
                    self.resolved.per_address
                ),
            ),
            Refused::Reserve | Refused::Full => (
                "503 Service Unavailable",
                "rackboot has as many HTTP connections open as it allows (http.max_connections); try again"
                    .to_string(),
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
             retry-after: 5\r\nconnection: close\r\n\r\n{text}\n",
            text.len() + 1
        )
    }
}

/// One open connection's place among [`Limits`]; given back on drop.
#[derive(Debug)]
pub struct Ticket {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
        drop(open);
        self.limits.metrics.http_connections(-1);
    }
}

/// A request body that must arrive whole within `body_timeout` of its head.
/// Past it, the body fails (the handler answers 400 with this message, and
/// hyper closes the connection, whose body was not read to its end).
pub struct DeadlineBody<B> {
    inner: B,
    /// `None` for a request without a body (no timer to set up).
    deadline: Option<Pin<Box<Sleep>>>,
    limit: Duration,
    limits: Arc<Limits>,
}

impl<B: Body> DeadlineBody<B> {
    pub fn new(inner: B, limits: Arc<Limits>) -> Self {
        let limit = limits.timeouts.body;
        DeadlineBody {
            deadline: (!inner.is_end_stream()).then(|| Box::pin(tokio::time::sleep(limit))),
            inner,
            limit,
            limits,
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive within {} (http.body_timeout)",
    humantime::format_duration(*.0)
)]
pub struct BodyTimedOut(Duration);

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.limits.timed_out(HttpTimeout::Body);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection hyper serves, with a bound on how long a write may wait for
/// the client to take bytes ([`Timeouts::send`]), and a note of whether
/// anything was read since the last write (to tell a slow head from an idle
/// connection when hyper's header timer fires).
pub struct Guarded<T> {
    inner: T,
    stall: Duration,
    /// Armed while a write waits for the client.
    stalled: Option<Pin<Box<Sleep>>>,
    read_since_write: Arc<AtomicBool>,
    limits: Arc<Limits>,
}

impl<T> Guarded<T> {
    pub fn new(inner: T, limits: Arc<Limits>) -> Self {
        Guarded {
            inner,
            stall: limits.timeouts.send,
            stalled: None,
            read_since_write: Arc::new(AtomicBool::new(false)),
            limits,
        }
    }

    /// Whether request bytes came since the last response bytes went out
    /// (shared: still readable once hyper has taken the connection).
    pub fn read_since_write(&self) -> Arc<AtomicBool> {
        self.read_since_write.clone()
    }

    /// `poll` made no progress: time out once the client has taken
    /// nothing for the whole stall time.
    fn waiting<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.limits.timed_out(HttpTimeout::Send);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took nothing for {} (http.send_timeout)",
                            humantime::format_duration(stall)
                        ),
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.read_since_write.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.read_since_write.store(false, Ordering::Relaxed);
        }
        self.waiting(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.read_since_write.store(false, Ordering::Relaxed);
        }
        self.waiting(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.waiting(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.waiting(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_open_files_limit() {
        let b = Bounds::default();
        let r = b.resolve(1024);
        assert_eq!((r.max_connections, r.reserve, r.per_address), (512, 64, 32));
        assert_eq!(b.resolve(1 << 20).max_connections, 8192, "capped");
        assert_eq!(b.resolve(20).max_connections, 16, "a floor");
        let set = Bounds {
            max_connections: Some(100),
            reserve: Some(500),
            ..Bounds::default()
        };
        assert_eq!(set.resolve(1024).reserve, 99, "the reserve leaves one");
    }

    #[test]
    fn per_address_cap_then_the_reserve_for_addresses_holding_few_then_full() {
        let r = Resolved {
            max_connections: 100,
            per_address: 10,
            reserve: 20,
        };
        let cases = [
            // (open in all, held by this address, result)
            (0, 0, Ok(())),
            (50, 9, Ok(())),
            (50, 10, Err(Refused::PerAddress)),
            // Below the reserve anyone under their cap gets in.
            (79, 5, Ok(())),
            // In the reserve: only addresses holding fewer than RESERVE_HELD.
            (80, 0, Ok(())),
            (80, 1, Ok(())),
            (80, 2, Err(Refused::Reserve)),
            (99, 0, Ok(())),
            (100, 0, Err(Refused::Full)),
            (100, 10, Err(Refused::PerAddress)),
        ];
        for (open, held, want) in cases {
            assert_eq!(decide(open, held, &r), want, "open {open}, held {held}");
        }
        let unlimited = Resolved {
            per_address: 0,
            ..r
        };
        assert_eq!(
            decide(10, 10_000, &unlimited),
            Ok(()),
            "0: no per-address cap"
        );
    }

    #[tokio::test]
    async fn tickets_are_counted_per_address_and_given_back_on_drop() {
        let metrics = Arc::new(Metrics::new(&[]));
        let limits = Arc::new(Limits::new(
            Resolved {
                max_connections: 4,
                per_address: 3,
                reserve: 1,
            },
            Timeouts::default(),
            metrics,
        ));
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let _a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        let a3 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerAddress);
        drop(a3);
        let b1 = limits.admit(b).unwrap();
        // 3 of 4 open: the last is the reserve, and a holds two.
        assert_eq!(limits.admit(a).unwrap_err(), Refused::Reserve);
        let c1 = limits.admit(c).unwrap();
        assert_eq!(limits.admit(c).unwrap_err(), Refused::Full);
        drop(c1);
        drop(b1);
        assert!(limits.admit(a).is_ok(), "tickets given back on drop");
    }
}
