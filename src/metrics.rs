//! Prometheus metrics: owns the registry, every metric family rackboot
//! exports at `GET /metrics`, and the label values they take.
//!
//! The protocols count through the one [`Metrics`] they are handed (no
//! globals). Counting is all they do here: no metric decides anything. On the
//! DHCP path a count is an atomic add behind a read lock, with labels that are
//! `Copy` enums, so nothing is allocated per packet. The pool gauges are the
//! exception: they are computed at scrape time ([`Metrics::update_pools`])
//! from the store's leases, so the DHCP path never maintains them.
//!
//! Does not own the `/metrics` route (that is `http`), nor where leases live
//! (the store).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::MessageType;
use ipnet::Ipv4Net;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{Lease, LeaseState, Timestamp};

/// The content type of [`Metrics::render`]: OpenMetrics text, which
/// Prometheus scrapes natively (and which is Prometheus text plus `# UNIT`
/// and a closing `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        /// Started but not finished: the client sent an error (a size probe's
        /// refusal of the OACK included), stopped answering, or rackboot failed.
        Aborted => "aborted",
    }
}

label_value! {
    /// Which part of the HTTP service a request was for.
    HttpRoute {
        Boot => "boot",
        Assets => "assets",
        Node => "node",
        Api => "api",
        Metrics => "metrics",
        Other => "other",
    }
}

