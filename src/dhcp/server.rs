//! The DHCP socket loop: receive, classify, ask the lease module and boot
//! policy, reply. One bad packet costs one log line, never the server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use dhcproto::v4::{Message, MessageType};
use dhcproto::{Encodable, Encoder};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::classify::{Request, Unanswerable, classify};
use super::metrics::{DhcpReply, DhcpType, IgnoreReason};
use super::reply;
use super::wire;
use crate::config::SubnetMode;
use crate::contain;
pub use crate::control::dhcp_client::Subnet;
use crate::control::dhcp_client::{Answer, DhcpClients};
use crate::metrics::{Metrics, Service};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot server port (proxyDHCP's second round).
pub const BOOT_SERVER_PORT: u16 = 4011;

/// Everything the DHCP service needs, passed in explicitly.
pub struct DhcpContext {
    /// What happens when a client asks: the one call per request.
    pub clients: Arc<DhcpClients>,
    pub subnets: Vec<Subnet>,
    /// The subnet of the boot interface itself (requests without a relay).
    pub direct: Option<usize>,
    pub limits: std::sync::Mutex<super::ratelimit::RateLimits>,
    /// The origin of the rate limiter's clock.
    pub started: std::time::Instant,
    pub metrics: Arc<Metrics>,
}

impl DhcpContext {
    /// The subnet a request belongs to: the relay's (by giaddr); for one heard
    /// directly, the subnet of the client's own address (`ciaddr`) when it has
    /// one we serve, else the boot interface's own. A client behind a relay
    /// renews by unicast straight to the server, without the relay and so
    /// without giaddr (RFC 2131 §4.4.5): only its ciaddr says where it is.
    pub fn subnet_for(&self, relay: Option<Ipv4Addr>, ciaddr: Ipv4Addr) -> Option<&Subnet> {
        let containing = |ip: Ipv4Addr| self.subnets.iter().find(|s| s.params.subnet.contains(&ip));
        match relay {
            Some(giaddr) => containing(giaddr),
            None if !ciaddr.is_unspecified() => {
                containing(ciaddr).or_else(|| self.direct.map(|i| &self.subnets[i]))
            }
            None => self.direct.map(|i| &self.subnets[i]),
        }
    }
}

/// Binds the DHCP server socket on `interface` only: rackboot must never
/// answer DHCP on a network it was not told to serve. No SO_REUSEADDR: a
/// second DHCP server on the same interface must fail to start rather than
/// answer beside this one (servers bound to other interfaces do not clash).
pub fn bind(interface: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    crate::udp_buffer::deepen(socket2::SockRef::from(&s), "DHCP");
    s.set_broadcast(true)?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds the DHCP server socket for a boot subnet in proxy mode, where the
/// address server may run on this very host and interface (dnsmasq, ISC
/// dhcpd): both bind port 67 with SO_REUSEADDR, and each gets a copy of every
/// broadcast. A unicast to port 67, such as a renewal sent to that server,
/// reaches only one of the sockets (the one bound last), so unless relays must
/// reach rackboot too (`broadcast_only` false), rackboot binds the broadcast
/// address and leaves every unicast to the address server. Replies still
/// leave from the interface's address: Linux picks the source address by
/// route for a socket bound to a broadcast address.
pub fn bind_proxy(interface: &str, broadcast_only: bool) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    crate::udp_buffer::deepen(socket2::SockRef::from(&s), "DHCP");
    s.set_broadcast(true)?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(interface.as_bytes()))?;
    let addr = if broadcast_only {
        Ipv4Addr::BROADCAST
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    s.bind(&SocketAddr::from((addr, SERVER_PORT)).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Requests whose answer waits on the store, handled at once; beyond this the
/// socket buffer queues them. A storm costs queueing, never unbounded memory.
const IN_FLIGHT: usize = 512;

/// Serves until `cancel` fires.
///
/// A request is answered in the receive loop when its answer needs nothing
/// that waits (the usual case: the store answers from memory and makes leases
/// durable with one append), so replies leave at the pace requests are
/// handled, one by one, as from a single-threaded server: a burst of replies
/// after a pause would overflow a client's (or relay's) receive buffer. A
/// request that has to wait (a store commit) continues as a task of its own,
/// so it never holds up the others.
pub async fn serve(
    socket: UdpSocket,
    ctx: Arc<DhcpContext>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; 1500];
    loop {
        let Some((len, peer, received)) = receive(&socket, &mut buf, &cancel).await? else {
            return Ok(());
        };
        let packet = buf[..len].to_vec();
        let c = ctx.clone();
        let mut answer = Box::pin(async move {
            let handled = handle(&c, &packet, peer);
            contain::request_async(&c.metrics, Service::Dhcp, peer, &packet, handled)
                .await
                .flatten()
        });
        let reply = match futures_lite::future::poll_once(&mut answer).await {
            Some(reply) => reply,
            None => {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return Ok(());
                };
                let (ctx, socket) = (ctx.clone(), socket.clone());
                tokio::spawn(async move {
                    if let Some((reply, dest)) = answer.await {
                        ctx.metrics.dhcp_decided(received.elapsed());
                        send(&socket, &reply, dest).await;
                    }
                    drop(slot);
                });
                continue;
            }
        };
        if let Some((reply, dest)) = reply {
            ctx.metrics.dhcp_decided(received.elapsed());
            send(&socket, &reply, dest).await;
        }
    }
}

/// The next datagram, its sender and when it came; `None` once `cancel` fires.
async fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    cancel: &CancellationToken,
) -> io::Result<Option<(usize, SocketAddr, Instant)>> {
    tokio::select! {
        _ = cancel.cancelled() => Ok(None),
        r = socket.recv_from(buf) => r.map(|(len, peer)| Some((len, peer, Instant::now()))),
    }
}

