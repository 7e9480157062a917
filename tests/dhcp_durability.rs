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

use common::api::{AUTH_HEADER, api_section};
use common::lab::{self, BRIDGE, Lab, SERVER_IP};
use serde_json::Value;

const CMD: Duration = Duration::from_secs(30);

/// A namespace for the clients, joined to the lab's bridge by a veth; removed on drop.
struct Clients {
    ns: String,
}

impl Clients {
    fn new(lab: &Lab, name: &str) -> Clients {
        let ns = format!("rb-{name}-{}", std::process::id());
        let c = Clients { ns };
        run(&["ip", "netns", "add", &c.ns]);
        let (outer, inner) = ("pdbr0", "pd0");
        run(&[
            "ip",
            "-n",
            lab.ns(),
            "link",
            "add",
            outer,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            &c.ns,
        ]);
        run(&[
            "ip",
            "-n",
            lab.ns(),
            "link",
            "set",
            outer,
            "master",
            BRIDGE,
            "up",
        ]);
        run(&["ip", "-n", &c.ns, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &c.ns,
            "addr",
            "add",
            "10.77.0.2/24",
            "dev",
            inner,
        ]);
        run(&["ip", "-n", &c.ns, "link", "set", inner, "up"]);
        c
    }

    /// A second interface for a plain DHCP client with its own MAC.
    fn add_client_nic(&self, lab: &Lab, name: &str, mac: &str) {
        let outer = format!("{name}br");
        run(&[
            "ip",
            "-n",
            lab.ns(),
            "link",
            "add",
            &outer,
            "type",
            "veth",
            "peer",
            "name",
            name,
            "netns",
            &self.ns,
        ]);
        run(&[
            "ip",
            "-n",
            lab.ns(),
            "link",
            "set",
            &outer,
            "master",
            BRIDGE,
            "up",
        ]);
        run(&["ip", "-n", &self.ns, "link", "set", name, "address", mac]);
        run(&["ip", "-n", &self.ns, "link", "set", name, "up"]);
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["60", "ip", "netns", "exec", &self.ns, program])
            .args(args);
        c
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // Ends every process still in the namespace (perfdhcp, udhcpc), by PID.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
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

fn write_config(lab: &Lab) -> PathBuf {
    write_config_with(lab, "[arch.bios]\nlocal = \"exit\"\n")
}

/// The config, with `discovery` (the bootenv of a new node) as given. Boot scripts and node
/// tokens from any address (the documented opt-out): this file's curl acts for its nodes from
/// rackboot's own address.
fn write_config_with(lab: &Lab, discovery: &str) -> PathBuf {
    let dir = lab.dir();
    for d in ["assets", "bootenvs", "scripts"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("bootenvs/discovery.toml"), discovery).unwrap();
    let config = dir.join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\nassets_dir = \"{d}/assets\"\nbootenvs_dir = \"{d}/bootenvs\"\n\
             scripts_dir = \"{d}/scripts\"\n[network]\ninterface = \"{BRIDGE}\"\n\
             [[dhcp.subnet]]\ncidr = \"10.77.0.0/24\"\nranges = [[\"10.77.0.10\", \"10.77.0.250\"]]\n\
             [tftp]\nenabled = false\n[dns]\nenabled = false\n\
             [http]\nbind_tokens_to_address = false\n{api}",
            d = dir.display(),
            api = api_section(dir),
        ),
    )
    .unwrap();
    config
}

fn start(lab: &Lab, config: &Path, log: &str) -> u32 {
    let pid = lab.spawn(
        env!("CARGO_BIN_EXE_rackboot"),
        &["serve", "--config", config.to_str().unwrap()],
        log,
    );
    lab::wait_for_file(&lab.dir().join(log), "rackboot serving", CMD).unwrap_or_else(|e| {
        panic!(
            "rackboot did not start: {e}\n{}",
            lab::read_text(&lab.dir().join(log))
        )
    });
    pid
}