impl HttpRoute {
    /// The route class of a request path (before routing, so a 404 is classed too).
    pub fn of_path(path: &str) -> HttpRoute {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "boot" => HttpRoute::Boot,
            "assets" => HttpRoute::Assets,
            "node" => HttpRoute::Node,
            "api" => HttpRoute::Api,
            "metrics" if path == "/metrics" => HttpRoute::Metrics,
            _ => HttpRoute::Other,
        }
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    r#type: DhcpType,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReplyLabels {
    r#type: DhcpReply,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: IgnoreReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: TftpResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: HttpRoute,
    status: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubnetLabels {
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

/// Every metric rackboot exports. Built once at start-up and shared (`Arc`)
/// by the DHCP, TFTP and HTTP services.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    dhcp_received: Family<TypeLabels, Counter>,
    dhcp_replies: Family<ReplyLabels, Counter>,
    dhcp_ignored: Family<ReasonLabels, Counter>,
    dhcp_decision: Histogram,
    pools: Vec<PoolGauges>,
    tftp_transfers: Family<ResultLabels, Counter>,
    tftp_sent_bytes: Counter,
    tftp_retransmissions: Counter,
    tftp_queued: Gauge,
    tftp_active: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    catalog_reloads: Family<ReloadLabels, Counter>,
    catalog_ok: Gauge,
    asset_fetches: Family<FetchLabels, Counter>,
    asset_fetched_bytes: Counter,
    asset_drops: Family<DropLabels, Counter>,
    boot_waits: Family<SubnetLabels, Counter>,
    boots_in_flight: Family<SubnetLabels, Gauge>,
    request_panics: Family<ServiceLabels, Counter>,
    store_unsaved: Gauge,
    store_failed_commits: Counter,
    store_failed_appends: Counter,
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
struct FetchLabels {
    result: AssetFetch,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    result: AssetDrop,
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
struct ServiceLabels {
    service: Service,
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
struct ReloadLabels {
    result: ReloadResult,
}

impl Metrics {
    /// The registry with every series at zero; `pools` are the subnets whose
    /// address use `rackboot_dhcp_pool_*` reports.
    pub fn new(pools: &[PoolRanges]) -> Metrics {
        let mut registry = Registry::with_prefix("rackboot");
        let dhcp_received = Family::<TypeLabels, Counter>::default();
        let dhcp_replies = Family::<ReplyLabels, Counter>::default();
        let dhcp_ignored = Family::<ReasonLabels, Counter>::default();
        let dhcp_decision = Histogram::new(DECISION_BUCKETS);
        let pool_addresses = Family::<SubnetLabels, Gauge>::default();
        let pool_leased = Family::<SubnetLabels, Gauge>::default();
        let pool_declined = Family::<SubnetLabels, Gauge>::default();
        let tftp_transfers = Family::<ResultLabels, Counter>::default();
        let tftp_sent_bytes = Counter::default();
        let tftp_retransmissions = Counter::default();
        let tftp_queued = Gauge::default();
        let tftp_active = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let catalog_reloads = Family::<ReloadLabels, Counter>::default();
        let catalog_ok = Gauge::default();
        catalog_ok.set(1);
        let asset_fetches = Family::<FetchLabels, Counter>::default();
        let asset_fetched_bytes = Counter::default();
        let asset_drops = Family::<DropLabels, Counter>::default();
        let boot_waits = Family::<SubnetLabels, Counter>::default();
        let boots_in_flight = Family::<SubnetLabels, Gauge>::default();
        let request_panics = Family::<ServiceLabels, Counter>::default();
        let store_unsaved = Gauge::default();
        let store_failed_commits = Counter::default();
        let store_failed_appends = Counter::default();

        registry.register(
            "dhcp_received",
            "DHCP packets received, by message type (decline: the client found its address in use)",
            dhcp_received.clone(),
        );
        registry.register(
            "dhcp_replies",
            "DHCP replies sent, by message type",
            dhcp_replies.clone(),
        );
        registry.register(
            "dhcp_ignored",
            "DHCP packets answered with nothing, by reason",
            dhcp_ignored.clone(),
        );
        registry.register_with_unit(
            "dhcp_decision",
            "Time from receiving a DHCP packet to having its reply ready",
            Unit::Seconds,
            dhcp_decision.clone(),
        );
        registry.register(
            "dhcp_pool_addresses",
            "Addresses in the subnet's dynamic ranges",
            pool_addresses.clone(),
        );
        registry.register(
            "dhcp_pool_leased",
            "Addresses in the subnet's dynamic ranges held by a live lease (offered or bound)",
            pool_leased.clone(),
        );
        registry.register(
            "dhcp_pool_declined",
            "Addresses in the subnet's dynamic ranges quarantined after a DHCPDECLINE",
            pool_declined.clone(),
        );
        registry.register(
            "tftp_transfers",
            "TFTP requests by outcome",
            tftp_transfers.clone(),
        );
        registry.register_with_unit(
            "tftp_sent",
            "File bytes read out to TFTP clients",
            Unit::Bytes,
            tftp_sent_bytes.clone(),
        );
        registry.register(
            "tftp_retransmissions",
            "TFTP packets (DATA or OACK) sent again: after a timeout, or from a windowed client's early ACK",
            tftp_retransmissions.clone(),
        );
        registry.register(
            "tftp_queued",
            "TFTP transfers waiting for a free tftp.max_transfers slot",
            tftp_queued.clone(),
        );
        registry.register(
            "tftp_active",
            "TFTP transfers holding a tftp.max_transfers slot",
            tftp_active.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route class and status class",
            http_requests.clone(),
        );
        registry.register(
            "catalog_reloads",
            "Reloads of bootenvs and config scripts, by outcome",
            catalog_reloads.clone(),
        );
        registry.register(
            "catalog_files_ok",
            "1 when the bootenv and script files on disk are the ones in force, 0 after a rejected edit",
            catalog_ok.clone(),
        );
        registry.register(
            "asset_fetches",
            "Downloads of remote assets (bootenv `{ url, sha256 }`), by outcome",
            asset_fetches.clone(),
        );
        registry.register_with_unit(
            "asset_fetched",
            "Bytes of remote assets downloaded and stored",
            Unit::Bytes,
            asset_fetched_bytes.clone(),
        );
        registry.register(
            "asset_drops",
            "Kernels dropped into assets.drop_dir, by outcome",
            asset_drops.clone(),
        );
        registry.register(
            "http_boot_waits",
            "Boot scripts that told a node to wait for a boot slot ([admission] max_booting), by subnet",
            boot_waits.clone(),
        );
        registry.register(
            "boots_in_flight",
            "Nodes holding a boot slot (fetching kernel and initrds) under an [admission] limit, by subnet",
            boots_in_flight.clone(),
        );
        registry.register(
            "store_unsaved_changes",
            "Changes the store could not save yet (a full or failing disk under the state directory), kept in memory and retried every second; 0 when everything is saved",
            store_unsaved.clone(),
        );
        registry.register(
            "store_failed_commits",
            "Commits to the store's database that failed (their changes are kept and retried)",
            store_failed_commits.clone(),
        );
        registry.register(
            "store_failed_journal_appends",
            "Appends to the store's journal that failed (the lease was committed instead, or the new node record refused)",
            store_failed_appends.clone(),
        );

        registry.register(
            "request_panics",
            "Requests whose handling panicked: the request got no answer, the service kept serving (a bug: the packet is logged in hex), by service",
            request_panics.clone(),
        );

        // Every series from start-up on, at 0, so that rate() sees the first event.
        for &service in Service::ALL {
            request_panics.get_or_create_owned(&ServiceLabels { service });
        }
        for &t in DhcpType::ALL {
            dhcp_received.get_or_create_owned(&TypeLabels { r#type: t });
        }
        for &t in DhcpReply::ALL {
            dhcp_replies.get_or_create_owned(&ReplyLabels { r#type: t });
        }
        for &reason in IgnoreReason::ALL {
            dhcp_ignored.get_or_create_owned(&ReasonLabels { reason });
        }
        for &result in AssetFetch::ALL {
            asset_fetches.get_or_create_owned(&FetchLabels { result });
        }
        for &result in AssetDrop::ALL {
            asset_drops.get_or_create_owned(&DropLabels { result });
        }
        for &result in TftpResult::ALL {
            tftp_transfers.get_or_create_owned(&ResultLabels { result });
        }
        for &route in HttpRoute::ALL {
            for &status in StatusClass::ALL {
                http_requests.get_or_create_owned(&HttpLabels { route, status });
            }
        }
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
                pool_addresses
                    .get_or_create(&labels)
                    .set(i64::try_from(size).unwrap_or(i64::MAX));
                PoolGauges {
                    ranges: p.ranges.clone(),
                    leased: pool_leased.get_or_create_owned(&labels),
                    declined: pool_declined.get_or_create_owned(&labels),
                }
            })
            .collect();

        Metrics {
            registry,
            dhcp_received,
            dhcp_replies,
            dhcp_ignored,
            dhcp_decision,
            pools,
            tftp_transfers,
            tftp_sent_bytes,
            tftp_retransmissions,
            tftp_queued,
            tftp_active,
            http_requests,
            catalog_reloads,
            catalog_ok,
            asset_fetches,
            asset_fetched_bytes,
            asset_drops,
            boot_waits,
            boots_in_flight,
            request_panics,
            store_unsaved,
            store_failed_commits,
            store_failed_appends,
        }
    }

    /// A remote asset's download ended; `bytes` stored when fetched.
    pub fn asset_fetched(&self, result: AssetFetch, bytes: u64) {
        self.asset_fetches
            .get_or_create(&FetchLabels { result })
            .inc();
        self.asset_fetched_bytes.inc_by(bytes);
    }

    /// A drop-folder import ended.
    pub fn asset_dropped(&self, result: AssetDrop) {
        self.asset_drops.get_or_create(&DropLabels { result }).inc();
    }

    /// A reload of bootenvs and config scripts was applied or rejected.
    pub fn catalog_reloaded(&self, result: ReloadResult) {
        self.catalog_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        self.catalog_ok
            .set(i64::from(result == ReloadResult::Applied));
    }

    pub fn dhcp_received(&self, kind: DhcpType) {
        self.dhcp_received
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    pub fn dhcp_replied(&self, kind: DhcpReply) {
        self.dhcp_replies
            .get_or_create(&ReplyLabels { r#type: kind })
            .inc();
    }

    /// A request whose handling panicked and was contained.
    pub fn request_panicked(&self, service: Service) {
        self.request_panics
            .get_or_create(&ServiceLabels { service })
            .inc();
    }

    pub fn dhcp_ignored(&self, reason: IgnoreReason) {
        self.dhcp_ignored
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// How long a reply took, from receiving its packet.
    pub fn dhcp_decided(&self, elapsed: Duration) {
        self.dhcp_decision.observe(elapsed.as_secs_f64());
    }

    pub fn tftp_transfer(&self, result: TftpResult) {
        self.tftp_transfers
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn tftp_sent_bytes(&self, n: u64) {
        self.tftp_sent_bytes.inc_by(n);
    }

    /// A node was told to wait for a boot slot on `subnet` (a CIDR, or `other`).
    pub fn boot_waited(&self, subnet: &str) {
        self.boot_waits
            .get_or_create(&SubnetLabels {
                subnet: subnet.to_string(),
            })
            .inc();
    }

    /// Slots in use per subnet, set at scrape time from the admission state.
    pub fn update_boots_in_flight(&self, pools: &[(String, u32)]) {
        for (subnet, n) in pools {
            self.boots_in_flight
                .get_or_create(&SubnetLabels {
                    subnet: subnet.clone(),
                })
                .set(i64::from(*n));
        }
    }

    /// Sets the store's health series at scrape time from what the store counts.
    pub fn update_store(&self, h: crate::store::StoreHealth) {
        self.store_unsaved
            .set(i64::try_from(h.unsaved).unwrap_or(i64::MAX));
        for (counter, total) in [
            (&self.store_failed_commits, h.failed_commits),
            (&self.store_failed_appends, h.failed_appends),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// `n` TFTP packets were sent again.
    pub fn tftp_retransmitted(&self, n: u64) {
        self.tftp_retransmissions.inc_by(n);
    }

    /// A transfer joined (+1) or left (-1) the queue for a slot.
    pub fn tftp_queued(&self, delta: i64) {
        self.tftp_queued.inc_by(delta);
    }

    /// A transfer took (+1) or freed (-1) a slot.
    pub fn tftp_active(&self, delta: i64) {
        self.tftp_active.inc_by(delta);
    }

    pub fn http_request(&self, route: HttpRoute, status: u16) {
        let status = StatusClass::of(status);
        self.http_requests
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

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
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
        m.http_request(HttpRoute::of_path("/boot/52:54:00:00:00:01.ipxe"), 200);
        m.http_request(HttpRoute::of_path("/assets/x86_64/vmlinuz"), 206);
        m.http_request(HttpRoute::of_path("/assets/nope"), 404);
        m.http_request(HttpRoute::of_path("/metrics"), 200);
        m.http_request(HttpRoute::of_path("/metricsx"), 404);
        m.http_request(HttpRoute::of_path("/api/v1/nodes"), 500);

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

        let text = m.render().unwrap();
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
        let s = samples(&m.render().unwrap());
        let sub = r#"subnet="10.77.0.0/24""#;
        assert_eq!(value(&s, "rackboot_dhcp_pool_leased", sub), 0.0, "expired");
        assert_eq!(value(&s, "rackboot_dhcp_pool_addresses", sub), 2.0);
    }

    #[test]
    fn the_store_health_series_follow_the_store() {
        let m = Metrics::new(&[]);
        let s = samples(&m.render().unwrap());
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
        let s = samples(&m.render().unwrap());
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
        let s = samples(&m.render().unwrap());
        assert_eq!(value(&s, "rackboot_store_unsaved_changes", ""), 0.0);
    }
}
