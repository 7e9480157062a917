//! Builds DHCP replies. Pure: the request, the address and the boot decision
//! in; a message out.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, UnknownOption};

use super::classify::OPTION_IPXE_ENCAP;
use ipnet::Ipv4Net;

/// The per-subnet answers every reply carries.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// rackboot's address: server identifier (54) and next-server (siaddr).
    pub server_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub router: Option<Ipv4Addr>,
    pub dns: Option<Ipv4Addr>,
    pub domain: Option<String>,
}

/// An address handed out and for how long: the lease time in an OFFER or ACK
/// (options 51, 58, 59). The store's lease decides it, not the subnet: a lease
/// renewed while the store cannot commit runs only until what it has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub ip: Ipv4Addr,
    pub seconds: u32,
}

pub use crate::boot::BootFile;

/// PXE option 43, sub-option 6 (discovery control) = 8: "boot the file in this
/// reply, skip PXE boot-server discovery". Without it some PXE ROMs wait for a
/// boot server answer on port 4011 that never comes.
const PXE_DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];

/// iPXE option 175, sub-option 176 (`no-pxedhcp`) = 1: iPXE otherwise waits
/// about 3 s on every boot for ProxyDHCP offers that rackboot never sends.
const IPXE_NO_PXEDHCP: [u8; 3] = [176, 1, 1];

/// An OFFER or ACK handing `grant` (none: the ACK to an INFORM) and `boot`.
/// `ipxe` says the client is iPXE, which gets its own speed-up option.
pub fn answer(
    request: &Message,
    kind: MessageType,
    grant: Option<Grant>,
    hostname: Option<&str>,
    boot: &BootFile,
    ipxe: bool,
    p: &ServerParams,
) -> Message {
    let mut m = base(request, kind, p.server_ip);
    m.set_yiaddr(grant.map_or(Ipv4Addr::UNSPECIFIED, |g| g.ip));
    let opts = m.opts_mut();
    // None for DHCPINFORM: the client keeps its own lease (RFC 2131 §4.3.5).
    if let Some(g) = grant {
        opts.insert(DhcpOption::AddressLeaseTime(g.seconds));
        opts.insert(DhcpOption::Renewal(g.seconds / 2));
        opts.insert(DhcpOption::Rebinding(g.seconds / 8 * 7));
    }
    opts.insert(DhcpOption::SubnetMask(p.subnet.netmask()));
    opts.insert(DhcpOption::BroadcastAddr(p.subnet.broadcast()));
    if let Some(r) = p.router {
        opts.insert(DhcpOption::Router(vec![r]));
    }
    if let Some(d) = p.dns {
        opts.insert(DhcpOption::DomainNameServer(vec![d]));
    }
    if let Some(d) = &p.domain {
        opts.insert(DhcpOption::DomainName(d.clone()));
    }
    if let Some(h) = hostname {
        opts.insert(DhcpOption::Hostname(h.to_string()));
    }
    // Firmware that sent a machine UUID (option 97) expects it back (PXE 2.1).
    if let Some(uuid) = request.opts().get(OptionCode::ClientMachineIdentifier) {
        opts.insert(uuid.clone());
    }
    if ipxe {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(OPTION_IPXE_ENCAP),
            IPXE_NO_PXEDHCP.to_vec(),
        )));
    }
    match boot {
        BootFile::None => {}
        BootFile::Tftp(file) => {
            m.set_siaddr(p.server_ip);
            m.set_fname_str(file);
            let opts = m.opts_mut();
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            opts.insert(DhcpOption::VendorExtensions(PXE_DISCOVERY_CONTROL.to_vec()));
            opts.insert(DhcpOption::TFTPServerName(
                p.server_ip.to_string().into_bytes(),
            ));
            opts.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        }
        BootFile::Url { url, http_client } => {
            m.set_fname_str(url);
            let opts = m.opts_mut();
            opts.insert(DhcpOption::BootfileName(url.as_bytes().to_vec()));
            if *http_client {
                // UEFI HTTP boot only accepts offers that say HTTPClient (UEFI 2.x §24.7).
                opts.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
            }
        }
    }
    m
}

/// A DHCPNAK: the client must restart from DISCOVER.
pub fn nak(request: &Message, server_ip: Ipv4Addr, reason: &str) -> Message {
    let mut m = base(request, MessageType::Nak, server_ip);
    m.opts_mut().insert(DhcpOption::Message(reason.to_string()));
    m
}

