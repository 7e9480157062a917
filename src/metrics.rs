//! Prometheus metrics: owns the registry behind `GET /metrics`, the shared
//! machinery each metric family is declared with ([`label_value!`],
//! [`families!`]), and the families that belong to no one protocol: node
//! records, the catalog, assets, node credentials, contained panics and the
//! store's health.
//!
//! Each protocol declares and registers its own families, and the methods
//! that count into them, in its `metrics` module: [`crate::dhcp::metrics`],
//! [`crate::tftp::metrics`], [`crate::http::metrics`],
//! [`crate::dns::metrics`]. [`Metrics::new`] registers them all, in that
//! order, then the ones here.
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
//! Adding a metric is one line in the [`families!`] table of its owner: its
//! name (which is also the field that counts it), its type, and its HELP text.
//!
//! Does not own the `/metrics` route (that is `http`), nor where leases live
//! (the store). The exposition formats and their negotiation are in [`text`].

mod process;
mod text;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use process::{ProcessCollector, ProcessStats};
pub use text::{Format, RenderError, openmetrics_to_text};

use crate::dhcp::metrics::{DhcpMetrics, PoolRanges};
use crate::dns::metrics::DnsMetrics;
use crate::http::metrics::HttpMetrics;
use crate::tftp::metrics::TftpMetrics;

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

        impl ::prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                w: &mut ::prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                use std::fmt::Write as _;
                w.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use label_value;

/// Declares a struct of metric families from a table with one line per
/// family:
///
/// ```text
/// name: Type [= initial value] [, unit] => "HELP text",
/// ```
///
/// `name` is the metric's name after `rackboot_` (the unit and, for a
/// counter, `_total` are appended by the encoder) and the field that counts
/// it; `Type` is a prometheus-client metric (`Counter`, `Gauge`,
/// `Family<Labels, Counter>`...), built with `Default` unless an initial
/// value is given. The HELP text is what `promtool check metrics` insists
/// on: a sentence for whoever reads the dashboard, without backslashes or
/// double quotes. `register` adds every family to a registry, in table
/// order, which is the order `/metrics` lists them in.
macro_rules! families {
    (@new $ty:ty) => { <$ty>::default() };
    (@new $ty:ty, $init:expr) => { $init };
    (@register $r:ident, $metric:expr, $name:expr, $help:literal) => {
        $r.register($name, $help, $metric.clone())
    };
    (@register $r:ident, $metric:expr, $name:expr, $help:literal, $unit:expr) => {
        $r.register_with_unit($name, $help, $unit, $metric.clone())
    };
    (
        $(#[$m:meta])* $vis:vis struct $families:ident {
            $($name:ident: $ty:ty $(= $init:expr)? $(, $unit:expr)? => $help:literal,)+
        }
    ) => {
        $(#[$m])*
        #[derive(Debug)]
        $vis struct $families {
            $(pub(crate) $name: $ty,)+
        }

        impl $families {
            $vis fn register(
                registry: &mut ::prometheus_client::registry::Registry,
            ) -> $families {
                let families = $families {
                    $($name: $crate::metrics::families!(@new $ty $(, $init)?),)+
                };
                $($crate::metrics::families!(
                    @register registry, families.$name, stringify!($name), $help $(, $unit)?
                );)+
                families
            }

            /// Every family's HELP text, for the test that checks them.
            #[cfg(test)]
            pub(crate) const HELP: &[(&str, &str)] = &[$((stringify!($name), $help),)+];
        }
    };
}
pub(crate) use families;

/// Creates the series of `family` for each of `values` at 0, from start-up
/// on, so that `rate()` sees the first event.
pub(crate) fn at_zero<L, M, C, V: Copy>(
    family: &Family<L, M, C>,
    values: &[V],
    labels: impl Fn(V) -> L,
) where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    for &v in values {
        family.get_or_create_owned(&labels(v));
    }
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

/// A subnet (a CIDR, or `other`): the label of DHCP's pool gauges and of
/// HTTP's boot-slot series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct SubnetLabels {
    pub(crate) subnet: String,
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

families! {
    /// The families of no one protocol, under `rackboot_`, one field each,
    /// sharing its atomics with the registry: count through a method of
    /// [`Metrics`] that picks the labels.
    pub(crate) struct Families {
        nodes_created: Family<CreatorLabels, Counter>
            => "Node records made for a MAC rackboot had never seen, by the request that made it",
        nodes_reaped: Counter
            => "Node records the lifecycle sweep removed: made for an unknown MAC, never past discovered, idle longer than lifecycle.reap_discovered_after",
        catalog_reloads: Family<ReloadLabels, Counter> => "Reloads of bootenvs and config scripts, by outcome",
        catalog_files_ok: Gauge
            => "1 when the bootenv and script files on disk are the ones in force, 0 after a rejected edit",
        asset_fetches: Family<FetchLabels, Counter>
            => "Downloads of remote assets (bootenv `{ url, sha256 }`), by outcome",
        asset_fetched: Counter, prometheus_client::registry::Unit::Bytes
            => "Bytes of remote assets downloaded and stored",
        asset_drops: Family<DropLabels, Counter> => "Kernels dropped into assets.drop_dir, by outcome",
        boot_refusals: Family<BootRefusalLabels, Counter>
            => "Requests for a node's boot script or with its node token refused (not from the node's address, or a token not of its current boot), by reason",
        secret_refusals: Counter
            => "Documents holding a secret asked for again within one boot and refused (someone else has the token, or the node is confused)",
        request_panics: Family<ServiceLabels, Counter>
            => "Requests whose handling panicked: the request got no answer, the service kept serving (a bug: the packet is logged in hex), by service",
        store_reachable: Gauge
            => "1 while the store takes writes (for PostgreSQL: the database is reached), else 0: leases and new records are refused, reads go on from memory",
        store_unsaved_changes: Gauge
            => "Changes the store could not save yet (a full or failing disk under the state directory), kept in memory and retried every second; 0 when everything is saved",
        store_failed_commits: Counter
            => "Commits to the store's database that failed (their changes are kept and retried)",
        store_failed_journal_appends: Counter
            => "Appends to the store's journal that failed (the lease was committed instead, or the new node record refused)",
    }
}

/// Every metric rackboot exports. Built once at start-up and shared (`Arc`)
/// by the DHCP, TFTP, HTTP and DNS services; each counts into its own
/// families through the methods its `metrics` module adds here.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Families,
    pub(crate) dhcp: DhcpMetrics,
    pub(crate) tftp: TftpMetrics,
    pub(crate) http: HttpMetrics,
    pub(crate) dns: DnsMetrics,
}

