//! DHCP through a real relay agent: clients in a rack network reach rackboot only through
//! ISC `dhcrelay`, as racks behind a switch's `ip helper-address` do.
//!
//! ```text
//!  lab ns (rackboot, br0 10.77.0.1/24, route 10.78.0.0/24 via 10.77.0.2)
//!    └─ veth ─ relay ns: up0 10.77.0.2/24 ── dhcrelay -a -D ── rack78 (bridge) 10.78.0.1/24
//!                                                                  └─ veths ─ client ns: c0, c1…
//!    └─ veth ─ client ns: d0 (on br0 directly, for nodes that must exist first)
//! ```
//!
//! The relay adds option 82 (circuit id = the name of the interface the request came in on,
//! `rack78`) and, with `-D`, drops every reply that does not carry it back: a lease through it
//! proves rackboot echoes option 82 (RFC 3046 §2.2). The relay namespace forwards IP, so a
//! client renews by unicast straight to rackboot (RFC 2131 §4.4.5), as on a real routed network.
//!
//! Real firmware behind the relay too: VMs whose taps sit on a bridge in the lab namespace that
//! is wired to `rack78` (and nowhere else), so their every DHCP packet goes through `dhcrelay`.
//!
//! Needs root, `isc-dhcp-relay`, `isc-dhcp-client`, busybox `udhcpc`, `curl`, `tcpdump`, and for
//! the VM test the assets of `boot-assets/setup.sh`. Every wait is bounded; namespaces and
//! processes are removed by PID on drop, also when a test fails.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::lab::{
    Lab, SERVER_IP, output_text as text, poll_until, read_text, tail, wait_for_file,
};
use common::netns::{Netns, last_event, write_executable};
use common::server::Server;
use common::setup::{LAB_CIDR, Setup, lab_range};

/// Any one client command; a udhcpc run of at most 3 × 3 s tries fits well inside.
const CMD: Duration = Duration::from_secs(40);
/// How long a DHCP exchange that must succeed may take (dhclient retries with back-off).
const LEASE: Duration = Duration::from_secs(60);
/// Log lines and events appear within this.
const EVENT: Duration = Duration::from_secs(15);

/// The relay's address on the lab network (its upstream side) and on the rack network.
const RELAY_UP: &str = "10.77.0.2";
const RACK_NET: &str = "10.78.0.0/24";
const RACK_GW: &str = "10.78.0.1";
/// The rack subnet's dynamic range.
const RACK_RANGE: (u8, u8) = (100, 150);
/// The bridge the relay listens on downstream; also option 82's circuit id.
const RACK_IF: &str = "rack78";

// ---------------------------------------------------------------------------------------------
// rackboot

/// `rackboot serve` in a lab with a direct subnet 10.77.0.0/24 and the relayed rack subnet,
/// whose `unknown_clients` is `rack_unknown`. Nothing here boots: dummy loaders and a bootenv
/// are enough for rackboot to start.
fn start(name: &str, rack_unknown: &str) -> Server {
    start_with(name, rack_unknown, "", "")
}

/// [`start`] with more lines in the lab subnet and in the rack subnet.
fn start_with(name: &str, rack_unknown: &str, lab_lines: &str, rack_lines: &str) -> Server {
    Setup::new(name)
        .standard_files()
        .no_address()
        .tftp("")
        .dns("")
        .dhcp()
        .subnet(LAB_CIDR, &format!("{}\n{lab_lines}", lab_range(100, 199)))
        .subnet(
            RACK_NET,
            &format!(
                "ranges = [[\"10.78.0.{}\", \"10.78.0.{}\"]]\n\
                 router = \"{RACK_GW}\"\nunknown_clients = \"{rack_unknown}\"\n{rack_lines}",
                RACK_RANGE.0, RACK_RANGE.1
            ),
        )
        .start()
}

// ---------------------------------------------------------------------------------------------
// Namespaces: the relay and the clients

/// The wiring of the module docs. Field order is drop order: clients, then the relay; both
/// borrow rackboot's lab, which goes last.
struct RelayNet<'a> {
    clients: Netns<'a>,
    relay: Netns<'a>,
    relay_pid: u32,
}

