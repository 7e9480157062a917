//! What happens when a firmware, iPXE or an OS asks rackboot's DHCP: the
//! whole walk from a parsed request to the answer, for port 67 and for the
//! PXE boot server on port 4011. The protocol ([`crate::dhcp`]) parses the
//! packet, picks the subnet, applies the rate limits, makes one call here
//! and encodes what comes back; everything in between (the node record,
//! the boot decision, the lease, the unknown-client share, the timeline)
//! is here.

use std::net::Ipv4Addr;
use std::sync::Arc;

use dhcproto::v4::MessageType;

use super::admit::{Door, Looked, Place, Via};
use super::bind::Binding;
use super::identity;
use super::lease::{self, Outcome, Pool};
use super::timeline::Timeline;
use crate::boot::{BootFile, CatalogCell, Decision, Loader, decide_for_node, loader_of};
use crate::config::{Identity, LoaderMap, SubnetMode};
use crate::dhcp::classify::Request;
use crate::dhcp::metrics::IgnoreReason;
use crate::dhcp::reply::ServerParams;
use crate::dhcp::unknown::{self, Unknown};
use crate::model::{BootTarget, ClientInfo, DhcpService, EventData, Lease, Mac, Node, Timestamp};
use crate::routes::Urls;
use crate::store::{Store, StoreError};

/// One subnet as rackboot serves it: what its replies carry, its pool, and
/// what unknown clients hold of it.
#[derive(Debug, Clone)]
pub struct Subnet {
    pub params: ServerParams,
    pub pool: Pool,
    pub mode: SubnetMode,
    /// Where relayed requests may come from (`relays`); empty: anywhere.
    pub relays: Vec<Ipv4Addr>,
    /// What names a machine here besides its MAC (`identity`).
    pub identity: Identity,
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

    /// Counts a lease an unknown client got against the subnet's share.
    fn counted(&self, mac: Mac, lease: &Lease) {
        let mut u = self.unknown();
        u.took(mac, lease.expires);
        self.unknown_held.set(u.held() as i64);
    }
}

/// What to answer a DHCP request with; the protocol encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// DHCPOFFER (`ack: false`) or DHCPACK of `ip` for `seconds`, with the
    /// node's hostname and boot file.
    Lease {
        ack: bool,
        ip: Ipv4Addr,
        seconds: u32,
        hostname: String,
        boot: BootFile,
    },
    /// DHCPACK to a DHCPINFORM: no address, the boot file.
    Inform {
        hostname: String,
        boot: BootFile,
    },
    Nak {
        reason: String,
    },
    /// Boot information only (proxyDHCP OFFER on port 67, ACK on 4011):
    /// another server owns the addresses.
    Proxy {
        boot: BootFile,
    },
    /// Nothing is sent; why, for `/metrics`.
    Ignored(IgnoreReason),
    /// Nothing is sent, and nothing was ignored: a RELEASE or DECLINE is
    /// answered by doing it.
    Done,
}

/// Everything a DHCP client's walk needs besides the request.
pub struct DhcpClients {
    pub store: Arc<dyn Store>,
    pub timeline: Timeline,
    /// Whether a MAC may boot (known, or unknown where `unknown_clients`
    /// serves it): the one decision HTTP asks too.
    pub door: Arc<Door>,
    /// Told the address a proxyDHCP client used: what its boot script and
    /// token are bound to there.
    pub binding: Arc<Binding>,
    pub loaders: LoaderMap,
    pub urls: Urls,
    /// Which bootenvs boot through GRUB (a Secure Boot machine's shim).
    pub catalog: Arc<CatalogCell>,
}

/// The client asking, as DHCP found it.
struct Asker {
    /// Its record, or the one it would be given.
    node: Node,
    /// It has a record.
    known: bool,
    /// Its leases count against its subnet's `unknown_share`.
    unknown: bool,
    /// When it asked: what its lease is measured from.
    now: Timestamp,
}

impl DhcpClients {
    /// What `client`, whose record is `node`, boots now: through GRUB (a
    /// Secure Boot machine's shim) when its record or bootenv says so.
    fn decide(&self, client: &ClientInfo, node: &Node, now: Timestamp) -> Decision {
        // Only firmware PXE can be handed shim: an OS's DHCP and iPXE (most
        // packets in a storm) skip the catalog lookup.
        let via = if client.is_pxe() && !client.is_ipxe {
            loader_of(node, &self.catalog.current(), now)
        } else {
            Loader::Ipxe
        };
        decide_for_node(client, node, via, &self.loaders, &self.urls, now)
    }

