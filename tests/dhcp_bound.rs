//! What one host on the boot network can do to rackboot's DHCP, and what it cannot.
//!
//! - A flood of DISCOVERs from made-up MACs leaves node records only for the clients it was
//!   offered an address for, those are reaped once idle (`[lifecycle] reap_discovered_after`),
//!   and `/metrics` shows the flood (records made and reaped, DISCOVERs refused).
//! - The same host taking leases for made-up MACs gets the subnet's `unknown_share` of the pool
//!   and no more: a node with a fixed address still gets it, a node an admin added still gets a
//!   lease, from the reserve.
//! - Relayed packets come only from the subnet's `relays`; option 82 from a client heard
//!   directly is neither stored nor echoed; the broadcast and all-zero hardware addresses get
//!   nothing.
//!
//! The attacker is a Python script sending real packets from a second namespace on the lab's
//! bridge; the clients that must still be served are udhcpc. Needs root, busybox (udhcpc),
//! curl and python3. Every wait is bounded; the namespaces and their processes are removed by
//! PID on drop, also when a test fails.

mod common;

use std::time::Duration;

use common::api::ADMIN_TOKEN;
use common::lab::{self, Lab, SERVER_IP};
use common::netns::Netns;
use common::server::Server;
use common::setup::{LAB_CIDR, Setup, lab_range};
use serde_json::Value;

const CMD: Duration = Duration::from_secs(60);
/// The dynamic range: 20 addresses, `unknown_share = 50` of them for unknown clients.
const RANGE: (u8, u8) = (10, 29);
const UNKNOWN_CAP: usize = 10;

/// The namespace of the attacker and the clients: `pd0` at 10.77.0.2/24 (and `extra`
/// addresses) for the attacker, and `c1`, `c2`, … with these MACs for udhcpc.
fn client_ns<'a>(lab: &'a Lab, extra: &[&str], macs: &[&str]) -> Netns<'a> {
    let c = Netns::new(lab, "cl");
    c.link("pd0", None);
    for a in ["10.77.0.2/24"].iter().chain(extra) {
        c.addr("pd0", a);
    }
    for (i, mac) in macs.iter().enumerate() {
        c.link(&format!("c{}", i + 1), Some(mac));
    }
    c
}

/// udhcpc on `nic`; the address it was given, if any (4 tries, 2 s apart).
fn udhcpc(clients: &Netns, nic: &str) -> Option<String> {
    clients
        .udhcpc(nic, &["-t", "4"])
        .ok()
        .map(|lease| lease["ip"].clone())
}