impl<'a> RelayNet<'a> {
    /// `rack_cidr` is the relay's downstream address (its giaddr); `relayed` and `direct` are
    /// the MACs of client interfaces `c<i>` behind the relay and `d<i>` on `br0`.
    fn new(lab: &'a Lab, rack_cidr: &str, relayed: &[&str], direct: &[&str]) -> RelayNet<'a> {
        let relay = Netns::new(lab, "rl");
        let clients = Netns::new(lab, "cl");

        relay.link("up0", None);
        relay.addr("up0", &format!("{RELAY_UP}/24"));
        relay.ip(&["link", "add", RACK_IF, "type", "bridge"]);
        relay.addr(RACK_IF, rack_cidr);
        relay.ip(&["link", "set", RACK_IF, "up"]);
        // The relay is the rack's router too: renewals go by unicast through it.
        let out = relay.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"], CMD);
        assert!(out.status.success(), "sysctl: {}", text(&out));
        let rack_net = ipnet_of(rack_cidr);
        lab.ip(&["route", "add", &rack_net, "via", RELAY_UP]);

        for (i, mac) in relayed.iter().enumerate() {
            clients.link_on(&format!("c{i}"), Some(mac), relay.name(), RACK_IF);
        }
        for (i, mac) in direct.iter().enumerate() {
            clients.link(&format!("d{i}"), Some(mac));
        }

        // -d: foreground, logging to stderr. -a: add option 82 (circuit id = interface name).
        // -D: drop replies whose option 82 is missing or names another relay. -id/-iu:
        // clients downstream, the server upstream.
        let relay_pid = relay.spawn(
            "dhcrelay",
            &[
                "-4",
                "-d",
                "--no-pid",
                "-a",
                "-D",
                "-id",
                RACK_IF,
                "-iu",
                "up0",
                &SERVER_IP.to_string(),
            ],
            "dhcrelay.log",
        );
        let log = relay.file("dhcrelay.log");
        if let Err(e) = wait_for_file(&log, "Sending on", Duration::from_secs(15)) {
            panic!("dhcrelay did not start: {e}\n{}", read_text(&log));
        }
        RelayNet {
            clients,
            relay,
            relay_pid,
        }
    }

    /// A bridge `name` in the lab namespace whose only other port is wired to the relay's
    /// `rack78`: a VM put on it (`VmBuilder::bridge`) is a machine in the rack. rackboot's DHCP
    /// is bound to `br0`, so it hears such a VM only through the relay.
    fn rack_port_in_lab(&self, lab: &Lab, name: &str) {
        lab.ip(&["link", "add", name, "type", "bridge"]);
        lab.ip(&["link", "set", name, "up"]);
        lab.ip(&[
            "link",
            "add",
            "rkl",
            "type",
            "veth",
            "peer",
            "name",
            "rkr",
            "netns",
            self.relay.name(),
        ]);
        lab.ip(&["link", "set", "rkl", "master", name, "up"]);
        self.relay
            .ip(&["link", "set", "rkr", "master", RACK_IF, "up"]);
    }

    fn relay_log(&self) -> String {
        read_text(&self.relay.file("dhcrelay.log"))
    }

    fn assert_relay_running(&self) {
        assert!(
            self.relay.is_running(self.relay_pid),
            "dhcrelay exited:\n{}",
            self.relay_log()
        );
    }

    /// Runs `udhcpc -n -q` once on `iface` (3 tries, 3 s apart: the relay adds a hop) and
    /// returns what it told its script on `bound`, or its output if it got no lease.
    fn udhcpc_once(&self, iface: &str) -> Result<BTreeMap<String, String>, String> {
        self.clients.udhcpc(iface, &["-T", "3"])
    }
}

/// `10.78.0.1/24` → `10.78.0.0/24`.
fn ipnet_of(cidr: &str) -> String {
    let (addr, len) = cidr.split_once('/').expect("a CIDR");
    let len: u32 = len.parse().unwrap();
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(addr) & mask))
}

fn assert_in_rack_range(ip: &str) {
    let last: u8 = ip
        .strip_prefix("10.78.0.")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is not in {RACK_NET}"));
    assert!(
        (RACK_RANGE.0..=RACK_RANGE.1).contains(&last),
        "{ip} is outside the rack range"
    );
}

