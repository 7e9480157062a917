//! TFTP against real clients: options, refusals, loss, backoff, path MTU and the concurrency cap.
//!
//! Each test starts the real `rackboot serve` in a fresh [`Lab`] namespace (bridge `br0` =
//! 10.77.0.1/24) serving a 1 MiB pseudo-random file, and fetches it with curl, atftp and
//! tftp-hpa; every fetched file is compared by SHA-256 with the original. The loss and MTU tests
//! put the client in a second namespace behind a veth pair (with `tc netem` loss, or nftables
//! drops, on the client's side; or a 1000-byte MTU). The backoff test is a few lines of Python
//! speaking TFTP over a plain UDP socket, so it can stay silent on purpose and time what the
//! server resends.
//!
//! Needs root, curl, atftp (0.8, which speaks windowsize), tftp-hpa, python3, iproute2, and
//! `tc` with sch_netem or nftables.
//! Every wait is bounded; namespaces and processes are removed by PID on drop, also when a test
//! fails.

mod common;

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use common::lab::{self, BRIDGE, Lab, SERVER_IP, output_text as text, tail};
use common::netns::Netns;
use common::server::Server;
use common::setup::{Setup, pseudo_random};
use sha2::{Digest, Sha256};

/// One 1 MiB fetch on a loss-free link.
const CMD: Duration = Duration::from_secs(30);
/// One 1 MiB fetch with 10% of the client's packets lost: ~70 lost ACKs at blksize 1468, each
/// costing the server's 1 s retransmission timeout.
const LOSSY: Duration = Duration::from_secs(240);

const BIG: &str = "big.bin";
const BIG_LEN: usize = 1 << 20;
/// Past 65535 blocks of 512 bytes: the block number rolls over to 0.
const HUGE: &str = "huge.bin";
const HUGE_LEN: usize = 33 << 20;

/// `rackboot serve` in a lab with TFTP on (`tftp_section` in its `[tftp]`) and `big.bin` in its
/// assets.
fn start(name: &str, tftp_section: &str) -> Server {
    let mut setup = Setup::new(name)
        .no_address()
        .all_protocols(100, 199)
        .tftp(tftp_section)
        .file(&format!("assets/{BIG}"), pseudo_random(7, BIG_LEN))
        .file("assets/x86_64/vmlinuz", "kernel")
        .file(
            "bootenvs/discovery.toml",
            "description = \"tftp tests\"\n\n[arch.bios]\nkernel = \"x86_64/vmlinuz\"\n",
        );
    if name == "tftp-options" {
        setup = setup.file(&format!("assets/{HUGE}"), pseudo_random(11, HUGE_LEN));
    }
    setup.start()
}

fn big_sha(s: &Server) -> String {
    sha256_of(&s.path("assets").join(BIG))
}

/// rackboot still runs and still sends `big.bin` whole.
fn assert_still_serving(s: &Server) {
    s.assert_running();
    let local = s.lab.dir().join("after.curl");
    let out = curl(&s.lab, &[], BIG, &local, CMD);
    assert!(out.status.success(), "curl after refusals: {}", text(&out));
    assert_eq!(sha256_of(&local), big_sha(s));
}

