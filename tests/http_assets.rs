//! Boot scripts and assets over HTTP as iPXE meets them, against the real `rackboot serve` in a
//! [`Lab`] namespace with real `curl`: Range, HEAD and 416 on a kernel; a node's script is the
//! same byte for byte when fetched twice and changes once the node is edited through the API;
//! and with `[admission] max_booting = 1`, a second node is handed the wait-and-retry script
//! until the first node's last initrd has gone out in full, then its real script.
//!
//! Needs root (namespaces) and curl. Every wait is bounded; processes are ended by PID when the
//! lab is dropped, also when a test fails.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::api::{AUTH_HEADER, api_section};
use common::lab::{self, BRIDGE, Lab, SERVER_IP};

const WAIT: Duration = Duration::from_secs(30);
const FIRST: &str = "52:54:00:aa:00:61";
const SECOND: &str = "52:54:00:aa:00:62";
const INITRD_BYTES: usize = 3 << 20;

/// Deterministic, incompressible-looking bytes.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Assets, a bootenv with a kernel and an initrd, and a config with `extra` appended; starts
/// rackboot and waits until it serves. Boot scripts go to any address (this curl is at
/// rackboot's own, not at a node's): the documented opt-out.
fn start(lab: &Lab, extra: &str) -> PathBuf {
    let d = lab.dir();
    for sub in ["assets", "bootenvs", "scripts", "state"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("assets/vmlinuz"), bytes(100_000, 1)).unwrap();
    std::fs::write(d.join("assets/initrd.img"), bytes(INITRD_BYTES, 2)).unwrap();
    std::fs::write(
        d.join("bootenvs/discovery.toml"),
        "[arch.bios]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
         cmdline = \"console=ttyS0 rackboot.host={{ node.hostname }}\"\n",
    )
    .unwrap();
    let config = d.join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{p}/state\"\nassets_dir = \"{p}/assets\"\nbootenvs_dir = \"{p}/bootenvs\"\n\
             scripts_dir = \"{p}/scripts\"\n[network]\ninterface = \"{BRIDGE}\"\n\
             [dhcp]\nenabled = false\n[[dhcp.subnet]]\ncidr = \"10.77.0.0/24\"\n\
             [tftp]\nenabled = false\n[dns]\nenabled = false\n\
             [http]\nbind_tokens_to_address = false\n{extra}{api}",
            p = d.display(),
            api = api_section(d),
        ),
    )
    .unwrap();
    let log = d.join("rackboot.log");
    lab.spawn(
        env!("CARGO_BIN_EXE_rackboot"),
        &["serve", "--config", config.to_str().unwrap()],
        &log,
    );
    lab::wait_for_file(&log, "rackboot serving", WAIT).unwrap_or_else(|e| panic!("{e}"));
    log
}

