//! The checked view of a DHCP packet: everything dhcproto would trust is
//! checked here first, then dhcproto decodes. The only way from bytes to a
//! [`Message`] in rackboot, for port 67 and port 4011 alike.
//!
//! dhcproto 0.15 takes a packet's own word for several things and then acts
//! on it: `Message::chaddr()` slices `chaddr[..hlen]` (a panic for hlen 17 to
//! 255), several option decoders `debug_assert!` their length (options 80, 94
//! and 152–155: a debug build dies) or subtract from it (81, 151: an overflow
//! panic in debug builds). Each of those is a packet any host on the boot
//! network, or behind any relay, can send; here they are refused with a
//! reason instead.

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder};

/// The fixed BOOTP header before the options field (RFC 2131 §2, figure 1).
pub const HEADER_LEN: usize = 236;
/// RFC 2131 §3: the first four octets of the options field.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of `hlen` in the header, and the size of the `chaddr` field it counts into.
const HLEN_AT: usize = 2;
const CHADDR_LEN: u8 = 16;

/// Why a packet is not taken as DHCP. Logged and counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a DHCP header ({0} bytes)")]
    Short(usize),
    #[error("no DHCP magic cookie")]
    NoCookie,
    #[error("hardware address length {0} is longer than chaddr's 16 bytes")]
    Hlen(u8),
    #[error("option {code} runs past the end of the packet")]
    Truncated { code: u8 },
    #[error("option {code} has length {len}, {want}")]
    OptionLength {
        code: u8,
        len: usize,
        want: &'static str,
    },
    #[error("does not decode: {0}")]
    Decode(String),
}

/// Checks `packet` and decodes it.
pub fn decode(packet: &[u8]) -> Result<Message, Malformed> {
    check(packet)?;
    Message::decode(&mut Decoder::new(packet)).map_err(|e| Malformed::Decode(e.to_string()))
}

/// What dhcproto does not check: it takes any four bytes as the magic
/// cookie, any `hlen`, and stops silently at an option that runs past the end
/// of the packet, keeping the options before it. Either way the packet is not
/// DHCP, and answering it would act on a guess.
pub fn check(packet: &[u8]) -> Result<(), Malformed> {
    let Some(options) = packet.get(HEADER_LEN + MAGIC_COOKIE.len()..) else {
        return Err(Malformed::Short(packet.len()));
    };
    if packet[HEADER_LEN..HEADER_LEN + MAGIC_COOKIE.len()] != MAGIC_COOKIE {
        return Err(Malformed::NoCookie);
    }
    if packet[HLEN_AT] > CHADDR_LEN {
        return Err(Malformed::Hlen(packet[HLEN_AT]));
    }
    // dhcproto joins consecutive instances of one option (RFC 3396) and
    // decodes the joined value: lengths are checked on the joined run.
    let mut run: Option<(u8, usize)> = None;
    let mut i = 0;
    while let Some(&code) = options.get(i) {
        if code == 0 || code == 255 {
            if let Some((code, len)) = run.take() {
                check_length(code, len)?;
            }
            if code == 255 {
                return Ok(());
            }
            i += 1;
            continue;
        }
        let len = match options.get(i + 1).map(|&l| usize::from(l)) {
            Some(len) if i + 2 + len <= options.len() => len,
            _ => return Err(Malformed::Truncated { code }),
        };
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some((c, total)) => {
                check_length(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        i += 2 + len;
    }
    // No end option (255): tolerated, the options are all complete.
    match run {
        Some((code, len)) => check_length(code, len),
        None => Ok(()),
    }
}

/// The lengths dhcproto asserts on or subtracts from (see the module doc).
fn check_length(code: u8, len: usize) -> Result<(), Malformed> {
    let want = match code {
        // Rapid Commit (RFC 4039): no data.
        80 if len != 0 => "must be 0",
        // Client FQDN (RFC 4702): flags, two rcodes, then the name.
        81 if len < 3 => "must be at least 3",
        // Client network interface identifier (RFC 4578): type, major, minor.
        94 if len != 3 => "must be 3",
        // Bulk leasequery status code (RFC 6926): a code, then text.
        151 if len < 1 => "must be at least 1",
        // Bulk leasequery times (RFC 6926): 32-bit seconds.
        152..=155 if len != 4 => "must be 4",
        _ => return Ok(()),
    };
    Err(Malformed::OptionLength { code, len, want })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(tail: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1; // BOOTREQUEST
        p[1] = 1; // Ethernet
        p[HLEN_AT] = 6;
        p.extend_from_slice(tail);
        p
    }

    #[test]
    fn wire_check_refuses_what_dhcproto_would_guess_at() {
        let ok = packet(&[99, 130, 83, 99, 53, 1, 1, 0, 0, 255]);
        assert_eq!(check(&ok), Ok(()));
        assert_eq!(check(&packet(&[99, 130, 83, 99, 53, 1, 1])), Ok(()));
        assert_eq!(check(&packet(&[99, 130, 83, 99])), Ok(()));
        for bad in [
            &ok[..HEADER_LEN + 3],
            &packet(&[0xde, 0xad, 0xbe, 0xef, 53, 1, 1, 255])[..],
            &packet(&[99, 130, 83, 99, 53, 1, 1, 60, 200, b'P', b'X', b'E'])[..],
            &packet(&[99, 130, 83, 99, 53])[..],
            &[1, 1, 6][..],
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_hardware_address_longer_than_chaddr_is_refused() {
        for hlen in [17u8, 100, 255] {
            let mut p = packet(&[99, 130, 83, 99, 53, 1, 1, 255]);
            p[HLEN_AT] = hlen;
            assert_eq!(decode(&p).unwrap_err(), Malformed::Hlen(hlen));
        }
        let mut p = packet(&[99, 130, 83, 99, 53, 1, 1, 255]);
        p[HLEN_AT] = 16;
        assert!(decode(&p).is_ok());
    }

    #[test]
    fn option_lengths_dhcproto_asserts_on_are_refused_not_decoded() {
        let cases: &[(&[u8], Option<u8>)] = &[
            (&[152, 2, 0, 0], Some(152)),
            (&[155, 0], Some(155)),
            (&[80, 1, 0], Some(80)),
            (&[81, 2, 0, 0], Some(81)),
            (&[94, 2, 1, 2], Some(94)),
            (&[151, 0], Some(151)),
            // Two instances joined (RFC 3396) are checked as one.
            (&[152, 4, 0, 0, 0, 1, 152, 4, 0, 0, 0, 2], Some(152)),
            (&[152, 2, 0, 0, 152, 2, 0, 1], None),
            (&[80, 0], None),
            (&[94, 3, 1, 3, 16], None),
            (&[81, 3, 0, 0, 0], None),
        ];
        for (opt, refused) in cases {
            let p = packet(&[&[99, 130, 83, 99, 53, 1, 1][..], opt, &[255]].concat());
            match (decode(&p), refused) {
                (Err(Malformed::OptionLength { code, .. }), Some(want)) => {
                    assert_eq!(code, *want, "{opt:?}")
                }
                (Ok(_), None) => {}
                (got, _) => panic!("{opt:?}: {got:?}"),
            }
        }
    }
}