/// The option 82 text rackboot keeps for a client behind this relay.
fn rack_relay_info() -> String {
    format!("circuit-id={RACK_IF}")
}

/// Checks the node record and timeline of a client first seen through the relay.
fn assert_relayed_node(rb: &Server, mac: &str, ip: &str) {
    let node = rb.node(mac);
    assert_eq!(
        node["relay_info"].as_str(),
        Some(rack_relay_info().as_str()),
        "{node:#}"
    );
    let relay_events = rb.details(mac, "dhcp.relay");
    assert!(
        relay_events.iter().any(|d| d.contains(&rack_relay_info())),
        "no dhcp.relay event naming {}: {:#?}",
        rack_relay_info(),
        rb.events(mac)
    );
    assert!(
        rb.details(mac, "state")
            .iter()
            .any(|d| d.contains(RACK_NET) && d.contains(&format!("via relay {RACK_GW}"))),
        "the new node must say subnet and relay: {:#?}",
        rb.events(mac)
    );
    assert!(
        rb.details(mac, "dhcp.ack").iter().any(|d| d.contains(ip)),
        "{:#?}",
        rb.events(mac)
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

/// udhcpc and dhclient behind `dhcrelay -a -D` get addresses from the relayed subnet; the node
/// records where they are plugged in; udhcpc renews by unicast (no relay involved) and dhclient
/// reboots with its lease file through the relay, and both keep their addresses.
#[test]
fn relayed_clients_get_rack_addresses_and_keep_them() {
    let started = Instant::now();
    let (udhcpc_mac, dhclient_mac) = ("52:54:00:78:00:01", "52:54:00:78:00:02");
    let rb = start("relay-leases", "serve");
    let net = RelayNet::new(
        &rb.lab,
        &format!("{RACK_GW}/24"),
        &[udhcpc_mac, dhclient_mac],
        &[],
    );
    let pcap = rb.lab.dir().join("leases.pcap");
    let tcpdump = rb.lab.capture(&pcap);

    // udhcpc, staying in the foreground and configuring c0, so that it can renew.
    let (script, record) = net.clients.udhcpc_script("udhcpc", true);
    let pid = net.clients.spawn(
        "udhcpc",
        &["-i", "c0", "-f", "-t", "5", "-T", "3", "-s"]
            .into_iter()
            .chain([script.to_str().unwrap()])
            .collect::<Vec<_>>(),
        "udhcpc.log",
    );
    let bound = poll_until(LEASE, || last_event(&record, "bound")).unwrap_or_else(|| {
        panic!(
            "udhcpc got no lease through the relay:\n{}\n--- dhcrelay:\n{}\n--- rackboot:\n{}",
            read_text(&net.clients.file("udhcpc.log")),
            net.relay_log(),
            tail(&rb.log_text(), 20)
        )
    });
    let ip = bound["ip"].clone();
    assert_in_rack_range(&ip);
    assert_eq!(bound["router"], RACK_GW, "{bound:?}");
    assert_eq!(bound["subnet"], "255.255.255.0", "{bound:?}");
    assert_eq!(bound["serverid"], SERVER_IP.to_string(), "{bound:?}");
    assert_relayed_node(&rb, udhcpc_mac, &ip);
    eprintln!("udhcpc bound {ip} after {:.1?}", started.elapsed());

    // SIGUSR1: renew now. RENEWING is a REQUEST with ciaddr set, unicast to the server
    // identifier (RFC 2131 §4.4.5): it reaches rackboot routed, with no giaddr.
    let acks_before = rb.details(udhcpc_mac, "dhcp.ack").len();
    net.clients.signal(pid, "USR1");
    let renewed = poll_until(LEASE, || last_event(&record, "renew")).unwrap_or_else(|| {
        panic!(
            "no renewal:\n{}\n{}\n--- rackboot:\n{}",
            read_text(&record),
            read_text(&net.clients.file("udhcpc.log")),
            tail(&rb.log_text(), 20)
        )
    });
    assert_eq!(renewed["ip"], ip, "the renewal must keep the address");
    let acks = poll_until(EVENT, || {
        let acks = rb.details(udhcpc_mac, "dhcp.ack");
        (acks.len() > acks_before).then_some(acks)
    })
    .unwrap_or_else(|| panic!("no ACK for the renewal: {:#?}", rb.events(udhcpc_mac)));
    assert!(acks.iter().all(|d| d.contains(&ip)), "{acks:#?}");
    assert!(net.clients.is_running(pid), "udhcpc gave up after renewing");
    net.clients.stop(pid);
    // ISC dhcrelay relays the unicast renewal too (its packet filter sees every packet to port
    // 67 on rack78), so rackboot gets it twice; a switch's helper does not. The unicast copy
    // alone must be acknowledged, straight back to the client's address, not refused.
    let (request, ack) = (
        format!("{ip}.68 > {SERVER_IP}.67"),
        format!("{SERVER_IP}.67 > {ip}.68"),
    );
    let seen = poll_until(EVENT, || {
        let dump = rb
            .lab
            .read_capture(&pcap, &[], "udp port 67 or udp port 68");
        (dump.contains(&request) && dump.contains(&ack)).then_some(())
    });
    rb.lab.stop(tcpdump);
    assert!(
        seen.is_some(),
        "the unicast renewal and its unicast ACK must be on the wire:\n{}",
        rb.lab
            .read_capture(&pcap, &[], "udp port 67 or udp port 68")
    );
    assert!(
        rb.details(udhcpc_mac, "dhcp.nak").is_empty(),
        "a renewal from a relayed subnet must not be refused: {:#?}",
        rb.events(udhcpc_mac)
    );
    eprintln!("udhcpc renewed after {:.1?}", started.elapsed());

    // dhclient: one attempt in the foreground, then again with its lease file (INIT-REBOOT,
    // broadcast, so relayed again).
    let dscript = net.clients.file("dhclient.sh");
    let drecord = net.clients.file("dhclient.env");
    write_executable(
        &dscript,
        &format!(
            "#!/bin/sh\n\
             case \"$reason\" in\n\
               BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\" ;;\n\
             esac\n\
             echo \"reason=$reason new=$new_ip_address routers=$new_routers\" >> '{}'\n\
             exit 0\n",
            drecord.display()
        ),
    );
    let leases = net.clients.file("dhclient.leases");
    let dhclient = |run: &str, reason: &str| -> String {
        // A fresh PID file per run: dhclient kills whatever PID an old one names.
        let pid_file = net.clients.file(&format!("dhclient-{run}.pid"));
        let log = format!("dhclient-{run}.log");
        let pid = net.clients.spawn(
            "dhclient",
            &[
                "-v",
                "-1",
                "-d",
                "-lf",
                leases.to_str().unwrap(),
                "-pf",
                pid_file.to_str().unwrap(),
                "-sf",
                dscript.to_str().unwrap(),
                "c1",
            ],
            &log,
        );
        let line = poll_until(LEASE, || {
            read_text(&drecord)
                .lines()
                .find(|l| l.starts_with(&format!("reason={reason} ")))
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "dhclient {run}: no {reason}:\n{}\n{}\n--- dhcrelay:\n{}",
                read_text(&drecord),
                read_text(&net.clients.file(&log)),
                net.relay_log()
            )
        });
        net.clients.stop(pid);
        fs::write(&drecord, "").unwrap();
        assert!(line.contains(&format!("routers={RACK_GW}")), "{line}");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("new="))
            .unwrap_or_default()
            .to_string()
    };
    let first = dhclient("first", "BOUND");
    assert_in_rack_range(&first);
    assert_ne!(first, ip, "one address per node");
    assert_relayed_node(&rb, dhclient_mac, &first);
    let second = dhclient("second", "REBOOT");
    assert_eq!(second, first, "the address must be kept");
    eprintln!(
        "dhclient bound and rebooted after {:.1?}",
        started.elapsed()
    );

    net.assert_relay_running();
    rb.assert_running();
}

