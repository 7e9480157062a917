//! Boot scripts and assets over HTTP as iPXE meets them, against the real `rackboot serve` in a
//! [`Lab`] namespace with real `curl`: Range, HEAD and 416 on a kernel; a node's script is the
//! same byte for byte when fetched twice and changes once the node is edited through the API;
//! and with `[admission] max_booting = 1`, a second node is handed the wait-and-retry script
//! until the first node's last initrd has gone out in full, then its real script.
//!
//! Needs root (namespaces) and curl. Every wait is bounded; processes are ended by PID when the
//! lab is dropped, also when a test fails.

mod common;

use std::time::Duration;

use common::api::ADMIN_TOKEN;
use common::lab::{self, SERVER_IP};
use common::server::Server;
use common::setup::{LAB_CIDR, Setup, pseudo_random};

const FIRST: &str = "52:54:00:aa:00:61";
const SECOND: &str = "52:54:00:aa:00:62";
const INITRD_BYTES: usize = 3 << 20;

/// Assets, a bootenv with a kernel and an initrd, and the lab subnet (for admission; DHCP is
/// off). Boot scripts go to any address (this curl is at rackboot's own, not at a node's): the
/// documented opt-out.
fn setup(name: &str) -> Setup {
    Setup::new(name)
        .no_address()
        .subnet(LAB_CIDR, "")
        .tokens_from_any_address()
        .file("assets/vmlinuz", pseudo_random(1, 100_000))
        .file("assets/initrd.img", pseudo_random(2, INITRD_BYTES))
        .file(
            "bootenvs/discovery.toml",
            "[arch.bios]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
             cmdline = \"console=ttyS0 rackboot.host={{ node.hostname }}\"\n",
        )
}

/// curl `http://10.77.0.1<path>` with `args`; returns (status, headers, body).
fn curl(rb: &Server, args: &[&str], path: &str) -> (u16, String, Vec<u8>) {
    let r = rb.http(args, path);
    (r.status, r.headers, r.body)
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn script(rb: &Server, mac: &str) -> String {
    let (status, _, body) = curl(rb, &[], &format!("/boot/{mac}.ipxe?arch=bios"));
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn assets_answer_range_head_and_416() {
    let rb = setup("assets").start();
    let initrd = pseudo_random(2, INITRD_BYTES);

    let (status, headers, body) = curl(&rb, &[], "/assets/initrd.img");
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

    let (status, headers, body) = curl(&rb, &["-I"], "/assets/initrd.img");
    assert_eq!(status, 200, "{headers}");
    // curl -I writes the headers where a body would go: nothing else.
    assert!(body.len() < 1024, "HEAD has no body ({} bytes)", body.len());
    assert_eq!(
        header(&headers, "content-length"),
        Some(INITRD_BYTES.to_string().as_str())
    );

    // A range across a read-chunk boundary, and an open-ended one.
    let (status, headers, body) = curl(&rb, &["-r", "262000-262299"], "/assets/initrd.img");
    assert_eq!(status, 206, "{headers}");
    assert_eq!(body, &initrd[262_000..262_300]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 262000-262299/{INITRD_BYTES}").as_str())
    );
    let from = INITRD_BYTES - 10;
    let (status, _, body) = curl(&rb, &["-r", &format!("{from}-")], "/assets/initrd.img");
    assert_eq!((status, body.as_slice()), (206, &initrd[from..]));

    let past = format!("{}-{}", INITRD_BYTES + 5, INITRD_BYTES + 10);
    let (status, headers, _) = curl(&rb, &["-r", &past], "/assets/initrd.img");
    assert_eq!(status, 416, "{headers}");
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{INITRD_BYTES}").as_str())
    );

    let (status, _, body) = curl(&rb, &[], "/assets/nope.img");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn a_script_is_stable_until_its_node_is_edited() {
    let rb = setup("script").start();
    let first = script(&rb, FIRST);
    assert!(
        first.contains("/assets/vmlinuz?mac=") && first.contains("goto ${rb_retry}"),
        "{first}"
    );
    assert_eq!(script(&rb, FIRST), first, "fetched twice: the same script");

    let r = rb.request(
        "PATCH",
        &format!("/api/v1/nodes/{FIRST}"),
        Some(ADMIN_TOKEN),
        Some(r#"{"hostname": "edited-1"}"#),
    );
    assert_eq!(r.status, 200, "PATCH failed: {}", r.text());
    let edited = script(&rb, FIRST);
    assert_ne!(edited, first);
    assert!(edited.contains("rackboot.host=edited-1"), "{edited}");
    assert_eq!(script(&rb, FIRST), edited);
}

#[test]
fn over_the_limit_a_node_waits_until_a_slot_frees() {
    let rb = setup("admission")
        .table("admission", "max_booting = 1")
        .start();

    let real = script(&rb, FIRST);
    assert!(real.contains("kernel --name kernel"), "{real}");
    // The first node holds the only slot: the second is told to wait.
    let wait = script(&rb, SECOND);
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
        rb.try_metric("rackboot_http_boot_waits_total{subnet=\"10.77.0.0/24\"}"),
        Some(1.0)
    );
    assert_eq!(
        rb.try_metric("rackboot_boots_in_flight{subnet=\"10.77.0.0/24\"}"),
        Some(1.0)
    );
    // Asking again while holding the slot keeps it.
    assert_eq!(script(&rb, FIRST), real);

    // The kernel alone does not free the slot; a cut-short initrd does not either.
    let asset =
        |path: &str, args: &[&str]| curl(&rb, args, &format!("/assets/{path}?mac={FIRST}")).0;
    assert_eq!(asset("vmlinuz", &[]), 200);
    assert_eq!(asset("initrd.img", &["-r", "0-99"]), 206);
    assert!(script(&rb, SECOND).contains("waits for a boot slot"));

    // The whole initrd: the slot is free, and the second node gets its real script.
    assert_eq!(asset("initrd.img", &[]), 200);
    let second = lab::poll_until(Duration::from_secs(5), || {
        let s = script(&rb, SECOND);
        s.contains("kernel --name kernel").then_some(s)
    })
    .expect("the second node never got its boot script after the first one's initrd");
    assert!(second.contains(&format!("?mac={SECOND}")), "{second}");
    assert_eq!(
        rb.try_metric("rackboot_boots_in_flight{subnet=\"10.77.0.0/24\"}"),
        Some(1.0)
    );
}
