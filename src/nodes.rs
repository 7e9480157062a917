//! Node tokens and the names of records rackboot makes.

use crate::config::HostnameScheme;
use crate::model::Mac;

/// The hostname a record made by rackboot gets (`[nodes] default_hostname`).
pub fn default_hostname(mac: Mac, scheme: HostnameScheme) -> String {
    match scheme {
        HostnameScheme::Mac => mac.default_hostname(),
        HostnameScheme::Random => format!("node-{}", &new_token()[..8]),
    }
}

/// A node token: 128 random bits, hex. It authenticates the node's own
/// requests, so it must not be guessable from the MAC or the time.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // A ChaCha CSPRNG per thread, seeded and periodically reseeded from the
    // OS (what `rand` calls ThreadRng): as unguessable as getrandom(2), and
    // no syscall per boot script.
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    hex(&bytes)
}

/// `bytes` in lowercase hex, written digit by digit: one allocation (every
/// boot script gets a token, and every read of a record spells its token).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_random_bits_in_hex() {
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn a_random_default_hostname_does_not_carry_the_mac() {
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        assert_eq!(
            default_hostname(mac, HostnameScheme::Mac),
            "node-525400abcd01"
        );
        let h = default_hostname(mac, HostnameScheme::Random);
        assert!(h.starts_with("node-") && h.len() == 13, "{h}");
        assert!(!h.contains("abcd01") && !h.contains("525400"), "{h}");
        assert_ne!(h, default_hostname(mac, HostnameScheme::Random));
    }
}