/// A relay whose own address is in no `[[dhcp.subnet]]` is not answered: rackboot logs why and
/// records no node. The relay did forward the requests (the capture shows them).
#[test]
fn relayed_request_from_an_unconfigured_network_gets_no_answer() {
    let mac = "52:54:00:79:00:01";
    let rb = start("relay-unknown-net", "serve");
    let net = RelayNet::new(&rb.lab, "10.79.0.1/24", &[mac], &[]);
    let pcap = rb.lab.dir().join("relay.pcap");
    let tcpdump = rb.lab.capture(&pcap);

    let err = net
        .udhcpc_once("c0")
        .expect_err("no lease for a network rackboot does not serve");
    assert!(err.contains("no lease"), "{err}");
    let line = rb.wait_log(&["ignoring relayed request", "relay=10.79.0.1"]);
    assert!(line.contains(mac), "{line}");
    assert!(
        rb.try_node(mac).is_none(),
        "no node for an unanswered client"
    );

    // The relay forwarded each DISCOVER (giaddr 10.79.0.1) and rackboot sent nothing back.
    let to_server = format!("{RELAY_UP}.67 > {SERVER_IP}.67");
    let forwarded = |dump: &str| dump.lines().filter(|l| l.contains(&to_server)).count();
    let seen = poll_until(EVENT, || {
        (forwarded(&rb.lab.read_capture(&pcap, &[], "udp port 67")) >= 3).then_some(())
    });
    rb.lab.stop(tcpdump);
    let dump = rb.lab.read_capture(&pcap, &[], "udp port 67");
    assert!(
        seen.is_some(),
        "the relay must have forwarded the 3 DISCOVERs:\n{dump}{}",
        net.relay_log()
    );
    let from_server = format!("{SERVER_IP}.67 >");
    assert!(
        !dump.contains(&from_server),
        "rackboot answered a relay it does not serve:\n{dump}"
    );
    net.assert_relay_running();
    rb.assert_running();
}

