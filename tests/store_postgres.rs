//! Two appliances (`rackboot serve`, each in its own lab) on one PostgreSQL database, started
//! by the test in a throwaway cluster: what one is told, the other knows within a second; one
//! runs the jobs that run once and the other takes over when it is killed; when the database
//! goes away both say so (`/healthz`, `/metrics`) and refuse changes, and when it comes back
//! they recover by themselves with nothing lost.
//!
//! Needs root (namespaces) and PostgreSQL's server binaries (setup.sh installs them). Every
//! wait is bounded; the appliances end by PID with their labs, the cluster when dropped.

mod common;

use std::time::{Duration, Instant};

use common::api::ADMIN_TOKEN;
use common::lab::poll_until;
use common::netns::Netns;
use common::server::Server;
use common::setup::Setup;
use rackboot::store::postgres::scratch::ScratchCluster;
use serde_json::Value;

/// An appliance called `name` on the database at `url`.
fn appliance(lab: &str, name: &str, url: &str) -> Server {
    Setup::new(lab)
        .standard_files()
        .table(
            "store",
            &format!("engine = \"postgres\"\nurl = \"{url}\"\nappliance = \"{name}\"\n"),
        )
        .start()
}

fn health(rb: &Server) -> (u16, Value) {
    let r = rb.request("GET", "/healthz", None, None);
    (r.status, r.json())
}

/// The node's record as the appliance lists it (from memory: a node's
/// timeline, which `/api/v1/nodes/{mac}` adds, is read from the database).
fn node_on(rb: &Server, mac: &str) -> Option<Value> {
    let r = rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()?
        .iter()
        .find(|n| n["mac"] == mac)
        .cloned()
}

