//! DNS's metric families: questions by query type and result, and forwarded
//! questions that failed. Registered by [`Metrics::new`]; the responder and
//! the server count through the methods added to [`Metrics`] here.
//!
//! DNS is measured against dnsmasq, so counting a question is a bare atomic
//! add on a counter picked out of an array ([`Metrics::dns_query`]): no lock,
//! no hash map.

use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::metrics::{Metrics, families, label_value};

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
pub(crate) struct DnsLabels {
    r#type: DnsType,
    result: DnsResult,
}

families! {
    /// DNS's families under `rackboot_`, one field each.
    pub(crate) struct DnsFamilies {
        dns_queries: Family<DnsLabels, Counter>
            => "DNS questions by query type and result (forwarded: handed to [dns] forwarders)",
        dns_forward_failures: Counter
            => "Forwarded DNS questions answered SERVFAIL: no forwarder answered in time, or too many were out at once",
    }
}

/// DNS's families, and the question counters by type and result taken out
/// of their family once.
#[derive(Debug)]
pub(crate) struct DnsMetrics {
    families: DnsFamilies,
    queries: [[Counter; DnsResult::ALL.len()]; DnsType::ALL.len()],
}

impl DnsMetrics {
    /// Registers DNS's families with every series at zero.
    pub(crate) fn register(registry: &mut Registry) -> DnsMetrics {
        let f = DnsFamilies::register(registry);
        let queries = std::array::from_fn(|t| {
            std::array::from_fn(|r| {
                f.dns_queries.get_or_create_owned(&DnsLabels {
                    r#type: DnsType::ALL[t],
                    result: DnsResult::ALL[r],
                })
            })
        });
        DnsMetrics {
            families: f,
            queries,
        }
    }
}

impl Metrics {
    /// A DNS question was decided (or dropped, as `malformed`). Indexing, not
    /// a label lookup: this runs once per question on the DNS hot path.
    pub fn dns_query(&self, r#type: DnsType, result: DnsResult) {
        self.dns.queries[r#type as usize][result as usize].inc();
    }

    /// A forwarded DNS question got SERVFAIL instead of an upstream answer.
    pub fn dns_forward_failed(&self) {
        self.dns.families.dns_forward_failures.inc();
    }

    /// How many questions of this type had this result so far.
    pub fn dns_count(&self, r#type: DnsType, result: DnsResult) -> u64 {
        self.dns.queries[r#type as usize][result as usize].get()
    }
}
