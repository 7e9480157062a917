//! The attack on a shared boot network, step by step, against rackboot with its hardened
//! settings (`[dns] names = "none"`, `[nodes] default_hostname = "random"`, node credentials
//! bound to node addresses, the default): every step must fail, while the real node boots.
//!
//! ```text
//!  lab ns: br0 10.77.0.1/24 (rackboot: DHCP, HTTP, DNS)
//!    ├─ veth ─ node ns:     n0, the node's MAC, its address leased by rackboot (udhcpc)
//!    └─ veth ─ attacker ns: a0 10.77.0.66/24, another host on the same link
//! ```
//!
//! Every command is bounded; the namespaces are removed when the test ends, also when it fails,
//! and rackboot is ended by PID with the lab.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::api::{ADMIN_TOKEN, READ_TOKEN, api_section};
use common::lab::{BRIDGE, Lab, SERVER_IP, poll_until, read_text, tail};

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
const STARTUP: Duration = Duration::from_secs(30);
const CMD: Duration = Duration::from_secs(30);

const NODE_MAC: &str = "52:54:00:0c:00:01";
const ATTACKER_IP: &str = "10.77.0.66";
/// What the node's cloud-init user-data holds, from `secrets/builder-key`.
const SECRET: &str = "BUILDER-SSL-KEY-5d8e1f";
const CMDLINE: &str = "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }} ds=nocloud;s={{ nocloud_url }}";

/// A host on the lab's link: its own namespace `rb-<role>-<lab ns>` (so the lab's sweep removes
/// it after a killed test binary), with one veth into `br0`. Removed on drop.
struct Host<'a> {
    /// Borrowed so that the host goes before the lab.
    _lab: &'a Lab,
    ns: String,
}

impl<'a> Host<'a> {
    fn new(lab: &'a Lab, role: &str, iface: &str, mac: &str) -> Host<'a> {
        let ns = lab.ns().replacen("rb-", &format!("rb-{role}-"), 1);
        ip(&["netns", "add", &ns]);
        // From here on Drop removes the namespace, also when a later step panics.
        let host = Host { _lab: lab, ns };
        let port = format!("{iface}br");
        ip(&[
            "-n",
            lab.ns(),
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            iface,
            "netns",
            &host.ns,
        ]);
        ip(&["-n", lab.ns(), "link", "set", &port, "master", BRIDGE, "up"]);
        host.ip(&["link", "set", "lo", "up"]);
        host.ip(&["link", "set", iface, "address", mac, "up"]);
        host
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// `cmd args` in this host's namespace, bounded.
    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.ns.as_str(), cmd];
        all.extend_from_slice(args);
        run_bounded("ip", &all)
    }

    /// `curl` of `http://10.77.0.1<path>` from this host: status and body.
    fn http(&self, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
        let url = format!("http://{SERVER_IP}{path}");
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ];
        for h in headers {
            args.extend_from_slice(&["-H", h]);
        }
        args.push(&url);
        let out = self.run("curl", &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {method} {url}: no status: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (status, body.to_string())
    }
}

impl Drop for Host<'_> {
    fn drop(&mut self) {
        // Its processes were bounded runs, all ended by now.
        let _ = run_bounded("ip", &["netns", "del", &self.ns]);
    }
}

