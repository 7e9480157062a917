//! The MAC address that identifies a node.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address. Displays as lowercase `aa:bb:cc:dd:ee:ff`, the
/// one spelling rackboot uses in URLs, records and logs.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

impl Mac {
    pub const fn new(octets: [u8; 6]) -> Self {
        Mac(octets)
    }

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The hostname a node gets until an admin names it: stable, DNS-safe and
    /// unique per MAC.
    pub fn default_hostname(&self) -> String {
        let o = self.0;
        format!(
            "node-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex pairs such as 52:54:00:12:34:56)")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` (as Windows and some
    /// BMCs print them) and bare `aabbccddeeff`, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.chars().take(64).collect());
        let hex: String = match s.len() {
            17 => {
                let sep = s.as_bytes()[2];
                if sep != b':' && sep != b'-' {
                    return Err(err());
                }
                let mut out = String::with_capacity(12);
                for (i, part) in s.split(sep as char).enumerate() {
                    if i >= 6 || part.len() != 2 {
                        return Err(err());
                    }
                    out.push_str(part);
                }
                out
            }
            12 => s.to_string(),
            _ => return Err(err()),
        };
        let mut octets = [0u8; 6];
        for (i, octet) in octets.iter_mut().enumerate() {
            *octet = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(err)?, 16)
                .map_err(|_| err())?;
        }
        Ok(Mac(octets))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out by hand: every lease and record a storm writes to a
        // shared database is keyed by this text, and six `{:02x}` through
        // the formatting machinery cost more than the rest of the key.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b':'; 17];
        for (i, byte) in self.0.iter().enumerate() {
            text[i * 3] = HEX[usize::from(byte >> 4)];
            text[i * 3 + 1] = HEX[usize::from(byte & 0xf)];
        }
        // Hex digits and colons: always UTF-8.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_spellings_and_prints_one() {
        for s in ["52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "525400abcd01"] {
            assert_eq!(
                s.parse::<Mac>().unwrap().to_string(),
                "52:54:00:ab:cd:01",
                "{s}"
            );
        }
        let every_nibble = Mac::new([0x00, 0x0f, 0xf0, 0xff, 0x9a, 0x3c]);
        assert_eq!(every_nibble.to_string(), "00:0f:f0:ff:9a:3c");
        assert_eq!(format!("{every_nibble:?}"), "00:0f:f0:ff:9a:3c");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for s in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "52:54-00:ab:cd:01",
            "5254.00ab.cd01",
            "52:54:00:ab:cd:01:02",
            "../../etc/passwd",
            "52:54:00:ab:c:d01",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s}");
        }
    }

    #[test]
    fn default_hostname_is_dns_safe() {
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        assert_eq!(mac.default_hostname(), "node-525400abcd01");
    }
}
