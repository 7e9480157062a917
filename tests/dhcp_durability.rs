//! Leases and node records survive a crash. A node record a client was answered for (its
//! DHCP ACK, the boot script carrying its token) is there after SIGKILL with the same token.
//! A full state directory (a small tmpfs) loses nothing rackboot acknowledged: what it cannot
//! make durable it refuses (DHCP silent, API 503), and `/metrics` says so.
//! And rackboot is killed with SIGKILL in the middle of a `perfdhcp` run
//! (relayed, thousands of clients), started again on the same state directory, and then
//! - no address was ever acknowledged to two MACs (read from a capture of the whole run),
//! - every acknowledged lease is in the store with its MAC,
//! - a client that had an address before the crash gets the same one back, and another MAC
//!   asking for that address does not.
//!
//! Needs root, perfdhcp (Debian's kea-admin), udhcpc and tcpdump. Every wait is bounded.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::api::ADMIN_TOKEN;
use common::lab::{Lab, SERVER_IP, read_text};
use common::netns::Netns;
use common::server::Server;
use common::setup::Setup;
use serde_json::Value;

const CMD: Duration = Duration::from_secs(60);

/// The clients' namespace: `pd0` at 10.77.0.2/24 (perfdhcp, as a relay) and a plain DHCP
/// client interface per MAC, `c1`, `c2`, ….
fn client_ns<'a>(lab: &'a Lab, macs: &[&str]) -> Netns<'a> {
    let c = Netns::new(lab, "cl");
    c.link("pd0", None);
    c.addr("pd0", "10.77.0.2/24");
    for (i, mac) in macs.iter().enumerate() {
        c.link(&format!("c{}", i + 1), Some(mac));
    }
    c
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// rackboot with DHCP on the lab subnet and `discovery` (the bootenv of a new node) as given,
/// not yet started. Boot scripts and node tokens from any address (the documented opt-out):
/// this file's curl acts for its nodes from rackboot's own address.
fn prepare(name: &str, discovery: &str) -> Server {
    Setup::new(name)
        .no_address()
        .lab_subnet(10, 250)
        .tokens_from_any_address()
        .file("bootenvs/discovery.toml", discovery)
        .prepare()
}

/// A new node's bootenv that boots its local disk.
const LOCAL: &str = "[arch.bios]\nlocal = \"exit\"\n";

/// `udhcpc` on `nic` asking for `want`; the address it was given, if any.
fn udhcpc(clients: &Netns, nic: &str, want: Option<&str>) -> Option<String> {
    let mut extra = vec!["-t", "4"];
    if let Some(ip) = want {
        extra.extend(["-r", ip]);
    }
    clients
        .udhcpc(nic, &extra)
        .ok()
        .map(|lease| lease["ip"].clone())
}

