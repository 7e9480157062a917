//! DHCP's metric families: packets received and replies sent by message
//! type, packets answered with nothing by reason, the time to a reply, and
//! the gauges of each pool's address use. Registered by
//! [`Metrics::new`]; the server counts through the methods added to
//! [`Metrics`] here.
//!
//! Counting is an atomic add behind a read lock, with `Copy` labels, so
//! nothing is allocated per packet. The pool gauges are set at scrape time
//! from the leases in each range ([`Metrics::update_pools`]), so the DHCP
//! path never spends time on them.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::MessageType;
use ipnet::Ipv4Net;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::{Metrics, SubnetLabels, at_zero, families, label_value};
use crate::model::{Lease, LeaseState, Timestamp};

/// Upper bounds of `rackboot_dhcp_decision_seconds`, 50 µs to 1 s: an
/// answer from memory takes tens of microseconds, one that waits for a
/// durable lease write milliseconds, and past a second firmware retransmits.
const DECISION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

label_value! {
    /// The message type of a packet the DHCP server received.
    DhcpType {
        Discover => "discover",
        Request => "request",
        Release => "release",
        /// RFC 2131 §4.3.3: the client found its address in use.
        Decline => "decline",
        Inform => "inform",
        /// No option 53, a server's message type, or a packet that does not parse.
        Other => "other",
    }
}

impl DhcpType {
    pub fn of(kind: Option<MessageType>) -> DhcpType {
        match kind {
            Some(MessageType::Discover) => DhcpType::Discover,
            Some(MessageType::Request) => DhcpType::Request,
            Some(MessageType::Release) => DhcpType::Release,
            Some(MessageType::Decline) => DhcpType::Decline,
            Some(MessageType::Inform) => DhcpType::Inform,
            _ => DhcpType::Other,
        }
    }
}

label_value! {
    /// The message type of a reply the DHCP server sent.
    DhcpReply {
        Offer => "offer",
        Ack => "ack",
        Nak => "nak",
    }
}

impl DhcpReply {
    pub fn of(kind: Option<MessageType>) -> Option<DhcpReply> {
        match kind? {
            MessageType::Offer => Some(DhcpReply::Offer),
            MessageType::Ack => Some(DhcpReply::Ack),
            MessageType::Nak => Some(DhcpReply::Nak),
            _ => None,
        }
    }
}

