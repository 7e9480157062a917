//! proxyDHCP against real firmware: another DHCP server (dnsmasq, addresses only, no boot options)
//! owns the lab subnet, and rackboot, with that subnet in `mode = "proxy"`, only tells PXE clients
//! what to boot. A diskless qemu VM must still reach `configured`, with its addresses from dnsmasq
//! and everything it boots from rackboot.
//!
//! Needs root, the packages and assets of `boot-assets/setup.sh` (dnsmasq comes from
//! `dnsmasq-base`). Every wait is bounded; the lab removes its namespace and processes (dnsmasq
//! included) by PID, also when a test fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::api::{kinds, timeline_text};
use common::lab::{self, Firmware, Lab, SERVER_IP};
use common::netns::{Netns, write_executable};
use common::setup::{LAB_CIDR, Setup};
use common::vm_watch::{IMAGE_STEPS, Watch, boot_network};

/// One VM alone boots in 20–40 s under TCG; with other VM tests on the two cores, up to ~3×.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);
/// dnsmasq's dynamic range (the last octets).
const DNSMASQ_RANGE: (u8, u8) = (100, 150);

/// dnsmasq as the network's ordinary DHCP server: addresses only. No `dhcp-boot`, no
/// `pxe-service`, so it never names a boot file; no DNS (`--port=0`).
fn start_dnsmasq(lab: &Lab) -> (u32, PathBuf) {
    let log = lab.dir().join("dnsmasq.log");
    let leases = lab.dir().join("dnsmasq.leases");
    let pid = lab.spawn(
        "dnsmasq",
        &[
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            &format!(
                "--dhcp-range=10.77.0.{},10.77.0.{}",
                DNSMASQ_RANGE.0, DNSMASQ_RANGE.1
            ),
            "--no-ping",
            "--log-dhcp",
            &format!("--dhcp-leasefile={}", leases.display()),
            &format!("--log-facility={}", log.display()),
        ],
        "dnsmasq.out",
    );
    if let Err(e) = lab::wait_for_file(&log, "DHCP, IP range", Duration::from_secs(15)) {
        panic!(
            "dnsmasq did not start: {e}\n{}{}",
            lab::read_text(&log),
            lab::read_text(&lab.dir().join("dnsmasq.out"))
        );
    }
    (pid, log)
}

/// rackboot with the lab subnet in proxy mode (no ranges), the repository's bootenvs and
/// scripts and the assets of `boot-assets/dist`; not yet started.
fn proxy_setup(name: &str) -> Setup {
    Setup::new(name)
        .dist_assets()
        .repo_configs()
        .no_address()
        .dhcp()
        .subnet(LAB_CIDR, "mode = \"proxy\"")
        .tftp("")
        .dns("domain = \"lab.internal\"")
}

/// The DHCP packets of the capture as tcpdump decodes them (`-vv`), one string per packet: its
/// IP line, then its UDP/BOOTP line, then the fields and options, indented.
fn dhcp_packets(lab: &Lab, pcap: &Path) -> Vec<String> {
    let dump = lab.read_capture(
        pcap,
        &["-vv"],
        "udp port 67 or udp port 68 or udp port 4011",
    );
    let mut packets: Vec<String> = Vec::new();
    for line in dump.lines() {
        match packets.last_mut() {
            Some(p) if line.starts_with(char::is_whitespace) => {
                p.push('\n');
                p.push_str(line);
            }
            _ => packets.push(line.to_string()),
        }
    }
    packets
}

fn in_dnsmasq_range(ip: &str) -> bool {
    ip.strip_prefix("10.77.0.")
        .and_then(|o| o.parse::<u8>().ok())
        .is_some_and(|o| (DNSMASQ_RANGE.0..=DNSMASQ_RANGE.1).contains(&o))
}