/// `udhcpc` on `nic` asking for `want`; the address it was given, if any.
fn udhcpc(clients: &Clients, nic: &str, want: Option<&str>) -> Option<String> {
    let mut args = vec![
        "-i",
        nic,
        "-n",
        "-q",
        "-f",
        "-t",
        "4",
        "-T",
        "2",
        "-s",
        "/bin/true",
    ];
    if let Some(ip) = want {
        args.extend(["-r", ip]);
    }
    let out = clients.cmd("udhcpc", &args).output().expect("udhcpc");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        l.strip_prefix("udhcpc: lease of ")?
            .split_whitespace()
            .next()
            .map(str::to_string)
    })
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
    let lab = Lab::new("durable");
    let clients = Clients::new(&lab, "durable-cl");
    clients.add_client_nic(&lab, "c1", "02:77:00:00:00:01");
    clients.add_client_nic(&lab, "c2", "02:77:00:00:00:02");
    let pcap = lab.dir().join("storm.pcap");
    lab.capture(&pcap);
    let config = write_config(&lab);
    let first = start(&lab, &config, "rackboot-1.log");

    // A plain client's lease from before the crash.
    let before = udhcpc(&clients, "c1", None).expect("c1 gets a lease before the crash");

    // perfdhcp as a relay (giaddr 10.77.0.2), 200 clients, for 8 s.
    let storm = clients
        .cmd(
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
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("perfdhcp (Debian's kea-admin)");
    std::thread::sleep(Duration::from_secs(3));
    run(&["kill", "-9", &first.to_string()]);
    assert!(
        lab::poll_until(CMD, || (!lab.is_running(first)).then_some(())).is_some(),
        "rackboot survived SIGKILL"
    );
    let second = start(&lab, &config, "rackboot-2.log");
    let out = storm.wait_with_output().expect("perfdhcp");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(lab.is_running(second));

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

    let leases = api_list(&lab, "leases");
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

/// The node token of a boot of `mac`: its boot script and then its kernel fetched like iPXE
/// would (the kernel fetch starts the boot, and the script's token becomes the node's).
fn token_of_a_boot(lab: &Lab, mac: &str) -> String {
    let out = lab.run(
        "curl",
        &[
            "-sf",
            "-m",
            "5",
            &format!("http://{SERVER_IP}/boot/{mac}.ipxe?arch=bios"),
        ],
        CMD,
    );
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "GET /boot/{mac}.ipxe failed: {script}"
    );
    let token = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .unwrap_or_else(|| panic!("no token in the boot script:\n{script}"))
        .to_string();
    let kernel = lab.run(
        "curl",
        &[
            "-sf",
            "-m",
            "5",
            "-o",
            "/dev/null",
            &format!("http://{SERVER_IP}/assets/vmlinuz?mac={mac}"),
        ],
        CMD,
    );
    assert!(kernel.status.success(), "GET the kernel of {mac} failed");
    token
}

