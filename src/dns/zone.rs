//! Which kind of answer a DNS question gets, decided from the question alone (no I/O).
//!
//! rackboot is authoritative for two zones: the node domain (`node1.rack.internal.`, A records)
//! and the reverse zone of the boot subnet (`5.0.0.10.in-addr.arpa.`, PTR records). Every other
//! name is refused. This file only decides the *shape* of the answer; the server fills in the
//! data (a node's address or hostname) from rackboot's records.

use std::net::Ipv4Addr;

use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::DnsError;

/// The names rackboot is authoritative for: one forward domain and the reverse zone of the boot
/// subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    domain: Name,
    network: Ipv4Addr,
    prefix: u8,
}

/// What a question deserves, before any node record is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<host>.<domain>` asked for A (or ANY): the node's address, or NXDOMAIN when no node has
    /// this hostname. The hostname is lowercased and carries no domain.
    Host(String),
    /// `<host>.<domain>` asked for a type nodes never have (AAAA, MX, TXT…): NOERROR with no
    /// answer when the node exists, NXDOMAIN when it does not.
    HostNoData(String),
    /// The reverse name of an address in the boot subnet asked for PTR (or ANY): the hostname of
    /// the node holding the address, or NXDOMAIN when no node holds it.
    Ptr(Ipv4Addr),
    /// The reverse name of an address in the boot subnet asked for another type: NOERROR with no
    /// answer when a node holds the address, NXDOMAIN when none does.
    PtrNoData(Ipv4Addr),
    /// A name that exists in our zones but holds nothing we serve (the domain apex, or a partial
    /// in-addr.arpa name between the reverse apex and the addresses): NOERROR, no answer.
    NoData,
    /// A name inside our zones that no node name or address can be (too many labels, a label that
    /// is not a hostname or not an octet): NXDOMAIN.
    NxDomain,
    /// Not ours, or not something we give out: REFUSED. rackboot never resolves or forwards.
    Refused,
}

impl Zone {
    /// A zone for node hostnames under `domain` and reverse names of `network/prefix`.
    ///
    /// The domain is stored lowercased and fully qualified, so `Rack.Internal` and
    /// `rack.internal.` are the same zone.
    pub fn new(domain: Name, network: Ipv4Addr, prefix: u8) -> Result<Self, DnsError> {
        if prefix > 32 {
            return Err(DnsError::InvalidPrefix { prefix });
        }
        let expected = Ipv4Addr::from(u32::from(network) & mask(prefix));
        if expected != network {
            return Err(DnsError::HostBitsSet {
                network,
                prefix,
                expected,
            });
        }

        let mut domain = domain.to_lowercase();
        domain.set_fqdn(true);
        if domain.is_root() {
            return Err(DnsError::InvalidDomain {
                domain,
                reason: "it is the root, which would make rackboot claim every name; \
                         use the rack's own domain such as rack.internal.",
            });
        }
        if is_under_arpa(&domain) {
            return Err(DnsError::InvalidDomain {
                domain,
                reason: "it lies under arpa., which holds reverse names only; \
                         use the rack's own domain such as rack.internal.",
            });
        }

        Ok(Self {
            domain,
            network,
            prefix,
        })
    }

    /// The forward domain, lowercased and fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The boot subnet whose reverse names this zone answers, as (network, prefix length).
    pub fn subnet(&self) -> (Ipv4Addr, u8) {
        (self.network, self.prefix)
    }

