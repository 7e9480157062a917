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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::{api_section, kinds, node, timeline_text};
use common::lab::{self, Firmware, Lab, SERVER_IP, Vm};
use serde_json::Value;

/// One VM alone boots in 20–40 s under TCG; with other VM tests on the two cores, up to ~3×.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);
/// dnsmasq's dynamic range (the last octets).
const DNSMASQ_RANGE: (u8, u8) = (100, 150);

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

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

/// The running server and where its files are.
struct Rackboot {
    pid: u32,
    log: PathBuf,
}

/// rackboot with the lab subnet in proxy mode (no ranges), the repository's bootenvs and
/// scripts and the assets of `boot-assets/dist`.
fn start_rackboot(lab: &Lab) -> Rackboot {
    start_rackboot_with(lab, "")
}

/// [`start_rackboot`] with `extra` appended to the config.
fn start_rackboot_with(lab: &Lab, extra: &str) -> Rackboot {
    let assets = lab::dist_file("undionly.kpxe")
        .parent()
        .expect("dist has a parent")
        .to_path_buf();
    let config = lab.dir().join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
assets_dir = "{assets}"
bootenvs_dir = "{bootenvs}"
scripts_dir = "{scripts}"
[network]
interface = "{bridge}"
[[dhcp.subnet]]
cidr = "10.77.0.0/24"
mode = "proxy"
[dns]
domain = "lab.internal"
{extra}{api}"#,
            state = lab.dir().join("state").display(),
            assets = assets.display(),
            bootenvs = repo("configs/bootenvs").display(),
            scripts = repo("configs/scripts").display(),
            bridge = lab::BRIDGE,
            api = api_section(lab.dir()),
        ),
    )
    .expect("write config");
    let log = lab.dir().join("rackboot.log");
    let pid = lab.spawn(
        env!("CARGO_BIN_EXE_rackboot"),
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        &log,
    );
    let up = lab::poll_until(Duration::from_secs(60), || {
        if lab::read_text(&log).contains("rackboot serving") {
            Some(true)
        } else if !lab.is_running(pid) {
            Some(false)
        } else {
            None
        }
    });
    assert!(
        up == Some(true),
        "rackboot did not start:\n{}",
        lab::tail(&lab::read_text(&log), 20)
    );
    Rackboot { pid, log }
}