/// The PXE boot server on port 4011 (PXE 2.1 §2.2.6), for proxy subnets:
/// UEFI and many PXE ROMs take the boot file from a REQUEST sent here after
/// the proxyDHCP offer, not from the offer itself. Answered to the sender.
pub async fn serve_boot_server(
    socket: UdpSocket,
    ctx: Arc<DhcpContext>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1500];
    loop {
        let Some((len, peer, received)) = receive(&socket, &mut buf, &cancel).await? else {
            return Ok(());
        };
        let packet = &buf[..len];
        let answered = boot_server_answer(&ctx, packet, peer);
        let answered =
            contain::request_async(&ctx.metrics, Service::PxeBootServer, peer, packet, answered);
        if let Some(reply) = answered.await.flatten() {
            ctx.metrics.dhcp_replied(DhcpReply::Ack);
            ctx.metrics.dhcp_decided(received.elapsed());
            send(&socket, &reply, peer).await;
        }
    }
}

async fn boot_server_answer(ctx: &DhcpContext, packet: &[u8], peer: SocketAddr) -> Option<Message> {
    let msg = wire::decode_request(packet).ok();
    ctx.metrics
        .dhcp_received(DhcpType::of(msg.as_ref().and_then(|m| m.opts().msg_type())));
    let msg = msg?;
    let req = classify(&msg).ok()?;
    if req.kind != MessageType::Request {
        return None;
    }
    let SocketAddr::V4(from) = peer else {
        return None;
    };
    let subnet = ctx
        .subnets
        .iter()
        .find(|s| s.mode == SubnetMode::Proxy && s.params.subnet.contains(from.ip()))?;
    match ctx
        .clients
        .asked_boot_server(subnet, &req, *from.ip())
        .await
    {
        Ok(Answer::Proxy { boot }) => Some(reply::proxy_offer(
            &msg,
            MessageType::Ack,
            &boot,
            &subnet.params,
        )),
        Ok(Answer::Ignored(why)) => {
            ctx.metrics.dhcp_ignored(why);
            None
        }
        Ok(_) => None,
        Err(e) => {
            tracing::error!(mac = %req.client.mac, error = %e, "cannot answer PXE boot server request");
            ctx.metrics.dhcp_ignored(IgnoreReason::Error);
            None
        }
    }
}

async fn send(socket: &UdpSocket, reply: &Message, dest: SocketAddr) {
    let mut out = Vec::with_capacity(576);
    if let Err(e) = reply.encode(&mut Encoder::new(&mut out)) {
        tracing::error!(error = %e, "cannot encode DHCP reply");
        return;
    }
    // Firmware DHCP clients may drop replies shorter than BOOTP's 300 bytes.
    if out.len() < 300 {
        out.resize(300, 0);
    }
    if let Err(e) = socket.send_to(&out, dest).await {
        tracing::warn!(%dest, error = %e, "cannot send DHCP reply");
    }
}