/// `curl -s -D <headers> -o <body>` with `args`; returns (status, headers, body).
fn curl(lab: &Lab, args: &[&str], path: &str) -> (u16, String, Vec<u8>) {
    let headers = lab.dir().join("headers");
    let body = lab.dir().join("body");
    let _ = std::fs::remove_file(&body);
    let url = format!("http://{SERVER_IP}{path}");
    let mut all = vec![
        "-s",
        "-m",
        "20",
        "-D",
        headers.to_str().unwrap(),
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_code}",
    ];
    all.extend_from_slice(args);
    all.push(&url);
    let out = lab.run("curl", &all, WAIT);
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        status,
        std::fs::read_to_string(&headers).unwrap_or_default(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn script(lab: &Lab, mac: &str) -> String {
    let (status, _, body) = curl(lab, &[], &format!("/boot/{mac}.ipxe?arch=bios"));
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{text}");
    text
}

fn metric(lab: &Lab, line_start: &str) -> Option<f64> {
    let (_, _, body) = curl(lab, &[], "/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn assets_answer_range_head_and_416() {
    let lab = Lab::new("assets");
    start(&lab, "");
    let initrd = bytes(INITRD_BYTES, 2);

    let (status, headers, body) = curl(&lab, &[], "/assets/initrd.img");
    assert_eq!(status, 200, "{headers}");
    assert!(body == initrd, "the whole file, byte for byte");
    assert_eq!(
        header(&headers, "content-length"),
        Some(INITRD_BYTES.to_string().as_str())
    );
    assert!(header(&headers, "last-modified").is_some(), "{headers}");
    assert_eq!(
        header(&headers, "accept-ranges"),
        Some("bytes"),
        "{headers}"
    );

    let (status, headers, body) = curl(&lab, &["-I"], "/assets/initrd.img");
    assert_eq!(status, 200, "{headers}");
    // curl -I writes the headers where a body would go: nothing else.
    assert!(body.len() < 1024, "HEAD has no body ({} bytes)", body.len());
    assert_eq!(
        header(&headers, "content-length"),
        Some(INITRD_BYTES.to_string().as_str())
    );

    // A range across a read-chunk boundary, and an open-ended one.
    let (status, headers, body) = curl(&lab, &["-r", "262000-262299"], "/assets/initrd.img");
    assert_eq!(status, 206, "{headers}");
    assert_eq!(body, &initrd[262_000..262_300]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 262000-262299/{INITRD_BYTES}").as_str())
    );
    let from = INITRD_BYTES - 10;
    let (status, _, body) = curl(&lab, &["-r", &format!("{from}-")], "/assets/initrd.img");
    assert_eq!((status, body.as_slice()), (206, &initrd[from..]));

    let past = format!("{}-{}", INITRD_BYTES + 5, INITRD_BYTES + 10);
    let (status, headers, _) = curl(&lab, &["-r", &past], "/assets/initrd.img");
    assert_eq!(status, 416, "{headers}");
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{INITRD_BYTES}").as_str())
    );

    let (status, _, body) = curl(&lab, &[], "/assets/nope.img");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn a_script_is_stable_until_its_node_is_edited() {
    let lab = Lab::new("script");
    start(&lab, "");
    let first = script(&lab, FIRST);
    assert!(
        first.contains("/assets/vmlinuz?mac=") && first.contains("goto ${rb_retry}"),
        "{first}"
    );
    assert_eq!(script(&lab, FIRST), first, "fetched twice: the same script");

    let url = format!("http://{SERVER_IP}/api/v1/nodes/{FIRST}");
    let out = lab.run(
        "curl",
        &[
            "-sf",
            "-m",
            "10",
            "-X",
            "PATCH",
            "-H",
            AUTH_HEADER,
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"hostname": "edited-1"}"#,
            &url,
        ],
        WAIT,
    );
    assert!(
        out.status.success(),
        "PATCH failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let edited = script(&lab, FIRST);
    assert_ne!(edited, first);
    assert!(edited.contains("rackboot.host=edited-1"), "{edited}");
    assert_eq!(script(&lab, FIRST), edited);
}

#[test]
fn over_the_limit_a_node_waits_until_a_slot_frees() {
    let lab = Lab::new("admission");
    start(&lab, "[admission]\nmax_booting = 1\n");

    let real = script(&lab, FIRST);
    assert!(real.contains("kernel --name kernel"), "{real}");
    // The first node holds the only slot: the second is told to wait.
    let wait = script(&lab, SECOND);
    assert!(
        wait.contains("waits for a boot slot")
            && wait.contains("sleep ")
            && wait.contains(&format!(
                "chain --replace --autofree http://{SERVER_IP}/boot/{SECOND}.ipxe?arch=bios"
            ))
            && !wait.contains("kernel "),
        "{wait}"
    );
    assert_eq!(
        metric(
            &lab,
            "rackboot_http_boot_waits_total{subnet=\"10.77.0.0/24\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&lab, "rackboot_boots_in_flight{subnet=\"10.77.0.0/24\"}"),
        Some(1.0)
    );
    // Asking again while holding the slot keeps it.
    assert_eq!(script(&lab, FIRST), real);

    // The kernel alone does not free the slot; a cut-short initrd does not either.
    let asset =
        |path: &str, args: &[&str]| curl(&lab, args, &format!("/assets/{path}?mac={FIRST}")).0;
    assert_eq!(asset("vmlinuz", &[]), 200);
    assert_eq!(asset("initrd.img", &["-r", "0-99"]), 206);
    assert!(script(&lab, SECOND).contains("waits for a boot slot"));

    // The whole initrd: the slot is free, and the second node gets its real script.
    assert_eq!(asset("initrd.img", &[]), 200);
    let second = lab::poll_until(Duration::from_secs(5), || {
        let s = script(&lab, SECOND);
        s.contains("kernel --name kernel").then_some(s)
    })
    .expect("the second node never got its boot script after the first one's initrd");
    assert!(second.contains(&format!("?mac={SECOND}")), "{second}");
    assert_eq!(
        metric(&lab, "rackboot_boots_in_flight{subnet=\"10.77.0.0/24\"}"),
        Some(1.0)
    );
}