/// curl `tftp://10.77.0.1/<file>` into `local` from the lab namespace.
fn curl(lab: &Lab, args: &[&str], file: &str, local: &std::path::Path, limit: Duration) -> Output {
    let url = format!("tftp://{SERVER_IP}/{file}");
    let max = limit.as_secs().to_string();
    let mut all = vec![
        "-sS",
        "-v",
        "--max-time",
        &max,
        "-o",
        local.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    all.push(&url);
    lab.run("curl", &all, limit + Duration::from_secs(5))
}

/// atftp from the lab namespace with `--trace` (which prints the OACK and error packets). Its
/// output is read while it runs: a lock-step 1 MiB trace is more than a pipe holds, and
/// [`Lab::run`] reads only after exit.
fn atftp(lab: &Lab, args: &[&str]) -> Output {
    let server = SERVER_IP.to_string();
    let mut all = vec![
        "netns",
        "exec",
        lab.ns(),
        "atftp",
        "--trace",
        "--tftp-timeout",
        "2",
    ];
    all.extend_from_slice(args);
    all.push(&server);
    lab::run_bounded("ip", &all, CMD)
}

fn sha256_of(path: &std::path::Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    format!("{:x}", Sha256::digest(&bytes))
}

#[test]
fn curl_and_atftp_fetch_1mib_identically_with_blksize_windowsize_and_tsize() {
    let s = start("tftp-options", "");
    let want = big_sha(&s);
    for (name, args) in [
        ("blksize1468", &["--tftp-blksize", "1468"][..]),
        ("plain", &["--tftp-no-options"][..]),
        ("default", &[][..]),
    ] {
        let local = s.lab.dir().join(format!("{name}.curl"));
        let out = curl(&s.lab, args, BIG, &local, CMD);
        assert!(out.status.success(), "curl {name}: {}", text(&out));
        assert_eq!(sha256_of(&local), want, "curl {name}: bytes differ");
    }

    let local = s.lab.dir().join("window.atftp");
    let out = atftp(
        &s.lab,
        &[
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 8",
            "--option",
            "tsize 0",
            "-g",
            "-r",
            BIG,
            "-l",
            local.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "atftp windowsize: {t}");
    assert_eq!(sha256_of(&local), want, "atftp windowsize: bytes differ");
    // The OACK grants all three options; tsize is the file's size.
    let oack = t
        .lines()
        .find(|l| l.contains("received OACK"))
        .unwrap_or_else(|| panic!("no OACK in atftp's trace: {}", tail(&t, 30)));
    for granted in [
        "blksize: 1468",
        "windowsize: 8",
        &format!("tsize: {BIG_LEN}"),
    ] {
        assert!(oack.contains(granted), "OACK lacks {granted}: {oack}");
    }

    // RFC 2349 timeout: left out of the OACK by default (honor_client_timeout = false), and
    // the transfer goes on with the options granted.
    let local = s.lab.dir().join("timeout.atftp");
    let out = atftp(
        &s.lab,
        &[
            "--option",
            "timeout 3",
            "--option",
            "blksize 1024",
            "--option",
            "windowsize 16",
            "-g",
            "-r",
            BIG,
            "-l",
            local.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "atftp timeout: {t}");
    assert_eq!(sha256_of(&local), want, "atftp timeout: bytes differ");
    let oack = t
        .lines()
        .find(|l| l.contains("received OACK"))
        .unwrap_or("");
    assert!(
        oack.contains("blksize: 1024")
            && oack.contains("windowsize: 16")
            && !oack.contains("timeout"),
        "{oack}"
    );

    // tftp-hpa asks for no options: RFC 1350 lock-step at 512 bytes, and past 65535 blocks the
    // block number rolls over to 0 (33 MiB is 67584 blocks).
    for (file, len) in [(BIG, BIG_LEN), (HUGE, HUGE_LEN)] {
        let local = s.lab.dir().join(format!("{file}.tftp-hpa"));
        let out = s.lab.run(
            "tftp",
            &[
                "-m",
                "binary",
                &SERVER_IP.to_string(),
                "-c",
                "get",
                file,
                local.to_str().unwrap(),
            ],
            LOSSY,
        );
        assert!(out.status.success(), "tftp-hpa {file}: {}", text(&out));
        assert_eq!(
            fs::metadata(&local).map(|m| m.len()).unwrap_or(0),
            len as u64,
            "tftp-hpa {file}: {}",
            text(&out)
        );
        assert_eq!(
            sha256_of(&local),
            sha256_of(&s.path("assets").join(file)),
            "tftp-hpa {file}: bytes differ"
        );
    }
    // Every transfer above (curl's three, atftp's two, tftp-hpa's two) counted as sent.
    assert!(s.metric(r#"rackboot_tftp_transfers_total{result="sent"}"#) >= 7.0);
}

#[test]
fn reads_outside_the_assets_and_writes_get_error_packets_and_serving_continues() {
    let s = start("tftp-refusals", "");
    let local = s.lab.dir().join("refused.atftp");
    let l = local.to_str().unwrap();
    let out = atftp(&s.lab, &["-g", "-r", "../rackboot.toml", "-l", l]);
    let t = text(&out);
    assert!(!out.status.success(), "read outside assets succeeded: {t}");
    // TFTP error 2, access violation (atftp prints the packet's message).
    assert!(
        t.contains("error received from server <Permission denied>"),
        "{t}"
    );

    fs::write(&local, b"upload").unwrap();
    let out = atftp(&s.lab, &["-p", "-r", "upload.bin", "-l", l]);
    let t = text(&out);
    assert!(!out.status.success(), "write succeeded: {t}");
    assert!(t.contains("read-only"), "write error packet: {t}");
    assert!(!s.path("assets/upload.bin").exists());

    assert_still_serving(&s);
}

/// Links inside the assets directory lead nowhere: a linked directory out of it (`evil-dir ->
/// /etc`), a link up and out (`x86_64/up -> ../..`, beside the config and the API tokens) and
/// even a link that stays inside are refused by TFTP (access violation) and HTTP (403), while
/// the regular file next to them is served by both.
#[test]
fn links_in_the_assets_lead_nowhere_over_tftp_or_http() {
    let s = start("tftp-links", "");
    let assets = s.path("assets");
    std::os::unix::fs::symlink("/etc", assets.join("evil-dir")).unwrap();
    std::os::unix::fs::symlink("../..", assets.join("x86_64/up")).unwrap();
    std::os::unix::fs::symlink(BIG, assets.join("inside-link")).unwrap();
    let local = s.lab.dir().join("links.atftp");
    let l = local.to_str().unwrap();
    for path in [
        "evil-dir/passwd",
        "x86_64/up/rackboot.toml",
        "x86_64/up/api-tokens",
        "inside-link",
    ] {
        let _ = fs::remove_file(&local);
        let out = atftp(&s.lab, &["-g", "-r", path, "-l", l]);
        let t = text(&out);
        assert!(!out.status.success(), "TFTP {path} succeeded: {t}");
        assert!(
            t.contains("error received from server <Permission denied>"),
            "TFTP {path}: {t}"
        );
        assert!(
            fs::read(&local).unwrap_or_default().is_empty(),
            "TFTP {path} sent bytes"
        );

        let body = s.lab.dir().join("links.http");
        let url = format!("http://{SERVER_IP}/assets/{path}");
        let out = s.lab.run(
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "-o",
                body.to_str().unwrap(),
                "-w",
                "%{http_code}",
                &url,
            ],
            CMD,
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "403",
            "HTTP {path}: {}",
            text(&out)
        );
        let said = fs::read_to_string(&body).unwrap_or_default();
        assert!(said.contains("symbolic link"), "HTTP {path}: {said}");
        assert!(!said.contains("root:"), "HTTP {path} leaked: {said}");
    }
    let out = atftp(&s.lab, &["-g", "-r", "x86_64/vmlinuz", "-l", l]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&local).unwrap(), b"kernel");
    let out = s.lab.run(
        "curl",
        &[
            "-sSf",
            "-m",
            "10",
            &format!("http://{SERVER_IP}/assets/x86_64/vmlinuz"),
        ],
        CMD,
    );
    assert_eq!(out.stdout, b"kernel", "{}", text(&out));
    assert_still_serving(&s);
}

/// A client namespace (`role`) behind a veth pair to `br0`, at 10.77.0.50, with `mtu` on both
/// ends of its link if given.
fn client<'a>(lab: &'a Lab, role: &str, mtu: Option<u32>) -> Netns<'a> {
    let c = Netns::new(lab, role);
    c.link("lossy0", None);
    if let Some(mtu) = mtu {
        c.mtu("lossy0", mtu);
    }
    c.addr("lossy0", "10.77.0.50/24");
    c
}

/// A [`client`] losing `percent` % of its packets.
fn lossy_client(lab: &Lab, percent: u32) -> Netns<'_> {
    let c = client(lab, "lossy", None);
    lose(&c, lab, percent);
    c
}

