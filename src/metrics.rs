//! Prometheus metrics: owns the registry, every metric family rackboot
//! exports at `GET /metrics`, and the label values they take.
//!
//! The protocols count through the one [`Metrics`] they are handed (no
//! globals). Counting is all they do here: no metric decides anything. On the
//! DHCP path a count is an atomic add behind a read lock, with labels that are
//! `Copy` enums, so nothing is allocated per packet; on the DNS path, which is
//! measured against dnsmasq, it is a bare atomic add on a counter picked out
//! of an array ([`Metrics::dns_query`]). The pool gauges and the `process_*`
//! metrics are the exception: they are read at scrape time
//! ([`Metrics::update_pools`], [`process`]), so no request path maintains them.
//!
//! Adding a metric is one line in the [`families!`] table below: its name
//! (which is also the field that counts it), its type, and its HELP text.
//!
//! Does not own the `/metrics` route (that is `http`), nor where leases live
//! (the store). The exposition formats and their negotiation are in [`text`].

mod process;
mod text;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::MessageType;
use hickory_proto::rr::RecordType;
use ipnet::Ipv4Net;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use process::{ProcessCollector, ProcessStats};
pub use text::{Format, RenderError, openmetrics_to_text};

use crate::model::{Lease, LeaseState, Timestamp};
use crate::routes::Area;

/// Upper bounds of `rackboot_dhcp_decision_seconds`, 50 µs to 1 s: an
/// answer from memory takes tens of microseconds, one that waits for a
/// durable lease write milliseconds, and past a second firmware retransmits.
const DECISION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A label value from a closed set: a `Copy` enum written as a fixed string.
macro_rules! label_value {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every value, so each series exists (at 0) from start-up on.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, w: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                w.write_str(self.as_str())
            }
        }
    };
}

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

label_value! {
    /// How a TFTP request ended.
    TftpResult {
        /// The whole file was read out to the client.
        Sent => "sent",
        /// A path outside the assets directory, or a write.
        Refused => "refused",
        NotFound => "not_found",
        /// No `[tftp] max_transfers` slot came free within 30 s: "server busy".
        Busy => "busy",
        /// Refused at once: the client's address had `[tftp] max_transfers_per_address` already.
        Limited => "limited",
        /// Dropped: the client acknowledged nothing (not even the OACK) within
        /// `[tftp] first_ack_timeout`, as a spoofed or vanished one does.
        Unacknowledged => "unacknowledged",
        /// Started but not finished: the client sent an error (a size probe's
        /// refusal of the OACK included), stopped answering, or rackboot failed.
        Aborted => "aborted",
    }
}

/// The `route` label: which part of the HTTP service a request was for,
/// as [`crate::routes`] classes its path.
impl EncodeLabelValue for Area {
    fn encode(&self, w: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        w.write_str(self.as_str())
    }
}

label_value! {
    /// Why an HTTP connection was closed as soon as it was accepted.
    ConnRefusal {
        /// Its address held `http.max_connections_per_address` already.
        PerAddress => "per_address",
        /// Only the reserve was left and its address held connections already.
        Reserve => "reserve",
        /// `http.max_connections` were open.
        Full => "full",
    }
}

label_value! {
    /// Which wait of an HTTP connection ran out.
    HttpTimeout {
        /// The request head did not arrive within `http.header_timeout`.
        Header => "header",
        /// The request body did not arrive within `http.body_timeout`.
        Body => "body",
        /// The client took no response bytes for `http.send_timeout`.
        Send => "send",
        /// No next request within `http.idle_timeout` (keep-alive ending as it should).
        Idle => "idle",
    }
}

