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
    /// The relay that forwarded the request (giaddr), if any.
    pub relay: Option<Ipv4Addr>,
}

impl ClientInfo {
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
