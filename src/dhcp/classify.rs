//! Turns a DHCP packet into plain data: who is asking, for what, and what
//! kind of boot client it is.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};

use crate::model::{ClientArch, ClientInfo, Mac};

/// iPXE's own encapsulated options (feature flags, bus id, ...). Only iPXE sends it.
pub const OPTION_IPXE_ENCAP: u8 = 175;

/// A client request rackboot may answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    pub client: ClientInfo,
    pub xid: u32,
    pub ciaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server the client chose (REQUEST in SELECTING state).
    pub server_id: Option<Ipv4Addr>,
    pub broadcast: bool,
    /// Option 82 (RFC 3046) as `circuit-id=… remote-id=…`: the switch port a
    /// relayed client sits behind. Only from a relayed packet (giaddr set):
    /// a client heard directly could write anything there.
    pub relay_info: Option<String>,
    /// Option 97 (RFC 4578): the machine's SMBIOS UUID, as text in the
    /// order its bytes came; `None` when absent, malformed, or one of the
    /// placeholders many boards ship with (it would name many machines).
    pub uuid: Option<String>,
}

/// Why a packet is not answered. Logged, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unanswerable {
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("hardware type {0:?} is not Ethernet")]
    NotEthernet(HType),
    #[error("no DHCP message type (option 53): BOOTP is not served")]
    NoMessageType,
    #[error("message type {0:?} is not one a client sends to a server")]
    WrongType(MessageType),
    /// No NIC has it; a record or a lease for it would only serve a flood.
    #[error("client hardware address {0} is the broadcast or all-zero address")]
    BadChaddr(Mac),
}

pub fn classify(msg: &Message) -> Result<Request, Unanswerable> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(Unanswerable::NotRequest);
    }
    // `hlen` is checked before `chaddr()`, which slices by it (a panic past 16):
    // `wire::decode_request` refuses such packets, and this keeps any other Message safe.
    if msg.htype() != HType::Eth || !(6..=16).contains(&msg.hlen()) {
        return Err(Unanswerable::NotEthernet(msg.htype()));
    }
    let kind = msg.opts().msg_type().ok_or(Unanswerable::NoMessageType)?;
    match kind {
        MessageType::Discover
        | MessageType::Request
        | MessageType::Release
        | MessageType::Decline
        | MessageType::Inform => {}
        other => return Err(Unanswerable::WrongType(other)),
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    if mac == [0xff; 6] || mac == [0; 6] {
        return Err(Unanswerable::BadChaddr(Mac::new(mac)));
    }
    let opts = msg.opts();

    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(ClientArch(u16::from(*a))),
        _ => None,
    };
    // An empty option 60, 77 or 175 (RFC 2132 §9.13 and RFC 3004 want at
    // least one octet; iPXE always sends its feature list) says nothing: taken
    // as absent, as dhcproto drops it when it encodes, so that a packet means
    // the same however often it is decoded.
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) if !v.is_empty() => {
            Some(String::from_utf8_lossy(v).into_owned())
        }
        _ => None,
    };
    let user_class = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(v)) if !v.is_empty() => Some(user_class_text(v)),
        _ => None,
    };
    let ipxe_encap = match opts.get(OptionCode::from(OPTION_IPXE_ENCAP)) {
        Some(DhcpOption::Unknown(o)) if !o.data().is_empty() => Some(o.data().to_vec()),
        _ => None,
    };
    let is_ipxe = user_class.as_deref() == Some("iPXE") || ipxe_encap.is_some();
    let ipxe_features = ipxe_encap.as_deref().map(ipxe_features).unwrap_or_default();
    let giaddr = msg.giaddr();
    Ok(Request {
        kind,
        client: ClientInfo {
            mac: Mac::new(mac),
            arch,
            vendor_class,
            user_class,
            is_ipxe,
            ipxe_features,
            relay: (!giaddr.is_unspecified()).then_some(giaddr),
        },
        xid: msg.xid(),
        ciaddr: msg.ciaddr(),
        requested_ip: match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        },
        server_id: match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        },
        broadcast: msg.flags().broadcast(),
        // RFC 3046 §2.1: only a relay agent adds option 82, and it sets
        // giaddr when it does.
        relay_info: match opts.get(OptionCode::RelayAgentInformation) {
            Some(DhcpOption::RelayAgentInformation(info)) if !giaddr.is_unspecified() => {
                relay_info_text(info)
            }
            _ => None,
        },
        uuid: match opts.get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(id)) => machine_uuid(id),
            _ => None,
        },
    })
}

