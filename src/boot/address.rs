//! Which address a DHCP client gets: the order in which addresses are tried,
//! as policy over the dynamic ranges. The engine that holds the leases takes
//! the first candidate no other MAC holds, under its own lock (or
//! constraint), so no address is ever given to two clients; what "holds"
//! means (a live lease, a declined address, another node's fixed address) is
//! the engine's to check.

use std::net::Ipv4Addr;

/// A dynamic range, inclusive, as numbers.
pub type Range = (u32, u32);

/// What a client's request and its record say about its address.
#[derive(Debug, Clone, Copy)]
pub struct AddressAsk<'a> {
    /// The node's fixed address: its own, and the only one it gets.
    pub fixed: Option<Ipv4Addr>,
    /// The address the client asked for (option 50, or its DHCPREQUEST's).
    pub wanted: Option<Ipv4Addr>,
    /// Only `wanted` will do: a DHCPREQUEST names its address, and the NAK
    /// that answers one that cannot be had must bind nothing.
    pub exact: bool,
    /// The address the MAC holds now (not declined), if any.
    pub current: Option<Ipv4Addr>,
    /// The dynamic ranges, searched in order.
    pub ranges: &'a [(Ipv4Addr, Ipv4Addr)],
}

/// One address to try, and the range whose scan found it (the engine moves
/// that range's cursor on when it takes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub ip: Ipv4Addr,
    pub scanned: Option<Range>,
}

fn range(&(first, last): &(Ipv4Addr, Ipv4Addr)) -> Range {
    (u32::from(first), u32::from(last))
}

/// The addresses to try for `ask`, best first:
/// - a fixed address, and nothing else (if another MAC holds it, none);
/// - else the MAC's current address (unless the request names one
///   exactly), then the address it asked for, each only inside a range;
/// - else, unless exact, every address of each range in order, starting
///   where that range's last scan ended (`cursor`) and wrapping round: a
///   storm of new clients costs O(1) each instead of a scan from the bottom.
///
/// Lazy: the engine stops at the first it can take.
pub fn candidates<'a>(
    ask: AddressAsk<'a>,
    cursor: impl Fn(Range) -> Option<u32> + 'a,
) -> Box<dyn Iterator<Item = Candidate> + 'a> {
    let kept = |ip| Candidate { ip, scanned: None };
    if let Some(fixed) = ask.fixed {
        return Box::new(std::iter::once(kept(fixed)));
    }
    let in_range = move |ip: &Ipv4Addr| {
        ask.ranges
            .iter()
            .any(|r| (range(r).0..=range(r).1).contains(&u32::from(*ip)))
    };
    let known = ask
        .current
        .filter(|_| !ask.exact)
        .into_iter()
        .chain(ask.wanted)
        .filter(in_range)
        .map(kept);
    let scans = ask
        .ranges
        .iter()
        .filter(move |_| !ask.exact)
        .flat_map(move |r| {
            let (lo, hi) = range(r);
            let start = cursor((lo, hi)).unwrap_or(lo).clamp(lo, hi);
            (start..=hi).chain(lo..start).map(move |ip| Candidate {
                ip: Ipv4Addr::from(ip),
                scanned: Some((lo, hi)),
            })
        });
    Box::new(known.chain(scans))
}

/// Where the next scan of `range` starts once `ip` was taken from it.
pub fn cursor_after((lo, hi): Range, ip: Ipv4Addr) -> u32 {
    let ip = u32::from(ip);
    if ip >= hi { lo } else { ip + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const RANGES: [(Ipv4Addr, Ipv4Addr); 2] = [
        (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 12)),
        (Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 1, 11)),
    ];

    fn ask() -> AddressAsk<'static> {
        AddressAsk {
            fixed: None,
            wanted: None,
            exact: false,
            current: None,
            ranges: &RANGES,
        }
    }

    fn ips(a: AddressAsk<'_>, cursor: impl Fn(Range) -> Option<u32> + 'static) -> Vec<String> {
        candidates(a, cursor).map(|c| c.ip.to_string()).collect()
    }

    #[test]
    fn a_fixed_address_is_the_only_candidate() {
        let a = AddressAsk {
            fixed: Some(ip("10.0.9.9")),
            wanted: Some(ip("10.0.0.11")),
            current: Some(ip("10.0.0.10")),
            ..ask()
        };
        assert_eq!(ips(a, |_| None), ["10.0.9.9"]);
    }

    #[test]
    fn the_current_then_the_wanted_address_come_first_inside_the_ranges() {
        let a = AddressAsk {
            current: Some(ip("10.0.0.12")),
            wanted: Some(ip("10.0.1.11")),
            ..ask()
        };
        assert_eq!(
            ips(a, |_| None),
            [
                "10.0.0.12",
                "10.0.1.11",
                "10.0.0.10",
                "10.0.0.11",
                "10.0.0.12",
                "10.0.1.10",
                "10.0.1.11"
            ]
        );
        // Outside every range: not offered.
        let a = AddressAsk {
            wanted: Some(ip("192.0.2.1")),
            ..ask()
        };
        assert_eq!(ips(a, |_| None)[0], "10.0.0.10");
    }

    #[test]
    fn an_exact_request_tries_only_the_address_it_names() {
        let a = AddressAsk {
            current: Some(ip("10.0.0.12")),
            wanted: Some(ip("10.0.0.11")),
            exact: true,
            ..ask()
        };
        assert_eq!(ips(a, |_| None), ["10.0.0.11"]);
        let a = AddressAsk {
            exact: true,
            ..ask()
        };
        assert!(ips(a, |_| None).is_empty());
    }

    #[test]
    fn a_scan_starts_at_the_cursor_and_wraps_round() {
        let first = range(&RANGES[0]);
        let got = candidates(ask(), move |r| (r == first).then_some(first.0 + 2))
            .take(3)
            .collect::<Vec<_>>();
        assert_eq!(
            got.iter().map(|c| c.ip.to_string()).collect::<Vec<_>>(),
            ["10.0.0.12", "10.0.0.10", "10.0.0.11"]
        );
        assert!(got.iter().all(|c| c.scanned == Some(first)));
        assert_eq!(cursor_after(first, ip("10.0.0.11")), first.0 + 2);
        assert_eq!(
            cursor_after(first, ip("10.0.0.12")),
            first.0,
            "past the end: back to the start"
        );
    }
}