/// Boots one VM of `firmware` with dnsmasq handing out addresses and rackboot in proxy mode; the
/// node must reach `configured` with `loader` fetched by TFTP.
fn proxy_boots_to_configured(name: &str, firmware: Firmware, loader: &str) {
    let mut setup = proxy_setup(name);
    if matches!(firmware, Firmware::X86Bios) {
        // The BIOS VM keeps the opt-in chain (ROM iPXE -> rackboot's `undionly.kpxe` by TFTP ->
        // script): the one real-firmware proof of that loader and of `dhcp.upgrade_old_ipxe`.
        setup = setup.table("dhcp", "upgrade_old_ipxe = true");
    }
    let rb = setup.prepare();
    let lab = &rb.lab;
    let pcap = boot_network(lab);
    let (_dnsmasq, dnsmasq_log) = start_dnsmasq(lab);
    rb.serve();
    let vm = lab.vm(name, firmware).start();
    let watch = Watch::new(&rb, &vm).also("dnsmasq log (tail)", || {
        lab::tail(&lab::read_text(&dnsmasq_log), 30)
    });
    let mac = vm.mac().to_string();

    let n = watch.configured(&mac, BOOT_TIMEOUT);

    // Boot information from rackboot, step by step, in this order (others may sit in between).
    let firmware_steps = [
        ("dhcp.offer|dhcp.ack", loader),
        ("tftp.sent", loader),
        ("dhcp.offer|dhcp.ack", ".ipxe (iPXE"),
    ];
    watch.assert_steps(&n, &[&firmware_steps, IMAGE_STEPS]);
    let events = kinds(&n);
    // In proxy mode every DHCP answer of rackboot's is a proxy one: no address in any of them.
    for (k, d) in &events {
        if k.starts_with("dhcp.") && k != "dhcp.relay" {
            assert!(
                d.starts_with("proxyDHCP") || d.starts_with("boot server (4011)"),
                "{k} {d}: not a proxy answer\n{}",
                timeline_text(&n)
            );
        }
    }
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "dhcp.offer" && d.starts_with("proxyDHCP")),
        "no proxyDHCP offer on the timeline\n{}",
        timeline_text(&n)
    );

    // Addresses from dnsmasq: the image's own address (which it prints) is in dnsmasq's range,
    // and dnsmasq's log shows it leased, like every address it gave this MAC. Both the console
    // and the log are written on their own schedule: each is waited for, not read once.
    if let Err(e) = vm.try_wait_for_serial("rackboot-agent: network", Duration::from_secs(10)) {
        panic!("the image printed no address: {e}");
    }
    let serial = vm.serial();
    let network = serial
        .lines()
        .find(|l| l.contains("rackboot-agent: network"))
        .expect("just waited for");
    let addr = network
        .split_whitespace()
        .find(|w| w.starts_with("10.77.0."))
        .and_then(|w| w.split('/').next())
        .unwrap_or_else(|| panic!("no address in {network:?}"));
    assert!(in_dnsmasq_range(addr), "{network}");
    let image_ack = format!("DHCPACK(br0) {addr} {mac}");
    let dnsmasq = lab::poll_until(Duration::from_secs(10), || {
        let text = lab::read_text(&dnsmasq_log);
        text.contains(&image_ack).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "the image's {addr} is not one dnsmasq acknowledged to {mac}:\n{}",
            lab::read_text(&dnsmasq_log)
        )
    });
    let acks: Vec<&str> = dnsmasq
        .lines()
        .filter(|l| l.contains("DHCPACK(br0)") && l.contains(&mac))
        .collect();
    for l in &acks {
        let ip = l
            .split_whitespace()
            .skip_while(|w| !w.starts_with("DHCPACK"))
            .nth(1)
            .unwrap_or_default();
        assert!(in_dnsmasq_range(ip), "{l}");
    }

    // On the wire: both servers answer from 10.77.0.1:67, so tell them apart by what they say.
    // No reply carries both an address and a boot file: dnsmasq's have an address and no boot
    // file, rackboot's (on 67 and 4011) a boot file and no address.
    // (address?, boot file?) of a reply from 10.77.0.1, None for any other packet.
    let reply = |p: &str| {
        let head = p.lines().nth(1).unwrap_or_default();
        (head.contains(&format!("{SERVER_IP}.67 >"))
            || head.contains(&format!("{SERVER_IP}.4011 >")))
        .then(|| (p.contains("Your-IP"), p.contains("BF (67)")))
    };
    // tcpdump writes each packet on its own schedule: wait until the capture holds both kinds
    // of reply asserted below (after the time, assert on what there is).
    let packets = lab::poll_until(Duration::from_secs(10), || {
        let packets = dhcp_packets(lab, &pcap);
        let replies: Vec<_> = packets.iter().filter_map(|p| reply(p)).collect();
        (replies.iter().any(|r| r.0) && replies.iter().any(|r| r.1)).then_some(packets)
    })
    .unwrap_or_else(|| dhcp_packets(lab, &pcap));
    let (mut address_replies, mut boot_replies) = (0, 0);
    for p in packets {
        let Some((address, boot)) = reply(&p) else {
            continue;
        };
        assert!(
            !(address && boot),
            "one reply with address and boot file:\n{p}"
        );
        if boot {
            assert!(
                p.contains("Vendor-Class (60), length 9: \"PXEClient\""),
                "{p}"
            );
            boot_replies += 1;
        }
        address_replies += usize::from(address);
    }
    assert!(
        address_replies > 0 && boot_replies > 0,
        "{address_replies} address and {boot_replies} boot replies"
    );
    let summary = lab.read_capture(&pcap, &[], "udp port 67 or udp port 68 or udp port 4011");
    eprintln!("{name}: DHCP on the wire\n{summary}");
    vm.wait_for_serial("rackboot-agent: configured", Duration::from_secs(10));
}

/// SeaBIOS with qemu's iPXE option ROM: that iPXE handles proxyDHCP itself; with
/// `upgrade_old_ipxe` rackboot first chainloads its own `undionly.kpxe` (the ROM lacks HTTPS),
/// which then asks again.
#[test]
fn x86_bios_vm_boots_through_proxy_dhcp_beside_dnsmasq() {
    proxy_boots_to_configured("proxy-bios", Firmware::X86Bios, "undionly.kpxe");
}