/// Placeholder UUIDs that firmware of many boards sends alike (all zero,
/// all ones, and the "03000200-0400-0500-0006-000700080009" of boards whose
/// maker left the SMBIOS field at its template).
const PLACEHOLDER_UUIDS: [&str; 3] = [
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
];

/// Option 97's type 0 (a 16-byte GUID) as `8-4-4-4-12` hex; anything else
/// is no identity.
fn machine_uuid(id: &[u8]) -> Option<String> {
    let [0, guid @ ..] = id else { return None };
    if guid.len() != 16 {
        return None;
    }
    let hex: String = guid.iter().map(|b| format!("{b:02x}")).collect();
    let text = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    (!PLACEHOLDER_UUIDS.contains(&text.as_str())).then_some(text)
}

/// The feature codes in iPXE's option 175: sub-options of length 1 and value
/// 1 (iPXE `DHCP_FEATURE`). Other sub-options (bus id 177, version 235) are
/// skipped; a truncated list yields what was readable.
fn ipxe_features(encap: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = encap;
    while let [code, len, tail @ ..] = rest {
        let len = *len as usize;
        if tail.len() < len {
            break;
        }
        if len == 1 && tail[0] == 1 {
            out.push(*code);
        }
        rest = &tail[len..];
    }
    out
}

