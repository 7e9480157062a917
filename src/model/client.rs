//! What a protocol module learned about a client, as plain data for policy.

use std::net::Ipv4Addr;

use super::{ClientArch, Mac};

/// Everything policy may decide on about a client asking to boot. Protocol
/// modules fill it from the wire; policy never sees a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub mac: Mac,
    /// Option 93; `None` when the client sent none (not a PXE client).
    pub arch: Option<ClientArch>,
    /// Option 60, e.g. `PXEClient:Arch:00007:UNDI:003016` or `HTTPClient`.
    pub vendor_class: Option<String>,
    /// Option 77, e.g. `iPXE`.
    pub user_class: Option<String>,
    /// The client is already running iPXE: user class `iPXE` or iPXE's own
    /// encapsulated option 175 present.
    pub is_ipxe: bool,
    /// iPXE feature codes announced in option 175 (e.g. 0x13 HTTP, 0x14
    /// HTTPS); empty when the client sent none.
    pub ipxe_features: Vec<u8>,
    /// The relay that forwarded the request (giaddr), if any.
    pub relay: Option<Ipv4Addr>,
}

/// iPXE feature code for HTTPS support (iPXE `include/ipxe/features.h`).
pub const IPXE_FEATURE_HTTPS: u8 = 0x14;

impl ClientInfo {
    /// An iPXE old enough to lack HTTPS: typically a NIC option ROM built
    /// years ago (qemu's 2019 ROMs among them). Only judged when the client
    /// announced its features at all.
    pub fn is_old_ipxe(&self) -> bool {
        self.is_ipxe
            && !self.ipxe_features.is_empty()
            && !self.ipxe_features.contains(&IPXE_FEATURE_HTTPS)
    }

    /// PXE and UEFI HTTP boot firmware announce themselves in option 60.
    pub fn is_pxe(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with("PXEClient") || v.starts_with("HTTPClient"))
            || self.arch.is_some()
            || self.is_ipxe
    }

    pub fn is_http_client(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with("HTTPClient"))
    }
}
