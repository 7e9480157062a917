//! Which kind of answer a DNS question gets, decided from the question alone (no I/O).
//!
//! rackboot is authoritative for the node domain (`node1.rack.internal.`, A records) and for the
//! reverse zones of every subnet it serves (`5.0.0.10.in-addr.arpa.`, PTR records): the boot
//! subnet and each relayed one. Each zone has an apex with SOA and NS. Every other name is not
//! ours: it is forwarded or refused, which the server decides. This file only decides the *shape*
//! of the answer; the server fills in the data (a node's address or hostname) from the name table.

use std::net::Ipv4Addr;

use hickory_proto::rr::{DNSClass, Name, RecordType};
use ipnet::Ipv4Net;

use super::DnsError;

/// The names rackboot is authoritative for: one forward domain and the reverse zones of the
/// subnets it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    domain: Name,
    reverse: Vec<Ipv4Net>,
    server: Ipv4Addr,
}

/// The apex of one of rackboot's zones: where its SOA and NS live, and what negative answers
/// name in their authority section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apex {
    /// The forward domain.
    Domain,
    /// A reverse zone: the first `octets` octets (1 to 4) of `block`, the rest zero.
    Reverse { block: Ipv4Addr, octets: u8 },
}

/// What a question deserves, before any node record is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<host>.<domain>` asked for A (or ANY): the node's address; NODATA when the node has
    /// none right now, NXDOMAIN when no node has this hostname. The hostname is lowercased and
    /// carries no domain.
    Host(String),
    /// `<host>.<domain>` asked for a type nodes never have (AAAA, MX, TXT…): NOERROR with no
    /// answer when the node exists, NXDOMAIN when it does not.
    HostNoData(String),
    /// The reverse name of an address in a served subnet asked for PTR (or ANY): the hostname of
    /// the node holding the address, or NXDOMAIN when no node holds it.
    Ptr(Ipv4Addr, Apex),
    /// The reverse name of an address in a served subnet asked for another type: NOERROR with no
    /// answer when a node holds the address, NXDOMAIN when none does.
    PtrNoData(Ipv4Addr, Apex),
    /// A zone apex: SOA and NS (and, for the domain, rackboot's own address as A), or NODATA
    /// for other types.
    Apex(Apex),
    /// A name that exists in a zone but holds nothing we serve (a partial in-addr.arpa name
    /// between the reverse apex and the addresses): NOERROR, no answer.
    NoData(Apex),
    /// A name inside a zone that no node name or address can be (too many labels, a label that
    /// is not a hostname or not an octet): NXDOMAIN.
    NxDomain(Apex),
    /// Not in rackboot's zones: forwarded to the configured upstreams when the client asks for
    /// recursion, else REFUSED.
    Elsewhere,
    /// Never given out, whoever asks: zone transfers, classes other than IN.
    Refused,
}