/// Drops `percent` % of `c`'s packets.
fn lose(c: &Netns, lab: &Lab, percent: u32) {
    // netem where the kernel has it; otherwise (CONFIG_NET_SCH_NETEM off, as on some CI
    // kernels) the same random drop of the client's packets with nftables, on their way in
    // to the server's namespace: dropped on the client's own output hook, sendto() would
    // fail with EPERM instead of the packet vanishing on the wire.
    let pct = percent.to_string() + "%";
    let netem = c.run(
        "tc",
        &[
            "qdisc", "add", "dev", "lossy0", "root", "netem", "loss", &pct,
        ],
        CMD,
    );
    if !netem.status.success() {
        eprintln!(
            "netem unavailable ({}), dropping with nft",
            text(&netem).trim()
        );
        let pct = percent.to_string();
        for args in [
            &["add", "table", "inet", "loss"][..],
            &[
                "add",
                "chain",
                "inet",
                "loss",
                "drops",
                "{ type filter hook input priority 0 ; }",
            ],
            &[
                "add",
                "rule",
                "inet",
                "loss",
                "drops",
                "ip",
                "saddr",
                "10.77.0.50",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &pct,
                "drop",
            ],
        ] {
            let out = lab.run("nft", args, CMD);
            assert!(out.status.success(), "nft {args:?}: {}", text(&out));
        }
    }
}

