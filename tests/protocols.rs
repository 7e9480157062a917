//! rackboot's four protocols against real clients, one private network per test.
//!
//! Each test starts the real `rackboot serve` in a fresh lab namespace (bridge `br0` =
//! 10.77.0.1/24) from a config, a bootenv, a config script and small dummy assets written to a
//! temp dir. DHCP clients run in a second namespace ([`Netns`]) wired to `br0` by veth pairs,
//! so rackboot meets them on the wire as it meets machines: udhcpc and dhclient for DHCP,
//! curl, atftp and tftp-hpa for TFTP, curl for HTTP, dig for DNS. Bad input must get its proper
//! refusal and leave the server serving (same PID, a good request answered afterwards); a start-up
//! failure must end the process with one message naming the file and the key or line.
//!
//! Needs root and busybox (udhcpc), isc-dhcp-client, curl, atftp, tftp-hpa, bind9-dnsutils and
//! python3. Every wait is bounded; namespaces and processes are removed by PID on drop, also
//! when a test fails.

mod common;

use std::fs;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::lab::{
    BRIDGE, SERVER_IP, output_text as text, poll_until, read_text, tail, wait_for_file,
};
use common::netns::{Netns, last_event, write_executable};
use common::server::{Server, kernel_path};
use common::setup::{CMDLINE, Setup, bootenv, pseudo_random};

/// Any one client command: curl, dig, atftp, tftp, a udhcpc run of at most 3 × 2 s tries.
const CMD: Duration = Duration::from_secs(30);

/// Events and log lines written off the request path (TFTP) appear within this.
const EVENT: Duration = Duration::from_secs(10);

/// The dynamic range in the test config.
const RANGE: (u8, u8) = (100, 199);

/// Dummy assets: (path under assets_dir, size). The sizes are chosen for TFTP's edge cases.
const ASSETS: &[(&str, usize)] = &[
    ("undionly.kpxe", 5000),
    // 5 × 1468: at the negotiated block size the last DATA block is empty.
    ("ipxe-amd64.efi", 5 * 1468),
    // 8 × 512: the same at TFTP's default block size.
    ("ipxe-arm64.efi", 8 * 512),
    ("x86_64/vmlinuz", 9000),
    ("x86_64/initrd.img", 3000),
];

// ---------------------------------------------------------------------------------------------
// rackboot's files and process

/// rackboot with all four protocols on the lab subnet, a bootenv for bios and x86_64 UEFI, a
/// config script, and the dummy [`ASSETS`].
fn setup(name: &str) -> Setup {
    let kernel = ("x86_64/vmlinuz", "x86_64/initrd.img");
    let mut setup = Setup::new(name)
        .standard_files()
        .no_address()
        .all_protocols(RANGE.0, RANGE.1)
        .file(
            "bootenvs/discovery.toml",
            bootenv(
                "discovery, for the protocol tests",
                &["hello.sh"],
                &[
                    ("bios", kernel.0, kernel.1),
                    ("x86_64_efi", kernel.0, kernel.1),
                ],
            ),
        );
    for (i, (path, size)) in ASSETS.iter().enumerate() {
        setup = setup.file(
            &format!("assets/{path}"),
            pseudo_random(i as u64 + 1, *size),
        );
    }
    setup
}

