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
use super::lease::{self, Outcome, Pool};
use super::reply::{self, BootFile, ServerParams};
use super::unknown::Unknown;
use super::wire;
use crate::boot::{Decision, Urls, decide_for_node};
use crate::config::{LoaderMap, SubnetMode};
use crate::contain;
use crate::control::admit::{Door, Looked, Place, Via};
use crate::control::timeline::Timeline;
use crate::metrics::{DhcpReply, DhcpType, IgnoreReason, Metrics, Service};
use crate::model::{BootTarget, DhcpService, EventData, Mac, Node, Timestamp};
use crate::store::{Store, StoreError};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot server port (proxyDHCP's second round).
pub const BOOT_SERVER_PORT: u16 = 4011;

/// One subnet as the DHCP service serves it.
#[derive(Debug, Clone)]
pub struct Subnet {
    pub params: ServerParams,
    pub pool: Pool,
    pub mode: SubnetMode,
    /// Where relayed requests may come from (`relays`); empty: anywhere.
    pub relays: Vec<Ipv4Addr>,
    /// What unknown clients hold of the pool (`unknown_share`, `unknown_rate`).
    pub unknown: Arc<std::sync::Mutex<Unknown>>,
    /// `rackboot_dhcp_pool_unknown` of this subnet.
    pub unknown_held: prometheus_client::metrics::gauge::Gauge,
}

impl Subnet {
    fn unknown(&self) -> std::sync::MutexGuard<'_, Unknown> {
        self.unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `mac` holds nothing counted against `unknown_share` any more.
    fn unknown_left(&self, mac: Mac) {
        let mut u = self.unknown();
        if u.held() > 0 {
            u.left(mac);
            self.unknown_held.set(u.held() as i64);
        }
    }
}

/// Everything the DHCP service needs, passed in explicitly.
pub struct DhcpContext {
    pub store: Arc<dyn Store>,
    pub timeline: Timeline,
    /// Whether a MAC may boot (known, or unknown where `unknown_clients`
    /// serves it): the one decision HTTP asks too.
    pub door: Arc<Door>,
    /// Told the address a proxyDHCP client used: what its boot script and
    /// token are bound to there.
    pub binding: Arc<crate::control::bind::Binding>,
    pub subnets: Vec<Subnet>,
    /// The subnet of the boot interface itself (requests without a relay).
    pub direct: Option<usize>,
    pub loaders: LoaderMap,
    pub urls: Urls,
    pub default_bootenv: String,
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

    /// Counts, once at start-up, the live leases of each pool that unknown
    /// clients hold (no record, or a bare one DHCP made), so that a restart
    /// does not hand them their share a second time.
    pub async fn count_unknown_leases(&self, now: Timestamp) -> Result<(), StoreError> {
        let leases = self.store.leases().await?;
        for lease in leases {
            let Some(mac) = lease.mac else { continue };
            if !lease.is_live(now) {
                continue;
            }
            let Some(subnet) = self.subnets.iter().find(|s| {
                s.mode == SubnetMode::Dhcp
                    && s.pool
                        .ranges
                        .iter()
                        .any(|&(a, b)| (u32::from(a)..=u32::from(b)).contains(&u32::from(lease.ip)))
            }) else {
                continue;
            };
            let unknown = match self.store.node(mac).await? {
                None => true,
                Some(n) => n.is_bare_discovery(),
            };
            if unknown {
                subnet.unknown().took(mac, lease.expires);
            }
        }
        for s in &self.subnets {
            s.unknown_held.set(s.unknown().held() as i64);
        }
        Ok(())
    }

    /// Whether `mac`, unknown, may have a new lease on `subnet` now; when the
    /// share is full, the clients it counts are first looked up again (at
    /// most once a second), since some may have booted meanwhile.
    async fn unknown_may_take(
        &self,
        subnet: &Subnet,
        mac: Mac,
        now: Timestamp,
    ) -> Result<Result<(), super::unknown::Refusal>, StoreError> {
        let due = subnet.unknown().due_for_recount(now);
        if !due.is_empty() {
            let mut known = Vec::new();
            for m in due {
                if self
                    .store
                    .node(m)
                    .await?
                    .is_some_and(|n| !n.is_bare_discovery())
                {
                    known.push(m);
                }
            }
            let mut u = subnet.unknown();
            u.recount(&known, now);
            subnet.unknown_held.set(u.held() as i64);
        }
        Ok(subnet.unknown().may_take(mac, now))
    }
}

/// What the DHCP socket may queue: a rack powering on at once sends its
/// DISCOVERs within milliseconds, and the kernel's default (about 300
/// packets) drops the tail of such a burst whenever the server is briefly off
/// the CPU. 4 MiB holds several thousand.
const STORM_RCVBUF: usize = 4 << 20;

/// Asks for [`STORM_RCVBUF`]. The kernel caps the request at
/// net.core.rmem_max unless the process may exceed it (CAP_NET_ADMIN, which
/// root has); either way what it got is logged, and a small buffer is never
/// an error.
fn storm_buffer(s: &Socket) {
    use std::os::fd::AsRawFd;
    let _ = s.set_recv_buffer_size(STORM_RCVBUF);
    if s.recv_buffer_size().unwrap_or(0) < STORM_RCVBUF {
        let size = STORM_RCVBUF as libc::c_int;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let got = s.recv_buffer_size().unwrap_or(0);
    if got < STORM_RCVBUF {
        tracing::info!(
            bytes = got,
            "DHCP receive buffer is below 4 MiB (raise net.core.rmem_max to absorb boot storms)"
        );
    }
}

/// Binds the DHCP server socket on `interface` only: rackboot must never
/// answer DHCP on a network it was not told to serve. No SO_REUSEADDR: a
/// second DHCP server on the same interface must fail to start rather than
/// answer beside this one (servers bound to other interfaces do not clash).
pub fn bind(interface: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    storm_buffer(&s);
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
    storm_buffer(&s);
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
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => r?,
        };
        let received = Instant::now();
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
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => r?,
        };
        let received = Instant::now();
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
    let msg = wire::decode(packet).ok();
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
    let mac = req.client.mac;
    let now = Timestamp::now();
    let place = Place::Subnet(subnet.params.subnet);
    let failed = |e: StoreError| {
        tracing::error!(%mac, error = %e, "cannot answer PXE boot server request");
        ctx.metrics.dhcp_ignored(IgnoreReason::Error);
    };
    let (node, known) = match ctx.door.look(mac, place, now).await {
        Ok(Looked::Known(n)) => (n, true),
        Ok(Looked::Unknown(n)) => (n, false),
        Ok(Looked::Refused { .. }) => {
            ctx.metrics.dhcp_ignored(IgnoreReason::UnknownClient);
            return None;
        }
        Err(e) => {
            failed(e);
            return None;
        }
    };
    // The address it asks from is the one its boot script goes to.
    if let Err(e) = ctx.binding.saw(mac, *from.ip()).await {
        tracing::warn!(%mac, error = %e, "cannot record the address of a proxyDHCP client");
    }
    let decision = decide_for_node(&req.client, &node, &ctx.loaders, &ctx.urls, now);
    let boot = boot_file(&decision);
    if boot == BootFile::None {
        return None;
    }
    // Made only now that it is answered (see `answer`).
    if let Err(e) = welcomed(ctx, node, known, place, Via::PxeBootServer).await {
        failed(e);
        return None;
    }
    ctx.timeline
        .record(
            mac,
            answered(DhcpService::BootServer, None, &boot, &req).ack(),
        )
        .await;
    Some(reply::proxy_offer(
        &msg,
        MessageType::Ack,
        &boot,
        &subnet.params,
    ))
}

