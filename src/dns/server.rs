//! DNS over UDP and TCP for rackboot's zones, on sockets the caller has already bound.
//!
//! The transports are small loops of our own around [`Responder`] (which decodes and encodes
//! with hickory-proto): a UDP question is answered inline, in the loop that received it, without
//! a task, a channel or an allocation beyond decoding, because answers come from memory; the
//! questions waiting are taken, and their answers sent, a batch per system call
//! ([`super::batch`]). That is what lets one core keep up with dnsmasq and NSD; hickory-server
//! spends a task and two channel hops per question. Only forwarded questions, which wait on an
//! upstream, get a task of their own.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::batch::{Inbox, Outbox};
use super::{
    DnsError,
    forward::Forwarder,
    respond::{Outcome, Responder, Transport},
    zone::Zone,
};
use crate::contain;
use crate::metrics::{Metrics, Service};
use crate::names::NameTable;

/// How long a TCP connection may stay silent (between or inside messages) before it is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP connections served at once; more are closed at accept, so a client opening connections
/// without end cannot exhaust tasks or file descriptors.
const TCP_MAX_CONNECTIONS: usize = 128;

/// Questions answered back to back (in batches of up to [`super::batch::BATCH`]) before the UDP
/// loop lets the runtime's other tasks run: under a flood the socket is always readable, and
/// DHCP, TFTP and HTTP share the runtime.
const UDP_BURST: usize = 64;

/// Largest DNS message over UDP that we read; longer datagrams are truncated by the kernel and
/// then fail to decode (FORMERR).
const UDP_RECV_BUFFER: usize = 4096;

/// Everything both transports share.
struct Dns {
    responder: Responder,
    forwarder: Option<Forwarder>,
    /// Forwarded questions and TCP connections, so shutdown can wait for them.
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

/// Answers questions for `zone` from `names` over `udp` and `tcp` until `cancel` fires, then
/// stops both. Names outside the zones are forwarded to `forwarders` when the client asks for
/// recursion and `forwarders` is not empty, else refused. Every message is counted in
/// `metrics`.
///
/// Returns an error when either transport stops on its own (the other is then stopped too), so
/// the caller learns that rackboot no longer answers DNS. A malformed packet never stops
/// serving: it gets FORMERR or is dropped.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    zone: Zone,
    names: Arc<NameTable>,
    forwarders: Vec<SocketAddr>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    info!(
        udp = ?udp.local_addr().ok(),
        tcp = ?tcp.local_addr().ok(),
        domain = %zone.domain(),
        reverse = ?zone.subnets(),
        ?forwarders,
        "serving DNS"
    );
    let forwarding = !forwarders.is_empty();
    let stop = cancel.child_token();
    let dns = Arc::new(Dns {
        responder: Responder::new(zone, names, forwarding, Arc::clone(&metrics)),
        forwarder: forwarding.then(|| Forwarder::new(forwarders)),
        tasks: TaskTracker::new(),
        metrics,
        cancel: stop.clone(),
    });