/// OVMF's own PXE (arch 7) takes its address from dnsmasq and `ipxe-amd64.efi` from rackboot.
#[test]
fn x86_uefi_vm_boots_through_proxy_dhcp_beside_dnsmasq() {
    proxy_boots_to_configured("proxy-uefi", Firmware::X86Uefi, "ipxe-amd64.efi");
}

// ---------------------------------------------------------------------------------------------
// Sharing the interface with the address server

/// rackboot in proxy mode shares port 67 with dnsmasq on the same interface. Broadcasts reach
/// both; a renewal, unicast to dnsmasq's server identifier (also 10.77.0.1), must reach dnsmasq
/// and be answered, not be swallowed by rackboot's socket.
#[test]
fn unicast_renewals_reach_the_address_server_beside_rackboot_in_proxy_mode() {
    let rb = proxy_setup("proxy-renew").prepare();
    let lab = &rb.lab;
    let pcap = lab.dir().join("renew.pcap");
    lab.capture(&pcap);
    let (_dnsmasq, dnsmasq_log) = start_dnsmasq(lab);
    rb.serve();
    let mac = "52:54:00:77:10:01";
    let client = Netns::clients(lab, &[mac]);

    let script = client.file("udhcpc.sh");
    let record = client.file("udhcpc.env");
    write_executable(
        &script,
        &format!(
            "#!/bin/sh\n\
             case \"$1\" in bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\" ;; esac\n\
             echo \"$1 $ip $serverid\" >> '{}'\n",
            record.display()
        ),
    );
    let log = client.file("udhcpc.log");
    let pid = client.spawn(
        "udhcpc",
        &["-i", "c0", "-f", "-t", "5", "-T", "3", "-s"]
            .into_iter()
            .chain([script.to_str().unwrap()])
            .collect::<Vec<_>>(),
        "udhcpc.log",
    );
    let line = |event: &str| {
        lab::poll_until(Duration::from_secs(40), || {
            lab::read_text(&record)
                .lines()
                .find(|l| l.starts_with(&format!("{event} ")))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "udhcpc: no {event}:\n{}\n{}\n--- rackboot:\n{}",
                lab::read_text(&record),
                lab::read_text(&log),
                lab::tail(&rb.log_text(), 20)
            )
        })
    };
    let bound = line("bound");
    let ip = bound
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(in_dnsmasq_range(&ip), "{bound}");
    assert!(bound.ends_with(&format!(" {SERVER_IP}")), "{bound}");

    client.signal(pid, "USR1");
    let renewed = line("renew");
    assert_eq!(
        renewed.split_whitespace().nth(1),
        Some(ip.as_str()),
        "{renewed}"
    );
    // The renewal went by unicast and dnsmasq answered it by unicast.
    let (request, ack) = (
        format!("{ip}.68 > {SERVER_IP}.67"),
        format!("{SERVER_IP}.67 > {ip}.68"),
    );
    let wire = lab::poll_until(Duration::from_secs(15), || {
        let dump = lab.read_capture(&pcap, &[], "udp port 67 or udp port 68");
        let lines: Vec<&str> = dump.lines().collect();
        // The next DHCP packet after the unicast REQUEST is dnsmasq's unicast ACK. Had
        // rackboot's socket taken the REQUEST, udhcpc would broadcast it next instead.
        let i = lines.iter().position(|l| l.contains(&request))?;
        let next = lines.get(i + 1)?;
        Some((next.contains(&ack), dump.clone()))
    });
    match wire {
        Some((true, _)) => {}
        Some((false, dump)) => panic!(
            "the unicast renewal was not answered; udhcpc fell back to broadcast:\n{dump}\n{}",
            lab::read_text(&log)
        ),
        None => panic!(
            "no unicast renewal on the wire\n--- dnsmasq:\n{}",
            lab::tail(&lab::read_text(&dnsmasq_log), 20)
        ),
    }
    // udhcpc itself may still fall back to a broadcast renewal: busybox sends the unicast from
    // a short-lived socket connected to the server, and an ACK that arrives before that socket
    // is closed is delivered to it and lost. That is the client's race, not the server's, so
    // the proof is the wire above (the unicast REQUEST answered by dnsmasq), not udhcpc's log.
    // Its log, like the capture, is written on its own schedule: waited for.
    let ack = format!("DHCPACK(br0) {ip} {mac}");
    let acks = || lab::read_text(&dnsmasq_log).matches(&ack).count();
    if lab::poll_until(Duration::from_secs(10), || (acks() >= 2).then_some(())).is_none() {
        panic!(
            "dnsmasq acknowledged {ip} to {mac} {} time(s), not 2:\n{}",
            acks(),
            lab::tail(&lab::read_text(&dnsmasq_log), 20)
        );
    }
    rb.assert_running();
}
