//! `[dhcp.loaders]`: the first-stage loader each client architecture
//! (DHCP option 93) is handed.

use serde::Deserialize;

use super::{ConfigError, LocalBoot, Source};

/// Paths relative to `assets_dir`, fetched by TFTP.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub bios: String,
    pub x86_64_efi: String,
    pub arm64_efi: String,
    /// The signed shim UEFI nodes booting through GRUB (a bootenv's or a
    /// node's `loader = "grub"`) are handed. Shim then fetches
    /// `grubx64.efi` / `grubaa64.efi` from the same directory.
    pub x86_64_efi_grub: String,
    pub arm64_efi_grub: String,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            bios: "undionly.kpxe".into(),
            x86_64_efi: "ipxe-amd64.efi".into(),
            arm64_efi: "ipxe-arm64.efi".into(),
            x86_64_efi_grub: "shimx64.efi".into(),
            arm64_efi_grub: "shimaa64.efi".into(),
        }
    }
}

/// First-stage loader per boot architecture, relative to the assets directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderMap {
    pub bios: String,
    pub x86_64_efi: String,
    pub arm64_efi: String,
    /// The shims of the Secure Boot chain (shim → GRUB), per UEFI architecture.
    pub x86_64_efi_grub: String,
    pub arm64_efi_grub: String,
    /// Chainload these loaders into an iPXE too old to support HTTPS (old
    /// NIC option ROMs) instead of handing it the script. Off by default:
    /// the boot path is plain HTTP, and the extra round (loader by TFTP, a
    /// second DHCP, downloads through the ROM's UNDI) made a BIOS boot slower.
    pub upgrade_old_ipxe: bool,
    /// What DHCP hands a node whose bootenv is `local`.
    pub local_boot: LocalBoot,
}

/// What a `rackboot.toml` that says nothing of loaders, `upgrade_old_ipxe`
/// or `local_boot` gets.
impl Default for LoaderMap {
    fn default() -> Self {
        let dhcp = super::dhcp::Section::default();
        Section::default()
            .validate(
                &Source::new(std::path::Path::new("rackboot.toml")),
                dhcp.upgrade_old_ipxe,
                LocalBoot::default(),
            )
            .expect("the default loaders are valid")
    }
}

impl Section {
    /// `upgrade_old_ipxe` (`[dhcp]`) and `local_boot` (`[boot]`) travel with
    /// the loaders because DHCP decides all three together.
    pub fn validate(
        self,
        src: &Source,
        upgrade_old_ipxe: bool,
        local_boot: LocalBoot,
    ) -> Result<LoaderMap, ConfigError> {
        for (key, loader) in [
            ("dhcp.loaders.bios", &self.bios),
            ("dhcp.loaders.x86_64_efi", &self.x86_64_efi),
            ("dhcp.loaders.arm64_efi", &self.arm64_efi),
            ("dhcp.loaders.x86_64_efi_grub", &self.x86_64_efi_grub),
            ("dhcp.loaders.arm64_efi_grub", &self.arm64_efi_grub),
        ] {
            if loader.is_empty() || loader.starts_with('/') || loader.contains("..") {
                return Err(
                    src.invalid(key, format!("`{loader}` must be a path inside assets_dir"))
                );
            }
        }
        Ok(LoaderMap {
            bios: self.bios,
            x86_64_efi: self.x86_64_efi,
            arm64_efi: self.arm64_efi,
            x86_64_efi_grub: self.x86_64_efi_grub,
            arm64_efi_grub: self.arm64_efi_grub,
            upgrade_old_ipxe,
            local_boot,
        })
    }
}