#[test]
fn a_fetch_completes_identically_with_ten_percent_loss() {
    let s = start("tftp-loss", "");
    let client = lossy_client(&s.lab, 10);
    let local = s.lab.dir().join("lossy.curl");
    let url = format!("tftp://{SERVER_IP}/{BIG}");
    let max = LOSSY.as_secs().to_string();
    let started = Instant::now();
    let out = client.run(
        "curl",
        &[
            "-sS",
            "-v",
            "--max-time",
            &max,
            "--tftp-blksize",
            "1468",
            "-o",
            local.to_str().unwrap(),
            &url,
        ],
        LOSSY + Duration::from_secs(5),
    );
    assert!(out.status.success(), "curl under loss: {}", text(&out));
    assert_eq!(sha256_of(&local), big_sha(&s), "bytes differ under loss");
    eprintln!("1 MiB with 10% loss in {:?}", started.elapsed());
    let resent = s.metric("rackboot_tftp_retransmissions_total");
    assert!(resent > 0.0, "nothing was retransmitted under 10% loss");

    // RFC 7440 under loss: atftp ACKs the last block before a gap, the window slides to it.
    let local = s.lab.dir().join("lossy.atftp");
    let started = Instant::now();
    let out = client.run(
        "atftp",
        &[
            "--tftp-timeout",
            "1",
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 8",
            "-g",
            "-r",
            BIG,
            "-l",
            local.to_str().unwrap(),
            &SERVER_IP.to_string(),
        ],
        LOSSY,
    );
    assert!(
        out.status.success(),
        "atftp windowsize under loss: {}",
        text(&out)
    );
    assert_eq!(
        sha256_of(&local),
        big_sha(&s),
        "atftp windowsize: bytes differ under loss"
    );
    eprintln!(
        "1 MiB windowsize 8 with 10% loss in {:?}",
        started.elapsed()
    );
    assert!(s.metric("rackboot_tftp_retransmissions_total") > resent);
}