/// `unknown_clients = "ignore"` on the relayed subnet: a MAC rackboot has never seen gets no
/// answer there, while a MAC whose node exists (made by a direct DHCP exchange on the lab
/// subnet, which serves unknown clients) gets a rack address through the relay.
#[test]
fn relayed_subnet_ignoring_unknown_clients_serves_only_known_nodes() {
    let (known, unknown) = ("52:54:00:78:01:01", "52:54:00:78:01:02");
    // c0 = known behind the relay, c1 = unknown behind the relay, d0 = known on br0 directly.
    let rb = start("relay-ignore", "ignore");
    let net = RelayNet::new(
        &rb.lab,
        &format!("{RACK_GW}/24"),
        &[known, unknown],
        &[known],
    );

    let err = net
        .udhcpc_once("c1")
        .expect_err("an unknown MAC must not be served on an `ignore` subnet");
    assert!(err.contains("no lease"), "{err}");
    let line = rb.wait_log(&["ignoring unknown client", unknown]);
    assert!(line.contains(RACK_NET), "{line}");
    assert!(rb.try_node(unknown).is_none(), "no node for an ignored MAC");

    // The known MAC: also ignored until its node exists.
    net.udhcpc_once("c0").expect_err("the MAC has no node yet");
    assert!(rb.try_node(known).is_none());

    // A direct exchange on the lab subnet (unknown_clients = "serve") creates its node.
    let direct = net.udhcpc_once("d0").expect("a lab lease");
    assert!(direct["ip"].starts_with("10.77.0."), "{direct:?}");
    let node = rb.node(known);
    assert_eq!(node["state"], "discovered", "{node:#}");
    assert!(node["relay_info"].is_null(), "{node:#}");

    let lease = net
        .udhcpc_once("c0")
        .expect("a known node is served through the relay");
    assert_in_rack_range(&lease["ip"]);
    assert_eq!(lease["router"], RACK_GW);
    let node = rb.node(known);
    assert_eq!(
        node["relay_info"].as_str(),
        Some(rack_relay_info().as_str()),
        "{node:#}"
    );
    assert!(
        rb.details(known, "dhcp.relay")
            .iter()
            .any(|d| d.contains(&rack_relay_info())),
        "{:#?}",
        rb.events(known)
    );
    assert!(
        rb.try_node(unknown).is_none(),
        "still no node for {unknown}"
    );
    net.assert_relay_running();
    rb.assert_running();
}