    /// Decides the kind of answer for one question. Case and a missing trailing dot in `name`
    /// do not matter.
    pub fn answer(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        // Node records exist only in class IN; CHAOS questions such as `version.bind` are
        // refused like any other name we do not own.
        if qclass != DNSClass::IN {
            return Answer::Refused;
        }
        // A zone transfer would hand out the whole lease table in one query.
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Answer::Refused;
        }
        if self.domain.zone_of(name) {
            self.forward(name, qtype)
        } else if is_under_in_addr_arpa(name) {
            self.reverse(name, qtype)
        } else {
            Answer::Refused
        }
    }

    /// The owner name `<hostname>.<domain>.` for a PTR answer, or `None` when `hostname` cannot
    /// be a single DNS label (the forward zone would then never resolve it back).
    pub fn host_name(&self, hostname: &str) -> Option<Name> {
        let label = hostname_label(hostname.as_bytes())?;
        Name::from_ascii(label)
            .ok()?
            .append_domain(&self.domain)
            .ok()
    }

    fn forward(&self, name: &Name, qtype: RecordType) -> Answer {
        // `zone_of` held, so `name` has at least as many labels as the domain.
        match name.iter().count() - self.domain.iter().count() {
            0 => Answer::NoData,
            1 => match name.iter().next().and_then(hostname_label) {
                Some(host) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                    Answer::Host(host)
                }
                Some(host) => Answer::HostNoData(host),
                None => Answer::NxDomain,
            },
            // Hostnames are single labels, so nothing lives below a node name.
            _ => Answer::NxDomain,
        }
    }

    fn reverse(&self, name: &Name, qtype: RecordType) -> Answer {
        // Labels below `in-addr.arpa.`, most significant octet first.
        let labels: Vec<&[u8]> = name.iter().rev().skip(2).collect();
        let mut octets = [0u8; 4];
        let mut known = 0;
        for (slot, label) in octets.iter_mut().zip(&labels) {
            let Some(octet) = parse_octet(label) else {
                break;
            };
            *slot = octet;
            known += 1;
        }
        let below = labels.len() - known;

        // Our reverse apex is the subnet written in whole octets: a /24 is one zone, a /22 is four
        // /24 zones, a /26 owns only its own addresses. Anything above the apex belongs to whoever
        // runs the parent zone, so it is refused rather than denied.
        let apex_octets = usize::from(self.prefix.div_ceil(8)).max(1);
        if known < apex_octets {
            return Answer::Refused;
        }
        let block = Ipv4Addr::from(octets);
        if !self.contains(block) {
            return Answer::Refused;
        }

        match (below, known) {
            (0, 4) if matches!(qtype, RecordType::PTR | RecordType::ANY) => Answer::Ptr(block),
            (0, 4) => Answer::PtrNoData(block),
            (0, _) => Answer::NoData,
            _ => Answer::NxDomain,
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The label as a lowercase hostname, if it is one (RFC 1123: letters, digits and inner hyphens,
/// 1 to 63 characters). Underscore names and wildcards can never be nodes.
fn hostname_label(label: &[u8]) -> Option<String> {
    let valid = (1..=63).contains(&label.len())
        && label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && label.first() != Some(&b'-')
        && label.last() != Some(&b'-');
    valid.then(|| String::from_utf8_lossy(label).to_ascii_lowercase())
}

/// A reverse-name label as an octet: decimal, 0 to 255, no sign and no leading zero, since
/// `010` and `+10` are not how any resolver writes an address.
fn parse_octet(label: &[u8]) -> Option<u8> {
    let digits = (1..=3).contains(&label.len()) && label.iter().all(u8::is_ascii_digit);
    if !digits || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

fn is_under_in_addr_arpa(name: &Name) -> bool {
    let mut top = name.iter().rev();
    matches!(
        (top.next(), top.next()),
        (Some(arpa), Some(in_addr))
            if arpa.eq_ignore_ascii_case(b"arpa") && in_addr.eq_ignore_ascii_case(b"in-addr")
    )
}

fn is_under_arpa(name: &Name) -> bool {
    name.iter()
        .next_back()
        .is_some_and(|top| top.eq_ignore_ascii_case(b"arpa"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use RecordType::{A, AAAA, ANY, AXFR, IXFR, MX, PTR, SOA, TXT};

    /// Builds a name from raw labels, as the wire decoder does, so that labels a text parser
    /// would reject (`-node`, `-1`) still reach the zone.
    fn name(s: &str) -> Name {
        let labels = s.split('.').filter(|l| !l.is_empty()).map(str::as_bytes);
        let mut name = Name::from_labels(labels).unwrap_or_else(|e| panic!("test name {s:?}: {e}"));
        name.set_fqdn(s.ends_with('.'));
        name
    }

    fn zone(network: [u8; 4], prefix: u8) -> Zone {
        Zone::new(name("rack.internal."), Ipv4Addr::from(network), prefix).unwrap()
    }

    fn host(h: &str) -> Answer {
        Answer::Host(h.to_owned())
    }

    fn host_nodata(h: &str) -> Answer {
        Answer::HostNoData(h.to_owned())
    }

    fn ptr(ip: [u8; 4]) -> Answer {
        Answer::Ptr(Ipv4Addr::from(ip))
    }

    fn check(zone: &Zone, cases: &[(&str, RecordType, Answer)]) {
        for (qname, qtype, want) in cases {
            let got = zone.answer(&name(qname), *qtype, DNSClass::IN);
            assert_eq!(&got, want, "{qname} {qtype}");
        }
    }

    #[test]
    fn forward_zone() {
        check(
            &zone([10, 0, 0, 0], 24),
            &[
                // The node's address.
                ("node1.rack.internal.", A, host("node1")),
                ("node1.rack.internal.", ANY, host("node1")),
                ("node-07.rack.internal.", A, host("node-07")),
                ("7.rack.internal.", A, host("7")),
                // Case-insensitive, answered with the lowercased hostname.
                ("NODE1.Rack.INTERNAL.", A, host("node1")),
                // Without the trailing dot it is the same name.
                ("node1.rack.internal", A, host("node1")),
                // Types nodes never have.
                ("node1.rack.internal.", AAAA, host_nodata("node1")),
                ("node1.rack.internal.", MX, host_nodata("node1")),
                ("node1.rack.internal.", PTR, host_nodata("node1")),
                // The apex exists but holds nothing we serve.
                ("rack.internal.", A, Answer::NoData),
                ("RACK.internal", SOA, Answer::NoData),
                // Deeper than one label under the domain.
                ("a.node1.rack.internal.", A, Answer::NxDomain),
                ("_sip._tcp.rack.internal.", TXT, Answer::NxDomain),
                // Labels that can never be hostnames.
                ("*.rack.internal.", A, Answer::NxDomain),
                ("_acme.rack.internal.", TXT, Answer::NxDomain),
                ("-node.rack.internal.", A, Answer::NxDomain),
                ("node-.rack.internal.", A, Answer::NxDomain),
                // Outside the domain.
                ("example.com.", A, Answer::Refused),
                ("rack.internal.example.com.", A, Answer::Refused),
                ("node1.other.internal.", A, Answer::Refused),
                ("internal.", A, Answer::Refused),
                (".", SOA, Answer::Refused),
                // Zone transfers are never offered, even for our own domain.
                ("rack.internal.", AXFR, Answer::Refused),
                ("rack.internal.", IXFR, Answer::Refused),
            ],
        );
    }

    #[test]
    fn reverse_zone_slash_24() {
        check(
            &zone([10, 0, 0, 0], 24),
            &[
                ("5.0.0.10.in-addr.arpa.", PTR, ptr([10, 0, 0, 5])),
                ("5.0.0.10.in-addr.arpa.", ANY, ptr([10, 0, 0, 5])),
                ("5.0.0.10.IN-ADDR.ARPA", PTR, ptr([10, 0, 0, 5])),
                ("0.0.0.10.in-addr.arpa.", PTR, ptr([10, 0, 0, 0])),
                ("255.0.0.10.in-addr.arpa.", PTR, ptr([10, 0, 0, 255])),
                (
                    "5.0.0.10.in-addr.arpa.",
                    A,
                    Answer::PtrNoData(Ipv4Addr::new(10, 0, 0, 5)),
                ),
                // The apex of our reverse zone.
                ("0.0.10.in-addr.arpa.", PTR, Answer::NoData),
                ("0.0.10.in-addr.arpa.", SOA, Answer::NoData),
                // Above the apex: the parent's business.
                ("0.10.in-addr.arpa.", PTR, Answer::Refused),
                ("10.in-addr.arpa.", PTR, Answer::Refused),
                ("in-addr.arpa.", PTR, Answer::Refused),
                // Addresses outside the subnet.
                ("5.1.0.10.in-addr.arpa.", PTR, Answer::Refused),
                ("5.0.0.11.in-addr.arpa.", PTR, Answer::Refused),
                ("1.1.168.192.in-addr.arpa.", PTR, Answer::Refused),
                // Malformed names under our apex cannot exist.
                ("x.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain),
                ("256.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain),
                ("05.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain),
                ("1000.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain),
                ("1.5.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain),
                ("a.b.5.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain),
                // Malformed names elsewhere are not ours at all.
                ("5.0.x.10.in-addr.arpa.", PTR, Answer::Refused),
                ("5.0.0.010.in-addr.arpa.", PTR, Answer::Refused),
                ("5.0.0.-1.in-addr.arpa.", PTR, Answer::Refused),
                // IPv6 reverse names are not served.
                ("1.0.0.0.ip6.arpa.", PTR, Answer::Refused),
                ("5.0.0.10.in-addr.arpa.", AXFR, Answer::Refused),
            ],
        );
    }

    #[test]
    fn reverse_zone_not_octet_aligned() {
        // A /22 is four /24 reverse zones.
        check(
            &zone([10, 0, 4, 0], 22),
            &[
                ("9.7.0.10.in-addr.arpa.", PTR, ptr([10, 0, 7, 9])),
                ("9.4.0.10.in-addr.arpa.", PTR, ptr([10, 0, 4, 9])),
                ("5.0.10.in-addr.arpa.", PTR, Answer::NoData),
                ("9.8.0.10.in-addr.arpa.", PTR, Answer::Refused),
                ("9.3.0.10.in-addr.arpa.", PTR, Answer::Refused),
                ("8.0.10.in-addr.arpa.", PTR, Answer::Refused),
                ("0.10.in-addr.arpa.", PTR, Answer::Refused),
            ],
        );
        // A /26 owns only its own 64 addresses.
        check(
            &zone([192, 168, 1, 64], 26),
            &[
                ("64.1.168.192.in-addr.arpa.", PTR, ptr([192, 168, 1, 64])),
                ("127.1.168.192.in-addr.arpa.", PTR, ptr([192, 168, 1, 127])),
                ("63.1.168.192.in-addr.arpa.", PTR, Answer::Refused),
                ("128.1.168.192.in-addr.arpa.", PTR, Answer::Refused),
                ("1.168.192.in-addr.arpa.", PTR, Answer::Refused),
                ("x.70.1.168.192.in-addr.arpa.", PTR, Answer::NxDomain),
            ],
        );
        // A /16 has a two-octet apex and empty names between it and the addresses.
        check(
            &zone([172, 16, 0, 0], 16),
            &[
                ("1.2.16.172.in-addr.arpa.", PTR, ptr([172, 16, 2, 1])),
                ("2.16.172.in-addr.arpa.", PTR, Answer::NoData),
                ("16.172.in-addr.arpa.", PTR, Answer::NoData),
                ("172.in-addr.arpa.", PTR, Answer::Refused),
                ("1.2.17.172.in-addr.arpa.", PTR, Answer::Refused),
            ],
        );
    }

    #[test]
    fn single_address_subnet() {
        check(
            &zone([10, 9, 8, 7], 32),
            &[
                ("7.8.9.10.in-addr.arpa.", PTR, ptr([10, 9, 8, 7])),
                ("6.8.9.10.in-addr.arpa.", PTR, Answer::Refused),
                ("8.9.10.in-addr.arpa.", PTR, Answer::Refused),
            ],
        );
    }

    #[test]
    fn other_classes_are_refused() {
        let zone = zone([10, 0, 0, 0], 24);
        for (qname, qclass) in [
            ("node1.rack.internal.", DNSClass::CH),
            ("node1.rack.internal.", DNSClass::HS),
            ("node1.rack.internal.", DNSClass::ANY),
            ("version.bind.", DNSClass::CH),
            ("5.0.0.10.in-addr.arpa.", DNSClass::CH),
        ] {
            assert_eq!(
                zone.answer(&name(qname), A, qclass),
                Answer::Refused,
                "{qname} {qclass}"
            );
        }
    }

    #[test]
    fn new_normalises_the_domain() {
        let zone = Zone::new(name("Rack.Internal"), Ipv4Addr::new(10, 0, 0, 0), 24).unwrap();
        assert_eq!(zone.domain().to_ascii(), "rack.internal.");
        assert!(zone.domain().is_fqdn());
        assert_eq!(zone.subnet(), (Ipv4Addr::new(10, 0, 0, 0), 24));
    }

    #[test]
    fn new_rejects_bad_zones() {
        let ten = Ipv4Addr::new(10, 0, 0, 0);
        let cases = [
            (Zone::new(name("rack.internal."), ten, 33), "/33"),
            (
                Zone::new(name("rack.internal."), Ipv4Addr::new(10, 0, 0, 5), 24),
                "10.0.0.0/24",
            ),
            (Zone::new(Name::root(), ten, 24), "root"),
            (Zone::new(name("in-addr.arpa."), ten, 24), "arpa"),
            (Zone::new(name("0.0.10.IN-ADDR.ARPA"), ten, 24), "arpa"),
        ];
        for (result, hint) in cases {
            let err = result.expect_err(hint);
            assert!(err.is_invalid_zone(), "{err}");
            assert!(err.to_string().contains(hint), "{err:?} lacks {hint:?}");
        }
    }

    #[test]
    fn any_prefix_is_accepted_when_host_bits_are_clear() {
        assert!(Zone::new(name("rack.internal."), Ipv4Addr::UNSPECIFIED, 0).is_ok());
        assert!(Zone::new(name("rack.internal."), Ipv4Addr::new(10, 0, 0, 1), 32).is_ok());
    }

    #[test]
    fn host_name_builds_ptr_targets() {
        let zone = zone([10, 0, 0, 0], 24);
        let cases = [
            ("node1", Some("node1.rack.internal.")),
            ("Node1", Some("node1.rack.internal.")),
            ("n-1", Some("n-1.rack.internal.")),
            ("", None),
            ("a.b", None),
            ("under_score", None),
            ("-lead", None),
            ("trail-", None),
            ("ünïcode", None),
        ];
        for (hostname, want) in cases {
            let got = zone.host_name(hostname).map(|n| n.to_ascii());
            assert_eq!(got.as_deref(), want, "{hostname:?}");
        }
        assert_eq!(zone.host_name(&"a".repeat(63)).map(|_| ()), Some(()));
        assert_eq!(zone.host_name(&"a".repeat(64)), None);
    }

    #[test]
    fn octets_parse_strictly() {
        let cases: [(&[u8], Option<u8>); 10] = [
            (b"0", Some(0)),
            (b"9", Some(9)),
            (b"10", Some(10)),
            (b"255", Some(255)),
            (b"256", None),
            (b"00", None),
            (b"010", None),
            (b"+1", None),
            (b"", None),
            (b"1a", None),
        ];
        for (label, want) in cases {
            assert_eq!(
                parse_octet(label),
                want,
                "{:?}",
                String::from_utf8_lossy(label)
            );
        }
    }
}