/// The DHCP packets of the capture as tcpdump decodes them (`-vv`), one string per packet: its
/// IP line, then its UDP/BOOTP line, then the fields and options, indented.
fn dhcp_packets(lab: &Lab, pcap: &Path) -> Vec<String> {
    let out = lab.run(
        "tcpdump",
        &[
            "-n",
            "-vv",
            "-r",
            pcap.to_str().expect("utf-8 path"),
            "udp port 67 or udp port 68 or udp port 4011",
        ],
        Duration::from_secs(30),
    );
    let mut packets: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
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

/// Everything a failed boot needs to be diagnosed.
fn diagnosis(lab: &Lab, rb: &Rackboot, vm: &Vm, node: Option<&Value>) -> String {
    format!(
        "timeline:\n{}\n--- rackboot log (tail) ---\n{}\n--- dnsmasq log (tail) ---\n{}\n--- {} serial (tail) ---\n{}",
        node.map(timeline_text)
            .unwrap_or_else(|| "(no node record)".into()),
        lab::tail(&lab::read_text(&rb.log), 30),
        lab::tail(&lab::read_text(&lab.dir().join("dnsmasq.log")), 30),
        vm.name(),
        lab::tail(&vm.serial(), 40),
    )
}

fn in_dnsmasq_range(ip: &str) -> bool {
    ip.strip_prefix("10.77.0.")
        .and_then(|o| o.parse::<u8>().ok())
        .is_some_and(|o| (DNSMASQ_RANGE.0..=DNSMASQ_RANGE.1).contains(&o))
}

/// Boots one VM of `firmware` with dnsmasq handing out addresses and rackboot in proxy mode; the
/// node must reach `configured` with `loader` fetched by TFTP.
fn proxy_boots_to_configured(name: &str, firmware: Firmware, loader: &str) {
    let lab = Lab::new(name);
    // Router advertisements on the link: iPXE otherwise waits ~13 s for IPv6 autoconfiguration.
    lab.start_ipv6_ra();
    let pcap = lab.dir().join("boot.pcap");
    lab.capture(&pcap);
    let (_dnsmasq, dnsmasq_log) = start_dnsmasq(&lab);
    let rb = start_rackboot(&lab);
    let started = Instant::now();
    let vm = lab.vm(name, firmware).start();
    let mac = vm.mac().to_string();

    let mut last = None;
    let mut seen_states = Vec::new();
    let configured = lab::poll_until(BOOT_TIMEOUT, || {
        assert!(
            lab.is_running(rb.pid),
            "rackboot died\n{}",
            diagnosis(&lab, &rb, &vm, last.as_ref())
        );
        if let Some(status) = vm.exit_status() {
            panic!(
                "qemu exited ({status})\n{}",
                diagnosis(&lab, &rb, &vm, last.as_ref())
            );
        }
        let n = node(&lab, &mac)?;
        let state = n["state"].as_str().unwrap_or_default().to_string();
        if seen_states.last() != Some(&state) {
            eprintln!(
                "{name}: {state} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            seen_states.push(state.clone());
        }
        if state == "failed" {
            panic!(
                "node failed: {}\n{}",
                n["state_reason"],
                diagnosis(&lab, &rb, &vm, Some(&n))
            );
        }
        last = Some(n.clone());
        (state == "configured").then_some(n)
    });
    let Some(n) = configured else {
        panic!(
            "{name} not configured within {BOOT_TIMEOUT:?}\n{}",
            diagnosis(&lab, &rb, &vm, last.as_ref())
        );
    };
    eprintln!(
        "{name}: configured in {:.1} s ({} accel)\n{}",
        started.elapsed().as_secs_f64(),
        lab::x86_accel().join(" "),
        timeline_text(&n)
    );

    // Boot information from rackboot, step by step, in this order (others may sit in between).
    let events = kinds(&n);
    let want: [(&[&str], &str); 10] = [
        (&["dhcp.offer", "dhcp.ack"], loader),
        (&["tftp.sent"], loader),
        (&["dhcp.offer", "dhcp.ack"], ".ipxe (iPXE"),
        (&["http.script"], "bootenv discovery"),
        (&["http.kernel"], ""),
        (&["http.initrd"], ""),
        (&["report.booted"], ""),
        (&["config.pull"], "hello.sh"),
        (&["report.script"], "hello.sh exited 0"),
        (&["report.configured"], ""),
    ];
    let mut at = 0;
    for (kind, needle) in want {
        match events[at..]
            .iter()
            .position(|(k, d)| kind.contains(&k.as_str()) && d.contains(needle))
        {
            Some(i) => at += i + 1,
            None => panic!(
                "timeline lacks {kind:?} ({needle}) after step {at}\n{}",
                diagnosis(&lab, &rb, &vm, Some(&n))
            ),
        }
    }
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
        let packets = dhcp_packets(&lab, &pcap);
        let replies: Vec<_> = packets.iter().filter_map(|p| reply(p)).collect();
        (replies.iter().any(|r| r.0) && replies.iter().any(|r| r.1)).then_some(packets)
    })
    .unwrap_or_else(|| dhcp_packets(&lab, &pcap));
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
    let summary = lab.run(
        "tcpdump",
        &[
            "-n",
            "-r",
            pcap.to_str().unwrap(),
            "udp port 67 or udp port 68 or udp port 4011",
        ],
        Duration::from_secs(30),
    );
    eprintln!(
        "{name}: DHCP on the wire\n{}",
        String::from_utf8_lossy(&summary.stdout)
    );
    vm.wait_for_serial("rackboot-agent: configured", Duration::from_secs(10));
}