label_value! {
    /// Why a DHCP packet got no reply (each is also logged or on the timeline).
    IgnoreReason {
        /// Not DHCP: too short, no magic cookie, truncated options, not Ethernet, or BOOTP.
        Malformed => "malformed",
        /// A PXE client without option 93, or with an architecture rackboot has no loader for.
        UnsupportedArch => "unsupported_arch",
        /// An unknown MAC on a subnet with `unknown_clients = "ignore"`.
        UnknownClient => "unknown_client",
        /// Neither the relay address nor rackboot's own is inside a `[[dhcp.subnet]]`.
        NoSubnet => "no_subnet",
        /// No free address to offer.
        PoolExhausted => "pool_exhausted",
        /// Over `dhcp.rate_limit_per_mac` or `dhcp.rate_limit_per_relay`.
        RateLimited => "rate_limited",
        /// A client rackboot knows nothing of, refused a new address: unknown clients of its
        /// subnet hold their `unknown_share` of the pool, or came faster than `unknown_rate`.
        UnknownLimited => "unknown_limited",
        /// A client hardware address no NIC has (ff:ff:ff:ff:ff:ff, all zeros).
        BadChaddr => "bad_chaddr",
        /// A relayed packet (giaddr set) from a host, or naming a relay, not in the subnet's
        /// `relays`.
        UntrustedRelay => "untrusted_relay",
        /// Meant for another server (a REQUEST naming it, a server's message), or not
        /// rackboot's to answer on a proxy subnet.
        NotForUs => "not_for_us",
        /// rackboot failed (the store); logged as an error.
        Error => "error",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    r#type: DhcpType,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReplyLabels {
    r#type: DhcpReply,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    reason: IgnoreReason,
}

/// A subnet whose dynamic ranges rackboot hands out (not proxy subnets).
#[derive(Debug, Clone)]
pub struct PoolRanges {
    pub subnet: Ipv4Net,
    /// Inclusive, as in the config.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// One pool's scrape-time gauges (handles into the families).
#[derive(Debug)]
struct PoolGauges {
    ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    leased: Gauge,
    declined: Gauge,
}

families! {
    /// DHCP's families under `rackboot_`, one field each.
    pub(crate) struct DhcpFamilies {
        dhcp_received: Family<TypeLabels, Counter>
            => "DHCP packets received, by message type (decline: the client found its address in use)",
        dhcp_replies: Family<ReplyLabels, Counter> => "DHCP replies sent, by message type",
        dhcp_ignored: Family<ReasonLabels, Counter> => "DHCP packets answered with nothing, by reason",
        dhcp_decision: Histogram = Histogram::new(DECISION_BUCKETS), Unit::Seconds
            => "Time from receiving a DHCP packet to having its reply ready",
        dhcp_pool_addresses: Family<SubnetLabels, Gauge>
            => "Addresses in the subnet's dynamic ranges",
        dhcp_pool_leased: Family<SubnetLabels, Gauge>
            => "Addresses in the subnet's dynamic ranges held by a live lease (offered or bound)",
        dhcp_pool_unknown: Family<SubnetLabels, Gauge>
            => "Leases in the subnet's dynamic ranges held by clients rackboot knows nothing of (no record, or one DHCP made that never booted), limited by unknown_share",
        dhcp_pool_declined: Family<SubnetLabels, Gauge>
            => "Addresses in the subnet's dynamic ranges quarantined after a DHCPDECLINE",
    }
}

/// DHCP's families and the pool gauges taken out of them once.
#[derive(Debug)]
pub(crate) struct DhcpMetrics {
    families: DhcpFamilies,
    pools: Vec<PoolGauges>,
}

impl DhcpMetrics {
    /// Registers DHCP's families with every series at zero; `pools` are the
    /// subnets whose address use `rackboot_dhcp_pool_*` reports.
    pub(crate) fn register(registry: &mut Registry, pools: &[PoolRanges]) -> DhcpMetrics {
        let f = DhcpFamilies::register(registry);
        at_zero(&f.dhcp_received, DhcpType::ALL, |t| TypeLabels {
            r#type: t,
        });
        at_zero(&f.dhcp_replies, DhcpReply::ALL, |t| ReplyLabels {
            r#type: t,
        });
        at_zero(&f.dhcp_ignored, IgnoreReason::ALL, |reason| ReasonLabels {
            reason,
        });
        let pools = pools
            .iter()
            .map(|p| {
                let labels = SubnetLabels {
                    subnet: p.subnet.to_string(),
                };
                let size: u64 = p
                    .ranges
                    .iter()
                    .map(|&(a, b)| {
                        u64::from(u32::from(b)).saturating_sub(u64::from(u32::from(a))) + 1
                    })
                    .sum();
                f.dhcp_pool_addresses
                    .get_or_create(&labels)
                    .set(i64::try_from(size).unwrap_or(i64::MAX));
                f.dhcp_pool_unknown.get_or_create(&labels).set(0);
                PoolGauges {
                    ranges: p.ranges.clone(),
                    leased: f.dhcp_pool_leased.get_or_create_owned(&labels),
                    declined: f.dhcp_pool_declined.get_or_create_owned(&labels),
                }
            })
            .collect();
        DhcpMetrics { families: f, pools }
    }
}

/// Shows each lease from one address to another (first, last) to a
/// counting closure, as [`crate::control::Control::visit_leases`] does.
pub trait VisitLeases: Fn(Ipv4Addr, Ipv4Addr, &mut dyn FnMut(&Lease)) {}
impl<F: Fn(Ipv4Addr, Ipv4Addr, &mut dyn FnMut(&Lease))> VisitLeases for F {}

impl Metrics {
    pub fn dhcp_received(&self, kind: DhcpType) {
        self.dhcp
            .families
            .dhcp_received
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    pub fn dhcp_replied(&self, kind: DhcpReply) {
        self.dhcp
            .families
            .dhcp_replies
            .get_or_create(&ReplyLabels { r#type: kind })
            .inc();
    }

    pub fn dhcp_ignored(&self, reason: IgnoreReason) {
        self.dhcp
            .families
            .dhcp_ignored
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// How long a reply took, from receiving its packet.
    pub fn dhcp_decided(&self, elapsed: Duration) {
        self.dhcp
            .families
            .dhcp_decision
            .observe(elapsed.as_secs_f64());
    }

    /// The gauge of leases in `subnet`'s pool held by unknown clients,
    /// taken once: DHCP sets it as it counts them.
    pub fn dhcp_pool_unknown(&self, subnet: Ipv4Net) -> Gauge {
        self.dhcp
            .families
            .dhcp_pool_unknown
            .get_or_create_owned(&SubnetLabels {
                subnet: subnet.to_string(),
            })
    }

    /// Sets the pool gauges from the leases `visit` shows in each range (as
    /// [`crate::control::Control::visit_leases`] does): a live offered or bound
    /// lease counts as leased, a live declined one as declined. Only the
    /// ranges are visited, so addresses outside them (fixed ones) count
    /// nowhere.
    pub fn update_pools(&self, now: Timestamp, visit: impl VisitLeases) {
        for pool in &self.dhcp.pools {
            let (mut leased, mut declined) = (0i64, 0i64);
            for &(first, last) in &pool.ranges {
                visit(first, last, &mut |l| {
                    if l.is_live(now) {
                        match l.state {
                            LeaseState::Offered | LeaseState::Bound => leased += 1,
                            LeaseState::Declined => declined += 1,
                        }
                    }
                });
            }
            pool.leased.set(leased);
            pool.declined.set(declined);
        }
    }
}