/// The HTTP status of `GET /node/<mac>/scripts` with `token`.
fn with_token(lab: &Lab, mac: &str, token: &str) -> String {
    let out = lab.run(
        "curl",
        &[
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://{SERVER_IP}/node/{mac}/scripts"),
        ],
        CMD,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The record of `mac` as `GET /api/v1/nodes` lists it (from memory: no commit is made).
fn listed(lab: &Lab, mac: &str) -> Option<Value> {
    api_list(lab, "nodes").into_iter().find(|n| n["mac"] == mac)
}

/// `GET /api/v1/<what>` with the admin token: the array it answers.
fn api_list(lab: &Lab, what: &str) -> Vec<Value> {
    let out = lab.run(
        "curl",
        &[
            "-sf",
            "-m",
            "5",
            "-H",
            AUTH_HEADER,
            &format!("http://{SERVER_IP}/api/v1/{what}"),
        ],
        CMD,
    );
    assert!(out.status.success(), "GET /api/v1/{what} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} JSON: {e}"))
}

/// Kills rackboot with SIGKILL and starts it again on the same state directory.
fn crash_and_restart(lab: &Lab, config: &Path, pid: u32, log: &str) -> u32 {
    run(&["kill", "-9", &pid.to_string()]);
    assert!(
        lab::poll_until(CMD, || (!lab.is_running(pid)).then_some(())).is_some(),
        "rackboot survived SIGKILL"
    );
    start(lab, config, log)
}

/// A new machine is ACKed and rackboot is killed at once, long before the store's next
/// commit: started again, rackboot still has the very record the ACK was for (the same
/// `created`, so the same token; a new record would lock the booted node out with 403s).
/// Likewise the token of a boot that started (its kernel fetched) is the node's after a crash.
#[test]
fn a_node_record_a_client_was_answered_for_survives_sigkill_with_its_token() {
    let lab = Lab::new("durnode");
    let clients = Clients::new(&lab, "durnode-cl");
    let mac = "02:77:00:00:01:01";
    clients.add_client_nic(&lab, "c1", mac);
    let config = write_config_with(
        &lab,
        "[arch.bios]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
         cmdline = \"rackboot.token={{ node.token }}\"\n",
    );
    for (file, bytes) in [
        ("assets/vmlinuz", "kernel"),
        ("assets/initrd.img", "initrd"),
    ] {
        std::fs::write(lab.dir().join(file), bytes).unwrap();
    }
    let first = start(&lab, &config, "rackboot-1.log");
    let ip = udhcpc(&clients, "c1", None).expect("c1 is ACKed");
    let acked = listed(&lab, mac).expect("the ACKed node is listed");
    let second = crash_and_restart(&lab, &config, first, "rackboot-2.log");
    let after = listed(&lab, mac)
        .unwrap_or_else(|| panic!("the node record ACKed with {ip} is gone after SIGKILL"));
    assert_eq!(
        after["created"], acked["created"],
        "a new record, so a new token"
    );
    assert_eq!(after["hostname"], acked["hostname"]);

    let token = token_of_a_boot(&lab, mac);
    assert_eq!(with_token(&lab, mac, &token), "200");
    let _third = crash_and_restart(&lab, &config, second, "rackboot-3.log");
    assert_eq!(
        with_token(&lab, mac, &token),
        "200",
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

/// `curl` from the lab: (status, body).
fn curl(lab: &Lab, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("http://{SERVER_IP}{path}");
    let mut args = vec![
        "-s",
        "-m",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "-H",
        AUTH_HEADER,
    ];
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "-d", b]);
    }
    args.push(&url);
    let out = lab.run("curl", &args, CMD);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of an unlabelled series in `/metrics`.
fn metric(lab: &Lab, name: &str) -> f64 {
    let (status, text) = curl(lab, "GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// With the state directory full, rackboot answers nothing it cannot make durable: the API
/// gives 503 for a new node, DHCP stays silent for a new machine, and `/metrics` shows the
/// failures. Killed while the disk is full and started once it has room, it has every record
/// the API answered 201 for and every lease it ACKed.
#[test]
fn a_full_state_directory_loses_nothing_rackboot_acknowledged() {
    let lab = Lab::new("durfull");
    let clients = Clients::new(&lab, "durfull-cl");
    clients.add_client_nic(&lab, "c1", "02:77:00:00:02:01");
    clients.add_client_nic(&lab, "c2", "02:77:00:00:02:02");
    let disk = SmallDisk::mount(lab.dir().join("state"));
    let config = write_config(&lab);
    let first = start(&lab, &config, "rackboot-1.log");

    let node = |m: &str| format!("{{\"mac\": \"{m}\"}}");
    let (status, body) = curl(
        &lab,
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
    let (status, body) = curl(&lab, "GET", "/api/v1/nodes/02:77:00:00:0a:01", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(
        &lab,
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
    assert!(metric(&lab, "rackboot_store_failed_journal_appends_total") >= 1.0);

    // Killed with the disk still full; started again once it has room.
    run(&["kill", "-9", &first.to_string()]);
    assert!(
        lab::poll_until(CMD, || (!lab.is_running(first)).then_some(())).is_some(),
        "rackboot survived SIGKILL"
    );
    disk.free();
    let _second = start(&lab, &config, "rackboot-2.log");
    assert!(
        listed(&lab, "02:77:00:00:0a:01").is_some(),
        "the node answered 201 is gone"
    );
    assert!(
        listed(&lab, "02:77:00:00:0a:02").is_none(),
        "the node answered 503 exists"
    );
    assert!(
        listed(&lab, "02:77:00:00:02:01").is_some(),
        "the ACKed node is gone"
    );
    assert_eq!(
        udhcpc(&clients, "c1", Some(&ip)).as_deref(),
        Some(ip.as_str())
    );
    assert_eq!(metric(&lab, "rackboot_store_unsaved_changes"), 0.0);
    drop(disk);
}
