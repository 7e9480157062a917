//! UEFI HTTP boot against real firmware: a diskless OVMF VM whose PXE boot options are switched
//! off (fw_cfg `opt/org.tianocore/IPv4PXESupport` and `IPv6PXESupport` = `n`, so its first boot
//! option is "UEFI HTTPv4") netboots from `rackboot serve`: DHCP with option 93 = 16 and vendor
//! class `HTTPClient` → the loader by HTTP from the URL in the reply → iPXE → HTTP script →
//! kernel and initrd → operational image → config pull → reports, and the node ends
//! `configured`. The capture must show what the firmware sent and what rackboot answered.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh`. Every wait is bounded; the lab
//! removes its namespace and processes by PID, also when the test fails.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::api::{kinds, timeline_text};
use common::lab::{self, Firmware, SERVER_IP};
use common::vm_watch::{IMAGE_STEPS, Watch, appliance, boot_network};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};
use rackboot::dhcp::classify::classify;

/// One VM alone reaches `configured` in 25–28 s under TCG (measured); with other VM tests on the
/// two cores, up to ~3×. Of that, OVMF's DHCP waits ~3.8 s between OFFER and REQUEST (edk2 collects
/// offers for its whole first retransmission interval, as its PXE does) and the 1 MB loader takes
/// ~0.2 s over HTTP.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);
/// The loader rackboot hands x86_64 UEFI clients (`[loaders]` default).
const LOADER: &str = "ipxe-amd64.efi";

// ---------------------------------------------------------------------------------------------
// The capture

/// One captured IPv4 packet: time (seconds since the epoch), addresses and the UDP or TCP
/// payload (cut at tcpdump's snap length).
struct Packet {
    time: f64,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    udp: bool,
    payload: Vec<u8>,
}