fn base(request: &Message, kind: MessageType, server_ip: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        request.xid(),
        if kind == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            request.ciaddr()
        },
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        request.giaddr(),
        &request.chaddr()[..request.chaddr().len().min(16)],
    );
    m.set_opcode(Opcode::BootReply);
    m.set_htype(request.htype());
    m.set_flags(request.flags());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server_ip));
    // RFC 3046 §2.2: the relay agent information goes back to the relay,
    // which strips it and uses it to find the client's port. A client heard
    // directly has no relay: what it put there is not echoed.
    if !request.giaddr().is_unspecified()
        && let Some(info) = request.opts().get(OptionCode::RelayAgentInformation)
    {
        opts.insert(info.clone());
    }
    m
}

/// A proxyDHCP offer (PXE 2.1 §2.2.5): boot information for a PXE client
/// whose address comes from another server. No address, no lease options.
pub fn proxy_offer(
    request: &Message,
    kind: MessageType,
    boot: &BootFile,
    p: &ServerParams,
) -> Message {
    let mut m = base(request, kind, p.server_ip);
    // Quirk (iPXE, every version seen: qemu's 2019 ROM, trixie's 2025
    // loaders): a proxy answer counts only with a next-server (siaddr) *and* a
    // boot file (`dhcp_has_pxeopts`). A script URL needs no next-server, but
    // without one iPXE ignores the offer, sends a ProxyDHCPREQUEST to 4011,
    // ignores that answer too and ends "Nothing to boot".
    m.set_siaddr(p.server_ip);
    match boot {
        BootFile::Tftp(file) => {
            m.set_fname_str(file);
            let opts = m.opts_mut();
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            opts.insert(DhcpOption::VendorExtensions(PXE_DISCOVERY_CONTROL.to_vec()));
            opts.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        }
        BootFile::Url { url, http_client } => {
            m.set_fname_str(url);
            let opts = m.opts_mut();
            opts.insert(DhcpOption::BootfileName(url.as_bytes().to_vec()));
            opts.insert(DhcpOption::ClassIdentifier(if *http_client {
                b"HTTPClient".to_vec()
            } else {
                b"PXEClient".to_vec()
            }));
        }
        BootFile::None => {}
    }
    if let Some(uuid) = request.opts().get(OptionCode::ClientMachineIdentifier) {
        m.opts_mut().insert(uuid.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};

    fn params() -> ServerParams {
        ServerParams {
            server_ip: Ipv4Addr::new(10, 77, 0, 1),
            subnet: "10.77.0.0/24".parse().unwrap(),
            router: Some(Ipv4Addr::new(10, 77, 0, 254)),
            dns: Some(Ipv4Addr::new(10, 77, 0, 1)),
            domain: Some("rack.internal".into()),
        }
    }

    fn grant() -> Option<Grant> {
        Some(Grant {
            ip: Ipv4Addr::new(10, 77, 0, 100),
            seconds: 3600,
        })
    }

    fn request() -> Message {
        let mut m = Message::new_with_id(
            42,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 1, 2, 3],
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
        m
    }

    /// The header's file field is NUL-padded on the wire.
    fn fname(m: &Message) -> &str {
        m.fname_str().unwrap().unwrap().trim_end_matches('\0')
    }

    fn round_trip(m: &Message) -> Message {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        Message::decode(&mut Decoder::new(&buf)).unwrap()
    }

    #[test]
    fn offer_with_tftp_loader() {
        let req = request();
        let m = round_trip(&answer(
            &req,
            MessageType::Offer,
            grant(),
            Some("node-1"),
            &BootFile::Tftp("ipxe-amd64.efi".into()),
            false,
            &params(),
        ));
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 42);
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(m.siaddr(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(fname(&m), "ipxe-amd64.efi");
        assert_eq!(m.chaddr(), req.chaddr());
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        assert_eq!(
            o.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 1)))
        );
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            o.get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert!(
            o.get(OptionCode::ClientMachineIdentifier).is_some(),
            "97 echoed"
        );
        assert_eq!(
            o.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("node-1".into()))
        );
    }

    #[test]
    fn ack_with_script_url_has_no_pxe_vendor_class() {
        let url = "http://10.77.0.1/boot/52:54:00:01:02:03.ipxe";
        let m = round_trip(&answer(
            &request(),
            MessageType::Ack,
            grant(),
            None,
            &BootFile::Url {
                url: url.into(),
                http_client: false,
            },
            true,
            &params(),
        ));
        assert_eq!(fname(&m), url);
        assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.opts().get(OptionCode::ClassIdentifier).is_none());
        match m.opts().get(OptionCode::from(OPTION_IPXE_ENCAP)) {
            Some(DhcpOption::Unknown(o)) => assert_eq!(o.data(), IPXE_NO_PXEDHCP),
            other => panic!("no option 175 for iPXE: {other:?}"),
        }
    }

    #[test]
    fn http_boot_offer_says_httpclient() {
        let m = answer(
            &request(),
            MessageType::Offer,
            grant(),
            None,
            &BootFile::Url {
                url: "http://10.77.0.1/assets/ipxe-amd64.efi".into(),
                http_client: true,
            },
            false,
            &params(),
        );
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );
    }

    #[test]
    fn proxy_answers_carry_no_address_but_a_next_server_for_ipxe() {
        let url = "http://10.77.0.1/boot/52:54:00:01:02:03.ipxe";
        for boot in [
            BootFile::Tftp("undionly.kpxe".into()),
            BootFile::Url {
                url: url.into(),
                http_client: false,
            },
        ] {
            let m = round_trip(&proxy_offer(
                &request(),
                MessageType::Offer,
                &boot,
                &params(),
            ));
            assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "{boot:?}");
            assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
            // iPXE takes a proxy answer only with siaddr and a boot file.
            assert_eq!(m.siaddr(), Ipv4Addr::new(10, 77, 0, 1), "{boot:?}");
            assert!(m.opts().get(OptionCode::BootfileName).is_some());
            assert_eq!(
                m.opts().get(OptionCode::ClassIdentifier),
                Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
            );
        }
    }

    /// The DISCOVER OVMF 2022.11 sends for "UEFI HTTPv4" boot (captured in
    /// tests/vm_httpboot.rs: option 93 = 16, vendor class
    /// `HTTPClient:Arch:00016:UNDI:003000`), decided and answered as the
    /// server does. HttpBootDxe ignores offers without vendor class
    /// `HTTPClient` or without a URL boot file (UEFI 2.x §24.7).
    #[test]
    fn captured_ovmf_http_discover_gets_httpclient_and_a_url() {
        let hex = include_str!("testdata/ovmf-http-discover.hex").trim();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let req = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        let client = super::super::classify::classify(&req).unwrap().client;
        let loaders = crate::config::LoaderMap::default();
        let urls = crate::routes::Urls {
            http_base: "http://10.77.0.1".into(),
        };
        let crate::boot::Decision::HttpLoader { url, .. } =
            crate::boot::decide(&client, &loaders, &urls)
        else {
            panic!("OVMF HTTP boot not given an HTTP loader");
        };
        let want = "http://10.77.0.1/assets/ipxe-amd64.efi?mac=52:54:00:77:00:01";
        assert_eq!(url, want);
        let boot = BootFile::Url {
            url,
            http_client: true,
        };
        for kind in [MessageType::Offer, MessageType::Ack] {
            let m = round_trip(&answer(
                &req,
                kind,
                grant(),
                None,
                &boot,
                client.is_ipxe,
                &params(),
            ));
            let o = m.opts();
            assert_eq!(m.xid(), req.xid());
            assert_eq!(fname(&m), want);
            assert_eq!(
                o.get(OptionCode::ClassIdentifier),
                Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
            );
            assert_eq!(
                o.get(OptionCode::BootfileName),
                Some(&DhcpOption::BootfileName(want.as_bytes().to_vec()))
            );
            assert_eq!(
                o.get(OptionCode::ClientMachineIdentifier),
                req.opts().get(OptionCode::ClientMachineIdentifier),
                "option 97 echoed"
            );
            // Nothing PXE-only: no siaddr/TFTP server, no PXE vendor options.
            assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED);
            assert!(o.get(OptionCode::VendorExtensions).is_none());
            assert!(o.get(OptionCode::TFTPServerName).is_none());
        }
    }

    #[test]
    fn nak_carries_no_address_and_a_reason() {
        let m = round_trip(&nak(
            &request(),
            Ipv4Addr::new(10, 77, 0, 1),
            "wrong address",
        ));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            m.opts().get(OptionCode::Message),
            Some(&DhcpOption::Message("wrong address".into()))
        );
    }
}