/// The wire form of a boot decision.
pub(crate) fn boot_file(decision: &Decision) -> BootFile {
    match decision {
        Decision::Loader { path, .. } => BootFile::Tftp(path.clone()),
        Decision::HttpLoader { url, .. } => BootFile::Url {
            url: url.clone(),
            http_client: true,
        },
        Decision::Script { url, .. } => BootFile::Url {
            url: url.clone(),
            http_client: false,
        },
        Decision::AddressOnly | Decision::Local { .. } | Decision::Ignore { .. } => BootFile::None,
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
    let msg = match wire::decode(packet) {
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
    match answer(ctx, subnet, &msg, &req).await {
        Ok(Some(reply)) => {
            if let Some(kind) = DhcpReply::of(reply.opts().msg_type()) {
                metrics.dhcp_replied(kind);
            }
            let dest = destination(&req, &reply);
            Some((reply, dest))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(mac = %req.client.mac, error = %e, "cannot answer DHCP request");
            metrics.dhcp_ignored(IgnoreReason::Error);
            None
        }
    }
}

async fn answer(
    ctx: &DhcpContext,
    subnet: &Subnet,
    msg: &Message,
    req: &Request,
) -> Result<Option<Message>, StoreError> {
    let now = Timestamp::now();
    let mac = req.client.mac;
    let store = ctx.store.as_ref();
    let place = Place::Subnet(subnet.params.subnet);
    let via = Via::Dhcp {
        relay: req.client.relay,
    };
    // An unknown MAC's record is made only once it is answered with an
    // address (or, on a proxy subnet, boot information): a flood of
    // made-up MACs that gets nothing leaves nothing behind.
    let (mut node, known) = match ctx.door.look(mac, place, now).await? {
        Looked::Known(node) => (node, true),
        Looked::Unknown(node) => (node, false),
        Looked::Refused { .. } => {
            ctx.metrics.dhcp_ignored(IgnoreReason::UnknownClient);
            return Ok(None);
        }
    };
    if known
        && let Some(info) = &req.relay_info
        && node.relay_info.as_deref() != Some(info.as_str())
    {
        store.set_node_relay_info(mac, Some(info)).await?;
        ctx.timeline
            .record(mac, EventData::DhcpRelay { info: info.clone() })
            .await;
    }
    let decision = decide_for_node(&req.client, &node, &ctx.loaders, &ctx.urls, now);
    let arch = match &decision {
        Decision::Loader { arch, .. }
        | Decision::HttpLoader { arch, .. }
        | Decision::Script { arch, .. }
        | Decision::Local { arch } => Some(*arch),
        _ => None,
    };
    if known {
        store.touch_node(mac, arch, now).await?;
    } else {
        node.arch = arch.or(node.arch);
        node.relay_info = req.relay_info.clone();
    }
    if let Decision::Ignore { reason } = &decision {
        tracing::info!(%mac, %reason, "ignoring DHCP request");
        ctx.metrics.dhcp_ignored(IgnoreReason::UnsupportedArch);
        if known {
            ctx.timeline
                .record(
                    mac,
                    EventData::DhcpIgnored {
                        reason: reason.clone(),
                    },
                )
                .await;
        }
        return Ok(None);
    }
    let boot = boot_file(&decision);
    // A client rackboot knows nothing of: its leases count against the
    // subnet's `unknown_share`, and a new one against `unknown_rate`.
    let unknown = !known || node.is_bare_discovery();
    if !unknown {
        subnet.unknown_left(mac);
    }

    if subnet.mode == SubnetMode::Proxy {
        // The address the client uses (renewing: ciaddr) or asks the other
        // server for (a broadcast REQUEST: option 50) is the one its boot
        // script and token are bound to; rackboot leased nothing to know it by.
        let using = Some(req.ciaddr)
            .filter(|ip| !ip.is_unspecified())
            .or(req
                .requested_ip
                .filter(|_| req.kind == MessageType::Request))
            .filter(|ip| subnet.params.subnet.contains(ip));
        if let Some(ip) = using {
            ctx.binding.saw(mac, ip).await?;
        }
        // Another server owns the addresses: answer PXE clients' DISCOVERs
        // with boot information only and leave everything else to it.
        if matches!(boot, BootFile::None) || req.kind != MessageType::Discover {
            ctx.metrics.dhcp_ignored(IgnoreReason::NotForUs);
            return Ok(None);
        }
        welcomed(ctx, node, known, place, via).await?;
        ctx.timeline
            .record(mac, answered(DhcpService::Proxy, None, &boot, req).offer())
            .await;
        return Ok(Some(reply::proxy_offer(
            msg,
            MessageType::Offer,
            &boot,
            &subnet.params,
        )));
    }

    match req.kind {
        MessageType::Discover => {
            if unknown && let Err(why) = ctx.unknown_may_take(subnet, mac, now).await? {
                tracing::debug!(%mac, subnet = %subnet.params.subnet, %why, "no offer to an unknown client");
                ctx.metrics.dhcp_ignored(IgnoreReason::UnknownLimited);
                return Ok(None);
            }
            let Some(l) =
                lease::offer(store, &subnet.pool, mac, node.ipv4, req.requested_ip, now).await?
            else {
                tracing::warn!(%mac, "DHCP pool exhausted: no address to offer");
                ctx.metrics.dhcp_ignored(IgnoreReason::PoolExhausted);
                if known {
                    ctx.timeline
                        .record(
                            mac,
                            EventData::DhcpIgnored {
                                reason: "pool exhausted".into(),
                            },
                        )
                        .await;
                }
                return Ok(None);
            };
            if unknown {
                counted(subnet, mac, &l);
            }
            let node = welcomed(ctx, node, known, place, via).await?;
            ctx.timeline
                .record(
                    mac,
                    answered(DhcpService::Dhcp, Some(l.ip), &boot, req).offer(),
                )
                .await;
            Ok(Some(reply::answer(
                msg,
                MessageType::Offer,
                l.ip,
                Some(node.hostname.as_str()),
                &boot,
                req.client.is_ipxe,
                &subnet.params,
            )))
        }
        MessageType::Request => {
            if unknown && let Err(why) = ctx.unknown_may_take(subnet, mac, now).await? {
                // Not ours to give: say nothing, as for another server's client.
                tracing::debug!(%mac, subnet = %subnet.params.subnet, %why, "no lease for an unknown client");
                ctx.metrics.dhcp_ignored(IgnoreReason::UnknownLimited);
                return Ok(None);
            }
            match lease::request(store, &subnet.pool, req, node.ipv4, now).await? {
                Outcome::Ack(l) => {
                    if unknown {
                        counted(subnet, mac, &l);
                    }
                    let node = welcomed(ctx, node, known, place, via).await?;
                    ctx.timeline
                        .record(
                            mac,
                            answered(DhcpService::Dhcp, Some(l.ip), &boot, req).ack(),
                        )
                        .await;
                    Ok(Some(reply::answer(
                        msg,
                        MessageType::Ack,
                        l.ip,
                        Some(node.hostname.as_str()),
                        &boot,
                        req.client.is_ipxe,
                        &subnet.params,
                    )))
                }
                Outcome::Nak(reason) => {
                    if known {
                        ctx.timeline
                            .record(
                                mac,
                                EventData::DhcpNak {
                                    reason: reason.clone(),
                                },
                            )
                            .await;
                    }
                    Ok(Some(reply::nak(msg, subnet.params.server_ip, &reason)))
                }
                Outcome::Silent(reason) => {
                    tracing::debug!(%mac, %reason, "not answering REQUEST");
                    if unknown && store.lease_of(mac).await?.is_none() {
                        subnet.unknown_left(mac);
                    }
                    ctx.metrics.dhcp_ignored(IgnoreReason::NotForUs);
                    Ok(None)
                }
            }
        }
        MessageType::Release => {
            let released = store.release(mac, req.ciaddr).await?;
            if released {
                subnet.unknown_left(mac);
            }
            if known {
                ctx.timeline
                    .record(
                        mac,
                        EventData::DhcpRelease {
                            addr: req.ciaddr,
                            released,
                        },
                    )
                    .await;
            }
            Ok(None)
        }
        MessageType::Decline => {
            // Only the address this client was given: a DECLINE naming any
            // other would let one host quarantine a whole pool.
            let held = store.lease_of(mac).await?.map(|l| l.ip);
            if let Some(ip) = req
                .requested_ip
                .filter(|ip| subnet.pool.subnet.contains(ip) && held == Some(*ip))
            {
                store
                    .decline(ip, now.plus_secs(u64::from(subnet.pool.lease_seconds)))
                    .await?;
                subnet.unknown_left(mac);
                if known {
                    ctx.timeline
                        .record(mac, EventData::DhcpDecline { addr: ip })
                        .await;
                }
            }
            Ok(None)
        }
        MessageType::Inform => Ok(Some(reply::answer(
            msg,
            MessageType::Ack,
            std::net::Ipv4Addr::UNSPECIFIED,
            Some(node.hostname.as_str()),
            &boot,
            req.client.is_ipxe,
            &subnet.params,
        ))),
        _ => Ok(None),
    }
}

/// Counts a lease an unknown client got against its subnet's share.
fn counted(subnet: &Subnet, mac: Mac, lease: &crate::model::Lease) {
    let mut u = subnet.unknown();
    u.took(mac, lease.expires);
    subnet.unknown_held.set(u.held() as i64);
}

/// The record of a client about to be answered: as it was if known, else
/// made now (the client is told its hostname, and may boot from it next).
async fn welcomed(
    ctx: &DhcpContext,
    node: Node,
    known: bool,
    place: Place,
    via: Via,
) -> Result<Node, StoreError> {
    if known {
        return Ok(node);
    }
    let info = node.relay_info.clone();
    let (node, created) = ctx.door.welcome(node, place, via).await?;
    if created && let Some(info) = info {
        ctx.timeline
            .record(node.mac, EventData::DhcpRelay { info })
            .await;
    }
    Ok(node)
}

/// What a DHCP answer handed the client, for its timeline.
struct Answered {
    service: DhcpService,
    addr: Option<std::net::Ipv4Addr>,
    boot_file: Option<BootTarget>,
    arch: Option<crate::model::ClientArch>,
    ipxe: bool,
}

fn answered(
    service: DhcpService,
    addr: Option<std::net::Ipv4Addr>,
    boot: &BootFile,
    req: &Request,
) -> Answered {
    Answered {
        service,
        addr,
        boot_file: match boot {
            BootFile::None => None,
            BootFile::Tftp(f) => Some(BootTarget::Tftp(f.clone())),
            BootFile::Url {
                url,
                http_client: true,
            } => Some(BootTarget::Http(url.clone())),
            BootFile::Url {
                url,
                http_client: false,
            } => Some(BootTarget::Script(url.clone())),
        },
        arch: req.client.arch,
        ipxe: req.client.is_ipxe,
    }
}

impl Answered {
    fn offer(self) -> EventData {
        EventData::DhcpOffer {
            service: self.service,
            addr: self.addr,
            boot_file: self.boot_file,
            arch: self.arch,
            ipxe: self.ipxe,
        }
    }

    fn ack(self) -> EventData {
        EventData::DhcpAck {
            service: self.service,
            addr: self.addr,
            boot_file: self.boot_file,
            arch: self.arch,
            ipxe: self.ipxe,
        }
    }
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