/// Runs the Python attacker with `args`; its stdout, a line of JSON.
fn python(clients: &Netns, script: &str, args: &[&str]) -> Value {
    let mut all = vec!["-c", script];
    all.extend(args);
    let out = clients.run("python3", &all, CMD);
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A DHCP client flood: for `seconds`, DISCOVERs from random locally administered MACs
/// (02:42:…) broadcast on `iface`, about one a millisecond; with `dora`, each OFFER is
/// REQUESTed at once (a host taking leases). Prints the counts as JSON, and the MACs that
/// were offered or ACKed.
const FLOOD: &str = r#"
import json, os, select, socket, struct, sys, time
iface, seconds, dora = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "dora"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", 68))
s.setblocking(False)
def packet(mac, xid, kind, extra=b""):
    h = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
        bytes(4), bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
    return h + bytes([99, 130, 83, 99, 53, 1, kind]) + extra + bytes([255])
def options(b):
    out, i = {}, 240
    while i + 1 < len(b) and b[i] != 255:
        if b[i] == 0:
            i += 1
            continue
        out[b[i]] = b[i + 2:i + 2 + b[i + 1]]
        i += 2 + b[i + 1]
    return out
sent = offers = acks = 0
offered, acked = set(), set()
end = time.time() + seconds
while time.time() < end:
    mac = b"\x02\x42" + os.urandom(4)
    s.sendto(packet(mac, struct.unpack("!I", mac[2:])[0], 1), ("255.255.255.255", 67))
    sent += 1
    while select.select([s], [], [], 0.001)[0]:
        b, _ = s.recvfrom(2048)
        if len(b) < 240 or b[0] != 2:
            continue
        o = options(b)
        kind, mac = o.get(53, b"\0")[0], b[28:34]
        text = ":".join("%02x" % c for c in mac)
        if kind == 2:
            offers += 1
            offered.add(text)
            if dora:
                req = packet(mac, struct.unpack("!I", b[4:8])[0], 3,
                    bytes([50, 4]) + b[16:20] + bytes([54, 4]) + o[54])
                s.sendto(req, ("255.255.255.255", 67))
        elif kind == 5:
            acks += 1
            acked.add(text)
print(json.dumps({"sent": sent, "offers": offers, "acks": acks,
    "offered": sorted(offered), "acked": sorted(acked)}))
"#;

/// Sends packets (hex) from `src_ip`:`src_port` to `dst_ip`:67 (`broadcast` for
/// 255.255.255.255 on `iface`), then collects replies on port 68 for two seconds. Prints the
/// replies as JSON: each one's chaddr and option codes.
const SEND: &str = r#"
import json, select, socket, sys, time
iface, src_ip, src_port, dst = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
packets = sys.argv[5:]
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
out.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
out.bind((src_ip, src_port))
listen = out
if src_port != 68:
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    listen.bind(("0.0.0.0", 68))
for p in packets:
    out.sendto(bytes.fromhex(p), ("255.255.255.255" if dst == "broadcast" else dst, 67))
replies = []
end = time.time() + 2.0
while time.time() < end:
    if not select.select([listen], [], [], 0.1)[0]:
        continue
    b, _ = listen.recvfrom(2048)
    codes, i = [], 240
    while i + 1 < len(b) and b[i] != 255:
        if b[i] == 0:
            i += 1
            continue
        codes.append(b[i])
        i += 2 + b[i + 1]
    replies.append({"chaddr": ":".join("%02x" % c for c in b[28:34]), "options": codes})
print(json.dumps({"replies": replies}))
"#;

/// A DISCOVER from `mac` with `giaddr`, and option 82 (circuit id `circuit`) when given.
fn discover(mac: [u8; 6], giaddr: [u8; 4], circuit: Option<&str>) -> String {
    let mut p = vec![1, 1, 6, 0, mac[2], mac[3], mac[4], mac[5], 0, 0, 0x80, 0];
    p.extend([0; 12]); // ciaddr, yiaddr, siaddr
    p.extend(giaddr);
    p.extend(mac);
    p.extend([0; 10 + 64 + 128]);
    p.extend([99, 130, 83, 99, 53, 1, 1]);
    if let Some(c) = circuit {
        p.extend([82, c.len() as u8 + 2, 1, c.len() as u8]);
        p.extend(c.as_bytes());
    }
    p.push(255);
    p.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// rackboot with DHCP on the lab subnet (unknown clients get half of it) and idle discovered
/// records reaped after 2 s; more subnets may be added.
fn setup(name: &str) -> Setup {
    Setup::new(name)
        .no_address()
        .dhcp()
        .subnet(
            LAB_CIDR,
            &format!("{}\nunknown_share = 50", lab_range(RANGE.0, RANGE.1)),
        )
        .table("lifecycle", "reap_discovered_after = \"2s\"")
        .file("bootenvs/discovery.toml", "[arch.bios]\nlocal = \"exit\"\n")
}

/// An admin adds `mac` (with a fixed address, if given).
fn add_node(rb: &Server, mac: &str, ipv4: Option<&str>) {
    let body = match ipv4 {
        Some(ip) => format!(r#"{{"mac":"{mac}","ipv4":"{ip}"}}"#),
        None => format!(r#"{{"mac":"{mac}"}}"#),
    };
    let r = rb.request("POST", "/api/v1/nodes", Some(ADMIN_TOKEN), Some(&body));
    assert!(r.status / 100 == 2, "add {mac}: {} {}", r.status, r.text());
}

/// The value of the sample `name{labels}` (labels as written, e.g. `reason="bad_chaddr"`).
fn metric(rb: &Server, name: &str, labels: &str) -> f64 {
    if labels.is_empty() {
        rb.metric(name)
    } else {
        rb.metric(&format!("{name}{{{labels}}}"))
    }
}

/// How many DHCP packets were ignored for `reason` so far (0 before the first).
fn ignored(rb: &Server, reason: &str) -> f64 {
    rb.try_metric(&format!(
        "rackboot_dhcp_ignored_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Flood MACs start 02:42: (see FLOOD).
fn is_flood(mac: &str) -> bool {
    mac.starts_with("02:42:")
}

#[test]
fn a_discover_flood_leaves_records_only_for_offers_and_they_are_reaped() {
    let rb = setup("dhcpflood").start();
    let known = "02:77:00:00:00:01";
    let clients = client_ns(&rb.lab, &[], &[known]);
    add_node(&rb, known, None);

    // Three seconds of DISCOVERs from made-up MACs, never REQUESTed.
    let flood = python(&clients, FLOOD, &["pd0", "3", "discover"]);
    let (sent, offers) = (
        flood["sent"].as_u64().unwrap(),
        flood["offers"].as_u64().unwrap(),
    );
    let offered = strings(&flood["offered"]);
    eprintln!("flood: {sent} DISCOVERs, {offers} offers");
    assert!(sent >= 1000, "the flood sent only {sent} DISCOVERs");
    assert!(
        (1..=UNKNOWN_CAP).contains(&offered.len()),
        "{} MACs offered an address: unknown_share is {UNKNOWN_CAP} addresses",
        offered.len()
    );

    // Records exist for the MACs that were offered an address, and for no other.
    let records: Vec<String> = rb
        .api_list("nodes")
        .iter()
        .filter_map(|n| n["mac"].as_str().map(str::to_string))
        .filter(|m| is_flood(m))
        .collect();
    let mut sorted = records.clone();
    sorted.sort();
    assert_eq!(
        sorted, offered,
        "records of the flood = the MACs offered an address"
    );
    assert_eq!(
        metric(&rb, "rackboot_nodes_created_total", r#"by="dhcp""#),
        offered.len() as f64
    );
    let refused = metric(
        &rb,
        "rackboot_dhcp_ignored_total",
        r#"reason="unknown_limited""#,
    );
    assert!(
        refused >= (sent as f64) * 0.5,
        "only {refused} of {sent} DISCOVERs counted as refused"
    );

    // A node an admin added is served during and after the flood.
    assert!(
        udhcpc(&clients, "c1").is_some(),
        "the known node got no lease"
    );

    // Idle past reap_discovered_after (2 s) and a sweep (every 5 s): the flood's records go,
    // the admin's stays.
    let gone = lab::poll_until(Duration::from_secs(20), || {
        let left = rb
            .api_list("nodes")
            .iter()
            .filter(|n| n["mac"].as_str().is_some_and(is_flood))
            .count();
        (left == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "the flood's records were not reaped within 20 s"
    );
    assert_eq!(
        metric(&rb, "rackboot_nodes_reaped_total", ""),
        offered.len() as f64
    );
    assert!(
        rb.api_list("nodes").iter().any(|n| n["mac"] == known),
        "the admin's node was reaped"
    );
    rb.assert_running();
}

#[test]
fn a_host_taking_leases_for_made_up_macs_gets_its_share_and_known_nodes_get_theirs() {
    let (known, fixed, newcomer) = (
        "02:77:00:00:01:01",
        "02:77:00:00:01:02",
        "02:77:00:00:01:03",
    );
    let rb = setup("dhcpshare").start();
    let clients = client_ns(&rb.lab, &[], &[known, fixed, newcomer]);
    add_node(&rb, known, None);
    let fixed_ip = format!("10.77.0.{}", RANGE.1);
    add_node(&rb, fixed, Some(&fixed_ip));

    let flood = python(&clients, FLOOD, &["pd0", "3", "dora"]);
    let acked = strings(&flood["acked"]);
    eprintln!(
        "flood: {} DISCOVERs, {} offers, {} ACKs for {} MACs",
        flood["sent"],
        flood["offers"],
        flood["acks"],
        acked.len()
    );
    assert!(!acked.is_empty(), "the flood got no lease at all");
    let bound: Vec<Value> = rb
        .api_list("leases")
        .into_iter()
        .filter(|l| l["mac"].as_str().is_some_and(is_flood))
        .collect();
    assert!(
        bound.len() <= UNKNOWN_CAP,
        "made-up MACs hold {} addresses of {}: {bound:?}",
        bound.len(),
        RANGE.1 - RANGE.0 + 1
    );
    assert_eq!(
        metric(
            &rb,
            "rackboot_dhcp_pool_unknown",
            r#"subnet="10.77.0.0/24""#
        ),
        bound.len() as f64
    );

    // The pool's other half is the known nodes': the admin's node gets a lease, the node with a
    // fixed address gets that address.
    let ip = udhcpc(&clients, "c1").expect("the known node got no lease");
    eprintln!("known node: {ip}");
    assert_eq!(udhcpc(&clients, "c2").as_deref(), Some(fixed_ip.as_str()));
    // Another unknown client is refused while unknown clients hold their share.
    if bound.len() == UNKNOWN_CAP {
        assert_eq!(udhcpc(&clients, "c3"), None, "unknown_share exceeded");
    }
    rb.assert_running();
}

#[test]
fn relays_option_82_and_impossible_hardware_addresses() {
    let rb = setup("dhcptrust")
        .subnet(
            "10.78.0.0/24",
            "ranges = [[\"10.78.0.10\", \"10.78.0.99\"]]\nrelays = [\"10.77.0.3\"]",
        )
        .start();
    // 10.77.0.3 is the relay the rack subnet lists; 10.77.0.2 is any other host on the LAN.
    let clients = client_ns(&rb.lab, &["10.77.0.3/24"], &["02:77:00:00:02:01"]);
    let server = SERVER_IP.to_string();
    let giaddr = [10, 78, 0, 1];

    // A relayed DISCOVER from a host that is not the relay: dropped, nothing stored.
    let forged = [0x02, 0x77, 0, 0, 2, 0x10];
    python(
        &clients,
        SEND,
        &[
            "pd0",
            "10.77.0.2",
            "67",
            &server,
            &discover(forged, giaddr, Some("Gi1/0/1")),
        ],
    );
    // The same from the relay: answered (to the relay), the node made with its option 82.
    let relayed = [0x02, 0x77, 0, 0, 2, 0x11];
    python(
        &clients,
        SEND,
        &[
            "pd0",
            "10.77.0.3",
            "67",
            &server,
            &discover(relayed, giaddr, Some("Gi1/0/2")),
        ],
    );
    // Its relay gets the OFFER, not this namespace: wait for what the
    // server did with both (the forged one is counted when it is dropped).
    let untrusted = || ignored(&rb, "untrusted_relay");
    let find = |m: [u8; 6]| {
        rb.api_list("nodes")
            .into_iter()
            .find(|n| n["mac"] == mac_text(m))
    };
    let node = lab::poll_until(Duration::from_secs(10), || {
        find(relayed).filter(|_| untrusted() >= 1.0)
    })
    .expect("the listed relay's client has no node, or the forged relay was not counted");
    assert!(find(forged).is_none(), "a forged relay made a node");
    assert_eq!(node["relay_info"], "circuit-id=Gi1/0/2", "{node:#}");
    assert_eq!(untrusted(), 1.0);

    // Option 82 from a client heard directly: answered, not stored, not echoed.
    let direct = [0x02, 0x77, 0, 0, 2, 0x12];
    let out = python(
        &clients,
        SEND,
        &[
            "pd0",
            "0.0.0.0",
            "68",
            "broadcast",
            &discover(direct, [0; 4], Some("Gi9/9/9")),
        ],
    );
    let replies = out["replies"].as_array().unwrap();
    let reply = replies
        .iter()
        .find(|r| r["chaddr"] == mac_text(direct))
        .unwrap_or_else(|| panic!("no OFFER to the direct client: {out}"));
    assert!(
        !reply["options"]
            .as_array()
            .unwrap()
            .contains(&Value::from(82)),
        "option 82 echoed to a client heard directly: {reply}"
    );
    let node = rb
        .api_list("nodes")
        .into_iter()
        .find(|n| n["mac"] == mac_text(direct))
        .expect("the direct client has no node");
    assert!(node["relay_info"].is_null(), "{node:#}");

    // The broadcast and all-zero hardware addresses: no answer, no record, counted.
    let out = python(
        &clients,
        SEND,
        &[
            "pd0",
            "0.0.0.0",
            "68",
            "broadcast",
            &discover([0xff; 6], [0; 4], None),
            &discover([0; 6], [0; 4], None),
        ],
    );
    assert_eq!(out["replies"], Value::Array(vec![]), "{out}");
    let bad_chaddr = || ignored(&rb, "bad_chaddr");
    lab::poll_until(Duration::from_secs(10), || {
        (bad_chaddr() >= 2.0).then_some(())
    })
    .expect("the broadcast and all-zero hardware addresses were not counted");
    let nodes = rb.api_list("nodes");
    for m in [[0xff; 6], [0; 6]] {
        assert!(
            !nodes.iter().any(|n| n["mac"] == mac_text(m)),
            "{}",
            mac_text(m)
        );
    }
    assert_eq!(
        metric(&rb, "rackboot_dhcp_ignored_total", r#"reason="bad_chaddr""#),
        2.0
    );

    // And a real client is served all along.
    assert!(udhcpc(&clients, "c1").is_some(), "udhcpc got no lease");
    rb.assert_running();
}