/// An asset's bytes as rackboot has them.
fn asset(rb: &Server, rel: &str) -> Vec<u8> {
    let path = rb.path(&format!("assets/{rel}"));
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dig @10.77.0.1 <args>` from the lab namespace; stdout.
fn dig(rb: &Server, args: &[&str]) -> String {
    let server = format!("@{SERVER_IP}");
    let mut all = vec![server.as_str(), "+time=2", "+tries=2"];
    all.extend_from_slice(args);
    let out = rb.lab.run("dig", &all, CMD);
    assert!(out.status.success(), "dig {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh name for a fetched file in the lab directory.
fn local_file(rb: &Server, suffix: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    rb.lab.dir().join(format!("tftp-{n}.{suffix}"))
}

/// A file's bytes over TFTP with curl (from the lab namespace).
fn tftp_curl(rb: &Server, args: &[&str], file: &str) -> (Output, Vec<u8>) {
    let local = local_file(rb, "curl");
    let url = format!("tftp://{SERVER_IP}/{file}");
    let mut all = vec![
        "-sS",
        "-v",
        "--max-time",
        "15",
        "-o",
        local.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    all.push(&url);
    let out = rb.lab.run("curl", &all, CMD);
    (out, fs::read(&local).unwrap_or_default())
}

/// A file over TFTP with atftp (`--trace` shows the OACK); (output, local file bytes).
fn tftp_atftp(rb: &Server, args: &[&str]) -> (Output, Vec<u8>) {
    let local = local_file(rb, "atftp");
    let server = SERVER_IP.to_string();
    let mut all = vec!["--trace", "--tftp-timeout", "2", "-l"];
    all.push(local.to_str().expect("utf-8 path"));
    all.extend_from_slice(args);
    all.push(&server);
    let out = rb.lab.run("atftp", &all, CMD);
    (out, fs::read(&local).unwrap_or_default())
}

/// The default hostname rackboot gives a MAC: `node-` and the MAC's hex digits.
fn hostname_of(mac: &str) -> String {
    format!("node-{}", mac.replace(':', ""))
}

fn assert_in_range(ip: &str) {
    let last: u8 = ip
        .strip_prefix("10.77.0.")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is not in 10.77.0.0/24"));
    assert!(
        (RANGE.0..=RANGE.1).contains(&last),
        "{ip} is outside the range"
    );
}

// ---------------------------------------------------------------------------------------------
// DHCP

const PXE_VENDOR: &str = "PXEClient:Arch:00007:UNDI:003000";

#[test]
fn dhcp_plain_client_gets_an_address_and_becomes_a_discovered_node() {
    let rb = setup("dhcp-plain").start();
    let mac = "52:54:00:10:00:01";
    let net = Netns::clients(&rb.lab, &[mac]);

    let lease = net.udhcpc("c0", &[]).expect("a lease");
    assert_in_range(&lease["ip"]);
    assert_eq!(lease["serverid"], SERVER_IP.to_string());
    assert_eq!(lease["subnet"], "255.255.255.0");
    assert_eq!(lease["hostname"], hostname_of(mac));
    assert_eq!(lease["domain"], "rack.internal");
    assert_eq!(lease["dns"], SERVER_IP.to_string());
    assert!(
        !lease.contains_key("boot_file"),
        "a client that is not PXE gets nothing to boot: {lease:?}"
    );

    let node = rb.node(mac);
    assert_eq!(node["state"], "discovered", "{node:#}");
    assert_eq!(node["hostname"], hostname_of(mac));
    assert!(
        node.get("token").is_none(),
        "the API must not show the token"
    );
    let ip = &lease["ip"];
    assert!(
        rb.details(mac, "dhcp.offer")
            .iter()
            .any(|d| d.contains(ip.as_str())),
        "{:#?}",
        rb.events(mac)
    );
    assert!(
        rb.details(mac, "dhcp.ack")
            .iter()
            .any(|d| d.contains(ip.as_str())),
        "{:#?}",
        rb.events(mac)
    );
}

#[test]
fn dhcp_pxe_firmware_gets_the_loader_for_its_architecture_and_fetches_it_by_tftp() {
    let rb = setup("dhcp-pxe").start();
    // (MAC, option 93, loader)
    let clients = [
        ("52:54:00:10:01:07", "0007", "ipxe-amd64.efi"),
        ("52:54:00:10:01:00", "0000", "undionly.kpxe"),
        ("52:54:00:10:01:0b", "000b", "ipxe-arm64.efi"),
    ];
    let macs: Vec<&str> = clients.iter().map(|c| c.0).collect();
    let net = Netns::clients(&rb.lab, &macs);

    let mut leases = Vec::new();
    for (i, (mac, arch, loader)) in clients.iter().enumerate() {
        let vendor = format!(
            "PXEClient:Arch:{:05}:UNDI:003000",
            u16::from_str_radix(arch, 16).unwrap()
        );
        let lease = net
            .udhcpc(
                &format!("c{i}"),
                &["-V", &vendor, "-x", &format!("0x5d:{arch}")],
            )
            .unwrap_or_else(|e| panic!("{mac}: {e}"));
        assert_eq!(
            lease.get("boot_file").map(String::as_str),
            Some(*loader),
            "{mac}: {lease:?}"
        );
        assert_eq!(
            lease.get("siaddr"),
            Some(&SERVER_IP.to_string()),
            "{mac}: {lease:?}"
        );
        assert_in_range(&lease["ip"]);
        let offer = rb.wait_event(mac, "dhcp.offer", loader);
        assert!(offer.contains("firmware"), "{offer}");
        leases.push(lease);
    }
    assert!(
        leases[0]["ip"] != leases[1]["ip"] && leases[1]["ip"] != leases[2]["ip"],
        "one address per node: {leases:?}"
    );

    // What firmware does next: fetch boot_file from siaddr by TFTP, from its leased address.
    // rackboot puts the transfer on that node's timeline.
    let (mac, _, loader) = clients[0];
    let lease = &leases[0];
    let addr = format!("{}/24", lease["ip"]);
    let out = net.run("ip", &["addr", "add", &addr, "dev", "c0"], CMD);
    assert!(out.status.success(), "{}", text(&out));
    let local = net.file("loader.bin");
    let url = format!("tftp://{}/{}", lease["siaddr"], lease["boot_file"]);
    let out = net.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "15",
            "--interface",
            "c0",
            "-o",
            local.to_str().unwrap(),
            &url,
        ],
        CMD,
    );
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    assert!(
        fs::read(&local).unwrap() == asset(&rb, loader),
        "{loader} by TFTP: bytes differ"
    );
    let sent = rb.wait_event(mac, "tftp.sent", loader);
    assert!(
        sent.contains(&asset(&rb, loader).len().to_string()),
        "{sent}"
    );
}

#[test]
fn dhcp_ipxe_gets_its_script_url_and_the_script_is_for_its_architecture() {
    let rb = setup("dhcp-ipxe").tokens_from_any_address().start();
    let mac = "52:54:00:10:02:01";
    let net = Netns::clients(&rb.lab, &[mac]);

    // User class (option 77) "iPXE": the client already runs iPXE.
    let lease = net
        .udhcpc(
            "c0",
            &["-V", PXE_VENDOR, "-x", "0x5d:0007", "-x", "77:69505845"],
        )
        .expect("a lease");
    let url = format!("http://{SERVER_IP}/boot/{mac}.ipxe");
    assert_eq!(lease.get("boot_file"), Some(&url), "{lease:?}");

    // The script URL needs no ?arch=: rackboot remembers what the node's DHCP said.
    let script = rb.http(&[], &format!("/boot/{mac}.ipxe"));
    assert_eq!(script.status, 200, "{}", script.text());
    let s = script.text();
    assert!(s.starts_with("#!ipxe"), "{s}");
    assert!(s.contains("arch x86_64_efi"), "{s}");
    assert!(
        s.contains(&format!("http://{SERVER_IP}/assets/x86_64/vmlinuz")),
        "{s}"
    );
    assert!(s.contains(&format!("rackboot.mac={mac}")), "{s}");
    // Its boot starts with the kernel fetch, not the script's.
    assert_ne!(rb.node(mac)["state"], "booting");
    assert!(rb.details(mac, "http.script").is_empty());
    start_boot(&rb, &s);
    assert_eq!(rb.node(mac)["state"], "booting");
    rb.wait_event(mac, "http.script", "x86_64_efi");
}

/// An architecture rackboot has no loader for gets no offer, and (being offered nothing) no
/// node record either: the log says why, naming the architecture.
#[test]
fn dhcp_unsupported_architecture_gets_no_offer_and_no_record() {
    let rb = setup("dhcp-badarch").start();
    let (x86_uefi, uboot, plain) = (
        "52:54:00:10:03:06",
        "52:54:00:10:03:16",
        "52:54:00:10:03:01",
    );
    let net = Netns::clients(&rb.lab, &[x86_uefi, uboot, plain]);

    for (iface, mac, arch, name) in [
        ("c0", x86_uefi, "0006", "6 (x86 UEFI)"),
        ("c1", uboot, "0016", "22 (ARM 64-bit U-Boot)"),
    ] {
        let vendor = format!(
            "PXEClient:Arch:{:05}:UNDI:003000",
            u16::from_str_radix(arch, 16).unwrap()
        );
        let err = net
            .udhcpc(iface, &["-V", &vendor, "-x", &format!("0x5d:{arch}")])
            .expect_err("no offer for an architecture rackboot cannot boot");
        assert!(err.contains("no lease"), "{err}");
        let log = rb.log_text();
        assert!(
            log.lines().any(|l| l.contains("ignoring DHCP request")
                && l.contains(mac)
                && l.contains(name)),
            "{mac}: the log must name {name:?}:\n{}",
            tail(&log, 20)
        );
        let r = rb.http(&[], &format!("/api/v1/nodes/{mac}"));
        assert_eq!(r.status, 404, "{mac} was offered nothing: {}", r.text());
    }

    net.udhcpc("c2", &[])
        .expect("a plain client still gets a lease");
    rb.assert_still_serving();
}

/// A DHCP client port socket on `iface` that sends each packet to 255.255.255.255:67, then
/// counts replies for a while. Each packet is hex, one per argument.
const SEND_RAW_DHCP: &str = r#"
import socket, sys
iface, packets = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("0.0.0.0", 68))
for p in packets:
    s.sendto(bytes.fromhex(p), ("255.255.255.255", 67))
s.settimeout(2.0)
replies = 0
try:
    while True:
        s.recvfrom(2048)
        replies += 1
except socket.timeout:
    pass
print("replies", replies)
"#;

/// A BOOTREQUEST header (236 bytes) from `mac`, broadcast flag set.
fn bootrequest_header(mac: [u8; 6]) -> Vec<u8> {
    let mut h = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0];
    h.extend([0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    h.extend(mac);
    h.extend([0; 10 + 64 + 128]); // chaddr padding, sname, file
    assert_eq!(h.len(), 236);
    h
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn dhcp_packets_that_do_not_parse_are_ignored_and_serving_continues() {
    let rb = setup("dhcp-garbage").start();
    let (sender, client) = ("52:54:00:10:04:09", "52:54:00:10:04:01");
    let net = Netns::clients(&rb.lab, &[sender, client]);

    let mac = [0x52, 0x54, 0x00, 0x10, 0x04, 0x09];
    let header = bootrequest_header(mac);
    let cookie = [99, 130, 83, 99];
    let discover = [53, 1, 1];
    let packets: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"this is not a DHCP packet ".repeat(4)),
        ("three bytes", vec![1, 1, 6]),
        ("all ones", vec![0xff; 300]),
        ("cut in the header", header[..100].to_vec()),
        // A DISCOVER in every way but the magic cookie (RFC 2131 §3): not DHCP.
        (
            "wrong magic cookie",
            [&header[..], &[0xde, 0xad, 0xbe, 0xef], &discover, &[255]].concat(),
        ),
        // Option 60 claims 200 bytes; 9 follow.
        (
            "option longer than the packet",
            [&header[..], &cookie, &discover, &[60, 200], b"PXEClient"].concat(),
        ),
        // Each of these two once stopped rackboot: hlen 17 made the codec slice
        // chaddr past its 16 bytes; option 152 with length 2 hit its debug assertion.
        ("hardware address length 17", {
            let mut p = [&header[..], &cookie, &discover, &[255]].concat();
            p[2] = 17;
            p
        }),
        (
            "option 152 with length 2",
            [&header[..], &cookie, &discover, &[152, 2, 0, 0, 255]].concat(),
        ),
    ];
    let mut args = vec!["-c", SEND_RAW_DHCP, "c0"];
    let hexes: Vec<String> = packets.iter().map(|(_, p)| hex(p)).collect();
    args.extend(hexes.iter().map(String::as_str));
    let out = net.run("python3", &args, CMD);
    assert!(out.status.success(), "python3: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "replies 0",
        "rackboot answered a packet that does not parse"
    );

    let ignored = poll_until(EVENT, || {
        let n = rb
            .log_text()
            .matches("ignoring DHCP packet that does not parse")
            .count();
        (n >= packets.len()).then_some(n)
    });
    assert_eq!(
        ignored,
        Some(packets.len()),
        "one log line per packet ({:?}):\n{}",
        packets.iter().map(|p| p.0).collect::<Vec<_>>(),
        tail(&rb.log_text(), 20)
    );
    let r = rb.http(&[], &format!("/api/v1/nodes/{sender}"));
    assert_eq!(
        r.status,
        404,
        "no node from packets that do not parse: {}",
        r.text()
    );

    net.udhcpc("c1", &[]).expect("a lease after the garbage");
    rb.assert_still_serving();
}

#[test]
fn dhclient_gets_keeps_and_releases_its_lease() {
    let rb = setup("dhclient").start();
    let mac = "52:54:00:10:05:01";
    let net = Netns::clients(&rb.lab, &[mac]);

    // dhclient-script stand-in: records what it is told and configures c0 (RELEASE is sent
    // by unicast from the leased address), and leaves resolv.conf alone.
    let script = net.file("dhclient.sh");
    let record = net.file("dhclient.env");
    write_executable(
        &script,
        &format!(
            "#!/bin/sh\n\
             case \"$reason\" in\n\
               BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\" ;;\n\
               RELEASE|EXPIRE|STOP) [ -z \"$old_ip_address\" ] || ip addr del \"$old_ip_address/24\" dev \"$interface\" ;;\n\
             esac\n\
             # Recorded last: once the line is there, the interface is configured.\n\
             echo \"reason=$reason new=$new_ip_address old=$old_ip_address\" >> '{}'\n\
             exit 0\n",
            record.display()
        ),
    );
    let leases = net.file("dhclient.leases");
    let dhclient = |run: &str, extra: &[&str]| -> Vec<String> {
        // A fresh PID file per run: `dhclient -r` kills whatever PID the file names.
        let pid_file = net.file(&format!("dhclient-{run}.pid"));
        let mut args = vec!["-v", "-lf", leases.to_str().unwrap(), "-pf"];
        args.push(pid_file.to_str().unwrap());
        args.extend_from_slice(&["-sf", script.to_str().unwrap()]);
        args.extend_from_slice(extra);
        args.push("c0");
        args.into_iter().map(str::to_string).collect()
    };
    // `-1 -d`: one attempt, in the foreground, so the test holds the PID and ends it.
    let bind = |run: &str, reason: &str| -> String {
        let args = dhclient(run, &["-1", "-d"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = net.spawn("dhclient", &args, &format!("dhclient-{run}.log"));
        let line = poll_until(CMD, || {
            read_text(&record)
                .lines()
                .find(|l| l.starts_with(&format!("reason={reason} ")))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "dhclient {run}: no {reason}:\n{}\n{}",
                read_text(&record),
                read_text(&net.file(&format!("dhclient-{run}.log")))
            )
        });
        net.stop(pid);
        fs::write(&record, "").unwrap();
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("new="))
            .unwrap_or_default()
            .to_string()
    };

    let first = bind("first", "BOUND");
    assert_in_range(&first);
    let host = format!("{}.rack.internal", hostname_of(mac));
    assert_eq!(dig(&rb, &["+short", &host, "A"]).trim(), first);

    // Again with the lease file: INIT-REBOOT asks for the same address and is acknowledged.
    let second = bind("second", "REBOOT");
    assert_eq!(second, first, "the address must be kept");
    let acks = rb.details(mac, "dhcp.ack");
    assert!(
        acks.len() >= 2 && acks.iter().all(|d| d.contains(&first)),
        "{acks:#?}"
    );

    let args = dhclient("release", &["-r"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = net.run("dhclient", &args, CMD);
    assert!(out.status.success(), "dhclient -r: {}", text(&out));
    let released = rb.wait_event(mac, "dhcp.release", &first);
    assert!(!released.contains("no such lease"), "{released}");
    // The lease is gone: the node's name no longer resolves to an address. The node itself
    // still exists, so the name does too: NOERROR with no answer (NODATA), not NXDOMAIN.
    let answer = dig(&rb, &[&host, "A"]);
    assert!(
        answer.contains("status: NOERROR") && answer.contains("ANSWER: 0,"),
        "{answer}"
    );
}

#[test]
fn udhcpc_renews_by_unicast_and_keeps_its_address() {
    let rb = setup("udhcpc-renew").start();
    let mac = "52:54:00:10:06:01";
    let net = Netns::clients(&rb.lab, &[mac]);
    let (script, record) = net.udhcpc_script("renew", true);
    let pid = net.spawn(
        "udhcpc",
        &[
            "-i",
            "c0",
            "-f",
            "-t",
            "3",
            "-T",
            "2",
            "-s",
            script.to_str().unwrap(),
        ],
        "udhcpc-renew.log",
    );
    let bound = poll_until(CMD, || last_event(&record, "bound")).expect("bound");
    let acks_before = rb.details(mac, "dhcp.ack").len();

    // SIGUSR1: renew now. RENEWING is a unicast REQUEST with ciaddr set (RFC 2131 §4.4.5),
    // answered by unicast to that address.
    net.signal(pid, "USR1");
    let renewed = poll_until(CMD, || last_event(&record, "renew")).unwrap_or_else(|| {
        panic!(
            "no renewal:\n{}\n{}",
            read_text(&record),
            read_text(&net.file("udhcpc-renew.log"))
        )
    });
    assert_eq!(renewed["ip"], bound["ip"]);
    let acks = rb.details(mac, "dhcp.ack");
    assert!(
        acks.len() > acks_before,
        "no ACK for the renewal: {acks:#?}"
    );
    assert!(acks.iter().all(|d| d.contains(&bound["ip"])), "{acks:#?}");
    assert!(net.is_running(pid), "udhcpc gave up after the renewal");
}

// ---------------------------------------------------------------------------------------------
// TFTP

#[test]
fn tftp_reads_return_the_exact_bytes_with_blksize_and_tsize() {
    let rb = setup("tftp-read").start();

    for (file, size) in ASSETS {
        let (out, got) = tftp_curl(&rb, &["--tftp-blksize", "1468"], file);
        assert!(out.status.success(), "curl {file}: {}", text(&out));
        assert_eq!(got.len(), *size, "{file}");
        assert!(got == asset(&rb, file), "curl {file}: bytes differ");
    }

    let (out, got) = tftp_atftp(
        &rb,
        &[
            "--option",
            "blksize 1468",
            "--option",
            "tsize 0",
            "-g",
            "-r",
            "x86_64/vmlinuz",
        ],
    );
    let trace = text(&out);
    assert!(out.status.success(), "{trace}");
    assert!(got == asset(&rb, "x86_64/vmlinuz"), "atftp: bytes differ");
    assert!(
        trace.contains("tsize: 9000") && trace.contains("blksize: 1468"),
        "{trace}"
    );

    // A size that fills its last block exactly, at the negotiated block size and the default.
    let (out, got) = tftp_atftp(
        &rb,
        &["--option", "blksize 1468", "-g", "-r", "ipxe-amd64.efi"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        got == asset(&rb, "ipxe-amd64.efi"),
        "atftp ipxe-amd64.efi: bytes differ"
    );
    let local = rb.lab.dir().join("arm64.tftp-hpa");
    let out = rb.lab.run(
        "tftp",
        &[
            "-m",
            "binary",
            &SERVER_IP.to_string(),
            "-c",
            "get",
            "ipxe-arm64.efi",
            local.to_str().unwrap(),
        ],
        CMD,
    );
    assert!(
        fs::read(&local).unwrap_or_default() == asset(&rb, "ipxe-arm64.efi"),
        "tftp-hpa: {}",
        text(&out)
    );

    // More than the server's limit is negotiated down (RFC 2348), never refused.
    let (out, got) = tftp_atftp(
        &rb,
        &["--option", "blksize 65464", "-g", "-r", "undionly.kpxe"],
    );
    let trace = text(&out);
    assert!(out.status.success(), "{trace}");
    assert!(trace.contains("blksize: 1468"), "{trace}");
    assert!(
        got == asset(&rb, "undionly.kpxe"),
        "atftp blksize 65464: bytes differ"
    );
}

#[test]
fn tftp_refuses_paths_outside_the_assets_directory() {
    let rb = setup("tftp-escape").start();

    // One leading `/` names the TFTP root, the assets directory (GRUB asks `/x86_64/vmlinuz`), as
    // tftp-hpa's `--secure` does; a second one is an absolute path again.
    for path in ["../etc/passwd", "//etc/passwd", "x86_64/../../etc/passwd"] {
        // curl exit 69: "permission problem on TFTP server", i.e. error code 2.
        let (out, got) = tftp_curl(&rb, &["--path-as-is"], path);
        let err = text(&out);
        assert_eq!(out.status.code(), Some(69), "curl {path}: {err}");
        assert!(
            err.contains("TFTP error: Permission denied"),
            "curl {path}: {err}"
        );
        assert!(got.is_empty(), "curl {path} got bytes");

        let (out, got) = tftp_atftp(&rb, &["-g", "-r", path]);
        let err = text(&out);
        assert!(!out.status.success(), "atftp {path}: {err}");
        assert!(
            err.contains("error received from server <Permission denied>"),
            "atftp {path}: {err}"
        );
        assert!(got.is_empty(), "atftp {path} got bytes");
    }
    // `/etc/passwd` is `<assets>/etc/passwd`, which is not there.
    let (out, got) = tftp_curl(&rb, &["--path-as-is"], "/etc/passwd");
    assert!(
        text(&out).contains("TFTP error: File not found") && got.is_empty(),
        "{}",
        text(&out)
    );
    let local = rb.lab.dir().join("passwd.tftp-hpa");
    let out = rb.lab.run(
        "tftp",
        &[
            "-v",
            &SERVER_IP.to_string(),
            "-c",
            "get",
            "../etc/passwd",
            local.to_str().unwrap(),
        ],
        CMD,
    );
    assert!(
        text(&out).contains("Error code 2: Permission denied"),
        "{}",
        text(&out)
    );
    assert!(fs::read(&local).unwrap_or_default().is_empty());

    let (out, got) = tftp_curl(&rb, &[], "undionly.kpxe");
    assert!(
        out.status.success() && got == asset(&rb, "undionly.kpxe"),
        "{}",
        text(&out)
    );
    rb.assert_still_serving();
}

#[test]
fn tftp_refuses_writes_and_reports_missing_files() {
    let rb = setup("tftp-write").start();
    let upload = rb.lab.dir().join("upload.bin");
    fs::write(&upload, b"not an asset").unwrap();

    let server = SERVER_IP.to_string();
    let out = rb.lab.run(
        "atftp",
        &[
            "--tftp-timeout",
            "2",
            "-p",
            "-l",
            upload.to_str().unwrap(),
            "-r",
            "upload.bin",
            &server,
        ],
        CMD,
    );
    let err = text(&out);
    assert!(!out.status.success(), "atftp --put: {err}");
    assert!(
        err.contains("error received from server <rackboot TFTP is read-only>"),
        "{err}"
    );

    let out = rb.lab.run(
        "tftp",
        &[
            "-v",
            &SERVER_IP.to_string(),
            "-c",
            "put",
            upload.to_str().unwrap(),
            "upload.bin",
        ],
        CMD,
    );
    assert!(
        text(&out).contains("Error code 0: rackboot TFTP is read-only"),
        "{}",
        text(&out)
    );
    assert!(
        !rb.path("assets/upload.bin").exists(),
        "a write reached the assets dir"
    );

    // curl exit 68: "file not found on TFTP server", error code 1.
    let (out, got) = tftp_curl(&rb, &[], "nope.efi");
    assert_eq!(out.status.code(), Some(68), "{}", text(&out));
    assert!(
        text(&out)
            .to_lowercase()
            .contains("tftp error: file not found"),
        "{}",
        text(&out)
    );
    assert!(got.is_empty());
    let (out, _) = tftp_atftp(&rb, &["-g", "-r", "x86_64"]);
    assert!(
        text(&out).contains("<File not found>"),
        "a directory is not a file: {}",
        text(&out)
    );

    let (out, got) = tftp_curl(&rb, &[], "x86_64/initrd.img");
    assert!(
        out.status.success() && got == asset(&rb, "x86_64/initrd.img"),
        "{}",
        text(&out)
    );
    rb.assert_still_serving();
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[test]
fn http_bad_boot_and_asset_paths_get_4xx_with_a_reason() {
    let rb = setup("http-bad").start();

    let r = rb.http(&[], "/boot/not-a-mac.ipxe");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("`not-a-mac` is not a MAC address"),
        "{}",
        r.text()
    );

    let r = rb.http(&[], "/assets/nope");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no asset `nope`"), "{}", r.text());

    let r = rb.http(&[], "/boot/52:54:00:10:07:01.ipxe?arch=ppc64");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("unknown architecture `ppc64`"),
        "{}",
        r.text()
    );

    for path in [
        "/assets/../../etc/passwd",
        "/assets/x86_64/../../../etc/passwd",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2fetc%2fpasswd",
        "/assets//etc/passwd",
    ] {
        let r = rb.http(&["--path-as-is"], path);
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "{path} leaked /etc/passwd");
        assert!(
            r.text().starts_with("error: "),
            "{path}: a reason, not {:?}",
            r.text()
        );
        assert!(
            !r.text().contains(&rb.site_dir().display().to_string()),
            "{path}: an internal path leaked"
        );
    }

    let r = rb.http(&[], "/assets/x86_64/initrd.img");
    assert_eq!(r.status, 200);
    assert!(r.body == asset(&rb, "x86_64/initrd.img"));
    rb.assert_still_serving();
}

/// Fetches the kernel of boot script `script`, as iPXE does next: the node's boot starts.
fn start_boot(rb: &Server, script: &str) {
    let path = kernel_path(script);
    let r = rb.http(&[], &path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
}

#[test]
fn http_node_reports_need_the_nodes_own_token() {
    let rb = setup("http-token").tokens_from_any_address().start();
    let (a, b, unknown) = (
        "52:54:00:10:08:0a",
        "52:54:00:10:08:0b",
        "52:54:00:10:08:ff",
    );
    let (token_a, token_b) = (rb.boot(a, "x86_64_efi"), rb.boot(b, "x86_64_efi"));
    assert_ne!(token_a, token_b);
    let report = |mac: &str| format!("/node/{mac}/report?state=booted");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_a)], &report(unknown));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains(&format!("no node with MAC {unknown}")),
        "{}",
        r.text()
    );
    assert_eq!(
        rb.http(&[], &format!("/api/v1/nodes/{unknown}")).status,
        404,
        "a report must not create a node"
    );

    let r = rb.http(&["-X", "POST"], &report(a));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("node token required"), "{}", r.text());

    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_b)], &report(a));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains(&format!("this token is not {a}'s")),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains(&token_a),
        "the refusal must not reveal the token"
    );

    let r = rb.http(
        &["-X", "POST", "-H", "Authorization: Basic Zm9vOmJhcg=="],
        &report(a),
    );
    assert_eq!(r.status, 401, "{}", r.text());

    let r = rb.http(&["-X", "POST"], "/node/not-a-mac/report?state=booted");
    assert_eq!(r.status, 400, "{}", r.text());

    // None of that moved the node; its own token does.
    assert_eq!(rb.node(a)["state"], "booting");
    assert!(rb.details(a, "report.booted").is_empty());
    let r = rb.http(
        &["-X", "POST", "-H", &bearer(&token_a), "--data-binary", "up"],
        &report(a),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(rb.node(a)["state"], "booted");
    assert_eq!(rb.details(a, "report.booted"), ["up"]);
    assert_eq!(rb.node(b)["state"], "booting");
    rb.assert_still_serving();
}

/// The install-complete callback: the node's own token only, and only while it boots an
/// installer bootenv; then `installed` with its bootenv `after_install` (`local`) and no
/// next-boot bootenv; its next script is the local one.
#[test]
fn http_install_callback_needs_the_nodes_token_and_an_installer_boot_and_ends_on_local() {
    let rb = setup("http-installed")
        .file(
            "bootenvs/install.toml",
            format!(
                "installer = true\n[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ncmdline = \"{CMDLINE}\"\n"
            ),
        )
        .tokens_from_any_address()
        .start();
    let (a, b, unknown) = (
        "52:54:00:10:09:0a",
        "52:54:00:10:09:0b",
        "52:54:00:10:09:ff",
    );
    // a installs; b boots discovery (not an installer).
    let created = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"mac\": \"{a}\", \"bootenv\": \"install\"}}"),
        ],
        "/api/v1/nodes",
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let (token_a, token_b) = (rb.boot(a, "x86_64_efi"), rb.boot(b, "x86_64_efi"));
    let installed = |mac: &str| format!("/node/{mac}/installed?bootenv=install");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    let r = rb.http(
        &["-X", "POST", "-H", &bearer(&token_a)],
        &installed(unknown),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = rb.http(&["-X", "POST"], &installed(a));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_b)], &installed(a));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = rb.http(
        &["-X", "POST", "-H", &bearer(&token_a)],
        &format!("/node/{a}/installed?bootenv=../x"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // b is not installing: its own token does not make it installed.
    let r = rb.http(&["-X", "POST", "-H", &bearer(&token_b)], &installed(b));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("not installing"), "{}", r.text());
    let n = rb.node(b);
    assert_eq!(
        (n["state"].as_str(), n["bootenv"].as_str()),
        (Some("booting"), Some("discovery"))
    );
    let n = rb.node(a);
    assert_eq!(
        (n["state"].as_str(), n["bootenv"].as_str()),
        (Some("installing"), Some("install"))
    );

    let r = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            &bearer(&token_a),
            "--data-binary",
            "done",
        ],
        &installed(a),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let n = rb.node(a);
    assert_eq!(n["state"].as_str(), Some("installed"), "{n}");
    assert_eq!(n["bootenv"].as_str(), Some("local"), "{n}");
    assert!(n["next_bootenv"].is_null(), "{n}");
    assert_eq!(rb.details(a, "report.installed"), ["bootenv install\ndone"]);
    let changed = rb.details(a, "bootenv.changed");
    assert_eq!(
        changed,
        ["install -> local: install finished installing (after_install = local)"]
    );

    let r = rb.http(&[], &format!("/boot/{a}.ipxe?arch=x86_64_efi"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("boots from its local disk"),
        "{}",
        r.text()
    );
    rb.wait_event(a, "http.script", "bootenv local");
    assert_eq!(
        rb.node(a)["state"],
        "installed",
        "booting local keeps the state"
    );
    assert_eq!(rb.node(b)["state"], "booting");
    rb.assert_still_serving();
}

#[test]
fn http_assets_answer_head_and_range_requests() {
    let rb = setup("http-range").start();
    let file = "x86_64/vmlinuz";
    let bytes = asset(&rb, file);
    let path = format!("/assets/{file}");

    let r = rb.http(&["-I"], &path);
    assert_eq!(r.status, 200, "{}", r.headers);
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string()),
        "{}",
        r.headers
    );
    assert_eq!(
        r.header("accept-ranges").as_deref(),
        Some("bytes"),
        "{}",
        r.headers
    );

    let r = rb.http(&["-r", "100-1099"], &path);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some(format!("bytes 100-1099/{}", bytes.len()).as_str())
    );
    assert_eq!(r.header("content-length").as_deref(), Some("1000"));
    assert!(r.body == bytes[100..1100], "range 100-1099: bytes differ");

    // The last 10 bytes (suffix range), and a range that ends past the file.
    let r = rb.http(&["-r", "-10"], &path);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert!(
        r.body == bytes[bytes.len() - 10..],
        "suffix range: bytes differ"
    );
    let r = rb.http(&["-r", "8990-20000"], &path);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert!(r.body == bytes[8990..], "open-ended range: bytes differ");

    let r = rb.http(&["-r", "20000-30000"], &path);
    assert_eq!(r.status, 416, "a range past the end: {}", r.headers);

    let r = rb.http(&[], &path);
    assert_eq!(r.status, 200);
    assert!(r.body == bytes, "whole file: bytes differ");
    rb.assert_still_serving();
}

// ---------------------------------------------------------------------------------------------
// DNS

#[test]
fn dns_resolves_leased_nodes_both_ways_and_refuses_other_zones() {
    let rb = setup("dns").start();
    let mac = "52:54:00:10:09:01";
    let net = Netns::clients(&rb.lab, &[mac]);
    let lease = net.udhcpc("c0", &[]).expect("a lease");
    let ip = &lease["ip"];
    let host = format!("{}.rack.internal", hostname_of(mac));

    assert_eq!(dig(&rb, &["+short", &host, "A"]).trim(), ip.as_str());
    assert_eq!(dig(&rb, &["+short", "-x", ip]).trim(), format!("{host}."));
    // Names are case-insensitive (RFC 4343).
    assert_eq!(
        dig(&rb, &["+short", &host.to_uppercase(), "A"]).trim(),
        ip.as_str()
    );

    let answer = dig(&rb, &["example.com", "A"]);
    assert!(answer.contains("status: REFUSED"), "{answer}");
    let answer = dig(&rb, &["node-000000000000.rack.internal", "A"]);
    assert!(answer.contains("status: NXDOMAIN"), "{answer}");

    assert_eq!(
        dig(&rb, &["+short", &host, "A"]).trim(),
        ip.as_str(),
        "still answering"
    );
    rb.assert_still_serving();
}

// ---------------------------------------------------------------------------------------------
// Start-up failures

#[test]
fn startup_fails_on_an_unknown_config_key_naming_key_and_line() {
    let rb = setup("start-key").prepare();
    let text = rb
        .config_text()
        .replace("[dhcp]\n", "[dhcp]\nlease_time = 600\n");
    let line = text
        .lines()
        .position(|l| l.starts_with("lease_time"))
        .unwrap()
        + 1;
    rb.write("rackboot.toml", text);

    let msg = rb.start_fails();
    assert!(msg.contains(&rb.config().display().to_string()), "{msg}");
    assert!(msg.contains("lease_time"), "{msg}");
    assert!(msg.contains(&format!("line {line}")), "{msg}");
}

#[test]
fn startup_fails_on_a_missing_interface_naming_it_and_the_key() {
    let rb = setup("start-iface").prepare();
    let text = rb
        .config_text()
        .replace("interface = \"br0\"", "interface = \"nosuch0\"");
    rb.write("rackboot.toml", text);

    let msg = rb.start_fails();
    assert!(msg.contains("nosuch0"), "{msg}");
    assert!(msg.contains("network.interface"), "{msg}");
    assert!(msg.contains(&rb.config().display().to_string()), "{msg}");
}

#[test]
fn startup_fails_when_the_http_port_is_taken_naming_http_address_and_key() {
    let rb = setup("start-inuse").prepare();
    let lab = &rb.lab;
    let squatter = lab.spawn(
        "python3",
        &[
            "-c",
            "import socket, time\n\
             s = socket.socket()\n\
             s.bind(('10.77.0.1', 80))\n\
             s.listen()\n\
             print('listening', flush=True)\n\
             time.sleep(120)\n",
        ],
        "squatter.log",
    );
    wait_for_file(&lab.dir().join("squatter.log"), "listening", CMD)
        .unwrap_or_else(|e| panic!("{e}"));

    let msg = rb.start_fails();
    assert!(msg.contains("HTTP"), "{msg}");
    assert!(msg.contains("10.77.0.1:80"), "{msg}");
    assert!(msg.contains("http.port"), "{msg}");
    assert!(msg.contains(&rb.config().display().to_string()), "{msg}");
    assert_eq!(
        msg.matches("Address already in use").count(),
        1,
        "the cause once: {msg}"
    );
    assert!(
        lab.is_running(squatter),
        "rackboot must leave the port's owner alone"
    );
}

#[test]
fn startup_fails_on_a_bootenv_that_does_not_parse_naming_file_and_line() {
    let rb = setup("start-bootenv")
        .file(
            "bootenvs/broken.toml",
            "description = \"missing a bracket\"\n\n[arch.bios\nkernel = \"x86_64/vmlinuz\"\n",
        )
        .prepare();

    let msg = rb.start_fails();
    assert!(
        msg.contains(&rb.path("bootenvs/broken.toml").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
}

/// Two DHCP servers answering on one boot network would hand out conflicting
/// boot files: a second rackboot on the same interface must refuse to start.
#[test]
fn startup_fails_when_another_rackboot_serves_dhcp_on_the_interface() {
    let rb = setup("start-twice").start();
    // Only DHCP may clash: the other services are off in the second instance.
    let second = Setup::new("start-twice-second")
        .standard_files()
        .no_address()
        .lab_subnet(RANGE.0, RANGE.1)
        .http("enabled = false")
        .write();
    let msg = second.start_fails(&rb.lab);
    assert!(msg.contains("DHCP") && msg.contains(BRIDGE), "{msg}");
    assert!(msg.contains("network.interface"), "{msg}");
    assert!(
        rb.lab.is_running(rb.pid()),
        "the first instance keeps serving"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Parses Prometheus/OpenMetrics text: every line is a `# HELP|TYPE|UNIT|EOF` comment or
/// `name{k="v",…} value`. Returns the samples as (name, labels as written, value).
fn metrics_samples(text: &str) -> Vec<(String, String, f64)> {
    assert!(text.ends_with("# EOF\n"), "no closing # EOF:\n{text}");
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let word = comment.split(' ').next().unwrap_or_default();
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&word),
                "comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value not a number: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}")),
            ),
            None => (series, ""),
        };
        let name_ok = name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
        });
        assert!(!name.is_empty() && name_ok, "metric name in {line:?}");
        if !labels.is_empty() {
            for pair in labels.split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("label {pair:?} in {line:?}"));
                assert!(
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "label name {k:?} in {line:?}"
                );
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "label value {v:?} in {line:?}"
                );
            }
        }
        samples.push((name.to_string(), labels.to_string(), value));
    }
    samples
}