#[test]
fn a_client_behind_a_smaller_mtu_gets_a_blksize_that_fits_it() {
    let s = start("tftp-mtu", "");
    // The client's link carries 1000-byte packets. The bridge keeps its 1500 (set explicitly, or
    // it would shrink to its smallest port's MTU), and the route to the client says 1000, as it
    // would behind a narrower link: rackboot learns it per transfer from IP_MTU.
    let client = client(&s.lab, "mtu", Some(1000));
    s.lab.ip(&["link", "set", BRIDGE, "mtu", "1500"]);
    s.lab.ip(&[
        "route",
        "add",
        "10.77.0.50/32",
        "dev",
        BRIDGE,
        "mtu",
        "1000",
    ]);
    let local = s.lab.dir().join("mtu.atftp");
    let out = client.run(
        "atftp",
        &[
            "--trace",
            "--tftp-timeout",
            "2",
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 4",
            "-g",
            "-r",
            BIG,
            "-l",
            local.to_str().unwrap(),
            &SERVER_IP.to_string(),
        ],
        CMD,
    );
    let t = text(&out);
    assert!(
        out.status.success(),
        "atftp behind MTU 1000: {}",
        tail(&t, 20)
    );
    assert_eq!(
        sha256_of(&local),
        big_sha(&s),
        "bytes differ behind MTU 1000"
    );
    let oack = t
        .lines()
        .find(|l| l.contains("received OACK"))
        .unwrap_or_else(|| panic!("no OACK: {}", tail(&t, 20)));
    let granted: u32 = oack
        .split("blksize: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no blksize in {oack}"));
    assert!(
        granted <= 968,
        "blksize {granted} does not fit MTU 1000: {oack}"
    );

    // curl behind the same link, and at the same time the lab's own client on the 1500-byte
    // bridge still gets 1468: the cap is per transfer.
    let local = s.lab.dir().join("mtu.curl");
    let url = format!("tftp://{SERVER_IP}/{BIG}");
    let out = client.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "--tftp-blksize",
            "1468",
            "-o",
            local.to_str().unwrap(),
            &url,
        ],
        CMD,
    );
    assert!(out.status.success(), "curl behind MTU 1000: {}", text(&out));
    assert_eq!(
        sha256_of(&local),
        big_sha(&s),
        "curl: bytes differ behind MTU 1000"
    );
    let out = atftp(
        &s.lab,
        &[
            "--option",
            "blksize 1468",
            "-g",
            "-r",
            BIG,
            "-l",
            "/dev/null",
        ],
    );
    let t = text(&out);
    assert!(
        t.lines()
            .any(|l| l.contains("received OACK") && l.contains("blksize: 1468")),
        "lab client: {}",
        tail(&t, 20)
    );
}

/// A TFTP client that times what the server sends: it asks for `file` (plain RFC 1350, 512-byte
/// blocks), then leaves block 1 unacknowledged for `SILENT` copies and prints the gaps between
/// them; then it fetches the rest, ACKing every block twice (a duplicate ACK must not make the
/// server send anything twice), and prints what it got.
const TIMING_CLIENT: &str = r#"
import socket, sys, time, hashlib
server, file, silent = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"\x00\x01" + file.encode() + b"\x00octet\x00", (server, 69))
arrivals, peer = [], None
while len(arrivals) < silent:
    data, peer = s.recvfrom(2048)
    assert data[:4] == b"\x00\x03\x00\x01", data[:4]
    arrivals.append(time.monotonic())
print("gaps_ms", " ".join(str(round(1000 * (b - a))) for a, b in zip(arrivals, arrivals[1:])))
got, block, extra = bytearray(data[4:]), 1, 0
last = len(data) - 4 < 512
while not last:
    for _ in range(2):
        s.sendto(b"\x00\x04" + block.to_bytes(2, "big"), peer)
    while True:
        data, _ = s.recvfrom(2048)
        b = int.from_bytes(data[2:4], "big")
        if b == (block + 1) % 65536:
            break
        extra += 1
    block = (block + 1) % 65536
    got += data[4:]
    last = len(data) - 4 < 512
s.sendto(b"\x00\x04" + block.to_bytes(2, "big"), peer)
print("bytes", len(got), "sha256", hashlib.sha256(got).hexdigest(), "extra", extra)
"#;