    /// A client's request on port 67, on `subnet`.
    pub async fn asked(&self, subnet: &Subnet, req: &Request) -> Result<Answer, StoreError> {
        let now = Timestamp::now();
        let mac = req.client.mac;
        let store = self.store.as_ref();
        let place = Place::Subnet(subnet.params.subnet);
        let via = Via::Dhcp {
            relay: req.client.relay,
        };
        // An unknown MAC's record is made only once it is answered with an
        // address (or, on a proxy subnet, boot information): a flood of
        // made-up MACs that gets nothing leaves nothing behind.
        let mut looked = self.door.look(mac, place, now).await?;
        if !matches!(looked, Looked::Known(_))
            && let Some(claim) = identity::claim(subnet.identity, req)
            && let Some(node) = self.door.take_over(req, claim, place, via, now).await?
        {
            looked = Looked::Known(node);
        }
        let (mut node, known) = match looked {
            Looked::Known(node) => (node, true),
            Looked::Unknown(node) => (node, false),
            Looked::Refused { .. } => return Ok(Answer::Ignored(IgnoreReason::UnknownClient)),
        };
        if known
            && let Some(info) = &req.relay_info
            && node.relay_info.as_deref() != Some(info.as_str())
        {
            store.set_node_relay_info(mac, Some(info)).await?;
            self.timeline
                .record(mac, EventData::DhcpRelay { info: info.clone() })
                .await;
        }
        // The board's UUID is written only when it changes (a new record, a
        // board swapped under the MAC's NIC): DHCP asks on every packet.
        if known
            && let Some(uuid) = &req.uuid
            && node.uuid.as_deref() != Some(uuid.as_str())
        {
            let uuid = uuid.clone();
            node = crate::store::update_fields(store, mac, move |n| n.uuid = Some(uuid))
                .await?
                .after;
        }
        let decision = self.decide(&req.client, &node, now);
        let arch = decision.arch();
        if known {
            // When it was last seen is a hint, not a promise to anyone: while
            // the store cannot save it, the client is answered all the same.
            if let Err(e) = store.touch_node(mac, arch, now).await {
                if !e.is_unavailable() {
                    return Err(e);
                }
                tracing::debug!(%mac, cause = %e, "last seen not saved");
            }
        } else {
            node.arch = arch.or(node.arch);
            node.relay_info = req.relay_info.clone();
            node.uuid = req.uuid.clone();
        }
        if let crate::boot::Decision::Ignore { reason } = &decision {
            tracing::info!(%mac, %reason, "ignoring DHCP request");
            if known {
                self.timeline
                    .record(
                        mac,
                        EventData::DhcpIgnored {
                            reason: reason.clone(),
                        },
                    )
                    .await;
            }
            return Ok(Answer::Ignored(IgnoreReason::UnsupportedArch));
        }
        let boot = decision.boot_file();
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
                self.binding.saw(mac, ip).await?;
            }
            // Another server owns the addresses: answer PXE clients' DISCOVERs
            // with boot information only and leave everything else to it.
            if matches!(boot, BootFile::None) || req.kind != MessageType::Discover {
                return Ok(Answer::Ignored(IgnoreReason::NotForUs));
            }
            self.welcomed(node, known, place, via).await?;
            self.timeline
                .record(mac, answered(DhcpService::Proxy, None, &boot, req).offer())
                .await;
            return Ok(Answer::Proxy { boot });
        }

        let asker = Asker {
            node,
            known,
            unknown,
            now,
        };
        match req.kind {
            MessageType::Discover => {
                if unknown && let Err(why) = self.unknown_may_take(subnet, mac, now).await? {
                    tracing::debug!(%mac, subnet = %subnet.params.subnet, %why, "no offer to an unknown client");
                    return Ok(Answer::Ignored(IgnoreReason::UnknownLimited));
                }
                let Some(l) = lease::offer(
                    store,
                    &subnet.pool,
                    mac,
                    asker.node.ipv4,
                    req.requested_ip,
                    now,
                )
                .await?
                else {
                    tracing::warn!(%mac, "DHCP pool exhausted: no address to offer");
                    if known {
                        self.timeline
                            .record(
                                mac,
                                EventData::DhcpIgnored {
                                    reason: "pool exhausted".into(),
                                },
                            )
                            .await;
                    }
                    return Ok(Answer::Ignored(IgnoreReason::PoolExhausted));
                };
                self.leased(subnet, req, asker, &l, boot, false).await
            }
            MessageType::Request => {
                if unknown && let Err(why) = self.unknown_may_take(subnet, mac, now).await? {
                    // Not ours to give: say nothing, as for another server's client.
                    tracing::debug!(%mac, subnet = %subnet.params.subnet, %why, "no lease for an unknown client");
                    return Ok(Answer::Ignored(IgnoreReason::UnknownLimited));
                }
                match lease::request(store, &subnet.pool, req, asker.node.ipv4, now).await? {
                    Outcome::Ack(l) => self.leased(subnet, req, asker, &l, boot, true).await,
                    Outcome::Nak(reason) => {
                        if known {
                            self.timeline
                                .record(
                                    mac,
                                    EventData::DhcpNak {
                                        reason: reason.clone(),
                                    },
                                )
                                .await;
                        }
                        Ok(Answer::Nak { reason })
                    }
                    Outcome::Silent(reason) => {
                        tracing::debug!(%mac, %reason, "not answering REQUEST");
                        if unknown && store.lease_of(mac).await?.is_none() {
                            subnet.unknown_left(mac);
                        }
                        Ok(Answer::Ignored(IgnoreReason::NotForUs))
                    }
                }
            }
            MessageType::Release => {
                let released = store.release(mac, req.ciaddr).await?;
                if released {
                    subnet.unknown_left(mac);
                }
                if known {
                    self.timeline
                        .record(
                            mac,
                            EventData::DhcpRelease {
                                addr: req.ciaddr,
                                released,
                            },
                        )
                        .await;
                }
                Ok(Answer::Done)
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
                        self.timeline
                            .record(mac, EventData::DhcpDecline { addr: ip })
                            .await;
                    }
                }
                Ok(Answer::Done)
            }
            MessageType::Inform => Ok(Answer::Inform {
                hostname: asker.node.hostname,
                boot,
            }),
            _ => Ok(Answer::Done),
        }
    }

    /// A REQUEST to the PXE boot server (port 4011) from `from`, on a proxy
    /// `subnet`: boot information only.
    pub async fn asked_boot_server(
        &self,
        subnet: &Subnet,
        req: &Request,
        from: Ipv4Addr,
    ) -> Result<Answer, StoreError> {
        let mac = req.client.mac;
        let now = Timestamp::now();
        let place = Place::Subnet(subnet.params.subnet);
        let (node, known) = match self.door.look(mac, place, now).await? {
            Looked::Known(n) => (n, true),
            Looked::Unknown(n) => (n, false),
            Looked::Refused { .. } => return Ok(Answer::Ignored(IgnoreReason::UnknownClient)),
        };
        // The address it asks from is the one its boot script goes to.
        if let Err(e) = self.binding.saw(mac, from).await {
            tracing::warn!(%mac, error = %e, "cannot record the address of a proxyDHCP client");
        }
        let decision = self.decide(&req.client, &node, now);
        let boot = decision.boot_file();
        if boot == BootFile::None {
            return Ok(Answer::Done);
        }
        // Made only now that it is answered (see `asked`).
        self.welcomed(node, known, place, Via::PxeBootServer)
            .await?;
        self.timeline
            .record(
                mac,
                answered(DhcpService::BootServer, None, &boot, req).ack(),
            )
            .await;
        Ok(Answer::Proxy { boot })
    }

    /// Counts, once at start-up, the live leases of each pool that unknown
    /// clients hold (no record, or a bare one DHCP made), so that a restart
    /// does not hand them their share a second time.
    pub async fn count_unknown_leases(
        &self,
        subnets: &[Subnet],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let leases = self.store.leases().await?;
        for lease in leases {
            let Some(mac) = lease.mac else { continue };
            if !lease.is_live(now) {
                continue;
            }
            let Some(subnet) = subnets.iter().find(|s| {
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
        for s in subnets {
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
    ) -> Result<Result<(), unknown::Refusal>, StoreError> {
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

    /// The record of a client about to be answered: as it was if known, else
    /// made now (the client is told its hostname, and may boot from it next).
    /// `lease` goes to the client, offered or (`ack`) bound: an unknown
    /// client's lease counts against its subnet's share, its record is made
    /// if it is new, and the offer or ack goes on its timeline.
    async fn leased(
        &self,
        subnet: &Subnet,
        req: &Request,
        asker: Asker,
        lease: &Lease,
        boot: BootFile,
        ack: bool,
    ) -> Result<Answer, StoreError> {
        let Asker {
            node,
            known,
            unknown,
            now,
        } = asker;
        if unknown {
            subnet.counted(node.mac, lease);
        }
        let place = Place::Subnet(subnet.params.subnet);
        let via = Via::Dhcp {
            relay: req.client.relay,
        };
        let node = self.welcomed(node, known, place, via).await?;
        let answered = answered(DhcpService::Dhcp, Some(lease.ip), &boot, req);
        let event = if ack {
            answered.ack()
        } else {
            answered.offer()
        };
        self.timeline.record(node.mac, event).await;
        // An ACK tells the client what the store committed: the whole lease,
        // or what is left of one renewed while the store could not commit.
        let pool_seconds = subnet.pool.lease_seconds;
        let seconds = if ack {
            let left = (lease.expires.millis() - now.millis()).max(0) / 1000;
            u32::try_from(left).map_or(pool_seconds, |left| left.min(pool_seconds))
        } else {
            pool_seconds
        };
        Ok(Answer::Lease {
            ack,
            ip: lease.ip,
            seconds,
            hostname: node.hostname,
            boot,
        })
    }

    async fn welcomed(
        &self,
        node: Node,
        known: bool,
        place: Place,
        via: Via,
    ) -> Result<Node, StoreError> {
        if known {
            return Ok(node);
        }
        let info = node.relay_info.clone();
        let (node, created) = self.door.welcome(node, place, via).await?;
        if created && let Some(info) = info {
            self.timeline
                .record(node.mac, EventData::DhcpRelay { info })
                .await;
        }
        Ok(node)
    }
}

/// What a DHCP answer handed the client, for its timeline.
struct Answered {
    service: DhcpService,
    addr: Option<Ipv4Addr>,
    boot_file: Option<BootTarget>,
    arch: Option<crate::model::ClientArch>,
    ipxe: bool,
}

fn answered(
    service: DhcpService,
    addr: Option<Ipv4Addr>,
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