label_value! {
    /// An HTTP status by its first digit.
    StatusClass {
        Success => "2xx",
        /// 304 Not Modified to a conditional asset request, mostly.
        Redirect => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
}

impl StatusClass {
    pub fn of(status: u16) -> StatusClass {
        match status {
            ..300 => StatusClass::Success,
            300..400 => StatusClass::Redirect,
            400..500 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

label_value! {
    /// The type a DNS question asks for: the ones rackboot's zones hold or
    /// resolvers ask of them, the rest as `other`.
    DnsType {
        A => "a",
        Aaaa => "aaaa",
        Ptr => "ptr",
        Soa => "soa",
        Ns => "ns",
        Any => "any",
        /// Any other type, and a message whose question could not be read.
        Other => "other",
    }
}

impl DnsType {
    pub fn of(qtype: RecordType) -> DnsType {
        match qtype {
            RecordType::A => DnsType::A,
            RecordType::AAAA => DnsType::Aaaa,
            RecordType::PTR => DnsType::Ptr,
            RecordType::SOA => DnsType::Soa,
            RecordType::NS => DnsType::Ns,
            RecordType::ANY => DnsType::Any,
            _ => DnsType::Other,
        }
    }
}

label_value! {
    /// What became of a DNS question.
    DnsResult {
        /// NOERROR with records in the answer section.
        Answered => "answered",
        /// NOERROR without records: the name exists, not with that type (RFC 2308).
        NoData => "nodata",
        /// NXDOMAIN: no such name in rackboot's zones.
        NxDomain => "nxdomain",
        /// A name outside the zones with recursion desired, handed to `[dns] forwarders`.
        Forwarded => "forwarded",
        /// REFUSED: a name outside the zones rackboot does not forward.
        Refused => "refused",
        /// Not a query rackboot can read: FORMERR (undecodable, not one question), or dropped
        /// (shorter than a header, or a response).
        Malformed => "malformed",
        /// NOTIMP or BADVERS: an opcode other than QUERY, or EDNS past version 0.
        Unsupported => "unsupported",
        /// SERVFAIL: rackboot could not answer (a hostname no PTR can point at, an encoding error).
        ServFail => "servfail",
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    result: TftpResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    route: Area,
    status: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConnRefusalLabels {
    reason: ConnRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HttpTimeoutLabels {
    phase: HttpTimeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DnsLabels {
    r#type: DnsType,
    result: DnsResult,
}

label_value! {
    /// The request that made a node record for a MAC rackboot had never seen.
    NodeCreator {
        /// DHCP on port 67 (an offer, or an ACK, was made).
        Dhcp => "dhcp",
        /// The PXE boot server on port 4011.
        PxeBootServer => "pxe_boot_server",
        /// `GET /boot/<mac>.ipxe`.
        BootScript => "boot_script",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CreatorLabels {
    by: NodeCreator,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct SubnetLabels {
    subnet: String,
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

/// Declares [`Families`] from a table with one line per metric family:
///
/// ```text
/// name: Type [= initial value] [, unit] => "HELP text",
/// ```
///
/// `name` is the metric's name after `rackboot_` (the unit and, for a
/// counter, `_total` are appended by the encoder) and the field of
/// [`Families`] that counts it; `Type` is a prometheus-client metric
/// (`Counter`, `Gauge`, `Family<Labels, Counter>`...), built with
/// `Default` unless an initial value is given. The HELP text is what
/// `promtool check metrics` insists on: a sentence for whoever reads the
/// dashboard, without backslashes or double quotes.
macro_rules! families {
    (@new $ty:ty) => { <$ty>::default() };
    (@new $ty:ty, $init:expr) => { $init };
    (@register $r:ident, $metric:expr, $name:expr, $help:literal) => {
        $r.register($name, $help, $metric.clone())
    };
    (@register $r:ident, $metric:expr, $name:expr, $help:literal, $unit:expr) => {
        $r.register_with_unit($name, $help, $unit, $metric.clone())
    };
    ($($name:ident: $ty:ty $(= $init:expr)? $(, $unit:expr)? => $help:literal,)+) => {
        /// Every metric family under `rackboot_`, one field each, sharing its
        /// atomics with the registry: count through the field (or a method of
        /// [`Metrics`] that picks the labels).
        #[derive(Debug)]
        pub struct Families {
            $(pub(crate) $name: $ty,)+
        }

        impl Families {
            fn register(registry: &mut Registry) -> Families {
                let families = Families {
                    $($name: families!(@new $ty $(, $init)?),)+
                };
                $(families!(@register registry, families.$name, stringify!($name), $help $(, $unit)?);)+
                families
            }

            /// Every family's HELP text, for the test that checks them.
            #[cfg(test)]
            const HELP: &[(&str, &str)] = &[$((stringify!($name), $help),)+];
        }
    };
}

families! {
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
    nodes_created: Family<CreatorLabels, Counter>
        => "Node records made for a MAC rackboot had never seen, by the request that made it",
    nodes_reaped: Counter
        => "Node records the lifecycle sweep removed: made for an unknown MAC, never past discovered, idle longer than lifecycle.reap_discovered_after",
    dhcp_pool_declined: Family<SubnetLabels, Gauge>
        => "Addresses in the subnet's dynamic ranges quarantined after a DHCPDECLINE",
    tftp_transfers: Family<ResultLabels, Counter> => "TFTP requests by outcome",
    tftp_sent: Counter, Unit::Bytes => "File bytes read out to TFTP clients",
    tftp_retransmissions: Counter
        => "TFTP packets (DATA or OACK) sent again: after a timeout, or from a windowed client's early ACK",
    tftp_queued: Gauge => "TFTP transfers waiting for a free tftp.max_transfers slot",
    tftp_active: Gauge => "TFTP transfers holding a tftp.max_transfers slot",
    http_requests: Family<HttpLabels, Counter> => "HTTP requests by route class and status class",
    http_connections: Gauge => "HTTP and HTTPS connections open",
    http_connections_refused: Family<ConnRefusalLabels, Counter>
        => "HTTP and HTTPS connections closed as soon as accepted, by reason: per_address (http.max_connections_per_address), reserve (only the reserve left, for addresses holding few), full (http.max_connections)",
    http_timeouts: Family<HttpTimeoutLabels, Counter>
        => "HTTP and HTTPS connections closed for taking too long, by phase: header, body, send (the client took no bytes), idle (no next request)",
    http_boot_waits: Family<SubnetLabels, Counter>
        => "Boot scripts that told a node to wait for a boot slot ([admission] max_booting), by subnet",
    boots_in_flight: Family<SubnetLabels, Gauge>
        => "Nodes holding a boot slot (fetching kernel and initrds) under an [admission] limit, by subnet",
    dns_queries: Family<DnsLabels, Counter>
        => "DNS questions by query type and result (forwarded: handed to [dns] forwarders)",
    dns_forward_failures: Counter
        => "Forwarded DNS questions answered SERVFAIL: no forwarder answered in time, or too many were out at once",
    catalog_reloads: Family<ReloadLabels, Counter> => "Reloads of bootenvs and config scripts, by outcome",
    catalog_files_ok: Gauge
        => "1 when the bootenv and script files on disk are the ones in force, 0 after a rejected edit",
    asset_fetches: Family<FetchLabels, Counter>
        => "Downloads of remote assets (bootenv `{ url, sha256 }`), by outcome",
    asset_fetched: Counter, Unit::Bytes => "Bytes of remote assets downloaded and stored",
    asset_drops: Family<DropLabels, Counter> => "Kernels dropped into assets.drop_dir, by outcome",
    boot_refusals: Family<BootRefusalLabels, Counter>
        => "Requests for a node's boot script or with its node token refused (not from the node's address, or a token not of its current boot), by reason",
    secret_refusals: Counter
        => "Documents holding a secret asked for again within one boot and refused (someone else has the token, or the node is confused)",
    request_panics: Family<ServiceLabels, Counter>
        => "Requests whose handling panicked: the request got no answer, the service kept serving (a bug: the packet is logged in hex), by service",
    store_unsaved_changes: Gauge
        => "Changes the store could not save yet (a full or failing disk under the state directory), kept in memory and retried every second; 0 when everything is saved",
    store_failed_commits: Counter
        => "Commits to the store's database that failed (their changes are kept and retried)",
    store_failed_journal_appends: Counter
        => "Appends to the store's journal that failed (the lease was committed instead, or the new node record refused)",
}

/// The DNS counters by query type and result, taken out of their family
/// once so that counting a question touches no lock and no hash map.
#[derive(Debug)]
struct DnsCounters([[Counter; DnsResult::ALL.len()]; DnsType::ALL.len()]);

/// Every metric rackboot exports. Built once at start-up and shared (`Arc`)
/// by the DHCP, TFTP, HTTP and DNS services.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) families: Families,
    pools: Vec<PoolGauges>,
    dns: DnsCounters,
}

label_value! {
    /// How the download of a remote asset (a bootenv's `{ url, sha256 }`) ended.
    AssetFetch {
        /// Downloaded, digest checked, stored.
        Fetched => "fetched",
        /// Every URL failed (unreachable, error status, digest mismatch, cannot store).
        Failed => "failed",
    }
}

label_value! {
    /// What became of a kernel and initrds dropped into `assets.drop_dir`.
    AssetDrop {
        /// Stored and named in the bootenv; moved to `done/`.
        Imported => "imported",
        /// Refused (wrong architecture, a bootenv that would not load...); moved to `rejected/`.
        Rejected => "rejected",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FetchLabels {
    result: AssetFetch,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    result: AssetDrop,
}

label_value! {
    /// Why a request for a node's boot script, or with its node token, was refused.
    BootRefusal {
        /// rackboot knows no address for the MAC (no lease, no fixed address, no
        /// proxyDHCP exchange; an unknown MAC too).
        NoAddress => "no_address",
        /// It came from an address that is not the node's.
        OtherAddress => "other_address",
        /// No token, another node's, or that of a boot that is over.
        BadToken => "bad_token",
        /// The install-complete callback from a node not booting an installer.
        NotInstalling => "not_installing",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BootRefusalLabels {
    reason: BootRefusal,
}

label_value! {
    /// How a reload of bootenvs and config scripts ended.
    ReloadResult {
        /// The new files are in force.
        Applied => "applied",
        /// A file was refused; the previous version keeps serving.
        Rejected => "rejected",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    result: ReloadResult,
}

label_value! {
    /// A service that handles requests from the network.
    Service {
        /// DHCP on port 67.
        Dhcp => "dhcp",
        /// The PXE boot server on port 4011 (proxy subnets).
        PxeBootServer => "pxe_boot_server",
        /// DNS over UDP and TCP.
        Dns => "dns",
        /// TFTP requests.
        Tftp => "tftp",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    service: Service,
}

impl Metrics {
    /// The registry with every series at zero; `pools` are the subnets whose
    /// address use `rackboot_dhcp_pool_*` reports.
    pub fn new(pools: &[PoolRanges]) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let f = Families::register(registry.sub_registry_with_prefix("rackboot"));
        f.catalog_files_ok.set(1);

        // Every series from start-up on, at 0, so that rate() sees the first event.
        for &t in DhcpType::ALL {
            f.dhcp_received
                .get_or_create_owned(&TypeLabels { r#type: t });
        }
        for &t in DhcpReply::ALL {
            f.dhcp_replies
                .get_or_create_owned(&ReplyLabels { r#type: t });
        }
        for &reason in IgnoreReason::ALL {
            f.dhcp_ignored.get_or_create_owned(&ReasonLabels { reason });
        }
        for &by in NodeCreator::ALL {
            f.nodes_created.get_or_create_owned(&CreatorLabels { by });
        }
        for &service in Service::ALL {
            f.request_panics
                .get_or_create_owned(&ServiceLabels { service });
        }
        for &result in AssetFetch::ALL {
            f.asset_fetches.get_or_create_owned(&FetchLabels { result });
        }
        for &result in AssetDrop::ALL {
            f.asset_drops.get_or_create_owned(&DropLabels { result });
        }
        for &reason in BootRefusal::ALL {
            f.boot_refusals
                .get_or_create_owned(&BootRefusalLabels { reason });
        }
        for &result in ReloadResult::ALL {
            f.catalog_reloads
                .get_or_create_owned(&ReloadLabels { result });
        }
        for &result in TftpResult::ALL {
            f.tftp_transfers
                .get_or_create_owned(&ResultLabels { result });
        }
        for &reason in ConnRefusal::ALL {
            f.http_connections_refused
                .get_or_create_owned(&ConnRefusalLabels { reason });
        }
        for &phase in HttpTimeout::ALL {
            f.http_timeouts
                .get_or_create_owned(&HttpTimeoutLabels { phase });
        }
        for &route in Area::ALL {
            for &status in StatusClass::ALL {
                f.http_requests
                    .get_or_create_owned(&HttpLabels { route, status });
            }
        }
        let dns = DnsCounters(std::array::from_fn(|t| {
            std::array::from_fn(|r| {
                f.dns_queries.get_or_create_owned(&DnsLabels {
                    r#type: DnsType::ALL[t],
                    result: DnsResult::ALL[r],
                })
            })
        }));
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

        Metrics {
            registry,
            families: f,
            pools,
            dns,
        }
    }

    /// A DNS question was decided (or dropped, as `malformed`). Indexing, not
    /// a label lookup: this runs once per question on the DNS hot path.
    pub fn dns_query(&self, r#type: DnsType, result: DnsResult) {
        self.dns.0[r#type as usize][result as usize].inc();
    }

    /// A forwarded DNS question got SERVFAIL instead of an upstream answer.
    pub fn dns_forward_failed(&self) {
        self.families.dns_forward_failures.inc();
    }

    /// How many questions of this type had this result so far.
    pub fn dns_count(&self, r#type: DnsType, result: DnsResult) -> u64 {
        self.dns.0[r#type as usize][result as usize].get()
    }
    /// A remote asset's download ended; `bytes` stored when fetched.
    pub fn asset_fetched(&self, result: AssetFetch, bytes: u64) {
        self.families
            .asset_fetches
            .get_or_create(&FetchLabels { result })
            .inc();
        self.families.asset_fetched.inc_by(bytes);
    }

    /// A drop-folder import ended.
    pub fn asset_dropped(&self, result: AssetDrop) {
        self.families
            .asset_drops
            .get_or_create(&DropLabels { result })
            .inc();
    }

    /// A reload of bootenvs and config scripts was applied or rejected.
    pub fn catalog_reloaded(&self, result: ReloadResult) {
        self.families
            .catalog_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        self.families
            .catalog_files_ok
            .set(i64::from(result == ReloadResult::Applied));
    }

    pub fn dhcp_received(&self, kind: DhcpType) {
        self.families
            .dhcp_received
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    pub fn dhcp_replied(&self, kind: DhcpReply) {
        self.families
            .dhcp_replies
            .get_or_create(&ReplyLabels { r#type: kind })
            .inc();
    }

    /// A request whose handling panicked and was contained.
    pub fn request_panicked(&self, service: Service) {
        self.families
            .request_panics
            .get_or_create(&ServiceLabels { service })
            .inc();
    }

    /// The store's health, read at scrape time; the counters follow the
    /// store's own running totals.
    pub fn update_store(&self, h: crate::store::StoreHealth) {
        let f = &self.families;
        f.store_unsaved_changes
            .set(i64::try_from(h.unsaved).unwrap_or(i64::MAX));
        for (counter, total) in [
            (&f.store_failed_commits, h.failed_commits),
            (&f.store_failed_journal_appends, h.failed_appends),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// A node record made for a MAC never seen before.
    pub fn node_created(&self, by: NodeCreator) {
        self.families
            .nodes_created
            .get_or_create(&CreatorLabels { by })
            .inc();
    }

    /// Node records reaped by the lifecycle sweep.
    pub fn nodes_reaped(&self, n: usize) {
        self.families.nodes_reaped.inc_by(n as u64);
    }

    /// The gauge of leases in `subnet`'s pool held by unknown clients,
    /// taken once: DHCP sets it as it counts them.
    pub fn dhcp_pool_unknown(&self, subnet: Ipv4Net) -> Gauge {
        self.families
            .dhcp_pool_unknown
            .get_or_create_owned(&SubnetLabels {
                subnet: subnet.to_string(),
            })
    }

    pub fn dhcp_ignored(&self, reason: IgnoreReason) {
        self.families
            .dhcp_ignored
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// How long a reply took, from receiving its packet.
    pub fn dhcp_decided(&self, elapsed: Duration) {
        self.families.dhcp_decision.observe(elapsed.as_secs_f64());
    }

    pub fn tftp_transfer(&self, result: TftpResult) {
        self.families
            .tftp_transfers
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn tftp_sent_bytes(&self, n: u64) {
        self.families.tftp_sent.inc_by(n);
    }

    /// A request for a node's credentials was refused.
    pub fn boot_refused(&self, reason: BootRefusal) {
        self.families
            .boot_refusals
            .get_or_create(&BootRefusalLabels { reason })
            .inc();
    }

    /// A document holding a secret was asked for again within one boot.
    pub fn secret_refused(&self) {
        self.families.secret_refusals.inc();
    }

    /// A node was told to wait for a boot slot on `subnet` (a CIDR, or `other`).
    pub fn boot_waited(&self, subnet: &str) {
        self.families
            .http_boot_waits
            .get_or_create(&SubnetLabels {
                subnet: subnet.to_string(),
            })
            .inc();
    }

    /// Slots in use per subnet, set at scrape time from the admission state.
    pub fn update_boots_in_flight(&self, pools: &[(String, u32)]) {
        for (subnet, n) in pools {
            self.families
                .boots_in_flight
                .get_or_create(&SubnetLabels {
                    subnet: subnet.clone(),
                })
                .set(i64::from(*n));
        }
    }

    /// `n` TFTP packets were sent again.
    pub fn tftp_retransmitted(&self, n: u64) {
        self.families.tftp_retransmissions.inc_by(n);
    }

    /// A transfer joined (+1) or left (-1) the queue for a slot.
    pub fn tftp_queued(&self, delta: i64) {
        self.families.tftp_queued.inc_by(delta);
    }

    /// A transfer took (+1) or freed (-1) a slot.
    pub fn tftp_active(&self, delta: i64) {
        self.families.tftp_active.inc_by(delta);
    }

    /// A connection opened (+1) or closed (-1).
    pub fn http_connections(&self, delta: i64) {
        self.families.http_connections.inc_by(delta);
    }

    pub fn http_connection_refused(&self, reason: ConnRefusal) {
        self.families
            .http_connections_refused
            .get_or_create(&ConnRefusalLabels { reason })
            .inc();
    }

    pub fn http_timed_out(&self, phase: HttpTimeout) {
        self.families
            .http_timeouts
            .get_or_create(&HttpTimeoutLabels { phase })
            .inc();
    }

    pub fn http_request(&self, route: Area, status: u16) {
        let status = StatusClass::of(status);
        self.families
            .http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
    }

    /// Sets the pool gauges from the leases `visit` shows in each range (as
    /// [`crate::store::Store::visit_leases`] does): a live offered or bound
    /// lease counts as leased, a live declined one as declined. Only the
    /// ranges are visited, so addresses outside them (fixed ones) count
    /// nowhere.
    pub fn update_pools(&self, now: Timestamp, visit: impl VisitLeases) {
        for pool in &self.pools {
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

    /// Every metric, the `process_*` ones first, in `format` (whose
    /// [`Format::content_type`] the response carries).
    pub fn render(&self, format: Format) -> Result<String, RenderError> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        match format {
            Format::OpenMetrics => Ok(out),
            Format::Text => openmetrics_to_text(&out),
        }
    }
}

/// Shows each lease from one address to another (first, last) to a
/// counting closure, as [`crate::store::Store::visit_leases`] does.
pub trait VisitLeases: Fn(Ipv4Addr, Ipv4Addr, &mut dyn FnMut(&Lease)) {}
impl<F: Fn(Ipv4Addr, Ipv4Addr, &mut dyn FnMut(&Lease))> VisitLeases for F {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mac;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// What `Store::visit_leases` does, over a slice.
    fn visit(leases: &[Lease]) -> impl VisitLeases + '_ {
        move |first, last, f| {
            leases
                .iter()
                .filter(|l| (first..=last).contains(&l.ip))
                .for_each(f)
        }
    }

    /// Each sample line as (name, labels, value); panics on a line that is
    /// not `name{labels} value` or `name value`.
    fn samples(text: &str) -> Vec<(String, String, f64)> {
        assert!(text.ends_with("# EOF\n"), "{text}");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("value in {l}")),
                };
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or_else(|| panic!("{l}"))),
                    None => (series, ""),
                };
                assert!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
                    "name in {l}"
                );
                (name.to_string(), labels.to_string(), value)
            })
            .collect()
    }

    fn value(samples: &[(String, String, f64)], name: &str, labels: &str) -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in {samples:#?}"))
            .2
    }

    #[test]
    fn renders_every_family_with_its_labels() {
        let m = Metrics::new(&[
            PoolRanges {
                subnet: "10.77.0.0/24".parse().unwrap(),
                ranges: vec![(ip("10.77.0.100"), ip("10.77.0.199"))],
            },
            PoolRanges {
                subnet: "10.78.0.0/16".parse().unwrap(),
                ranges: vec![
                    (ip("10.78.1.0"), ip("10.78.1.255")),
                    (ip("10.78.2.10"), ip("10.78.2.10")),
                ],
            },
        ]);
        m.dhcp_received(DhcpType::of(Some(MessageType::Discover)));
        m.dhcp_received(DhcpType::of(Some(MessageType::Discover)));
        m.dhcp_received(DhcpType::of(Some(MessageType::Offer)));
        m.dhcp_received(DhcpType::of(None));
        m.dhcp_replied(DhcpReply::of(Some(MessageType::Offer)).unwrap());
        assert_eq!(DhcpReply::of(Some(MessageType::Request)), None);
        m.dhcp_ignored(IgnoreReason::PoolExhausted);
        m.dhcp_decided(Duration::from_micros(70));
        m.dhcp_decided(Duration::from_secs(3));
        m.tftp_transfer(TftpResult::Sent);
        m.tftp_transfer(TftpResult::NotFound);
        m.tftp_sent_bytes(5000);
        m.tftp_retransmitted(3);
        m.tftp_queued(2);
        m.tftp_queued(-1);
        m.http_request(Area::of_path("/boot/52:54:00:00:00:01.ipxe"), 200);
        m.http_request(Area::of_path("/assets/x86_64/vmlinuz"), 206);
        m.http_request(Area::of_path("/assets/nope"), 404);
        m.http_request(Area::of_path("/metrics"), 200);
        m.http_request(Area::of_path("/metricsx"), 404);
        m.http_request(Area::of_path("/api/v1/nodes"), 500);
        m.http_request(
            Area::of_path("/cloud-init/52:54:00:00:00:01/t/user-data"),
            200,
        );
        m.http_request(
            Area::of_path("/answers/52:54:00:00:00:01/t/preseed.cfg"),
            403,
        );
        m.dns_query(DnsType::of(RecordType::A), DnsResult::NxDomain);
        m.dns_query(DnsType::of(RecordType::A), DnsResult::NxDomain);
        m.dns_query(DnsType::of(RecordType::MX), DnsResult::Forwarded);
        m.dns_forward_failed();

        let now = Timestamp(1_000_000);
        let lease = |s: &str, state, live: bool| Lease {
            ip: ip(s),
            mac: (state != LeaseState::Declined).then(|| Mac::new([2, 0, 0, 0, 0, 1])),
            state,
            expires: if live {
                now.plus_secs(60)
            } else {
                Timestamp(1)
            },
        };
        let leases = [
            lease("10.77.0.100", LeaseState::Bound, true),
            lease("10.77.0.150", LeaseState::Offered, true),
            lease("10.77.0.151", LeaseState::Offered, false),
            lease("10.77.0.152", LeaseState::Declined, true),
            // A fixed address outside the ranges.
            lease("10.77.0.5", LeaseState::Bound, true),
            lease("10.78.2.10", LeaseState::Bound, true),
        ];
        m.update_pools(now, visit(&leases));

        let text = m.render(Format::OpenMetrics).unwrap();
        let s = samples(&text);
        for family in [
            "# TYPE rackboot_dhcp_received counter",
            "# TYPE rackboot_dhcp_replies counter",
            "# TYPE rackboot_dhcp_ignored counter",
            "# TYPE rackboot_dhcp_decision_seconds histogram",
            "# TYPE rackboot_dhcp_pool_addresses gauge",
            "# TYPE rackboot_dhcp_pool_leased gauge",
            "# TYPE rackboot_tftp_transfers counter",
            "# TYPE rackboot_tftp_sent_bytes counter",
            "# TYPE rackboot_http_requests counter",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
        let received = "rackboot_dhcp_received_total";
        assert_eq!(value(&s, received, r#"type="discover""#), 2.0);
        assert_eq!(value(&s, received, r#"type="other""#), 2.0);
        assert_eq!(
            value(&s, received, r#"type="decline""#),
            0.0,
            "zero series exist"
        );
        assert_eq!(
            value(&s, "rackboot_dhcp_replies_total", r#"type="offer""#),
            1.0
        );
        assert_eq!(
            value(&s, "rackboot_dhcp_replies_total", r#"type="nak""#),
            0.0
        );
        let ignored = "rackboot_dhcp_ignored_total";
        assert_eq!(value(&s, ignored, r#"reason="pool_exhausted""#), 1.0);
        assert_eq!(value(&s, ignored, r#"reason="unsupported_arch""#), 0.0);

        let hist = "rackboot_dhcp_decision_seconds";
        assert_eq!(value(&s, &format!("{hist}_count"), ""), 2.0);
        assert_eq!(value(&s, &format!("{hist}_bucket"), r#"le="0.00005""#), 0.0);
        assert_eq!(value(&s, &format!("{hist}_bucket"), r#"le="0.0001""#), 1.0);
        assert_eq!(value(&s, &format!("{hist}_bucket"), r#"le="1.0""#), 1.0);
        assert_eq!(value(&s, &format!("{hist}_bucket"), r#"le="+Inf""#), 2.0);

        let sub = r#"subnet="10.77.0.0/24""#;
        assert_eq!(value(&s, "rackboot_dhcp_pool_addresses", sub), 100.0);
        assert_eq!(value(&s, "rackboot_dhcp_pool_leased", sub), 2.0);
        assert_eq!(value(&s, "rackboot_dhcp_pool_declined", sub), 1.0);
        let sub = r#"subnet="10.78.0.0/16""#;
        assert_eq!(value(&s, "rackboot_dhcp_pool_addresses", sub), 257.0);
        assert_eq!(value(&s, "rackboot_dhcp_pool_leased", sub), 1.0);

        let tftp = "rackboot_tftp_transfers_total";
        assert_eq!(value(&s, tftp, r#"result="sent""#), 1.0);
        assert_eq!(value(&s, tftp, r#"result="not_found""#), 1.0);
        assert_eq!(value(&s, tftp, r#"result="refused""#), 0.0);
        assert_eq!(value(&s, "rackboot_tftp_sent_bytes_total", ""), 5000.0);
        assert_eq!(value(&s, "rackboot_tftp_retransmissions_total", ""), 3.0);
        assert_eq!(value(&s, "rackboot_tftp_queued", ""), 1.0);
        assert_eq!(value(&s, "rackboot_tftp_active", ""), 0.0);
        assert_eq!(value(&s, tftp, r#"result="busy""#), 0.0);

        let http = "rackboot_http_requests_total";
        assert_eq!(value(&s, http, r#"route="boot",status="2xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="assets",status="2xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="assets",status="4xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="metrics",status="2xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="other",status="4xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="api",status="5xx""#), 1.0);
        // Seeds and answer files are their own routes, not "other".
        assert_eq!(value(&s, http, r#"route="cloud_init",status="2xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="answers",status="4xx""#), 1.0);
        assert_eq!(value(&s, http, r#"route="answers",status="2xx""#), 0.0);

        let dns = "rackboot_dns_queries_total";
        assert_eq!(value(&s, dns, r#"type="a",result="nxdomain""#), 2.0);
        assert_eq!(value(&s, dns, r#"type="other",result="forwarded""#), 1.0);
        assert_eq!(value(&s, dns, r#"type="ptr",result="answered""#), 0.0);
        assert_eq!(m.dns_count(DnsType::A, DnsResult::NxDomain), 2);
        assert_eq!(value(&s, "rackboot_dns_forward_failures_total", ""), 1.0);

        assert!(value(&s, "process_open_fds", "") >= 3.0);
        assert!(value(&s, "process_resident_memory_bytes", "") > 0.0);
        assert!(value(&s, "process_cpu_seconds_total", "") >= 0.0);
        assert!(
            text.contains("# TYPE process_cpu_seconds counter\n"),
            "{text}"
        );
    }

    /// Every family in the text format, as `promtool check metrics` reads it: a HELP and a
    /// TYPE line named like the samples that follow (a counter's with `_total`), and nothing
    /// OpenMetrics only.
    #[test]
    fn the_text_format_names_every_family_as_its_samples() {
        let m = Metrics::new(&[PoolRanges {
            subnet: "10.77.0.0/24".parse().unwrap(),
            ranges: vec![(ip("10.77.0.100"), ip("10.77.0.101"))],
        }]);
        m.dhcp_decided(Duration::from_millis(2));
        m.boot_waited("10.77.0.0/24");
        let text = m.render(Format::Text).unwrap();
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let mut family = (String::new(), String::new());
        let mut names = Vec::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let (name, help) = help.split_once(' ').unwrap();
                assert!(!help.is_empty(), "{line}");
                family = (name.to_string(), String::new());
                names.push(name.to_string());
            } else if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                assert_eq!(name, family.0, "TYPE right after its HELP: {line}");
                family.1 = kind.to_string();
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = match family.1.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name),
                    _ => name,
                };
                assert_eq!(base, family.0, "sample under its family's TYPE: {line}");
                assert_eq!(
                    family.1 == "counter",
                    name.ends_with("_total"),
                    "counters, and only counters, end in _total: {line}"
                );
            }
        }
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
            "rackboot_dhcp_received_total",
            "rackboot_dhcp_decision_seconds",
            "rackboot_tftp_sent_bytes_total",
            "rackboot_dns_queries_total",
            "rackboot_http_boot_waits_total",
            "rackboot_catalog_files_ok",
        ] {
            assert!(names.iter().any(|n| n == name), "no family {name}:\n{text}");
        }
        let (om, text) = (
            samples(&m.render(Format::OpenMetrics).unwrap()),
            m.render(Format::Text).unwrap(),
        );
        let counter = r#"rackboot_dhcp_ignored_total{reason="error"} 0"#;
        assert!(text.lines().any(|l| l == counter), "{text}");
        assert_eq!(
            value(&om, "rackboot_dhcp_ignored_total", r#"reason="error""#),
            0.0
        );
    }

    #[test]
    fn every_help_text_is_a_plain_sentence() {
        for (name, help) in Families::HELP {
            assert!(
                !help.is_empty() && !help.contains(['\\', '"', '\n']),
                "rackboot_{name}: HELP {help:?} is empty or needs escaping"
            );
        }
    }

    #[test]
    fn a_second_scrape_replaces_the_pool_gauges() {
        let m = Metrics::new(&[PoolRanges {
            subnet: "10.77.0.0/24".parse().unwrap(),
            ranges: vec![(ip("10.77.0.100"), ip("10.77.0.101"))],
        }]);
        let now = Timestamp(10_000);
        let bound = Lease {
            ip: ip("10.77.0.100"),
            mac: Some(Mac::new([2, 0, 0, 0, 0, 1])),
            state: LeaseState::Bound,
            expires: now.plus_secs(1),
        };
        m.update_pools(now, visit(std::slice::from_ref(&bound)));
        m.update_pools(now.plus_secs(2), visit(&[bound]));
        let s = samples(&m.render(Format::OpenMetrics).unwrap());
        let sub = r#"subnet="10.77.0.0/24""#;
        assert_eq!(value(&s, "rackboot_dhcp_pool_leased", sub), 0.0, "expired");
        assert_eq!(value(&s, "rackboot_dhcp_pool_addresses", sub), 2.0);
    }

    #[test]
    fn the_store_health_series_follow_the_store() {
        let m = Metrics::new(&[]);
        let s = samples(&m.render(Format::OpenMetrics).unwrap());
        assert_eq!(value(&s, "rackboot_store_unsaved_changes", ""), 0.0);
        assert_eq!(value(&s, "rackboot_store_failed_commits_total", ""), 0.0);
        let failing = crate::store::StoreHealth {
            unsaved: 51,
            failed_commits: 3,
            failed_appends: 2,
        };
        m.update_store(failing);
        // A second scrape of the same counts adds nothing.
        m.update_store(failing);
        let s = samples(&m.render(Format::OpenMetrics).unwrap());
        assert_eq!(value(&s, "rackboot_store_unsaved_changes", ""), 51.0);
        assert_eq!(value(&s, "rackboot_store_failed_commits_total", ""), 3.0);
        assert_eq!(
            value(&s, "rackboot_store_failed_journal_appends_total", ""),
            2.0
        );
        m.update_store(crate::store::StoreHealth {
            unsaved: 0,
            ..failing
        });
        let s = samples(&m.render(Format::OpenMetrics).unwrap());
        assert_eq!(value(&s, "rackboot_store_unsaved_changes", ""), 0.0);
    }
}
