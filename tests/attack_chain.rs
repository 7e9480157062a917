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
use std::time::Duration;

use serde_json::Value;

use common::api::{ADMIN_TOKEN, READ_TOKEN};
use common::lab::{Lab, SERVER_IP};
use common::netns::Netns;
use common::server::{Server, kernel_path, token_in};
use common::setup::Setup;

const CMD: Duration = Duration::from_secs(30);

const NODE_MAC: &str = "52:54:00:0c:00:01";
const ATTACKER_IP: &str = "10.77.0.66";
/// What the node's cloud-init user-data holds, from `secrets/builder-key`.
const SECRET: &str = "BUILDER-SSL-KEY-5d8e1f";
const CMDLINE: &str = "console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }} ds=nocloud;s={{ nocloud_url }}";

/// A host on the lab's link: namespace `role` with one interface `iface` (MAC `mac`) on `br0`.
fn host<'a>(lab: &'a Lab, role: &str, iface: &str, mac: &str) -> Netns<'a> {
    let host = Netns::new(lab, role);
    host.link(iface, Some(mac));
    host
}

/// `curl` of `http://10.77.0.1<path>` from `host`: status and body.
fn http(host: &Netns, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
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
    let out = host.run("curl", &args, CMD);
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

/// rackboot with DHCP on 10.77.0.0/24, HTTP and DNS, hardened; `installer` is an installer
/// bootenv, `rescue` another one; the cloud-init user-data holds a secret.
fn start(name: &str) -> Server {
    let arch = format!(
        "[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ninitrds = [\"x86_64/initrd.img\"]\ncmdline = \"{CMDLINE}\"\n"
    );
    let rb = Setup::new(name)
        .file("assets/x86_64/vmlinuz", "x86_64 kernel")
        .file("assets/x86_64/initrd.img", "x86_64 initrd")
        .file("scripts/hello.sh", "#!/bin/sh\necho hello\n")
        .file(
            "cloud-init/user-data",
            "#cloud-config\nwrite_files:\n  - path: /etc/builder.key\n    content: {{ secret('builder-key') }}\n",
        )
        .file("secrets/builder-key", SECRET)
        .file(
            "bootenvs/discovery.toml",
            format!("scripts = [\"hello.sh\"]\n{arch}"),
        )
        .file("bootenvs/rescue.toml", &arch)
        .file("bootenvs/installer.toml", format!("installer = true\n{arch}"))
        .dir("cloud_init_dir", "cloud-init")
        .dir("secrets_dir", "secrets")
        .lab_subnet(100, 131)
        .dns("names = \"none\"")
        .table("nodes", "default_hostname = \"random\"")
        .prepare();
    fs::set_permissions(
        rb.path("secrets/builder-key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    rb.serve();
    rb
}

/// An API GET with `token`: status and JSON (or Null).
fn api(rb: &Server, token: &str, path: &str) -> (u16, Value) {
    let r = rb.request("GET", &format!("/api/v1{path}"), Some(token), None);
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
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

#[test]
fn an_attacker_on_the_boot_network_gets_nothing_while_the_node_boots() {
    let rb = start("attack");
    let lab = &rb.lab;
    let node_host = host(lab, "node", "n0", NODE_MAC);
    let attacker = host(lab, "atk", "a0", "52:54:00:0c:00:66");
    attacker.addr("a0", &format!("{ATTACKER_IP}/24"));

    // The node's firmware-and-iPXE DHCP: a lease from rackboot, put on its interface.
    let lease = node_host
        .udhcpc_configure(
            "n0",
            &[
                "-t",
                "5",
                "-V",
                "PXEClient:Arch:00007:UNDI:003016",
                "-x",
                "0x5d:0007",
                "-x",
                "77:69505845",
            ],
        )
        .unwrap_or_else(|e| panic!("no lease for the node: {e}"));
    let node_ip = lease["ip"].clone();
    assert!(node_ip.starts_with("10.77.0.1"), "{lease:?}");
    let n = rb.node(NODE_MAC);
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
        CMD,
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
        CMD,
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
        CMD,
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
    let before = rb.node(NODE_MAC);
    assert_eq!(before["next_bootenv"], "rescue", "{before}");
    let refused_before = rb.metric("rackboot_boot_refusals_total{reason=\"other_address\"}");

    // 2. The node's boot script from the attacker's address: refused, nothing moves.
    let (status, body) = http(&attacker, "GET", &format!("/boot/{NODE_MAC}.ipxe"), &[]);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("rackboot.token"), "{body}");
    assert!(body.contains("not it"), "a reason: {body}");
    // Unknown MACs get no record either.
    let (status, body) = http(
        &attacker,
        "GET",
        "/boot/52:54:00:0c:99:99.ipxe?arch=bios",
        &[],
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(api(&rb, ADMIN_TOKEN, "/nodes/52:54:00:0c:99:99").0, 404);
    // Asset fetches naming the node are served (assets are not secret) but are not its boot.
    let (status, _) = http(
        &attacker,
        "GET",
        &format!("/assets/x86_64/vmlinuz?mac={NODE_MAC}"),
        &[],
    );
    assert_eq!(status, 200);
    let after = rb.node(NODE_MAC);
    assert_eq!(
        fixed_part(&after),
        fixed_part(&before),
        "the attacker's requests changed the node"
    );
    assert_eq!(after["next_bootenv"], "rescue");
    assert!(
        rb.metric("rackboot_boot_refusals_total{reason=\"other_address\"}") > refused_before,
        "the refusal is counted"
    );

    // 3. The node fetches its script (nothing happens yet), then its kernel (its boot starts).
    let (status, ipxe) = http(&node_host, "GET", &format!("/boot/{NODE_MAC}.ipxe"), &[]);
    assert_eq!(status, 200, "{ipxe}");
    assert!(
        ipxe.contains("bootenv rescue"),
        "the once-only bootenv: {ipxe}"
    );
    let token = token_in(&ipxe);
    let fetched = rb.node(NODE_MAC);
    assert_eq!(
        fixed_part(&fetched),
        fixed_part(&before),
        "a script fetch changed the node"
    );
    let (status, _) = http(&node_host, "GET", &kernel_path(&ipxe), &[]);
    assert_eq!(status, 200);
    let booting = rb.node(NODE_MAC);
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
        &rb,
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
        let (status, body) = http(&attacker, method, &path, &[&bearer]);
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(!body.contains(SECRET), "{path} leaked the secret");
    }
    let still = rb.node(NODE_MAC);
    assert_eq!(
        fixed_part(&still),
        fixed_part(&booting),
        "the stolen token changed the node"
    );

    // The node itself may not claim an install it is not running.
    let (status, body) = http(
        &node_host,
        "POST",
        &format!("/node/{NODE_MAC}/installed"),
        &[&bearer],
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(rb.node(NODE_MAC)["state"], "booting");

    // 5. The node's secret: once per boot; the second fetch is refused, on its timeline and in
    // /metrics.
    let user_data = format!("/cloud-init/{NODE_MAC}/{token}/user-data");
    let (status, body) = http(&node_host, "GET", &user_data, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(SECRET), "{body}");
    let (status, body) = http(&node_host, "GET", &user_data, &[]);
    assert_eq!(status, 410, "{body}");
    assert!(!body.contains(SECRET));
    let refusals = rb.node(NODE_MAC);
    assert!(
        kinds(&refusals).contains(&"http.secret_refused".to_string()),
        "{refusals}"
    );
    assert_eq!(rb.metric("rackboot_secret_refusals_total"), 1.0);
    assert_eq!(refusals["secrets"], serde_json::json!(["builder-key"]));

    // 6. The next boot's token replaces this one: the old one dies even at the node's address.
    let (status, ipxe) = http(&node_host, "GET", &format!("/boot/{NODE_MAC}.ipxe"), &[]);
    assert_eq!(status, 200, "{ipxe}");
    let next = token_in(&ipxe);
    assert_ne!(next, token);
    let (status, _) = http(&node_host, "GET", &kernel_path(&ipxe), &[]);
    assert_eq!(status, 200);
    let (status, body) = http(
        &node_host,
        "GET",
        &format!("/node/{NODE_MAC}/scripts"),
        &[&bearer],
    );
    assert_eq!(status, 403, "the last boot's token: {body}");
    let (status, body) = http(
        &node_host,
        "GET",
        &format!("/node/{NODE_MAC}/scripts"),
        &[&format!("Authorization: Bearer {next}")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello.sh\n", "{body}");
    // A new boot may fetch its secret again, once.
    let (status, body) = http(
        &node_host,
        "GET",
        &format!("/cloud-init/{NODE_MAC}/{next}/user-data"),
        &[],
    );
    assert_eq!(status, 200, "{body}");
}