/// Every IPv4 UDP and TCP packet of a classic pcap file (Ethernet link type).
fn read_pcap(path: &Path) -> Vec<Packet> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(data.len() >= 24, "{}: empty capture", path.display());
    let le = data[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    assert!(le || data[..4] == [0xa1, 0xb2, 0xc3, 0xd4], "not a pcap");
    let u32_at = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let time =
            f64::from(u32_at(&data[at..at + 4])) + f64::from(u32_at(&data[at + 4..at + 8])) / 1e6;
        let incl = u32_at(&data[at + 8..at + 12]) as usize;
        let pkt = &data[at + 16..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        if pkt.len() < 14 + 20 || pkt[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &pkt[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(be16(&ip[2..4])).min(ip.len());
        if ip.len() < ihl + 20 || total < ihl {
            continue;
        }
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let l4 = &ip[ihl..total];
        let (udp, header) = match ip[9] {
            17 => (true, 8),
            6 => (false, usize::from(l4[12] >> 4) * 4),
            _ => continue,
        };
        if l4.len() < header {
            continue;
        }
        out.push(Packet {
            time,
            src: (src, be16(&l4[0..2])),
            dst: (dst, be16(&l4[2..4])),
            udp,
            payload: l4[header..].to_vec(),
        });
    }
    out
}

/// A DHCP message of the capture, with when it was seen.
struct Dhcp {
    time: f64,
    msg: Message,
}

impl Dhcp {
    fn kind(&self) -> Option<MessageType> {
        self.msg.opts().msg_type()
    }

    fn chaddr(&self) -> String {
        self.msg.chaddr()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Option 60 as text.
    fn vendor_class(&self) -> Option<String> {
        match self.msg.opts().get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }

    /// Option 93 (client system architecture), first value.
    fn arch(&self) -> Option<u16> {
        match self.msg.opts().get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
            _ => None,
        }
    }

    /// Option 67 as text.
    fn bootfile(&self) -> Option<String> {
        match self.msg.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }

    /// The header's `file` field, NUL padding removed.
    fn file(&self) -> String {
        self.msg
            .fname_str()
            .and_then(Result::ok)
            .unwrap_or_default()
            .trim_end_matches('\0')
            .to_string()
    }
}

/// The DHCP messages on ports 67/68, in capture order.
fn dhcp_messages(packets: &[Packet]) -> Vec<Dhcp> {
    packets
        .iter()
        .filter(|p| p.udp && [67, 68].contains(&p.dst.1))
        .filter_map(|p| {
            Some(Dhcp {
                time: p.time,
                msg: Message::decode(&mut Decoder::new(&p.payload)).ok()?,
            })
        })
        .collect()
}

/// The TCP payloads sent to or from port 80, as text, in capture order.
fn http_text(packets: &[Packet]) -> Vec<(&Packet, String)> {
    packets
        .iter()
        .filter(|p| !p.udp && !p.payload.is_empty() && (p.dst.1 == 80 || p.src.1 == 80))
        .map(|p| (p, String::from_utf8_lossy(&p.payload).into_owned()))
        .collect()
}

/// Whether `packets` hold all the test asserts of the firmware on the wire: its first DHCP
/// exchange whole (OFFER, REQUEST and ACK for its first message's xid) and its `GET path`
/// answered with a 200.
fn firmware_exchange_captured(packets: &[Packet], mac: &str, path: &str) -> bool {
    let dhcp = dhcp_messages(packets);
    let Some(first) = dhcp
        .iter()
        .find(|d| d.chaddr() == mac && d.msg.opcode() == dhcproto::v4::Opcode::BootRequest)
    else {
        return false;
    };
    let xid = first.msg.xid();
    let exchange = [MessageType::Offer, MessageType::Request, MessageType::Ack]
        .into_iter()
        .all(|kind| {
            dhcp.iter()
                .any(|d| d.msg.xid() == xid && d.kind() == Some(kind))
        });
    let http = http_text(packets);
    let get = http
        .iter()
        .find(|(_, t)| t.starts_with(&format!("GET {path} HTTP/1.1")));
    let answered = get.is_some_and(|(g, _)| {
        http.iter()
            .any(|(p, t)| p.dst == g.src && p.time >= g.time && t.starts_with("HTTP/1.1 200"))
    });
    exchange && answered
}

// ---------------------------------------------------------------------------------------------

/// OVMF with only its HTTP boot options left boots `ipxe-amd64.efi` from the URL rackboot hands
/// it, and the node reaches `configured`.
#[test]
fn x86_uefi_http_boot_vm_netboots_to_configured() {
    let name = "vm-httpboot";
    // The repository's bootenvs and scripts, the assets from `boot-assets/dist` (as
    // tests/vm_boot.rs has them).
    let rb = appliance(name)
        .repo_configs()
        .dns("domain = \"lab.internal\"")
        .prepare();
    let lab = &rb.lab;
    let pcap = boot_network(lab);
    rb.serve();
    let started = Instant::now();
    let started_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let vm = lab.vm(name, Firmware::X86Uefi).http_boot().start();
    let watch = Watch::new(&rb, &vm).also("DHCP (tail)", || {
        let dhcp = lab.read_capture(&pcap, &["-v"], "udp port 67 or udp port 68");
        lab::tail(&dhcp, 60)
    });
    let mac = vm.mac().to_string();
    let loader_url = format!("http://{SERVER_IP}/assets/{LOADER}?mac={mac}");

    let n = watch.configured(&mac, BOOT_TIMEOUT);
    let boot_time = started.elapsed();

    // The firmware said it was doing HTTP boot, and took the HTTP boot option first. Waited for
    // like every console line: the serial file is written on qemu's schedule, not the API's.
    for want in [
        "Start HTTP Boot over IPv4",
        &format!("URI: {loader_url}"),
        "starting Boot0001 \"UEFI HTTPv4",
    ] {
        if let Err(e) = vm.try_wait_for_serial(want, Duration::from_secs(10)) {
            panic!("{e}\n{}", watch.diagnosis(Some(&n)));
        }
    }

    // The boot, step by step, in this order (other events may sit in between). The loader's
    // download is on the timeline because its URL names the node.
    let firmware_steps = [
        ("dhcp.ack", loader_url.as_str()),
        ("http.asset", LOADER),
        ("dhcp.ack", ".ipxe (iPXE"),
    ];
    watch.assert_steps(&n, &[&firmware_steps, IMAGE_STEPS]);
    let events = kinds(&n);
    assert!(
        !events.iter().any(|(k, _)| k.starts_with("tftp.")),
        "HTTP boot used TFTP\n{}",
        timeline_text(&n)
    );
    assert_eq!(n["arch"].as_str(), Some("x86_64_efi"));
    vm.wait_for_serial("rackboot-agent: configured", Duration::from_secs(10));

    // The wire: what OVMF sent and what rackboot answered. tcpdump writes each packet (-U) once
    // libpcap hands it over, which is its own schedule too: wait until the capture holds what
    // is asserted below, then assert on that (after the time, on what there is).
    let path = format!("/assets/{LOADER}?mac={mac}");
    let packets = lab::poll_until(Duration::from_secs(10), || {
        let packets = read_pcap(&pcap);
        firmware_exchange_captured(&packets, &mac, &path).then_some(packets)
    })
    .unwrap_or_else(|| read_pcap(&pcap));
    let dhcp = dhcp_messages(&packets);
    let from_vm: Vec<&Dhcp> = dhcp
        .iter()
        .filter(|d| d.chaddr() == mac && d.msg.opcode() == dhcproto::v4::Opcode::BootRequest)
        .collect();
    // The firmware's first and only boot attempt is HTTP boot: its first DHCP message is the
    // HTTPClient DISCOVER, and every later PXE one comes from iPXE (then udhcpc, no PXE).
    let discover = *from_vm.first().expect("no DHCP from the VM");
    assert_eq!(discover.kind(), Some(MessageType::Discover));
    for d in &from_vm {
        let client = classify(&d.msg).expect("classify").client;
        assert!(
            !client.is_pxe() || client.is_ipxe || client.is_http_client(),
            "a firmware PXE attempt: {:?}",
            d.vendor_class()
        );
    }
    let fw_vendor = discover.vendor_class().unwrap_or_default();
    assert_eq!(discover.arch(), Some(16), "option 93 of {fw_vendor:?}");
    assert!(
        fw_vendor.starts_with("HTTPClient:Arch:00016"),
        "vendor class {fw_vendor:?}"
    );
    let xid = discover.msg.xid();
    let firmware: Vec<&Dhcp> = dhcp.iter().filter(|d| d.msg.xid() == xid).collect();
    let find = |kind| {
        firmware
            .iter()
            .find(|d| d.kind() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind:?} in the firmware's exchange (xid {xid:#x})"))
    };
    let (offer, request, ack) = (
        find(MessageType::Offer),
        find(MessageType::Request),
        find(MessageType::Ack),
    );
    assert_eq!(request.arch(), Some(16));
    assert_eq!(request.vendor_class(), Some(fw_vendor.clone()));
    for reply in [offer, ack] {
        assert_eq!(reply.vendor_class().as_deref(), Some("HTTPClient"));
        assert_eq!(reply.bootfile().as_deref(), Some(loader_url.as_str()));
        assert_eq!(reply.file(), loader_url);
    }

    // OVMF fetched the loader over HTTP (HEAD for its size, then GET), and rackboot answered 200
    // with the loader's size.
    let http = http_text(&packets);
    let get = http
        .iter()
        .find(|(_, t)| t.starts_with(&format!("GET {path} HTTP/1.1")))
        .unwrap_or_else(|| panic!("no GET {path} in the capture"));
    assert!(
        get.1.contains("User-Agent: UefiHttpBoot/"),
        "GET not from the firmware:\n{}",
        get.1
    );
    let size = std::fs::metadata(lab::dist_file(LOADER))
        .expect("loader")
        .len();
    let answered = http.iter().any(|(p, t)| {
        p.dst == get.0.src
            && p.time >= get.0.time
            && t.starts_with("HTTP/1.1 200")
            && t.to_ascii_lowercase()
                .contains(&format!("content-length: {size}"))
    });
    assert!(answered, "no 200 with content-length {size} for GET {path}");
    // And the URL serves exactly the configured loader.
    let copy = lab.dir().join("loader.efi");
    let out = lab.run(
        "curl",
        &[
            "-sf",
            "-m",
            "20",
            "-o",
            copy.to_str().expect("utf-8"),
            &loader_url,
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "curl {loader_url}: {}", out.status);
    assert!(
        std::fs::read(&copy).expect("read copy")
            == std::fs::read(lab::dist_file(LOADER)).expect("read loader"),
        "{loader_url} does not serve {LOADER}"
    );

    // Where the time goes, from the capture.
    let ipxe_discover = dhcp
        .iter()
        .find(|d| {
            d.chaddr() == mac && d.kind() == Some(MessageType::Discover) && d.msg.xid() != xid
        })
        .map(|d| d.time);
    let loader_done = http
        .iter()
        .filter(|(p, _)| p.dst == get.0.src)
        .map(|(p, _)| p.time)
        .fold(get.0.time, f64::max);
    let t0 = discover.time;
    eprintln!(
        "{name}: qemu start -> firmware DISCOVER {:.1} s; then OFFER +{:.3} s, REQUEST +{:.3}, ACK +{:.3}, loader GET +{:.3}, loader sent +{:.3}, iPXE DISCOVER {}; configured {:.1} s after qemu start",
        t0 - started_wall,
        offer.time - t0,
        request.time - t0,
        ack.time - t0,
        get.0.time - t0,
        loader_done - t0,
        ipxe_discover
            .map(|t| format!("+{:.3}", t - t0))
            .unwrap_or_else(|| "(none)".into()),
        boot_time.as_secs_f64(),
    );
    eprintln!(
        "{name}: firmware options: 93 = {:?}, 60 = {fw_vendor:?}, 94 = {:?}, 55 = {:?}",
        discover.arch(),
        discover.msg.opts().get(OptionCode::ClientNetworkInterface),
        discover.msg.opts().get(OptionCode::ParameterRequestList),
    );
}