/// SeaBIOS with qemu's iPXE option ROM: that iPXE handles proxyDHCP itself; rackboot first
/// chainloads its own `undionly.kpxe` (the ROM lacks HTTPS), which then asks again.
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

/// Runs `cmd args…` to completion within 20 s (`timeout`), panicking with its output on failure.
fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {}: {text}", args.join(" "));
    text
}

/// A machine on the lab's bridge: namespace `rb-cl-<lab>-<pid>` (the lab's sweep removes it if
/// the test binary dies) with `c0`, a veth whose peer is enslaved to `br0`. Its processes are
/// killed by PID and the namespace deleted on drop, also when the test fails.
struct Client {
    ns: String,
    children: Vec<Child>,
}

impl Client {
    fn new(lab: &Lab, mac: &str) -> Client {
        let ns = lab.ns().replacen("rb-", "rb-cl-", 1);
        sh("ip", &["netns", "add", &ns]);
        let client = Client {
            ns,
            children: Vec::new(),
        };
        lab.ip(&[
            "link", "add", "c0br", "type", "veth", "peer", "name", "c0", "netns", &client.ns,
        ]);
        lab.ip(&["link", "set", "c0br", "master", lab::BRIDGE, "up"]);
        sh("ip", &["-n", &client.ns, "link", "set", "lo", "up"]);
        sh(
            "ip",
            &["-n", &client.ns, "link", "set", "c0", "address", mac, "up"],
        );
        client
    }

    /// Starts `cmd` in the namespace, output to `log`; killed on drop.
    fn spawn(&mut self, cmd: &str, args: &[&str], log: &Path) -> u32 {
        let out = std::fs::File::create(log).expect("create log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, cmd])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
        self.children.push(child);
        self.children.last().expect("just pushed").id()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(out) = Command::new("timeout")
            .args(["20", "ip", "netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("timeout")
            .args(["20", "ip", "netns", "del", &self.ns])
            .status();
    }
}

/// rackboot in proxy mode shares port 67 with dnsmasq on the same interface. Broadcasts reach
/// both; a renewal, unicast to dnsmasq's server identifier (also 10.77.0.1), must reach dnsmasq
/// and be answered, not be swallowed by rackboot's socket.
#[test]
fn unicast_renewals_reach_the_address_server_beside_rackboot_in_proxy_mode() {
    let lab = Lab::new("proxy-renew");
    let pcap = lab.dir().join("renew.pcap");
    lab.capture(&pcap);
    let (_dnsmasq, dnsmasq_log) = start_dnsmasq(&lab);
    let rb = start_rackboot(&lab);
    let mac = "52:54:00:77:10:01";
    let mut client = Client::new(&lab, mac);

    let script = lab.dir().join("udhcpc.sh");
    let record = lab.dir().join("udhcpc.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$1\" in bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\" ;; esac\n\
             echo \"$1 $ip $serverid\" >> '{}'\n",
            record.display()
        ),
    )
    .expect("write script");
    sh("chmod", &["+x", script.to_str().unwrap()]);
    let log = lab.dir().join("udhcpc.log");
    let pid = client.spawn(
        "udhcpc",
        &["-i", "c0", "-f", "-t", "5", "-T", "3", "-s"]
            .into_iter()
            .chain([script.to_str().unwrap()])
            .collect::<Vec<_>>(),
        &log,
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
                lab::tail(&lab::read_text(&rb.log), 20)
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

    sh("kill", &["-USR1", &pid.to_string()]);
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
        let out = lab.run(
            "tcpdump",
            &[
                "-n",
                "-r",
                pcap.to_str().unwrap(),
                "udp port 67 or udp port 68",
            ],
            Duration::from_secs(30),
        );
        let dump = String::from_utf8_lossy(&out.stdout).into_owned();
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
    assert!(lab.is_running(rb.pid), "rackboot exited");
}