/// What a PXE firmware's DHCP says of itself (vendor class, option 93 = x86 BIOS), for udhcpc.
const PXE: [&str; 4] = ["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"];

/// Gives the node of `mac` the slot's name, role and params, as an admin would.
fn assign(rb: &Server, mac: &str, hostname: &str) {
    patch_node(
        rb,
        mac,
        &format!(
            r#"{{"hostname": "{hostname}", "labels": {{"role": "builder"}}, "params": {{"disk": "/dev/vda"}}}}"#
        ),
    );
}

/// `new` has what `old` had (hostname, role, params) and says whom it replaced; `old` is left
/// bare, under its own default name, saying who replaced it.
fn assert_took_over(rb: &Server, old: &str, new: &str, hostname: &str, by: &str) {
    let n = rb.node(new);
    assert_eq!(n["hostname"], hostname, "{n:#}");
    assert_eq!(n["labels"]["role"], "builder", "{n:#}");
    assert_eq!(n["params"]["disk"], "/dev/vda", "{n:#}");
    let said = rb.details(new, "identity");
    assert!(
        said.iter()
            .any(|d| d.contains(&format!("replaces {old} (same {by}"))),
        "{:#?}",
        rb.events(new)
    );
    let o = rb.node(old);
    assert_ne!(o["hostname"], hostname, "{o:#}");
    assert_eq!(o["labels"], serde_json::json!({}), "{o:#}");
    assert_eq!(o["bootenv"], "local", "{o:#}");
    assert!(
        rb.details(old, "identity")
            .iter()
            .any(|d| d.contains(&format!("replaced by {new}"))),
        "{:#?}",
        rb.events(old)
    );
}

/// `identity = "port"` on the relayed subnet: a new MAC PXE-booting behind the same relay
/// circuit as a known node takes over its hostname, labels and params; a client that is no PXE
/// firmware (a BMC sharing the port) does not. `identity = "uuid"` on the lab subnet: a new NIC
/// with the same SMBIOS UUID (option 97) takes over the board's record.
#[test]
fn a_new_mac_in_a_known_place_takes_over_its_record() {
    let (old, new, bmc) = (
        "52:54:00:78:02:01",
        "52:54:00:78:02:02",
        "52:54:00:78:02:03",
    );
    let (board_old, board_new) = ("52:54:00:77:02:01", "52:54:00:77:02:02");
    let rb = start_with(
        "relay-identity",
        "serve",
        "identity = \"uuid\"",
        &format!("identity = \"port\"\nrelays = [\"{RELAY_UP}\"]"),
    );
    let net = RelayNet::new(
        &rb.lab,
        &format!("{RACK_GW}/24"),
        &[old, new, bmc],
        &[board_old, board_new],
    );

    // The machine in the slot: discovered, then named and given its role.
    net.clients.udhcpc("c0", &PXE).expect("a rack lease");
    assign(&rb, old, "b7");
    // Its replacement: same circuit, another MAC.
    let lease = net
        .clients
        .udhcpc("c1", &PXE)
        .expect("a rack lease for the replacement");
    assert_in_rack_range(&lease["ip"]);
    assert_eq!(
        lease["hostname"], "b7",
        "the DHCP answer names the slot: {lease:?}"
    );
    assert_took_over(&rb, old, new, "b7", &format!("port {}", rack_relay_info()));
    // A BMC on the same port asks with a MAC of its own and no PXE: a record of its own.
    net.clients.udhcpc("c2", &[]).expect("a lease for the BMC");
    let b = rb.node(bmc);
    assert_ne!(b["hostname"], "b7", "{b:#}");
    assert_eq!(rb.node(new)["hostname"], "b7");
    assert!(
        rb.details(bmc, "identity").is_empty(),
        "{:#?}",
        rb.events(bmc)
    );

    // The board: option 97 type 0, a 16-byte UUID.
    let uuid = ["-x", "0x61:00c0ffee00112233445566778899aabbcc"];
    let with_uuid: Vec<&str> = PXE.iter().chain(uuid.iter()).copied().collect();
    net.clients.udhcpc("d0", &with_uuid).expect("a lab lease");
    assert_eq!(
        rb.node(board_old)["uuid"],
        "c0ffee00-1122-3344-5566-778899aabbcc"
    );
    assign(&rb, board_old, "b8");
    let lease = net
        .clients
        .udhcpc("d1", &with_uuid)
        .expect("a lab lease for the new NIC");
    assert_eq!(lease["hostname"], "b8", "{lease:?}");
    assert_took_over(
        &rb,
        board_old,
        board_new,
        "b8",
        "uuid c0ffee00-1122-3344-5566-778899aabbcc",
    );
    net.assert_relay_running();
    rb.assert_running();
}