/// Runs `cmd args` on the host, killed (by its PID) if it outlives [`CMD`].
fn run_bounded(cmd: &str, args: &[&str]) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let deadline = Instant::now() + CMD;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ip(args: &[&str]) {
    let out = run_bounded("ip", args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// rackboot with DHCP on 10.77.0.0/24, HTTP and DNS, hardened; `installer` is an installer
/// bootenv, `rescue` another one; the cloud-init user-data holds a secret.
fn start_rackboot(lab: &Lab) -> u32 {
    let d = lab.dir().to_path_buf();
    for (path, bytes) in [
        ("assets/x86_64/vmlinuz", &b"x86_64 kernel"[..]),
        ("assets/x86_64/initrd.img", b"x86_64 initrd"),
        ("scripts/hello.sh", b"#!/bin/sh\necho hello\n"),
        (
            "cloud-init/user-data",
            b"#cloud-config\nwrite_files:\n  - path: /etc/builder.key\n    content: {{ secret('builder-key') }}\n",
        ),
        ("secrets/builder-key", SECRET.as_bytes()),
    ] {
        write(&d.join(path), bytes);
    }
    fs::set_permissions(
        d.join("secrets/builder-key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let arch = format!(
        "[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ninitrds = [\"x86_64/initrd.img\"]\ncmdline = \"{CMDLINE}\"\n"
    );
    write(
        &d.join("bootenvs/discovery.toml"),
        format!("scripts = [\"hello.sh\"]\n{arch}").as_bytes(),
    );
    write(&d.join("bootenvs/rescue.toml"), arch.as_bytes());
    write(
        &d.join("bootenvs/installer.toml"),
        format!("installer = true\n{arch}").as_bytes(),
    );
    fs::create_dir_all(d.join("state")).unwrap();
    let config = d.join("rackboot.toml");
    write(
        &config,
        format!(
            "state_dir = \"{p}/state\"\nassets_dir = \"{p}/assets\"\n\
             bootenvs_dir = \"{p}/bootenvs\"\nscripts_dir = \"{p}/scripts\"\n\
             cloud_init_dir = \"{p}/cloud-init\"\nsecrets_dir = \"{p}/secrets\"\n\
             [network]\ninterface = \"{BRIDGE}\"\naddress = \"{SERVER_IP}\"\n\
             [[dhcp.subnet]]\ncidr = \"10.77.0.0/24\"\nranges = [[\"10.77.0.100\", \"10.77.0.131\"]]\n\
             [tftp]\nenabled = false\n\
             [dns]\nnames = \"none\"\n\
             [nodes]\ndefault_hostname = \"random\"\n\
             {api}",
            p = d.display(),
            api = api_section(&d),
        )
        .as_bytes(),
    );
    let pid = lab.spawn(
        RACKBOOT,
        &["serve", "--config", config.to_str().unwrap()],
        "rackboot.log",
    );
    let log = lab.dir().join("rackboot.log");
    let up = poll_until(STARTUP, || {
        if read_text(&log).contains("rackboot serving") {
            Some(true)
        } else if !lab.is_running(pid) {
            Some(false)
        } else {
            None
        }
    });
    assert_eq!(
        up,
        Some(true),
        "rackboot did not start:\n{}",
        tail(&read_text(&log), 20)
    );
    pid
}

/// An API GET from the lab namespace with `token`: status and JSON (or Null).
fn api(lab: &Lab, token: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{SERVER_IP}/api/v1{path}");
    let auth = format!("Authorization: Bearer {token}");
    let out = lab.run(
        "curl",
        &["-sS", "-m", "10", "-H", &auth, "-w", "\n%{http_code}", &url],
        CMD,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn node(lab: &Lab) -> Value {
    let (status, n) = api(lab, ADMIN_TOKEN, &format!("/nodes/{NODE_MAC}"));
    assert_eq!(status, 200, "{n}");
    n
}

/// What must not move while the attacker acts: everything but last-seen.
fn fixed_part(n: &Value) -> Value {
    let mut n = n.clone();
    let o = n.as_object_mut().unwrap();
    o.remove("last_seen");
    o.remove("diagnosis");
    n
}

fn kinds(n: &Value) -> Vec<String> {
    n["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

fn metric(lab: &Lab, line_start: &str) -> f64 {
    let out = lab.run(
        "curl",
        &["-sS", "-m", "10", &format!("http://{SERVER_IP}/metrics")],
        CMD,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{text}"))
}

/// The `rackboot.token=` of an iPXE script.
fn token_in(script: &str) -> String {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .unwrap_or_else(|| panic!("no token in {script}"))
        .to_string()
}

/// The kernel URL's path (`/assets/...?mac=...`) of an iPXE script.
fn kernel_path(script: &str) -> String {
    let line = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {script}"));
    let url = line.split_whitespace().nth(3).unwrap();
    url.strip_prefix(&format!("http://{SERVER_IP}"))
        .unwrap()
        .to_string()
}

#[test]
fn an_attacker_on_the_boot_network_gets_nothing_while_the_node_boots() {
    let lab = Lab::new("attack");
    start_rackboot(&lab);
    let node_host = Host::new(&lab, "node", "n0", NODE_MAC);
    let attacker = Host::new(&lab, "atk", "a0", "52:54:00:0c:00:66");
    attacker.ip(&["addr", "add", &format!("{ATTACKER_IP}/24"), "dev", "a0"]);

    // The node's firmware-and-iPXE DHCP: a lease from rackboot, put on its interface.
    let script = lab.dir().join("udhcpc.sh");
    write(
        &script,
        b"#!/bin/sh\ncase \"$1\" in bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\"; echo \"$ip\" > \"$0.ip\" ;; esac\nexit 0\n",
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let out = node_host.run(
        "udhcpc",
        &[
            "-i",
            "n0",
            "-f",
            "-n",
            "-q",
            "-t",
            "5",
            "-T",
            "2",
            "-s",
            script.to_str().unwrap(),
            "-V",
            "PXEClient:Arch:00007:UNDI:003016",
            "-x",
            "0x5d:0007",
            "-x",
            "77:69505845",
        ],
    );
    let node_ip = read_text(&lab.dir().join("udhcpc.sh.ip"))
        .trim()
        .to_string();
    assert!(
        node_ip.starts_with("10.77.0.1"),
        "no lease for the node: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let n = node(&lab);
    let hostname = n["hostname"].as_str().unwrap().to_string();
    assert!(
        !hostname.contains("0c0001") && !hostname.contains("525400"),
        "the default hostname must not carry the MAC: {hostname}"
    );
    // Nor that of a record an admin creates without a hostname.
    let created = lab.run(
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "-H",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "-H",
            "Content-Type: application/json",
            "--data",
            "{\"mac\": \"52:54:00:0c:00:02\"}",
            &format!("http://{SERVER_IP}/api/v1/nodes"),
        ],
        CMD,
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap_or(Value::Null);
    let admin_named = created["hostname"].as_str().unwrap_or_default();
    assert!(
        admin_named.starts_with("node-") && !admin_named.contains("0c0002"),
        "{created}"
    );

    // 1. Enumerate: a PTR walk of the whole pool, and the MAC-derived name, find nothing.
    let walk: Vec<String> = (100..=131).map(|i| format!("-x 10.77.0.{i}")).collect();
    let batch = lab.dir().join("ptr-walk.txt");
    fs::write(&batch, walk.join("\n")).unwrap();
    let out = attacker.run(
        "dig",
        &[
            &format!("@{SERVER_IP}"),
            "+short",
            "+tries=1",
            "+time=2",
            "-f",
            batch.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "dig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        answers.trim().is_empty(),
        "a PTR walk found names: {answers}"
    );
    // Not for want of a server: it answers for the reverse zone, with "no such name".
    let out = attacker.run(
        "dig",
        &[
            &format!("@{SERVER_IP}"),
            "+tries=1",
            "+time=2",
            "-x",
            &node_ip,
        ],
    );
    let ptr = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        ptr.contains("status: NXDOMAIN") && ptr.contains(" aa"),
        "the node's PTR: {ptr}"
    );
    let out = attacker.run(
        "dig",
        &[
            &format!("@{SERVER_IP}"),
            "+tries=1",
            "+time=2",
            &format!("{hostname}.rack.internal"),
            "A",
        ],
    );
    let a = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        a.contains("status: NXDOMAIN"),
        "the node's name answers: {a}"
    );

    // An admin's once-only bootenv, which the attacker must not use up.
    let patch = lab.run(
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "-X",
            "PATCH",
            "-H",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "-H",
            "Content-Type: application/json",
            "--data",
            "{\"bootenv\": \"rescue\", \"once\": true}",
            "-w",
            "\n%{http_code}",
            &format!("http://{SERVER_IP}/api/v1/nodes/{NODE_MAC}"),
        ],
        CMD,
    );
    assert!(
        String::from_utf8_lossy(&patch.stdout).ends_with("200"),
        "{}",
        String::from_utf8_lossy(&patch.stdout)
    );
    let before = node(&lab);
    assert_eq!(before["next_bootenv"], "rescue", "{before}");
    let refused_before = metric(
        &lab,
        "rackboot_boot_refusals_total{reason=\"other_address\"}",
    );

    // 2. The node's boot script from the attacker's address: refused, nothing moves.
    let (status, body) = attacker.http("GET", &format!("/boot/{NODE_MAC}.ipxe"), &[]);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("rackboot.token"), "{body}");
    assert!(body.contains("not it"), "a reason: {body}");
    // Unknown MACs get no record either.
    let (status, body) = attacker.http("GET", "/boot/52:54:00:0c:99:99.ipxe?arch=bios", &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(api(&lab, ADMIN_TOKEN, "/nodes/52:54:00:0c:99:99").0, 404);
    // Asset fetches naming the node are served (assets are not secret) but are not its boot.
    let (status, _) = attacker.http(
        "GET",
        &format!("/assets/x86_64/vmlinuz?mac={NODE_MAC}"),
        &[],
    );
    assert_eq!(status, 200);
    let after = node(&lab);
    assert_eq!(
        fixed_part(&after),
        fixed_part(&before),
        "the attacker's requests changed the node"
    );
    assert_eq!(after["next_bootenv"], "rescue");
    assert!(
        metric(
            &lab,
            "rackboot_boot_refusals_total{reason=\"other_address\"}"
        ) > refused_before,
        "the refusal is counted"
    );

    // 3. The node fetches its script (nothing happens yet), then its kernel (its boot starts).
    let (status, ipxe) = node_host.http("GET", &format!("/boot/{NODE_MAC}.ipxe"), &[]);
    assert_eq!(status, 200, "{ipxe}");
    assert!(
        ipxe.contains("bootenv rescue"),
        "the once-only bootenv: {ipxe}"
    );
    let token = token_in(&ipxe);
    let fetched = node(&lab);
    assert_eq!(
        fixed_part(&fetched),
        fixed_part(&before),
        "a script fetch changed the node"
    );
    let (status, _) = node_host.http("GET", &kernel_path(&ipxe), &[]);
    assert_eq!(status, 200);
    let booting = node(&lab);
    assert_eq!(booting["state"], "booting", "{booting}");
    assert!(
        booting["next_bootenv"].is_null(),
        "once-only used by the real boot: {booting}"
    );
    let k = kinds(&booting);
    assert!(
        k.contains(&"http.script".to_string()) && k.contains(&"http.kernel".to_string()),
        "{k:?}"
    );

    // A read token's explain shows no live token.
    let (status, e) = api(
        &lab,
        READ_TOKEN,
        &format!("/explain/{NODE_MAC}?user_class=iPXE"),
    );
    assert_eq!(status, 200, "{e}");
    let shown = e["script"].as_str().unwrap_or_default();
    assert!(shown.contains("rackboot.token=<node-token>"), "{e}");
    assert!(!shown.contains(&token), "explain leaked the live token");
    assert_eq!(e["secrets"], serde_json::json!(["builder-key"]), "{e}");

    // 4. The stolen token from the attacker's address: refused everywhere, nothing moves.
    let bearer = format!("Authorization: Bearer {token}");
    for (method, path) in [
        ("GET", format!("/node/{NODE_MAC}/scripts")),
        ("GET", format!("/node/{NODE_MAC}/scripts/hello.sh")),
        ("GET", format!("/cloud-init/{NODE_MAC}/{token}/user-data")),
        ("POST", format!("/node/{NODE_MAC}/report?state=configured")),
        ("POST", format!("/node/{NODE_MAC}/installed")),
    ] {
        let (status, body) = attacker.http(method, &path, &[&bearer]);
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(!body.contains(SECRET), "{path} leaked the secret");
    }
    let still = node(&lab);
    assert_eq!(
        fixed_part(&still),
        fixed_part(&booting),
        "the stolen token changed the node"
    );

    // The node itself may not claim an install it is not running.
    let (status, body) = node_host.http("POST", &format!("/node/{NODE_MAC}/installed"), &[&bearer]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(node(&lab)["state"], "booting");

    // 5. The node's secret: once per boot; the second fetch is refused, on its timeline and in
    // /metrics.
    let user_data = format!("/cloud-init/{NODE_MAC}/{token}/user-data");
    let (status, body) = node_host.http("GET", &user_data, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(SECRET), "{body}");
    let (status, body) = node_host.http("GET", &user_data, &[]);
    assert_eq!(status, 410, "{body}");
    assert!(!body.contains(SECRET));
    let refusals = node(&lab);
    assert!(
        kinds(&refusals).contains(&"http.secret_refused".to_string()),
        "{refusals}"
    );
    assert_eq!(metric(&lab, "rackboot_secret_refusals_total"), 1.0);
    assert_eq!(refusals["secrets"], serde_json::json!(["builder-key"]));

    // 6. The next boot's token replaces this one: the old one dies even at the node's address.
    let (status, ipxe) = node_host.http("GET", &format!("/boot/{NODE_MAC}.ipxe"), &[]);
    assert_eq!(status, 200, "{ipxe}");
    let next = token_in(&ipxe);
    assert_ne!(next, token);
    let (status, _) = node_host.http("GET", &kernel_path(&ipxe), &[]);
    assert_eq!(status, 200);
    let (status, body) = node_host.http("GET", &format!("/node/{NODE_MAC}/scripts"), &[&bearer]);
    assert_eq!(status, 403, "the last boot's token: {body}");
    let (status, body) = node_host.http(
        "GET",
        &format!("/node/{NODE_MAC}/scripts"),
        &[&format!("Authorization: Bearer {next}")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello.sh\n", "{body}");
    // A new boot may fetch its secret again, once.
    let (status, body) = node_host.http(
        "GET",
        &format!("/cloud-init/{NODE_MAC}/{next}/user-data"),
        &[],
    );
    assert_eq!(status, 200, "{body}");
}