#[test]
fn two_appliances_share_one_database_and_survive_losing_it_and_each_other() {
    let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
    pg.create_database("rackboot").expect("a database");
    let url = pg.url("rackboot");
    let a = appliance("pg-a", "row-a", &url);
    let b = appliance("pg-b", "row-b", &url);

    for rb in [&a, &b] {
        let (status, h) = health(rb);
        assert_eq!(status, 200, "{h}");
        assert_eq!(h["store"]["engine"], "postgres", "{h}");
        assert_eq!(h["store"]["reachable"], true, "{h}");
    }
    // Exactly one runs the jobs that run once.
    let leader = poll_until(Duration::from_secs(10), || {
        let leads = [&a, &b].map(|rb| health(rb).1["leads"] == true);
        match leads {
            [true, false] => Some('a'),
            [false, true] => Some('b'),
            _ => None,
        }
    })
    .expect("one appliance (and only one) leads");

    // Made through one, seen through the other.
    let mac = "52:54:00:7a:00:01";
    let r = a.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(&format!(r#"{{"mac": "{mac}", "hostname": "builder01"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let seen = poll_until(Duration::from_secs(1), || node_on(&b, mac));
    assert_eq!(
        seen.expect("b sees a's node within a second")["hostname"],
        "builder01"
    );

    // A reconfigure sent to b moves the node's config generation, which a sees.
    let r = b.request(
        "POST",
        "/api/v1/reconfigure",
        Some(ADMIN_TOKEN),
        Some(&format!(r#"{{"macs": ["{mac}"]}}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let moved = poll_until(Duration::from_secs(1), || {
        node_on(&a, mac).filter(|n| n["config_generation"] == 1)
    });
    assert!(
        moved.is_some(),
        "a did not see b's reconfigure within a second"
    );
    // One timeline, each event naming the appliance that recorded it.
    let named = poll_until(Duration::from_secs(5), || {
        let r = a.request(
            "GET",
            &format!("/api/v1/nodes/{mac}"),
            Some(ADMIN_TOKEN),
            None,
        );
        let events = r.json()["events"].as_array().cloned().unwrap_or_default();
        let by = |who: &str| events.iter().any(|e| e["appliance"] == who);
        (by("row-a") && by("row-b")).then_some(events)
    });
    assert!(
        named.is_some(),
        "the node's timeline names both appliances: {}",
        a.request(
            "GET",
            &format!("/api/v1/nodes/{mac}"),
            Some(ADMIN_TOKEN),
            None
        )
        .text()
    );

    // The database goes away: both say so and refuse changes; reads go on.
    pg.stop();
    for rb in [&a, &b] {
        let degraded = poll_until(Duration::from_secs(10), || {
            let (status, h) = health(rb);
            (status == 503).then_some(h)
        });
        let h = degraded.expect("/healthz says 503 while the database is away");
        assert_eq!(h["status"], "degraded", "{h}");
        let metrics = rb.request("GET", "/metrics", None, None).text();
        assert!(
            metrics.lines().any(|l| l == "rackboot_store_reachable 0"),
            "{metrics}"
        );
        assert!(node_on(rb, mac).is_some(), "reads go on from memory");
    }
    let r = b.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(r#"{"mac": "52:54:00:7a:00:02"}"#),
    );
    assert_eq!(r.status, 503, "{}", r.text());

    // It comes back: both recover by themselves, nothing lost.
    pg.restart().expect("the database starts again");
    for rb in [&a, &b] {
        let back = poll_until(Duration::from_secs(20), || {
            (health(rb).0 == 200).then_some(())
        });
        assert!(back.is_some(), "/healthz back to 200 once the database is");
        assert_eq!(node_on(rb, mac).expect("kept")["config_generation"], 1);
    }
    let r = b.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(r#"{"mac": "52:54:00:7a:00:02"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // The leader is killed: the other takes over the jobs.
    let (gone, other) = if leader == 'a' { (&a, &b) } else { (&b, &a) };
    gone.kill();
    let took = poll_until(Duration::from_secs(10), || {
        (health(other).1["leads"] == true).then_some(())
    });
    assert!(took.is_some(), "the survivor did not take the lead");
    assert!(node_on(other, "52:54:00:7a:00:02").is_some());
}

/// Sends one DHCP message from `iface` (broadcast, from 0.0.0.0:68) and prints, as JSON, the
/// replies to it within two seconds: message type, yiaddr and lease time (option 51).
const ASK: &str = r#"
import json, os, select, socket, struct, sys, time
iface, mac, kind, want = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3]), sys.argv[4]
xid = os.urandom(4)
p = bytes([1, 1, 6, 0]) + xid + bytes([0, 0, 0x80, 0]) + bytes(16) + mac + bytes(10 + 64 + 128)
p += bytes([99, 130, 83, 99, 53, 1, kind])
if want != "-":
    p += bytes([50, 4]) + socket.inet_aton(want)
p += bytes([255])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 68))
s.sendto(p, ("255.255.255.255", 67))
replies, end = [], time.time() + 2.0
while time.time() < end:
    if not select.select([s], [], [], 0.1)[0]:
        continue
    b, _ = s.recvfrom(2048)
    if len(b) < 240 or b[0] != 2 or b[4:8] != xid:
        continue
    o, i = {}, 240
    while i + 1 < len(b) and b[i] != 255:
        if b[i] == 0:
            i += 1
            continue
        o[b[i]] = b[i + 2 : i + 2 + b[i + 1]]
        i += 2 + b[i + 1]
    replies.append({"type": o.get(53, b"\0")[0], "yiaddr": socket.inet_ntoa(b[16:20]),
        "lease": struct.unpack("!I", o[51])[0] if 51 in o else None})
print(json.dumps(replies))
"#;