/// Circuit and remote id in a form an admin can read: text when printable
/// (most switches send port names), hex otherwise.
fn relay_info_text(info: &dhcproto::v4::relay::RelayAgentInformation) -> Option<String> {
    use dhcproto::v4::relay::{RelayCode, RelayInfo};
    let show = |b: &[u8]| {
        if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            String::from_utf8_lossy(b).into_owned()
        } else {
            b.iter().map(|c| format!("{c:02x}")).collect()
        }
    };
    let mut parts = Vec::new();
    if let Some(RelayInfo::AgentCircuitId(id)) = info.get(RelayCode::AgentCircuitId) {
        parts.push(format!("circuit-id={}", show(id)));
    }
    if let Some(RelayInfo::AgentRemoteId(id)) = info.get(RelayCode::AgentRemoteId) {
        parts.push(format!("remote-id={}", show(id)));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Option 77 per RFC 3004 is a list of length-prefixed strings, but iPXE
/// (and most PXE ROMs) send one bare string. Accept both.
fn user_class_text(raw: &[u8]) -> String {
    if let Some((&len, rest)) = raw.split_first()
        && len as usize == rest.len()
        && !rest.is_empty()
    {
        return String::from_utf8_lossy(rest).into_owned();
    }
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, Flags, UnknownOption};

    pub(crate) fn packet(kind: MessageType) -> Message {
        let mut m = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 0x12, 0x34, 0x56],
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    #[test]
    fn firmware_pxe_discover() {
        let mut m = packet(MessageType::Discover);
        m.set_flags(Flags::default().set_broadcast());
        m.opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(Architecture::from(7)));
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00007:UNDI:003000".to_vec(),
        ));
        let r = classify(&m).unwrap();
        assert_eq!(r.kind, MessageType::Discover);
        assert_eq!(r.client.mac.to_string(), "52:54:00:12:34:56");
        assert_eq!(r.client.arch, Some(ClientArch(7)));
        assert!(!r.client.is_ipxe && r.client.is_pxe() && r.broadcast);
    }

    #[test]
    fn ipxe_is_recognised_by_user_class_or_option_175() {
        let mut m = packet(MessageType::Request);
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        assert!(classify(&m).unwrap().client.is_ipxe);

        let mut m = packet(MessageType::Request);
        m.opts_mut()
            .insert(DhcpOption::UserClass(b"\x04iPXE".to_vec()));
        assert!(classify(&m).unwrap().client.is_ipxe, "RFC 3004 framing");

        let mut m = packet(MessageType::Discover);
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(OPTION_IPXE_ENCAP),
            vec![0x13, 0x01, 0x01],
        )));
        assert!(classify(&m).unwrap().client.is_ipxe);

        let mut m = packet(MessageType::Discover);
        m.opts_mut()
            .insert(DhcpOption::UserClass(b"Other".to_vec()));
        assert!(!classify(&m).unwrap().client.is_ipxe);
    }

    #[test]
    fn ipxe_features_are_read_from_option_175() {
        // As sent by qemu's 2019 BIOS ROM (no HTTPS) and by a 2025 build
        // (0x14 HTTPS present), bus id 177 and version 235 interleaved.
        let old = [
            0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0x13, 0x01, 0x01, 0x18, 0x01, 0x01, 0xeb,
            0x03, 0x01, 0x00, 0x00,
        ];
        let new = [0x13, 0x01, 0x01, 0x14, 0x01, 0x01, 0x24, 0x01, 0x01];
        assert_eq!(ipxe_features(&old), [0x13, 0x18]);
        assert_eq!(ipxe_features(&new), [0x13, 0x14, 0x24]);
        assert_eq!(
            ipxe_features(&[0x13, 0x05, 0x01]),
            Vec::<u8>::new(),
            "truncated"
        );
        let mut m = packet(MessageType::Discover);
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(OPTION_IPXE_ENCAP),
            old.to_vec(),
        )));
        let c = classify(&m).unwrap().client;
        assert!(c.is_ipxe && c.is_old_ipxe());
    }

    #[test]
    fn refuses_what_a_server_must_not_answer() {
        let mut m = packet(MessageType::Offer);
        assert_eq!(
            classify(&m),
            Err(Unanswerable::WrongType(MessageType::Offer))
        );
        m.set_opcode(Opcode::BootReply);
        assert_eq!(classify(&m), Err(Unanswerable::NotRequest));
        let mut m = packet(MessageType::Discover);
        m.opts_mut().remove(OptionCode::MessageType);
        assert_eq!(classify(&m), Err(Unanswerable::NoMessageType));
    }

    /// Found by the `dhcp` fuzz target (fuzz/regressions/dhcp/empty-option-60-request and
    /// empty-option-175-request): an empty vendor class classified as `Some("")`, an empty
    /// option 175 as iPXE, and either as absent once re-encoded.
    #[test]
    fn an_empty_vendor_class_user_class_or_ipxe_option_is_taken_as_absent() {
        let mut m = packet(MessageType::Request);
        m.opts_mut().insert(DhcpOption::ClassIdentifier(Vec::new()));
        m.opts_mut().insert(DhcpOption::UserClass(Vec::new()));
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(OPTION_IPXE_ENCAP),
            Vec::new(),
        )));
        let c = classify(&m).unwrap().client;
        assert_eq!(
            (c.vendor_class, c.user_class, c.is_ipxe),
            (None, None, false)
        );
    }

    #[test]
    fn relay_and_requested_address_are_kept() {
        let mut m = packet(MessageType::Request);
        m.set_giaddr(Ipv4Addr::new(10, 1, 0, 1));
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 50)));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 1, 0, 2)));
        let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
        info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
            b"Gi1/0/7".to_vec(),
        ));
        info.insert(dhcproto::v4::relay::RelayInfo::AgentRemoteId(vec![
            0, 1, 0xfe,
        ]));
        m.opts_mut().insert(DhcpOption::RelayAgentInformation(info));
        let r = classify(&m).unwrap();
        assert_eq!(
            r.relay_info.as_deref(),
            Some("circuit-id=Gi1/0/7 remote-id=0001fe")
        );
        assert_eq!(r.client.relay, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 1, 0, 50)));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 1, 0, 2)));
    }

    #[test]
    fn option_97_names_the_board_unless_malformed_or_a_placeholder() {
        let uuid_of = |bytes: Vec<u8>| {
            let mut m = packet(MessageType::Discover);
            m.opts_mut()
                .insert(DhcpOption::ClientMachineIdentifier(bytes));
            classify(&m).unwrap().uuid
        };
        let mut guid = vec![0u8];
        guid.extend(0x10..0x20u8);
        assert_eq!(
            uuid_of(guid.clone()).as_deref(),
            Some("10111213-1415-1617-1819-1a1b1c1d1e1f")
        );
        // Another type, a short GUID, a template UUID: no identity.
        guid[0] = 1;
        assert_eq!(uuid_of(guid), None);
        assert_eq!(uuid_of(vec![0, 1, 2, 3]), None);
        let template = [0, 3, 0, 2, 0, 4, 0, 5, 0, 0, 6, 0, 7, 0, 8, 0, 9];
        assert_eq!(uuid_of(template.to_vec()), None);
        assert_eq!(uuid_of(vec![0; 17]), None);
    }

    #[test]
    fn option_82_from_a_client_heard_directly_is_not_believed() {
        let mut m = packet(MessageType::Discover);
        let mut info = dhcproto::v4::relay::RelayAgentInformation::default();
        info.insert(dhcproto::v4::relay::RelayInfo::AgentCircuitId(
            b"Gi9/9/9".to_vec(),
        ));
        m.opts_mut().insert(DhcpOption::RelayAgentInformation(info));
        let r = classify(&m).unwrap();
        assert_eq!((r.client.relay, r.relay_info), (None, None));
    }

    #[test]
    fn broadcast_and_all_zero_hardware_addresses_are_refused() {
        for (chaddr, text) in [
            ([0xff; 6], "ff:ff:ff:ff:ff:ff"),
            ([0; 6], "00:00:00:00:00:00"),
        ] {
            let mut m = packet(MessageType::Discover);
            m.set_chaddr(&chaddr);
            let why = classify(&m).unwrap_err();
            assert_eq!(why, Unanswerable::BadChaddr(Mac::new(chaddr)));
            assert!(why.to_string().contains(text), "{why}");
        }
    }
}