impl Metrics {
    /// The registry with every series at zero; `pools` are the subnets whose
    /// address use `rackboot_dhcp_pool_*` reports.
    pub fn new(pools: &[PoolRanges]) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let r = registry.sub_registry_with_prefix("rackboot");
        let dhcp = DhcpMetrics::register(r, pools);
        let tftp = TftpMetrics::register(r);
        let http = HttpMetrics::register(r);
        let dns = DnsMetrics::register(r);
        let f = Families::register(r);
        f.catalog_files_ok.set(1);

        at_zero(&f.nodes_created, NodeCreator::ALL, |by| CreatorLabels {
            by,
        });
        at_zero(&f.request_panics, Service::ALL, |service| ServiceLabels {
            service,
        });
        at_zero(&f.asset_fetches, AssetFetch::ALL, |result| FetchLabels {
            result,
        });
        at_zero(&f.asset_drops, AssetDrop::ALL, |result| DropLabels {
            result,
        });
        at_zero(&f.boot_refusals, BootRefusal::ALL, |reason| {
            BootRefusalLabels { reason }
        });
        at_zero(&f.catalog_reloads, ReloadResult::ALL, |result| {
            ReloadLabels { result }
        });

        Metrics {
            registry,
            families: f,
            dhcp,
            tftp,
            http,
            dns,
        }
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
        f.store_reachable.set(i64::from(h.reachable));
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use dhcproto::v4::MessageType;
    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::dhcp::metrics::{DhcpFamilies, DhcpReply, DhcpType, IgnoreReason, VisitLeases};
    use crate::dns::metrics::{DnsFamilies, DnsResult, DnsType};
    use crate::http::metrics::HttpFamilies;
    use crate::model::{Lease, LeaseState, Mac, Timestamp};
    use crate::routes::Area;
    use crate::tftp::metrics::{TftpFamilies, TftpResult};

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
    /// Metrics of one subnet whose pool is two addresses.
    fn two_address_pool() -> Metrics {
        Metrics::new(&[PoolRanges {
            subnet: "10.77.0.0/24".parse().unwrap(),
            ranges: vec![(ip("10.77.0.100"), ip("10.77.0.101"))],
        }])
    }

    #[test]
    fn the_text_format_names_every_family_as_its_samples() {
        let m = two_address_pool();
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
        for (name, help) in [
            DhcpFamilies::HELP,
            TftpFamilies::HELP,
            HttpFamilies::HELP,
            DnsFamilies::HELP,
            Families::HELP,
        ]
        .concat()
        {
            assert!(
                !help.is_empty() && !help.contains(['\\', '"', '\n']),
                "rackboot_{name}: HELP {help:?} is empty or needs escaping"
            );
        }
    }

    #[test]
    fn a_second_scrape_replaces_the_pool_gauges() {
        let m = two_address_pool();
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
            reachable: false,
            ..Default::default()
        };
        m.update_store(failing);
        // A second scrape of the same counts adds nothing.
        m.update_store(failing);
        let s = samples(&m.render(Format::OpenMetrics).unwrap());
        assert_eq!(value(&s, "rackboot_store_unsaved_changes", ""), 51.0);
        assert_eq!(value(&s, "rackboot_store_reachable", ""), 0.0);
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