/// One packet in, at most one reply out (and where to send it).
pub async fn handle(
    ctx: &DhcpContext,
    packet: &[u8],
    peer: SocketAddr,
) -> Option<(Message, SocketAddr)> {
    let metrics = &ctx.metrics;
    let msg = match wire::decode_request(packet) {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(%peer, error = %e, "ignoring DHCP packet that does not parse");
            metrics.dhcp_received(DhcpType::Other);
            metrics.dhcp_ignored(IgnoreReason::Malformed);
            return None;
        }
    };
    metrics.dhcp_received(DhcpType::of(msg.opts().msg_type()));
    let req = match classify(&msg) {
        Ok(r) => r,
        Err(why) => {
            tracing::debug!(%peer, %why, "ignoring DHCP packet");
            metrics.dhcp_ignored(match why {
                Unanswerable::NotRequest | Unanswerable::WrongType(_) => IgnoreReason::NotForUs,
                Unanswerable::NotEthernet(_) | Unanswerable::NoMessageType => {
                    IgnoreReason::Malformed
                }
                Unanswerable::BadChaddr(_) => IgnoreReason::BadChaddr,
            });
            return None;
        }
    };
    let subnet = ctx.subnet_for(req.client.relay, req.ciaddr);
    // Checked before the rate limits: a forged giaddr must not spend the
    // real relay's budget.
    if let (Some(giaddr), Some(s)) = (req.client.relay, subnet)
        && !s.relays.is_empty()
        && !matches!(peer, SocketAddr::V4(p) if s.relays.contains(p.ip()))
    {
        tracing::debug!(mac = %req.client.mac, %giaddr, %peer, subnet = %s.params.subnet, "ignoring relayed request from a source not in the subnet's relays");
        metrics.dhcp_ignored(IgnoreReason::UntrustedRelay);
        return None;
    }
    let limited = ctx
        .limits
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(req.client.mac, req.client.relay, ctx.started.elapsed());
    if let Err(which) = limited {
        tracing::debug!(mac = %req.client.mac, relay = ?req.client.relay, ?which, "rate limited");
        metrics.dhcp_ignored(IgnoreReason::RateLimited);
        return None;
    }
    let Some(subnet) = subnet else {
        match req.client.relay {
            Some(relay) => {
                tracing::info!(mac = %req.client.mac, %relay, "ignoring relayed request: no [[dhcp.subnet]] contains the relay address")
            }
            None => {
                tracing::info!(mac = %req.client.mac, "ignoring request: no [[dhcp.subnet]] contains rackboot's own address")
            }
        }
        metrics.dhcp_ignored(IgnoreReason::NoSubnet);
        return None;
    };
    let answer = match ctx.clients.asked(subnet, &req).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(mac = %req.client.mac, error = %e, "cannot answer DHCP request");
            metrics.dhcp_ignored(IgnoreReason::Error);
            return None;
        }
    };
    let reply = encode(&msg, &req, subnet, answer, metrics)?;
    if let Some(kind) = DhcpReply::of(reply.opts().msg_type()) {
        metrics.dhcp_replied(kind);
    }
    let dest = destination(&req, &reply);
    Some((reply, dest))
}

/// The reply that says `answer`, if it says anything.
fn encode(
    msg: &Message,
    req: &Request,
    subnet: &Subnet,
    answer: Answer,
    metrics: &Metrics,
) -> Option<Message> {
    let p = &subnet.params;
    Some(match answer {
        Answer::Lease {
            ack,
            ip,
            seconds,
            hostname,
            boot,
        } => {
            let kind = if ack {
                MessageType::Ack
            } else {
                MessageType::Offer
            };
            let grant = Some(reply::Grant { ip, seconds });
            reply::answer(
                msg,
                kind,
                grant,
                Some(&hostname),
                &boot,
                req.client.is_ipxe,
                p,
            )
        }
        Answer::Inform { hostname, boot } => reply::answer(
            msg,
            MessageType::Ack,
            None,
            Some(&hostname),
            &boot,
            req.client.is_ipxe,
            p,
        ),
        Answer::Nak { reason } => reply::nak(msg, p.server_ip, &reason),
        Answer::Proxy { boot } => reply::proxy_offer(msg, MessageType::Offer, &boot, p),
        Answer::Ignored(why) => {
            metrics.dhcp_ignored(why);
            return None;
        }
        Answer::Done => return None,
    })
}

/// RFC 2131 §4.1: to the relay if there is one; to ciaddr when the client
/// has an address (not for a NAK); otherwise broadcast, since a client
/// without an address cannot receive unicast until ARP knows it.
fn destination(req: &Request, reply: &Message) -> SocketAddr {
    if let Some(relay) = req.client.relay {
        return SocketAddrV4::new(relay, SERVER_PORT).into();
    }
    let is_nak = reply.opts().msg_type() == Some(MessageType::Nak);
    if !req.ciaddr.is_unspecified() && !is_nak {
        return SocketAddrV4::new(req.ciaddr, CLIENT_PORT).into();
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT).into()
}