/// `PATCH /api/v1/nodes/<mac>` with `body`, as an admin.
fn patch_node(rb: &Server, mac: &str, body: &str) {
    let r = rb.request(
        "PATCH",
        &format!("/api/v1/nodes/{mac}"),
        Some(common::api::ADMIN_TOKEN),
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Real firmware in a rack with `identity = "port"`: a VM behind the relay boots to
/// `configured` and is given its slot's name and role; it is then replaced by a VM with another
/// MAC on the same relay circuit, which boots under the same name and role (and so runs the
/// builders' config script), its timeline naming the machine it replaced.
#[test]
fn a_replacement_vm_on_a_relayed_port_takes_over_its_slot() {
    use common::lab::Firmware;
    use common::vm_watch::{Watch, appliance, boot_network};
    const BOOT: Duration = Duration::from_secs(300);
    let (first, second) = ("52:54:00:78:03:01", "52:54:00:78:03:02");
    let rb = appliance("vm-port-identity")
        .repo_configs()
        .subnet(
            RACK_NET,
            &format!(
                "ranges = [[\"10.78.0.{}\", \"10.78.0.{}\"]]\nrouter = \"{RACK_GW}\"\n\
                 identity = \"port\"\nrelays = [\"{RELAY_UP}\"]",
                RACK_RANGE.0, RACK_RANGE.1
            ),
        )
        .prepare();
    boot_network(&rb.lab);
    rb.serve();
    let net = RelayNet::new(&rb.lab, &format!("{RACK_GW}/24"), &[], &[]);
    net.rack_port_in_lab(&rb.lab, "rackbr");

    let vm = rb
        .lab
        .vm("slot-first", Firmware::X86Bios)
        .mac(first)
        .bridge("rackbr")
        .start();
    let n = Watch::new(&rb, &vm)
        .also("dhcrelay", || net.relay_log())
        .configured(first, BOOT);
    assert_eq!(n["relay_info"], rack_relay_info(), "{n:#}");
    assert!(
        rb.details(first, "dhcp.ack")
            .iter()
            .any(|d| d.contains("10.78.0.")),
        "leased in the rack: {:#?}",
        rb.events(first)
    );
    assign(&rb, first, "b7");
    // The machine in the slot dies; another one, with its own NIC, is put in its place.
    drop(vm);
    let vm = rb
        .lab
        .vm("slot-second", Firmware::X86Bios)
        .mac(second)
        .bridge("rackbr")
        .start();
    let n = Watch::new(&rb, &vm)
        .also("dhcrelay", || net.relay_log())
        .configured(second, BOOT);
    assert_eq!(n["hostname"], "b7", "{n:#}");
    assert_eq!(n["labels"]["role"], "builder", "{n:#}");
    // The role has its effect: the repository's builder script is among what it ran.
    assert!(
        rb.details(second, "config.pull")
            .iter()
            .any(|d| d.contains("50-builder-tools.sh")),
        "{:#?}",
        rb.events(second)
    );
    assert!(
        rb.details(second, "identity")
            .iter()
            .any(|d| d.contains(&format!(
                "replaces {first} (same port {})",
                rack_relay_info()
            ))),
        "{:#?}",
        rb.events(second)
    );
    let old = rb.node(first);
    assert_ne!(old["hostname"], "b7", "{old:#}");
    assert_eq!(old["labels"], serde_json::json!({}), "{old:#}");
    net.assert_relay_running();
    rb.assert_running();
}