    let result = tokio::select! {
        result = serve_udp(Arc::new(udp), Arc::clone(&dns)) => result,
        result = serve_tcp(tcp, Arc::clone(&dns)) => result,
    };
    // Whichever ended, the other transport and every forward and connection end with it.
    stop.cancel();
    dns.tasks.close();
    dns.tasks.wait().await;
    match result {
        Ok(()) => {
            info!("DNS stopped");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, dns: Arc<Dns>) -> Result<(), DnsError> {
    // A fleet booting at once asks for its names at once.
    crate::udp_buffer::deepen(socket2::SockRef::from(&*socket), "DNS");
    let fd = socket.as_raw_fd();
    let mut inbox = Inbox::new(UDP_RECV_BUFFER);
    let mut outbox = Outbox::default();
    let mut burst = 0;
    loop {
        let taken = match socket.try_io(Interest::READABLE, || inbox.receive(fd)) {
            Ok(taken) => taken,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                burst = 0;
                tokio::select! {
                    biased;
                    () = dns.cancel.cancelled() => return Ok(()),
                    ready = socket.readable() => ready.map_err(|e| stopped("UDP", e))?,
                }
                continue;
            }
            Err(error) if is_fatal(&error) => return Err(stopped("UDP", error)),
            Err(error) => {
                // ICMP errors from earlier sends (a client gone away) surface here; not ours.
                debug!(%error, "DNS UDP receive error");
                continue;
            }
        };
        for i in 0..taken {
            let (question, src) = inbox.get(i);
            // Port 0 cannot be answered; such a source is spoofed or broken.
            let Some(src) = src.filter(|src| src.port() != 0) else {
                continue;
            };
            let out = outbox.next();
            let outcome = contain::request(&dns.metrics, Service::Dns, src, question, || {
                dns.responder.respond(question, Transport::Udp, out)
            });
            match outcome.unwrap_or(Outcome::Drop) {
                Outcome::Reply => outbox.queue(src),
                Outcome::Forward => forward_udp(&dns, &socket, question, src),
                Outcome::Drop => {}
            }
        }
        send_all(&socket, &mut outbox).await;
        burst += taken;
        if burst >= UDP_BURST {
            burst = 0;
            if dns.cancel.is_cancelled() {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Sends the answers of one batch together; what the kernel will not take at once (a full
/// send buffer, an error for one address) goes one at a time, waiting for room.
async fn send_all(socket: &UdpSocket, outbox: &mut Outbox) {
    let fd = socket.as_raw_fd();
    let mut sent = 0;
    while sent < outbox.len() {
        match socket.try_io(Interest::WRITABLE, || outbox.send(fd, sent)) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    for (bytes, to) in outbox.queued().skip(sent) {
        send_udp(socket, bytes, to).await;
    }
    outbox.clear();
}

async fn send_udp(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    let sent = match socket.try_send_to(bytes, to) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => socket.send_to(bytes, to).await,
        other => other,
    };
    if let Err(error) = sent {
        debug!(%error, %to, "could not send a DNS response");
    }
}

/// Hands a question for an outside name to a task of its own, or answers SERVFAIL at once when
/// too many are out already.
fn forward_udp(dns: &Arc<Dns>, socket: &Arc<UdpSocket>, query: &[u8], client: SocketAddr) {
    let Some(forwarder) = &dns.forwarder else {
        return;
    };
    let limit = udp_limit(query);
    let Some(slot) = forwarder.slot() else {
        warn!("too many DNS questions being forwarded at once; answering SERVFAIL");
        dns.metrics.dns_forward_failed();
        let mut out = Vec::new();
        if Responder::error_response(query, ResponseCode::ServFail, &mut out) == Outcome::Reply {
            let _ = socket.try_send_to(&out, client);
        }
        return;
    };
    let (dns, socket, query) = (Arc::clone(dns), Arc::clone(socket), query.to_vec());
    dns.tasks.clone().spawn(async move {
        let _slot = slot;
        let Some(forwarder) = &dns.forwarder else {
            return;
        };
        let answer = tokio::select! {
            () = dns.cancel.cancelled() => return,
            answer = forwarder.forward(&query, limit) => answer,
        };
        let bytes = match answer {
            Some(answer) => answer,
            None => {
                dns.metrics.dns_forward_failed();
                let mut out = Vec::new();
                if Responder::error_response(&query, ResponseCode::ServFail, &mut out)
                    != Outcome::Reply
                {
                    return;
                }
                out
            }
        };
        send_udp(&socket, &bytes, client).await;
    });
}

/// The largest UDP response the client of `query` takes: its EDNS payload size, at least 512.
fn udp_limit(query: &[u8]) -> usize {
    hickory_proto::op::Message::from_vec(query)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .unwrap_or(512)
        .max(512)
}

async fn serve_tcp(listener: TcpListener, dns: Arc<Dns>) -> Result<(), DnsError> {
    let connections = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            () = dns.cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_fatal(&error) => return Err(stopped("TCP", error)),
                Err(error) => {
                    // EMFILE, ECONNABORTED…: this connection is lost, the listener is fine.
                    debug!(%error, "DNS TCP accept failed");
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            debug!(%peer, "too many DNS TCP connections; closing this one");
            continue;
        };
        let conn_dns = Arc::clone(&dns);
        dns.tasks.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = conn_dns.cancel.cancelled() => {}
                () = serve_connection(stream, peer, &conn_dns) => {}
            }
        });
    }
}

/// Answers length-prefixed messages on one connection, in order, until the client closes it,
/// stays silent for [`TCP_IDLE_TIMEOUT`] or sends something unanswerable.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, dns: &Dns) {
    let mut out = Vec::new();
    loop {
        let Ok(Ok(len)) = timeout(TCP_IDLE_TIMEOUT, stream.read_u16()).await else {
            return;
        };
        let mut message = vec![0u8; usize::from(len)];
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut message)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let outcome = contain::request(&dns.metrics, Service::Dns, peer, &message, || {
            dns.responder.respond(&message, Transport::Tcp, &mut out)
        });
        let reply = match outcome.unwrap_or(Outcome::Drop) {
            Outcome::Reply => std::mem::take(&mut out),
            Outcome::Drop => {
                debug!(%peer, "DNS TCP message dropped; closing the connection");
                return;
            }
            Outcome::Forward => {
                let answer = match &dns.forwarder {
                    Some(forwarder) => forwarder.forward(&message, usize::from(u16::MAX)).await,
                    None => None,
                };
                match answer {
                    Some(answer) => answer,
                    None => {
                        dns.metrics.dns_forward_failed();
                        if Responder::error_response(&message, ResponseCode::ServFail, &mut out)
                            != Outcome::Reply
                        {
                            return;
                        }
                        std::mem::take(&mut out)
                    }
                }
            }
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        out = reply;
    }
}

/// Errors after which a socket will never work again.
fn is_fatal(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL)
    )
}

fn stopped(transport: &'static str, source: std::io::Error) -> DnsError {
    DnsError::Stopped {
        transport,
        source: Some(source),
    }
}
