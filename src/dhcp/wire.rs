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

/// Checks `packet` and decodes it (a reply, as DHCP clients read it).
pub fn decode(packet: &[u8]) -> Result<Message, Malformed> {
    check(packet)?;
    Message::decode(&mut Decoder::new(packet)).map_err(|e| Malformed::Decode(e.to_string()))
}

/// The options rackboot reads in a client's request, on port 67 or 4011:
/// message type, requested address, server identifier, vendor class, user
/// class, relay agent information, client UUID, client architecture and
/// iPXE's encapsulated options.
const READ_IN_REQUESTS: [u8; 9] = [50, 53, 54, 60, 77, 82, 93, 97, 175];

/// Checks `packet` and decodes it as a client's request: the only way a
/// request reaches classification.
///
/// The message keeps the options rackboot reads ([`READ_IN_REQUESTS`]),
/// and of those only the ones sent with data: an empty option says nothing.
/// The rest go because dhcproto decodes some options into values it then
/// encodes into bytes it cannot decode again (an empty NWIP option, a
/// client FQDN in ASCII form), and decoding stops at the first such one, so
/// a request holding them would mean one thing here and another once
/// re-encoded. What rackboot never reads cannot change what it answers.
pub fn decode_request(packet: &[u8]) -> Result<Message, Malformed> {
    let empty = check(packet)?;
    let mut msg =
        Message::decode(&mut Decoder::new(packet)).map_err(|e| Malformed::Decode(e.to_string()))?;
    msg.opts_mut().retain(|code, _| {
        let code = u8::from(*code);
        READ_IN_REQUESTS.contains(&code) && !empty.has(code)
    });
    Ok(msg)
}

/// The codes of the options whose value, as dhcproto keeps it, came with
/// no data: the last run of each code (consecutive instances joined, RFC
/// 3396) wins, as it does in dhcproto's decoded map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmptyOptions([u64; 4]);

impl EmptyOptions {
    fn set(&mut self, code: u8, empty: bool) {
        let (word, bit) = (usize::from(code / 64), 1u64 << (code % 64));
        if empty {
            self.0[word] |= bit;
        } else {
            self.0[word] &= !bit;
        }
    }

    pub fn has(&self, code: u8) -> bool {
        self.0[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    pub fn codes(&self) -> impl Iterator<Item = u8> + '_ {
        (1..=254u8).filter(|c| self.has(*c))
    }
}

/// What dhcproto does not check: it takes any four bytes as the magic
/// cookie, any `hlen`, and stops silently at an option that runs past the end
/// of the packet, keeping the options before it. Either way the packet is not
/// DHCP, and answering it would act on a guess.
///
/// Returns the options that came with no data (see [`decode`]).
pub fn check(packet: &[u8]) -> Result<EmptyOptions, Malformed> {
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
    let mut empty = EmptyOptions::default();
    let mut i = 0;
    while let Some(&code) = options.get(i) {
        if code == 0 || code == 255 {
            if let Some((code, len)) = run.take() {
                check_run(code, len, &mut empty)?;
            }
            if code == 255 {
                return Ok(empty);
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
                check_run(c, total, &mut empty)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        i += 2 + len;
    }
    // No end option (255): tolerated, the options are all complete.
    if let Some((code, len)) = run {
        check_run(code, len, &mut empty)?;
    }
    Ok(empty)
}

/// One option's whole run (consecutive instances joined).
fn check_run(code: u8, len: usize, empty: &mut EmptyOptions) -> Result<(), Malformed> {
    check_length(code, len)?;
    empty.set(code, len == 0);
    Ok(())
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
        let none = Ok(EmptyOptions::default());
        assert_eq!(check(&ok), none);
        assert_eq!(check(&packet(&[99, 130, 83, 99, 53, 1, 1])), none);
        assert_eq!(check(&packet(&[99, 130, 83, 99])), none);
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
    fn a_request_keeps_the_options_rackboot_reads_and_means_the_same_re_encoded() {
        use dhcproto::v4::OptionCode;
        use dhcproto::{Encodable, Encoder};
        // An empty NWIP (63) and static routes (33): as dhcproto encodes
        // them, decoding the result stopped there and lost the arch (93)
        // after them (so did a client FQDN in ASCII form: the regression
        // input `round-trip-empty-options`). An empty user class (77) is
        // absent; of two runs of 55 the last (with data) wins.
        let p = packet(&[
            99, 130, 83, 99, 53, 1, 1, 33, 0, 63, 0, 77, 0, 55, 0, 80, 0, 55, 2, 1, 3, 93, 2, 0, 7,
            255,
        ]);
        assert_eq!(
            check(&p).unwrap().codes().collect::<Vec<_>>(),
            [33, 63, 77, 80]
        );
        let msg = decode_request(&p).unwrap();
        let codes = |m: &Message| {
            m.opts()
                .iter()
                .map(|(c, _)| u8::from(*c))
                .collect::<Vec<_>>()
        };
        assert_eq!(codes(&msg), [53, 93]);
        let mut again = Vec::new();
        msg.encode(&mut Encoder::new(&mut again)).unwrap();
        let again = decode_request(&again).unwrap();
        assert_eq!(again.opts(), msg.opts());
        assert!(
            again
                .opts()
                .get(OptionCode::ClientSystemArchitecture)
                .is_some()
        );
        // A reply is read whole.
        assert!(
            decode(&p)
                .unwrap()
                .opts()
                .get(OptionCode::from(55))
                .is_some()
        );
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
