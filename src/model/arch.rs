//! Client system architectures (DHCP option 93) and the boot architectures a
//! bootenv can describe.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The client system architecture a firmware announces in DHCP option 93
/// (RFC 4578 §2.1; values from the IANA "Processor Architecture Types" registry).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientArch(pub u16);

impl ClientArch {
    pub const X86_BIOS: ClientArch = ClientArch(0);
    pub const X86_UEFI: ClientArch = ClientArch(6);
    pub const X64_UEFI: ClientArch = ClientArch(7);
    /// Registered as "EBC", but many x86_64 UEFI firmwares (and iPXE builds of
    /// old) send 9 for x64 UEFI, so it is treated as such.
    pub const EBC: ClientArch = ClientArch(9);
    pub const ARM64_UEFI: ClientArch = ClientArch(11);
    pub const X64_UEFI_HTTP: ClientArch = ClientArch(16);
    pub const ARM64_UEFI_HTTP: ClientArch = ClientArch(19);

    /// What rackboot can boot on this client, if anything.
    pub fn boot_arch(self) -> Option<BootArch> {
        match self.0 {
            0 => Some(BootArch::Bios),
            7 | 9 | 16 => Some(BootArch::X86_64Efi),
            11 | 19 => Some(BootArch::Arm64Efi),
            _ => None,
        }
    }

    /// UEFI HTTP boot clients (option 93 = 16, 19) get a URL instead of a TFTP file.
    pub fn is_http_boot(self) -> bool {
        matches!(self.0, 15..=20 | 23 | 24 | 26 | 28 | 30 | 38 | 40)
    }

    /// The registry's name for the value, for logs and `explain`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "x86 BIOS",
            1 => "NEC/PC98",
            2 => "Itanium",
            3 => "DEC Alpha",
            4 => "Arc x86",
            5 => "Intel Lean Client",
            6 => "x86 UEFI",
            7 => "x64 UEFI",
            8 => "EFI Xscale",
            9 => "EBC",
            10 => "ARM 32-bit UEFI",
            11 => "ARM 64-bit UEFI",
            12 => "PowerPC Open Firmware",
            13 => "PowerPC ePAPR",
            14 => "POWER OPAL v3",
            15 => "x86 UEFI HTTP",
            16 => "x64 UEFI HTTP",
            17 => "EBC HTTP",
            18 => "ARM 32-bit UEFI HTTP",
            19 => "ARM 64-bit UEFI HTTP",
            20 => "PC/AT BIOS HTTP",
            21 => "ARM 32-bit U-Boot",
            22 => "ARM 64-bit U-Boot",
            23 => "ARM 32-bit U-Boot HTTP",
            24 => "ARM 64-bit U-Boot HTTP",
            25 => "RISC-V 32-bit UEFI",
            26 => "RISC-V 32-bit UEFI HTTP",
            27 => "RISC-V 64-bit UEFI",
            28 => "RISC-V 64-bit UEFI HTTP",
            29 => "RISC-V 128-bit UEFI",
            30 => "RISC-V 128-bit UEFI HTTP",
            31 => "s390 Basic",
            32 => "s390 Extended",
            33 => "MIPS 32-bit UEFI",
            34 => "MIPS 64-bit UEFI",
            35 => "Sunway 32-bit UEFI",
            36 => "Sunway 64-bit UEFI",
            37 => "LoongArch 32-bit UEFI",
            38 => "LoongArch 32-bit UEFI HTTP",
            39 => "LoongArch 64-bit UEFI",
            40 => "LoongArch 64-bit UEFI HTTP",
            41 => "ARM rpiboot",
            _ => "unassigned",
        }
    }
}

impl fmt::Display for ClientArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// The architectures a bootenv describes: each needs its own loader, and
/// usually its own kernel or console.
#[derive(
    Copy,
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BootArch {
    /// x86 legacy BIOS (PXE, then iPXE's undionly.kpxe).
    Bios,
    /// x86_64 UEFI.
    #[serde(rename = "x86_64_efi")]
    X86_64Efi,
    /// arm64 (aarch64) UEFI.
    #[serde(rename = "arm64_efi")]
    Arm64Efi,
}

impl BootArch {
    pub const ALL: [BootArch; 3] = [BootArch::Bios, BootArch::X86_64Efi, BootArch::Arm64Efi];

    pub fn as_str(self) -> &'static str {
        match self {
            BootArch::Bios => "bios",
            BootArch::X86_64Efi => "x86_64_efi",
            BootArch::Arm64Efi => "arm64_efi",
        }
    }

    pub fn is_efi(self) -> bool {
        !matches!(self, BootArch::Bios)
    }
}

super::named_values!(BootArch, |s| format!(
    "unknown architecture `{s}` (expected bios, x86_64_efi or arm64_efi)"
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_93_maps_to_boot_arch() {
        let table = [
            (0, Some(BootArch::Bios)),
            (6, None),
            (7, Some(BootArch::X86_64Efi)),
            (9, Some(BootArch::X86_64Efi)),
            (10, None),
            (11, Some(BootArch::Arm64Efi)),
            (16, Some(BootArch::X86_64Efi)),
            (19, Some(BootArch::Arm64Efi)),
            (22, None),
            (27, None),
            (41, None),
            (0xffff, None),
        ];
        for (code, want) in table {
            assert_eq!(ClientArch(code).boot_arch(), want, "option 93 = {code}");
        }
    }

    #[test]
    fn every_registered_value_has_a_name() {
        for code in 0..=41 {
            assert_ne!(ClientArch(code).name(), "unassigned", "{code}");
        }
        assert_eq!(ClientArch(42).name(), "unassigned");
    }

    #[test]
    fn boot_arch_round_trips_through_its_name() {
        for arch in BootArch::ALL {
            assert_eq!(arch.as_str().parse::<BootArch>().unwrap(), arch);
        }
        assert!("ppc64".parse::<BootArch>().is_err());
    }
}