/// curl arguments asking `/metrics` for OpenMetrics (the text format 0.0.4 is the default).
const OPENMETRICS: &[&str] = &["-H", "Accept: application/openmetrics-text"];

fn metrics_value(samples: &[(String, String, f64)], name: &str, labels: &str) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l == labels)
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} among {samples:#?}"))
}

#[test]
fn metrics_count_a_dhcp_exchange_and_a_tftp_fetch() {
    let rb = setup("metrics").start();
    let mac = "52:54:00:10:0a:01";
    let net = Netns::clients(&rb.lab, &[mac]);

    let before = metrics_samples(&rb.http(OPENMETRICS, "/metrics").text());
    let sub = r#"subnet="10.77.0.0/24""#;
    assert_eq!(
        metrics_value(&before, "rackboot_dhcp_pool_leased", sub),
        0.0
    );
    assert_eq!(
        metrics_value(&before, "rackboot_dhcp_pool_addresses", sub),
        f64::from(RANGE.1 - RANGE.0 + 1)
    );

    let lease = net
        .udhcpc("c0", &["-V", PXE_VENDOR, "-x", "0x5d:0007"])
        .expect("a lease");
    assert_eq!(
        lease.get("boot_file").map(String::as_str),
        Some("ipxe-amd64.efi")
    );
    let (out, got) = tftp_curl(&rb, &[], "ipxe-amd64.efi");
    assert!(
        out.status.success() && got == asset(&rb, "ipxe-amd64.efi"),
        "{}",
        text(&out)
    );

    let r = rb.http(OPENMETRICS, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let s = metrics_samples(&r.text());
    let at_least = |name: &str, labels: &str, min: f64| {
        let v = metrics_value(&s, name, labels);
        assert!(
            v >= min,
            "{name}{{{labels}}} = {v}, want >= {min}\n{}",
            r.text()
        );
    };
    at_least("rackboot_dhcp_received_total", r#"type="discover""#, 1.0);
    at_least("rackboot_dhcp_received_total", r#"type="request""#, 1.0);
    at_least("rackboot_dhcp_replies_total", r#"type="offer""#, 1.0);
    at_least("rackboot_dhcp_replies_total", r#"type="ack""#, 1.0);
    assert_eq!(
        metrics_value(&s, "rackboot_dhcp_replies_total", r#"type="nak""#),
        0.0
    );
    assert_eq!(metrics_value(&s, "rackboot_dhcp_pool_leased", sub), 1.0);
    at_least("rackboot_dhcp_decision_seconds_count", "", 2.0);
    at_least("rackboot_dhcp_decision_seconds_bucket", r#"le="1.0""#, 2.0);
    at_least("rackboot_tftp_transfers_total", r#"result="sent""#, 1.0);
    at_least(
        "rackboot_tftp_sent_bytes_total",
        "",
        asset(&rb, "ipxe-amd64.efi").len() as f64,
    );
    // The first scrape is counted by the time of the second.
    at_least(
        "rackboot_http_requests_total",
        r#"route="metrics",status="2xx""#,
        1.0,
    );
    rb.assert_still_serving();
}

/// Started as root with `[service] user`, `rackboot serve` binds its ports, then runs as that
/// user (its group, no supplementary groups) with no capabilities left, owns its state directory,
/// and DHCP, TFTP and HTTP still serve.
#[test]
fn started_as_root_it_binds_then_serves_as_the_service_user_with_no_capabilities() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rb = setup("privileges")
        .table("service", "user = \"nobody\"")
        .prepare();
    // What the service user serves must be readable by it.
    fs::set_permissions(rb.site_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    for rel in ["assets", "assets/x86_64", "bootenvs", "scripts"] {
        fs::set_permissions(rb.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(rb.path("api-tokens"), fs::Permissions::from_mode(0o644)).unwrap();
    let id = |flag: &str| -> String {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    rb.serve();

    let status = fs::read_to_string(format!("/proc/{}/status", rb.pid())).unwrap();
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(field("Uid:"), vec![uid.clone(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![gid.clone(); 4], "{status}");
    assert_eq!(field("Groups:"), vec![gid.clone()], "{status}");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(field(caps), vec!["0000000000000000"], "{caps} {status}");
    }
    assert!(
        rb.log_text()
            .contains("switched from root to the service account"),
        "{}",
        rb.log_text()
    );
    let state = rb.path("state");
    assert_eq!(fs::metadata(&state).unwrap().uid().to_string(), uid);
    let db = fs::metadata(state.join("rackboot.db")).unwrap();
    assert_eq!(db.uid().to_string(), uid);
    assert_eq!(db.mode() & 0o777, 0o600, "the store holds node tokens");

    // DHCP (a lease journaled and committed by the service user), TFTP and HTTP.
    let mac = "52:54:00:10:00:61";
    let net = Netns::clients(&rb.lab, &[mac]);
    let lease = net.udhcpc("c0", &[]).expect("a lease");
    assert_in_range(&lease["ip"]);
    assert_eq!(rb.node(mac)["state"], "discovered");
    let (out, got) = tftp_curl(&rb, &[], "undionly.kpxe");
    assert!(
        out.status.success() && got == asset(&rb, "undionly.kpxe"),
        "{}",
        text(&out)
    );
    let r = rb.http(&[], "/assets/x86_64/vmlinuz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, asset(&rb, "x86_64/vmlinuz"));
    rb.assert_still_serving();
}

/// systemd's `ProcSubset=pid` (in rackboot's unit) hides `/proc/net`. rackboot reads the
/// neighbour table as `/proc/self/net/arp`, so under it a TFTP client whose address rackboot
/// did not lease (as on a proxyDHCP subnet) is still named by its MAC on its node's timeline.
#[test]
fn tftp_names_an_unleased_client_from_the_neighbour_table_under_proc_subset_pid() {
    // sh execs its $0 ("$@" are rackboot's arguments) once /proc is mounted.
    let rb = setup("proc-subset")
        .exec_through(&[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t proc -o subset=pid proc /proc && exec \"$0\" \"$@\"",
        ])
        .start();
    let mounts = fs::read_to_string(format!("/proc/{}/mountinfo", rb.pid())).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /proc ") && l.contains("subset=pid")),
        "rackboot's /proc is not subset=pid:\n{mounts}"
    );
    let mac = "52:54:00:10:00:71";
    let r = rb.http(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"mac\": \"{mac}\"}}"),
        ],
        "/api/v1/nodes",
    );
    assert!(
        r.status == 200 || r.status == 201,
        "{} {}",
        r.status,
        r.text()
    );
    let net = Netns::clients(&rb.lab, &[mac]);
    let out = net.run("ip", &["addr", "add", "10.77.0.50/24", "dev", "c0"], CMD);
    assert!(out.status.success(), "{}", text(&out));
    let url = format!("tftp://{SERVER_IP}/undionly.kpxe");
    let out = net.run("curl", &["-sS", "-m", "10", "-o", "/dev/null", &url], CMD);
    assert!(out.status.success(), "{}", text(&out));
    rb.wait_event(mac, "tftp.sent", "undionly.kpxe");
    rb.assert_still_serving();
}