/// Real packets captured from firmware netbooting in qemu (`testdata/*.hex`)
/// are classified and decided; the result must match `testdata/decisions.golden`.
/// `hostile-*.hex` are packets that once stopped rackboot: they must be refused.
/// Regenerate with `RACKBOOT_BLESS=1 cargo test golden`.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::boot::decide;
    use crate::config::LoaderMap;
    use crate::routes::Urls;
    use std::fmt::Write;
    use std::path::Path;

    #[test]
    fn golden_captured_firmware_packets() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dhcp/testdata");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "hex"))
            .collect();
        names.sort();
        assert!(!names.is_empty());
        let loaders = LoaderMap::default();
        let urls = Urls {
            http_base: "http://10.77.0.1".into(),
        };
        let mut out = String::new();
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap();
            let bytes: Vec<u8> = (0..text.trim().len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text.trim()[i..i + 2], 16).unwrap())
                .collect();
            let name = path.file_stem().unwrap().to_string_lossy();
            // The packets a host sent to stop rackboot: refused before decoding.
            let msg = match crate::dhcp::wire::decode_request(&bytes) {
                Ok(msg) => msg,
                Err(why) => {
                    let _ = writeln!(out, "{name}: refused: {why}");
                    continue;
                }
            };
            let req = classify(&msg).unwrap();
            let c = &req.client;
            let _ = writeln!(
                out,
                "{name}: {:?} arch={:?} vendor={:?} user={:?} ipxe={} features={:02x?} broadcast={} -> {:?}",
                req.kind,
                c.arch.map(|a| a.0),
                c.vendor_class,
                c.user_class,
                c.is_ipxe,
                c.ipxe_features,
                req.broadcast,
                decide(c, &loaders, &urls),
            );
        }
        let golden = dir.join("decisions.golden");
        if std::env::var_os("RACKBOOT_BLESS").is_some() {
            std::fs::write(&golden, &out).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&golden).unwrap_or_default(),
            out,
            "regenerate with RACKBOOT_BLESS=1 if the change is intended"
        );
    }
}