#[test]
fn unanswered_blocks_are_resent_with_doubling_waits_and_duplicate_acks_send_nothing() {
    let s = start(
        "tftp-backoff",
        "timeout = \"200ms\"\nmax_timeout = \"800ms\"\ngive_up = \"10s\"\nhonor_client_timeout = true",
    );
    let out = s.lab.run(
        "python3",
        &["-c", TIMING_CLIENT, &SERVER_IP.to_string(), BIG, "6"],
        CMD,
    );
    let t = text(&out);
    assert!(out.status.success(), "timing client: {t}");
    let gaps: Vec<u64> = t
        .lines()
        .find_map(|l| l.strip_prefix("gaps_ms "))
        .unwrap_or_else(|| panic!("{t}"))
        .split(' ')
        .map(|g| g.parse().unwrap())
        .collect();
    // 200 ms, doubling, capped at 800 ms; a loaded machine adds, never subtracts.
    for (gap, want) in gaps.iter().zip([200u64, 400, 800, 800, 800]) {
        assert!(
            (want * 9 / 10..=want + 300).contains(gap),
            "resend gaps {gaps:?} ms, want ~[200, 400, 800, 800, 800]"
        );
    }
    let done = t.lines().find(|l| l.starts_with("bytes ")).unwrap_or("");
    let (got, extra) = done.rsplit_once(" extra ").unwrap_or_else(|| panic!("{t}"));
    assert_eq!(
        got,
        format!("bytes {BIG_LEN} sha256 {}", big_sha(&s)),
        "{t}"
    );
    // With the Sorcerer's Apprentice every one of the 2048 blocks would come twice; a block or
    // two may honestly be resent if this machine stalls the client past 200 ms.
    let extra: u32 = extra.trim().parse().unwrap();
    assert!(extra < 20, "{extra} blocks came more than once: {t}");
    assert!(s.metric("rackboot_tftp_retransmissions_total") >= 5.0);

    // honor_client_timeout = true: the client's own timeout is granted as asked.
    let out = atftp(
        &s.lab,
        &[
            "--option",
            "timeout 3",
            "--option",
            "tsize 0",
            "-g",
            "-r",
            BIG,
            "-l",
            "/dev/null",
        ],
    );
    let t = text(&out);
    assert!(
        t.lines()
            .any(|l| l.contains("received OACK") && l.contains("timeout: 3")),
        "{}",
        tail(&t, 20)
    );
}

#[test]
fn transfers_past_max_transfers_wait_their_turn_and_all_complete() {
    // 20 fetches from the lab's one address: the per-address cap is lifted.
    let s = start(
        "tftp-cap",
        "max_transfers = 4\nmax_transfers_per_address = 0",
    );
    let want = big_sha(&s);
    let results: Vec<(usize, Output, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let lab = &s.lab;
                scope.spawn(move || {
                    let local = lab.dir().join(format!("cap-{i}.curl"));
                    let out = curl(lab, &["--tftp-blksize", "1468"], BIG, &local, CMD);
                    (i, out, sha256_of(&local))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, out, sha) in &results {
        assert!(out.status.success(), "fetch {i}: {}", text(out));
        assert_eq!(sha, &want, "fetch {i}: bytes differ");
    }
    let log = s.log_text();
    let queued = log.matches("TFTP transfer queued").count();
    let dequeued = log.matches("TFTP transfer dequeued").count();
    assert!(queued > 0, "no transfer waited:\n{}", tail(&log, 30));
    assert_eq!(queued, dequeued, "every queued transfer got its turn");
    assert_eq!(s.metric("rackboot_tftp_queued"), 0.0, "the queue drained");
    assert_eq!(
        s.metric("rackboot_tftp_active"),
        0.0,
        "every slot was freed"
    );
    assert_eq!(
        s.metric(r#"rackboot_tftp_transfers_total{result="busy"}"#),
        0.0
    );
    assert!(s.metric(r#"rackboot_tftp_transfers_total{result="sent"}"#) >= 20.0);
}

/// The GRUB chain's configs are rendered, not read from disk: `grub/grub.cfg` (and `/grub/...`,
/// as GRUB names it) sends every GRUB to its own `grub.cfg-<mac>`, and that one goes only to the
/// node's own address: asked for from anywhere else it is refused like a file outside the
/// assets, and the server goes on serving.
#[test]
fn grub_configs_are_rendered_and_a_nodes_own_goes_only_to_its_address() {
    let s = start("tftp-grub", "");
    let local = s.lab.dir().join("grub.cfg");
    let l = local.to_str().unwrap();
    for path in ["grub/grub.cfg", "/grub/grub.cfg"] {
        let _ = fs::remove_file(&local);
        let out = atftp(&s.lab, &["-g", "-r", path, "-l", l]);
        assert!(out.status.success(), "TFTP {path}: {}", text(&out));
        let cfg = fs::read_to_string(&local).unwrap();
        assert!(
            cfg.contains("configfile $prefix/grub.cfg-$net_default_mac"),
            "{cfg}"
        );
    }
    let _ = fs::remove_file(&local);
    let out = atftp(
        &s.lab,
        &["-g", "-r", "/grub/grub.cfg-52:54:00:aa:bb:cc", "-l", l],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("error received from server <Permission denied>"),
        "{t}"
    );
    assert!(fs::read(&local).unwrap_or_default().is_empty());
    assert_still_serving(&s);
}