/// The replies to one DHCP message of `kind` (1 DISCOVER, 3 REQUEST) from `mac` on `iface`,
/// asking for `want`.
fn ask(clients: &Netns, iface: &str, mac: &str, kind: u8, want: Option<&str>) -> Vec<Value> {
    let kind = kind.to_string();
    let args = ["-c", ASK, iface, mac, &kind, want.unwrap_or("-")];
    let out = clients.run("python3", &args, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str::<Value>(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// While the database is away, what is committed stays usable and nothing new is promised: a
/// client renewing the lease it holds is ACKed for the same address until the expiry already
/// committed (never longer), and a new client is not offered an address, nor may another MAC
/// take the held one. Once the database is back, the new client is leased again.
#[test]
fn a_held_lease_is_renewed_while_the_database_is_away_and_nothing_new_is_leased() {
    let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
    pg.create_database("rackboot").expect("a database");
    let url = pg.url("rackboot");
    let rb = Setup::new("pg-renew")
        .standard_files()
        .lab_subnet(100, 200)
        .table(
            "store",
            &format!("engine = \"postgres\"\nurl = \"{url}\"\nappliance = \"row-a\"\n"),
        )
        .start();
    let (held, fresh) = ("52:54:00:7b:00:01", "52:54:00:7b:00:02");
    for mac in [held, fresh] {
        let r = rb.request(
            "POST",
            "/api/v1/nodes",
            Some(ADMIN_TOKEN),
            Some(&format!(r#"{{"mac": "{mac}"}}"#)),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let clients = Netns::clients(&rb.lab, &[held, fresh]);
    let ip = clients.udhcpc("c0", &["-t", "4"]).expect("c0 is leased")["ip"].clone();
    let leased_at = Instant::now();

    pg.stop();
    let down = poll_until(Duration::from_secs(10), || {
        (health(&rb).0 == 503).then_some(())
    });
    assert!(
        down.is_some(),
        "/healthz says 503 while the database is away"
    );

    // INIT-REBOOT: the client asks for the address it holds.
    let most = 3600 - leased_at.elapsed().as_secs();
    let replies = ask(&clients, "c0", held, 3, Some(&ip));
    let ack = replies
        .iter()
        .find(|r| r["type"] == 5)
        .unwrap_or_else(|| panic!("no ACK for the held lease: {replies:?}"));
    assert_eq!(ack["yiaddr"], ip.as_str());
    let lease = ack["lease"].as_u64().expect("a lease time");
    assert!(
        lease <= most && lease + 60 >= most,
        "ACKed for {lease} s; committed were at most {most} s"
    );

    // Nothing new: no offer to a new client, no ACK of the held address to another MAC.
    let replies = ask(&clients, "c1", fresh, 1, None);
    assert!(replies.is_empty(), "a new client was answered: {replies:?}");
    let replies = ask(&clients, "c1", fresh, 3, Some(&ip));
    assert!(
        replies.iter().all(|r| r["type"] != 5),
        "another MAC was ACKed the held address: {replies:?}"
    );

    pg.restart().expect("the database starts again");
    let back = poll_until(Duration::from_secs(20), || {
        (health(&rb).0 == 200).then_some(())
    });
    assert!(back.is_some(), "/healthz back to 200 once the database is");
    let other = clients.udhcpc("c1", &["-t", "4"]).expect("c1 is leased")["ip"].clone();
    assert_ne!(other, ip, "the held address went to another MAC");
}

/// Addresses of the storms' relayed subnet, served by both appliances alike (one database, one
/// pool: no address may go to two MACs whichever appliance answers).
const FLEET_CIDR: &str = "10.78.0.0/16";
const GIADDR: &str = "10.78.0.1";
const STORM_IP: &str = "10.77.0.2";
/// A storm of 500 nodes: ramp, every phase bounded.
const STORM_WITHIN: Duration = Duration::from_secs(240);

/// An appliance called `name` on `url` that a `rackboot storm` can boot nodes from: the relayed
/// fleet subnet, real-sized assets, and the documented load-test opt-outs (node credentials from
/// any address, no per-address limits), as in tests/storm.rs.
fn storm_appliance(lab: &str, name: &str, url: &str) -> Server {
    use common::setup::pseudo_random;
    Setup::new(lab)
        .standard_files()
        .file("assets/undionly.kpxe", pseudo_random(1, 48 << 10))
        .file("assets/ipxe-amd64.efi", pseudo_random(2, 48 << 10))
        .file("assets/ipxe-arm64.efi", pseudo_random(3, 48 << 10))
        .file("assets/x86_64/vmlinuz", pseudo_random(4, 128 << 10))
        .file("assets/arm64/Image", pseudo_random(6, 128 << 10))
        .lab_subnet(100, 199)
        .subnet(FLEET_CIDR, "ranges = [[\"10.78.0.10\", \"10.78.7.250\"]]")
        .tftp("max_transfers_per_address = 0")
        .tokens_from_any_address()
        .http("max_connections_per_address = 0")
        .table(
            "store",
            &format!("engine = \"postgres\"\nurl = \"{url}\"\nappliance = \"{name}\"\n"),
        )
        .start()
}

/// The namespace a storm runs in, relaying (giaddr [`GIADDR`]) to `rb`.
fn storm_ns(rb: &Server) -> Netns<'_> {
    let ns = Netns::new(&rb.lab, "st");
    ns.link("st0", None);
    ns.addr("st0", &format!("{STORM_IP}/24"));
    ns.addr("lo", &format!("{GIADDR}/32"));
    rb.lab.ip(&["route", "add", FLEET_CIDR, "via", STORM_IP]);
    ns
}

/// `rackboot storm` of 500 nodes drawn from `seed`, relayed to the appliance of `ns`; its JSON
/// report.
fn storm(ns: &Netns, seed: &str) -> Value {
    let json = ns.file(&format!("storm-{seed}.json"));
    let args = [
        "storm",
        "--relay",
        GIADDR,
        "--server",
        "10.77.0.1",
        "--nodes",
        "500",
        "--ramp",
        "50",
        "--seed",
        seed,
        "--timeout",
        "40s",
        "--dhcp-retry",
        "1s",
        "--quiet",
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    let out = ns.run(common::setup::RACKBOOT, &args, STORM_WITHIN);
    std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "storm {seed} wrote no report: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// How many of the nodes `rb` lists are `which`.
fn count_nodes(rb: &Server, which: impl Fn(&Value) -> bool) -> usize {
    rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None)
        .json()
        .as_array()
        .map_or(0, |ns| ns.iter().filter(|n| which(n)).count())
}

/// For each node a storm failed: b's leases of its MAC or of the address its failure names,
/// and b's log lines naming either.
fn what_b_knows(b: &Server, storm: &Value) -> String {
    let leases = b
        .request("GET", "/api/v1/leases", Some(ADMIN_TOKEN), None)
        .json();
    let log = b.log_text();
    let mut out = String::new();
    for f in storm["failures"].as_array().into_iter().flatten() {
        let reason = f["reason"].as_str().unwrap_or("");
        // "DHCPNAK from 10.77.0.1: 10.78.3.155 is not available ...": the address.
        let ip = reason.split(": ").nth(1).and_then(|r| r.split(' ').next());
        for node in f["nodes"].as_array().into_iter().flatten() {
            let mac = node["mac"].as_str().unwrap_or("?");
            out += &format!("{mac}: {reason}\n");
            for l in leases.as_array().into_iter().flatten() {
                if l["mac"] == mac || ip.is_some_and(|ip| l["ip"] == ip) {
                    out += &format!("  lease {l}\n");
                }
            }
            for line in log
                .lines()
                .filter(|l| l.contains(mac) || ip.is_some_and(|ip| l.contains(ip)))
            {
                out += &format!("  log {line}\n");
            }
        }
    }
    out
}

/// A fleet of 1000 booting through two appliances at once, 500 each, on one pool. One
/// appliance is killed with SIGKILL mid-storm; the other takes over the jobs that run once,
/// and the killed one's machines, booting again, boot through the survivor while the database
/// is stopped and started again. In the end every node is `configured` with its own address,
/// and nothing either appliance acknowledged is lost.
#[test]
fn a_thousand_nodes_boot_through_two_appliances_one_dies_and_the_database_restarts_mid_storm() {
    let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
    pg.create_database("rackboot").expect("a database");
    let url = pg.url("rackboot");
    let a = storm_appliance("pg-sa", "row-a", &url);
    let b = storm_appliance("pg-sb", "row-b", &url);
    let (sa, sb) = (storm_ns(&a), storm_ns(&b));

    let (first_a, first_b) = std::thread::scope(|s| {
        let on_a = s.spawn(|| storm(&sa, "11"));
        let on_b = s.spawn(|| storm(&sb, "22"));
        // Mid-storm: a's first nodes are through, many are not.
        let mid = poll_until(Duration::from_secs(60), || {
            let done = count_nodes(&a, |n| n["state"] == "configured");
            (done >= 50).then_some(done)
        });
        assert!(mid.is_some(), "a booted nothing:\n{}", a.log_text());
        a.kill();
        (
            on_a.join().expect("storm on a"),
            on_b.join().expect("storm on b"),
        )
    });
    assert_eq!(
        first_b["failed"], 0,
        "b's own storm failed while a died: {first_b:#}"
    );
    let cut = first_a["failed"].as_u64().unwrap_or(0);
    assert!(cut > 0, "a was killed after its storm ended: {first_a:#}");

    // b took over the jobs that run once.
    let took = poll_until(Duration::from_secs(10), || {
        (health(&b).1["leads"] == true).then_some(())
    });
    assert!(took.is_some(), "b did not take the lead");

    // a's machines boot again, now through b (what a relay with two servers gives them), and
    // the database stops and starts again while they do: DHCP clients and agents retry as
    // real ones do, and every one of them gets through.
    let again = std::thread::scope(|s| {
        // RFC 3339 in UTC with milliseconds, as the API shows times: ordered as text.
        let since = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let on_b = s.spawn(|| storm(&sb, "11"));
        // Mid-run: a fifth of them seen again.
        let seen = poll_until(Duration::from_secs(60), || {
            let n = count_nodes(&b, |n| {
                n["last_seen"].as_str().is_some_and(|t| t >= since.as_str())
            });
            (n >= 100).then_some(n)
        });
        assert!(seen.is_some(), "a's machines do not boot through b");
        pg.stop();
        std::thread::sleep(Duration::from_secs(3));
        pg.restart().expect("the database starts again");
        on_b.join().expect("storm on b")
    });
    assert_eq!(
        again["failed"],
        0,
        "a's machines through b, the database restarted meanwhile: {again:#}\n{}",
        what_b_knows(&b, &again)
    );

    let fleet: Vec<Value> = b
        .request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None)
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["mac"].as_str().is_some_and(|m| m.starts_with("02:")))
        .collect();
    assert_eq!(fleet.len(), 1000, "fleet records");
    let unfinished: Vec<String> = fleet
        .iter()
        .filter(|n| n["state"] != "configured")
        .map(|n| format!("{} {}", n["mac"], n["state"]))
        .collect();
    assert!(unfinished.is_empty(), "not configured: {unfinished:?}");
    // One address per node, none of them shared.
    let leases = b.request("GET", "/api/v1/leases", Some(ADMIN_TOKEN), None);
    assert_eq!(leases.status, 200, "{}", leases.text());
    let bound: Vec<(String, String)> = leases
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|l| {
            l["state"] == "bound" && l["mac"].as_str().is_some_and(|m| m.starts_with("02:"))
        })
        .map(|l| {
            (
                l["ip"].as_str().unwrap_or("").to_string(),
                l["mac"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let ips: std::collections::HashSet<&String> = bound.iter().map(|(ip, _)| ip).collect();
    let macs: std::collections::HashSet<&String> = bound.iter().map(|(_, mac)| mac).collect();
    assert_eq!(bound.len(), 1000, "bound leases of the fleet");
    assert_eq!(ips.len(), 1000, "an address bound to two MACs");
    assert_eq!(macs.len(), 1000, "a MAC with two addresses");
}