/// Every DHCPACK in a pcap: (yiaddr, chaddr).
fn acks(pcap: &Path) -> Vec<(Ipv4Addr, [u8; 6])> {
    let data = std::fs::read(pcap).expect("read pcap");
    assert!(data.len() >= 24, "empty capture");
    let le = data[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        if le {
            u32::from_le_bytes(b.try_into().unwrap())
        } else {
            u32::from_be_bytes(b.try_into().unwrap())
        }
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(&data[at + 8..at + 12]) as usize;
        let pkt = &data[at + 16..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        // Ethernet, IPv4, UDP from port 67.
        if pkt.len() < 14 + 20 + 8 + 240 || pkt[12..14] != [0x08, 0x00] || pkt[23] != 17 {
            continue;
        }
        let ip = &pkt[14..];
        let udp = &ip[(ip[0] & 0x0f) as usize * 4..];
        if udp.len() < 8 + 240 || u16::from_be_bytes([udp[0], udp[1]]) != 67 {
            continue;
        }
        let b = &udp[8..];
        if b[0] != 2 {
            continue;
        }
        let mut i = 240;
        let mut kind = 0;
        while i + 1 < b.len() && b[i] != 255 {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            let len = b[i + 1] as usize;
            if b[i] == 53 && len == 1 && i + 2 < b.len() {
                kind = b[i + 2];
            }
            i += 2 + len;
        }
        if kind == 5 {
            out.push((
                Ipv4Addr::new(b[16], b[17], b[18], b[19]),
                b[28..34].try_into().unwrap(),
            ));
        }
    }
    out
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn leases_survive_sigkill_during_a_perfdhcp_storm() {
    let rb = prepare("durable", LOCAL);
    let lab = &rb.lab;
    let clients = client_ns(lab, &["02:77:00:00:00:01", "02:77:00:00:00:02"]);
    let pcap = lab.dir().join("storm.pcap");
    lab.capture(&pcap);
    rb.serve();

    // A plain client's lease from before the crash.
    let before = udhcpc(&clients, "c1", None).expect("c1 gets a lease before the crash");

    // perfdhcp as a relay (giaddr 10.77.0.2), 200 clients, for 8 s.
    let storm = clients.spawn(
        "perfdhcp",
        &[
            "-4",
            "-l",
            "10.77.0.2",
            "-r",
            "200",
            "-R",
            "200",
            "-p",
            "8",
            &SERVER_IP.to_string(),
        ],
        "perfdhcp.log",
    );
    std::thread::sleep(Duration::from_secs(3));
    rb.kill();
    rb.serve();
    clients
        .wait_exit(storm, CMD)
        .expect("perfdhcp (Debian's kea-admin) ends");
    let report = read_text(&clients.file("perfdhcp.log"));
    rb.assert_running();

    // The client from before the crash gets its address back; another MAC does not.
    assert_eq!(
        udhcpc(&clients, "c1", Some(&before)).as_deref(),
        Some(before.as_str())
    );
    let other = udhcpc(&clients, "c2", Some(&before));
    assert_ne!(
        other.as_deref(),
        Some(before.as_str()),
        "{before} handed to a second MAC"
    );

    std::thread::sleep(Duration::from_millis(500)); // tcpdump writes with -U; let the last packets land
    let acks = acks(&pcap);
    assert!(
        acks.len() > 100,
        "too few ACKs ({}) — perfdhcp:\n{report}",
        acks.len()
    );
    let mut owner: HashMap<Ipv4Addr, [u8; 6]> = HashMap::new();
    for (ip, mac) in &acks {
        if let Some(prev) = owner.insert(*ip, *mac) {
            assert_eq!(
                prev,
                *mac,
                "{ip} acknowledged to {} and later to {}",
                mac_text(&prev),
                mac_text(mac)
            );
        }
    }

    let leases = rb.api_list("leases");
    let stored: HashMap<String, String> = leases
        .iter()
        .filter(|l| l["state"] == "bound")
        .map(|l| {
            (
                l["ip"].as_str().unwrap().to_string(),
                l["mac"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut macs = HashSet::new();
    for l in &leases {
        if let Some(m) = l["mac"].as_str() {
            assert!(macs.insert(m.to_string()), "{m} holds two leases");
        }
    }
    for (ip, mac) in &owner {
        assert_eq!(
            stored.get(&ip.to_string()),
            Some(&mac_text(mac)),
            "acknowledged lease {ip} -> {} missing from the store after the restart",
            mac_text(mac)
        );
    }
    eprintln!(
        "{} ACKs for {} addresses across a SIGKILL; all in the store",
        acks.len(),
        owner.len()
    );
}

/// The HTTP status of `GET /node/<mac>/scripts` with `token`.
fn with_token(rb: &Server, mac: &str, token: &str) -> u16 {
    let bearer = format!("Authorization: Bearer {token}");
    rb.http(&["-H", &bearer], &format!("/node/{mac}/scripts"))
        .status
}

/// The record of `mac` as `GET /api/v1/nodes` lists it (from memory: no commit is made).
fn listed(rb: &Server, mac: &str) -> Option<Value> {
    rb.api_list("nodes").into_iter().find(|n| n["mac"] == mac)
}

/// A new machine is ACKed and rackboot is killed at once, long before the store's next
/// commit: started again, rackboot still has the very record the ACK was for (the same
/// `created`, so the same token; a new record would lock the booted node out with 403s).
/// Likewise the token of a boot that started (its kernel fetched) is the node's after a crash.
#[test]
fn a_node_record_a_client_was_answered_for_survives_sigkill_with_its_token() {
    let mac = "02:77:00:00:01:01";
    let rb = prepare(
        "durnode",
        "[arch.bios]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
         cmdline = \"rackboot.token={{ node.token }}\"\n",
    );
    rb.write("assets/vmlinuz", "kernel");
    rb.write("assets/initrd.img", "initrd");
    let clients = client_ns(&rb.lab, &[mac]);
    rb.serve();
    let ip = udhcpc(&clients, "c1", None).expect("c1 is ACKed");
    let acked = listed(&rb, mac).expect("the ACKed node is listed");
    rb.kill();
    rb.serve();
    let after = listed(&rb, mac)
        .unwrap_or_else(|| panic!("the node record ACKed with {ip} is gone after SIGKILL"));
    assert_eq!(
        after["created"], acked["created"],
        "a new record, so a new token"
    );
    assert_eq!(after["hostname"], acked["hostname"]);

    let token = rb.boot(mac, "bios");
    assert_eq!(with_token(&rb, mac, &token), 200);
    rb.kill();
    rb.serve();
    assert_eq!(
        with_token(&rb, mac, &token),
        200,
        "the token of the boot that started is lost"
    );
    assert_eq!(
        udhcpc(&clients, "c1", Some(&ip)).as_deref(),
        Some(ip.as_str())
    );
}

/// A tmpfs of a few MiB mounted as the state directory `dir`; unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            dir.to_str().unwrap(),
        ]);
        SmallDisk { dir }
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while let Ok(n) = f.write(&block) {
            if n == 0 {
                break;
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// An admin's API call: (status, body).
fn curl(rb: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let r = rb.request(method, path, Some(ADMIN_TOKEN), body);
    (r.status, r.text())
}

/// With the state directory full, rackboot answers nothing it cannot make durable: the API
/// gives 503 for a new node, DHCP stays silent for a new machine, and `/metrics` shows the
/// failures. Killed while the disk is full and started once it has room, it has every record
/// the API answered 201 for and every lease it ACKed.
#[test]
fn a_full_state_directory_loses_nothing_rackboot_acknowledged() {
    let rb = prepare("durfull", LOCAL);
    let clients = client_ns(&rb.lab, &["02:77:00:00:02:01", "02:77:00:00:02:02"]);
    let disk = SmallDisk::mount(rb.path("state"));
    rb.serve();

    let node = |m: &str| format!("{{\"mac\": \"{m}\"}}");
    let (status, body) = curl(
        &rb,
        "POST",
        "/api/v1/nodes",
        Some(&node("02:77:00:00:0a:01")),
    );
    assert_eq!(status, 201, "{body}");
    let ip = udhcpc(&clients, "c1", None).expect("c1 is ACKed while there is room");

    disk.fill();
    // Reading a timeline commits everything first, which starts a new journal segment: until
    // then the old one's last page may still have room for a line or two (tmpfs allocates
    // pages), and a line that fits is as durable as any.
    let (status, body) = curl(&rb, "GET", "/api/v1/nodes/02:77:00:00:0a:01", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(
        &rb,
        "POST",
        "/api/v1/nodes",
        Some(&node("02:77:00:00:0a:02")),
    );
    assert_eq!(status, 503, "a node that cannot be saved: {body}");
    assert_eq!(
        udhcpc(&clients, "c2", None),
        None,
        "a new machine ACKed with the disk full"
    );
    assert!(rb.metric("rackboot_store_failed_journal_appends_total") >= 1.0);

    // Killed with the disk still full; started again once it has room.
    rb.kill();
    disk.free();
    rb.serve();
    assert!(
        listed(&rb, "02:77:00:00:0a:01").is_some(),
        "the node answered 201 is gone"
    );
    assert!(
        listed(&rb, "02:77:00:00:0a:02").is_none(),
        "the node answered 503 exists"
    );
    assert!(
        listed(&rb, "02:77:00:00:02:01").is_some(),
        "the ACKed node is gone"
    );
    assert_eq!(
        udhcpc(&clients, "c1", Some(&ip)).as_deref(),
        Some(ip.as_str())
    );
    assert_eq!(rb.metric("rackboot_store_unsaved_changes"), 0.0);
    drop(disk);
}
