//! The simulated machines: each node's MAC, firmware architecture and SMBIOS
//! UUID, derived from a seed and the node's index so that a storm can be run
//! again against the same records (and a failure looked up by MAC).
//!
//! Owns identity only; what a node sends is in `dhcp_client`.

use std::fmt;
use std::str::FromStr;

/// DHCP option 93 values the fleet can announce (RFC 4578 §2.1, IANA registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch(pub u16);

impl Arch {
    pub const BIOS: Arch = Arch(0);
    pub const X86_64_EFI: Arch = Arch(7);
    pub const ARM64_EFI: Arch = Arch(11);

    /// The name rackboot's bootenvs use for it, or the number.
    pub fn name(self) -> String {
        match self.0 {
            0 => "bios".into(),
            7 | 9 => "x86_64_efi".into(),
            11 => "arm64_efi".into(),
            n => format!("arch{n}"),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        match s.trim() {
            "bios" => Ok(Arch::BIOS),
            "x86_64_efi" | "efi" => Ok(Arch::X86_64_EFI),
            "arm64_efi" => Ok(Arch::ARM64_EFI),
            n => n.parse::<u16>().map(Arch).map_err(|_| {
                format!("`{n}` is not an architecture (bios, x86_64_efi, arm64_efi or an option 93 number)")
            }),
        }
    }
}

/// Which architectures the fleet announces: each node draws one of these,
/// evenly, by its seeded hash. `mix` is BIOS, x86_64 UEFI and arm64 UEFI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchMix(pub Vec<Arch>);

impl FromStr for ArchMix {
    type Err = String;
    fn from_str(s: &str) -> Result<ArchMix, String> {
        if s.trim() == "mix" {
            return Ok(ArchMix(vec![Arch::BIOS, Arch::X86_64_EFI, Arch::ARM64_EFI]));
        }
        let archs = s
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Arch>, _>>()?;
        if archs.is_empty() {
            return Err(
                "no architecture given (try mix, bios, x86_64_efi, arm64_efi or 0,7,11)".into(),
            );
        }
        Ok(ArchMix(archs))
    }
}

/// One simulated machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    pub index: u32,
    pub mac: [u8; 6],
    pub arch: Arch,
    /// Option 97's 16 bytes (type 0 = UUID follows, RFC 4578 §2.3).
    pub uuid: [u8; 16],
}

impl NodeId {
    pub fn mac_string(&self) -> String {
        mac_string(&self.mac)
    }
}

pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fleet of `--nodes N` machines for `seed`.
///
/// MACs are `02:ss:ss:ii:ii:ii`: locally administered (bit 1 of the first
/// octet, so they can never be a real NIC's), two octets from the seed, and
/// the index in the last three, so no two nodes of one fleet collide (up to
/// 2^24 nodes) and two seeds give two disjoint fleets but for 1 in 65536.
pub fn node(seed: u64, index: u32, archs: &ArchMix) -> NodeId {
    let s = splitmix64(seed);
    let h = splitmix64(seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mac = [
        0x02,
        (s >> 8) as u8,
        s as u8,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ];
    let arch = archs.0[(h % archs.0.len() as u64) as usize];
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&splitmix64(h).to_be_bytes());
    uuid[8..].copy_from_slice(&splitmix64(h ^ 1).to_be_bytes());
    // RFC 4122 version 4, variant 10xx: it looks like the random UUID it is.
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    NodeId {
        index,
        mac,
        arch,
        uuid,
    }
}

/// A transaction id that differs per node and per exchange (`n`).
pub fn xid(seed: u64, index: u32, n: u32) -> u32 {
    splitmix64(seed ^ (u64::from(index) << 32) ^ u64::from(n) ^ 0x5851_f42d_4c95_7f2d) as u32
}

/// Sebastiano Vigna's splitmix64: a well-mixed 64-bit hash, enough for
/// spreading identities (nothing here needs to be unpredictable).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_fleet_and_macs_are_unique() {
        let mix: ArchMix = "mix".parse().unwrap();
        let a: Vec<_> = (0..5000).map(|i| node(42, i, &mix)).collect();
        let b: Vec<_> = (0..5000).map(|i| node(42, i, &mix)).collect();
        assert_eq!(a, b);
        let macs: HashSet<_> = a.iter().map(|n| n.mac).collect();
        assert_eq!(macs.len(), a.len());
        assert!(a.iter().all(|n| n.mac[0] & 0x03 == 0x02), "local, unicast");
        let c = node(43, 0, &mix);
        assert_ne!(c.mac, a[0].mac);
    }

    #[test]
    fn the_mix_uses_every_architecture() {
        let mix: ArchMix = "mix".parse().unwrap();
        let mut seen = HashSet::new();
        for i in 0..60 {
            seen.insert(node(1, i, &mix).arch);
        }
        assert_eq!(seen.len(), 3);
        let one: ArchMix = "7".parse().unwrap();
        assert!((0..20).all(|i| node(1, i, &one).arch == Arch::X86_64_EFI));
        assert_eq!(
            "bios,arm64_efi".parse::<ArchMix>().unwrap(),
            ArchMix(vec![Arch::BIOS, Arch::ARM64_EFI])
        );
        assert!("sparc".parse::<ArchMix>().is_err());
    }

    #[test]
    fn uuid_is_version_4() {
        let n = node(9, 3, &"mix".parse().unwrap());
        assert_eq!(n.uuid[6] >> 4, 4);
        assert_eq!(n.uuid[8] >> 6, 2);
    }
}