impl Zone {
    /// A zone for node hostnames under `domain` and reverse names of each of `reverse`, served by
    /// rackboot at `server` (the target of NS, and the address of the domain apex).
    ///
    /// The domain is stored lowercased and fully qualified, so `Rack.Internal` and
    /// `rack.internal.` are the same zone. Subnets must be written with their network address.
    pub fn new(domain: Name, reverse: &[Ipv4Net], server: Ipv4Addr) -> Result<Self, DnsError> {
        for net in reverse {
            if net.trunc() != *net {
                return Err(DnsError::HostBitsSet {
                    network: net.addr(),
                    prefix: net.prefix_len(),
                    expected: net.network(),
                });
            }
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

        let mut unique: Vec<Ipv4Net> = Vec::with_capacity(reverse.len());
        for net in reverse {
            if !unique.contains(net) {
                unique.push(*net);
            }
        }
        Ok(Self {
            domain,
            reverse: unique,
            server,
        })
    }

    /// The forward domain, lowercased and fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The subnets whose reverse names this zone answers.
    pub fn subnets(&self) -> &[Ipv4Net] {
        &self.reverse
    }

    /// rackboot's own address: the name server of every zone here.
    pub fn server(&self) -> Ipv4Addr {
        self.server
    }

    /// The owner name of an apex: the domain, or `<octets reversed>.in-addr.arpa.`.
    pub fn apex_name(&self, apex: Apex) -> Name {
        match apex {
            Apex::Domain => self.domain.clone(),
            Apex::Reverse { block, octets } => {
                let o = block.octets();
                let digits: Vec<String> = o[..usize::from(octets)]
                    .iter()
                    .rev()
                    .map(u8::to_string)
                    .collect();
                let labels = digits
                    .iter()
                    .map(String::as_bytes)
                    .chain([&b"in-addr"[..], b"arpa"]);
                let mut name = Name::from_labels(labels).expect("octets are valid labels");
                name.set_fqdn(true);
                name
            }
        }
    }

    /// Decides the kind of answer for one question. Case and a missing trailing dot in `name`
    /// do not matter.
    pub fn answer(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        // Node records exist only in class IN; CHAOS questions such as `version.bind` are
        // refused, never forwarded.
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
            Answer::Elsewhere
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
            0 => Answer::Apex(Apex::Domain),
            1 => match name.iter().next().and_then(hostname_label) {
                Some(host) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                    Answer::Host(host)
                }
                Some(host) => Answer::HostNoData(host),
                None => Answer::NxDomain(Apex::Domain),
            },
            // Hostnames are single labels, so nothing lives below a node name.
            _ => Answer::NxDomain(Apex::Domain),
        }
    }

    fn reverse(&self, name: &Name, qtype: RecordType) -> Answer {
        // Labels below `in-addr.arpa.`, most significant octet first.
        let mut octets = [0u8; 4];
        let mut known = 0;
        let mut labels = 0;
        for label in name.iter().rev().skip(2) {
            labels += 1;
            if known == labels - 1
                && known < 4
                && let Some(octet) = parse_octet(label)
            {
                octets[known] = octet;
                known += 1;
            }
        }
        let below = labels - known;
        let block = Ipv4Addr::from(octets);

        // A reverse apex is its subnet written in whole octets: a /24 is one zone, a /22 is four
        // /24 zones, a /26 owns only its own addresses. Anything above the apex belongs to
        // whoever runs the parent zone, so it is not ours.
        let Some(apex_octets) = self.reverse.iter().find_map(|net| {
            let apex_octets = usize::from(net.prefix_len().div_ceil(8)).max(1);
            (known >= apex_octets && net.contains(&block)).then_some(apex_octets)
        }) else {
            return Answer::Elsewhere;
        };
        let keep = u32::MAX
            .checked_shl(32 - 8 * apex_octets as u32)
            .unwrap_or(0);
        let apex = Apex::Reverse {
            block: Ipv4Addr::from(u32::from(block) & keep),
            octets: apex_octets as u8,
        };

        let wants_ptr = matches!(qtype, RecordType::PTR | RecordType::ANY);
        match (below, known) {
            (0, 4) if wants_ptr => Answer::Ptr(block, apex),
            (0, k) if k == apex_octets => Answer::Apex(apex),
            (0, 4) => Answer::PtrNoData(block, apex),
            (0, _) => Answer::NoData(apex),
            _ => Answer::NxDomain(apex),
        }
    }
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

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn net(network: [u8; 4], prefix: u8) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(network), prefix).unwrap()
    }

    fn zone(network: [u8; 4], prefix: u8) -> Zone {
        Zone::new(name("rack.internal."), &[net(network, prefix)], SERVER).unwrap()
    }

    /// The reverse apex of the first `octets` octets of `block`.
    fn rev(block: [u8; 4], octets: u8) -> Apex {
        Apex::Reverse {
            block: Ipv4Addr::from(block),
            octets,
        }
    }

    fn host(h: &str) -> Answer {
        Answer::Host(h.to_owned())
    }

    fn host_nodata(h: &str) -> Answer {
        Answer::HostNoData(h.to_owned())
    }

    /// PTR of `ip` in the /24-aligned reverse zone of its first three octets.
    fn ptr(ip: [u8; 4]) -> Answer {
        Answer::Ptr(Ipv4Addr::from(ip), rev([ip[0], ip[1], ip[2], 0], 3))
    }

    fn ptr_in(ip: [u8; 4], apex: Apex) -> Answer {
        Answer::Ptr(Ipv4Addr::from(ip), apex)
    }

    const DOMAIN_NX: Answer = Answer::NxDomain(Apex::Domain);

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
                // The apex: SOA, NS and rackboot's own address.
                ("rack.internal.", A, Answer::Apex(Apex::Domain)),
                ("RACK.internal", SOA, Answer::Apex(Apex::Domain)),
                // Deeper than one label under the domain.
                ("a.node1.rack.internal.", A, DOMAIN_NX),
                ("_sip._tcp.rack.internal.", TXT, DOMAIN_NX),
                // Labels that can never be hostnames.
                ("*.rack.internal.", A, DOMAIN_NX),
                ("_acme.rack.internal.", TXT, DOMAIN_NX),
                ("-node.rack.internal.", A, DOMAIN_NX),
                ("node-.rack.internal.", A, DOMAIN_NX),
                // Outside the domain.
                ("example.com.", A, Answer::Elsewhere),
                ("rack.internal.example.com.", A, Answer::Elsewhere),
                ("node1.other.internal.", A, Answer::Elsewhere),
                ("internal.", A, Answer::Elsewhere),
                (".", SOA, Answer::Elsewhere),
                // Zone transfers are never offered, even for our own domain.
                ("rack.internal.", AXFR, Answer::Refused),
                ("rack.internal.", IXFR, Answer::Refused),
            ],
        );
    }

    #[test]
    fn reverse_zone_slash_24() {
        let apex = rev([10, 0, 0, 0], 3);
        let nx = Answer::NxDomain(apex);
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
                    Answer::PtrNoData(Ipv4Addr::new(10, 0, 0, 5), apex),
                ),
                // The apex of our reverse zone.
                ("0.0.10.in-addr.arpa.", PTR, Answer::Apex(apex)),
                ("0.0.10.in-addr.arpa.", SOA, Answer::Apex(apex)),
                // Above the apex: the parent's business.
                ("0.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("in-addr.arpa.", PTR, Answer::Elsewhere),
                // Addresses outside the subnet.
                ("5.1.0.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("5.0.0.11.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("1.1.168.192.in-addr.arpa.", PTR, Answer::Elsewhere),
                // Malformed names under our apex cannot exist.
                ("x.0.0.10.in-addr.arpa.", PTR, nx.clone()),
                ("256.0.0.10.in-addr.arpa.", PTR, nx.clone()),
                ("05.0.0.10.in-addr.arpa.", PTR, nx.clone()),
                ("1000.0.0.10.in-addr.arpa.", PTR, nx.clone()),
                ("1.5.0.0.10.in-addr.arpa.", PTR, Answer::NxDomain(apex)),
                ("a.b.5.0.0.10.in-addr.arpa.", PTR, nx),
                // Malformed names elsewhere are not ours at all.
                ("5.0.x.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("5.0.0.010.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("5.0.0.-1.in-addr.arpa.", PTR, Answer::Elsewhere),
                // IPv6 reverse names are not served.
                ("1.0.0.0.ip6.arpa.", PTR, Answer::Elsewhere),
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
                (
                    "5.0.10.in-addr.arpa.",
                    PTR,
                    Answer::Apex(rev([10, 0, 5, 0], 3)),
                ),
                ("9.8.0.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("9.3.0.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("8.0.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("0.10.in-addr.arpa.", PTR, Answer::Elsewhere),
            ],
        );
        // A /26 owns only its own 64 addresses, each its own apex.
        let own = |last| rev([192, 168, 1, last], 4);
        check(
            &zone([192, 168, 1, 64], 26),
            &[
                (
                    "64.1.168.192.in-addr.arpa.",
                    PTR,
                    ptr_in([192, 168, 1, 64], own(64)),
                ),
                (
                    "127.1.168.192.in-addr.arpa.",
                    PTR,
                    ptr_in([192, 168, 1, 127], own(127)),
                ),
                ("127.1.168.192.in-addr.arpa.", SOA, Answer::Apex(own(127))),
                ("63.1.168.192.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("128.1.168.192.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("1.168.192.in-addr.arpa.", PTR, Answer::Elsewhere),
                (
                    "x.70.1.168.192.in-addr.arpa.",
                    PTR,
                    Answer::NxDomain(own(70)),
                ),
            ],
        );
        // A /16 has a two-octet apex and empty names between it and the addresses.
        let apex = rev([172, 16, 0, 0], 2);
        check(
            &zone([172, 16, 0, 0], 16),
            &[
                (
                    "1.2.16.172.in-addr.arpa.",
                    PTR,
                    ptr_in([172, 16, 2, 1], apex),
                ),
                ("2.16.172.in-addr.arpa.", PTR, Answer::NoData(apex)),
                ("16.172.in-addr.arpa.", PTR, Answer::Apex(apex)),
                ("172.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("1.2.17.172.in-addr.arpa.", PTR, Answer::Elsewhere),
            ],
        );
    }

    #[test]
    fn every_served_subnet_has_its_reverse_zone() {
        let zone = Zone::new(
            name("rack.internal."),
            &[
                net([10, 0, 0, 0], 24),
                net([10, 1, 0, 0], 16),
                net([10, 0, 0, 0], 24),
            ],
            SERVER,
        )
        .unwrap();
        assert_eq!(zone.subnets().len(), 2, "duplicates are served once");
        let relayed = rev([10, 1, 0, 0], 2);
        check(
            &zone,
            &[
                ("7.0.0.10.in-addr.arpa.", PTR, ptr([10, 0, 0, 7])),
                (
                    "9.3.1.10.in-addr.arpa.",
                    PTR,
                    ptr_in([10, 1, 3, 9], relayed),
                ),
                ("1.10.in-addr.arpa.", SOA, Answer::Apex(relayed)),
                ("9.3.2.10.in-addr.arpa.", PTR, Answer::Elsewhere),
            ],
        );
    }

    #[test]
    fn apex_names() {
        let zone = zone([10, 0, 0, 0], 24);
        for (apex, want) in [
            (Apex::Domain, "rack.internal."),
            (rev([10, 0, 0, 0], 3), "0.0.10.in-addr.arpa."),
            (rev([172, 16, 0, 0], 2), "16.172.in-addr.arpa."),
            (rev([192, 168, 1, 70], 4), "70.1.168.192.in-addr.arpa."),
            (rev([10, 0, 0, 0], 1), "10.in-addr.arpa."),
        ] {
            assert_eq!(zone.apex_name(apex).to_ascii(), want, "{apex:?}");
        }
    }

    #[test]
    fn single_address_subnet() {
        check(
            &zone([10, 9, 8, 7], 32),
            &[
                (
                    "7.8.9.10.in-addr.arpa.",
                    PTR,
                    ptr_in([10, 9, 8, 7], rev([10, 9, 8, 7], 4)),
                ),
                ("6.8.9.10.in-addr.arpa.", PTR, Answer::Elsewhere),
                ("8.9.10.in-addr.arpa.", PTR, Answer::Elsewhere),
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
        let zone = Zone::new(name("Rack.Internal"), &[net([10, 0, 0, 0], 24)], SERVER).unwrap();
        assert_eq!(zone.domain().to_ascii(), "rack.internal.");
        assert!(zone.domain().is_fqdn());
        assert_eq!(zone.subnets(), [net([10, 0, 0, 0], 24)]);
    }

    #[test]
    fn new_rejects_bad_zones() {
        let ten = [net([10, 0, 0, 0], 24)];
        let host_bits = [Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 5), 24).unwrap()];
        let cases = [
            (
                Zone::new(name("rack.internal."), &host_bits, SERVER),
                "10.0.0.0/24",
            ),
            (Zone::new(Name::root(), &ten, SERVER), "root"),
            (Zone::new(name("in-addr.arpa."), &ten, SERVER), "arpa"),
            (Zone::new(name("0.0.10.IN-ADDR.ARPA"), &ten, SERVER), "arpa"),
        ];
        for (result, hint) in cases {
            let err = result.expect_err(hint);
            assert!(err.is_invalid_zone(), "{err}");
            assert!(err.to_string().contains(hint), "{err:?} lacks {hint:?}");
        }
    }

    #[test]
    fn any_prefix_is_accepted_when_host_bits_are_clear() {
        assert!(Zone::new(name("rack.internal."), &[net([0, 0, 0, 0], 0)], SERVER).is_ok());
        assert!(Zone::new(name("rack.internal."), &[net([10, 0, 0, 1], 32)], SERVER).is_ok());
        assert!(Zone::new(name("rack.internal."), &[], SERVER).is_ok());
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
