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
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::api::api_section;
use common::lab::{BRIDGE, Lab, SERVER_IP, poll_until, read_text, tail};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
/// From spawn to "rackboot serving" (a debug build opening a fresh SQLite store).
const STARTUP: Duration = Duration::from_secs(30);
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

/// `rackboot serve` in a lab with TFTP on and `big.bin` in its assets. Field order is drop
/// order: the lab (which ends rackboot by PID) goes before the files it uses.
struct Server {
    lab: Lab,
    dir: TempDir,
    pid: u32,
    log: PathBuf,
}

impl Server {
    fn start(name: &str, tftp_section: &str) -> Server {
        let lab = Lab::new(name);
        let dir = tempfile::Builder::new()
            .prefix("rackboot-tftp-")
            .tempdir()
            .expect("create temp dir");
        let d = dir.path();
        let write = |rel: &str, bytes: &[u8]| {
            let p = d.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        };
        write(&format!("assets/{BIG}"), &pseudo_random(7, BIG_LEN));
        if name == "tftp-options" {
            write(&format!("assets/{HUGE}"), &pseudo_random(11, HUGE_LEN));
        }
        write("assets/x86_64/vmlinuz", b"kernel");
        write(
            "bootenvs/discovery.toml",
            b"description = \"tftp tests\"\n\n[arch.bios]\nkernel = \"x86_64/vmlinuz\"\n",
        );
        fs::create_dir_all(d.join("scripts")).unwrap();
        fs::create_dir_all(d.join("state")).unwrap();
        let dp = d.display();
        let config = format!(
            "state_dir = \"{dp}/state\"\n\
             assets_dir = \"{dp}/assets\"\n\
             bootenvs_dir = \"{dp}/bootenvs\"\n\
             scripts_dir = \"{dp}/scripts\"\n\n\
             [network]\ninterface = \"{BRIDGE}\"\n\n\
             [dhcp]\n\n[[dhcp.subnet]]\ncidr = \"10.77.0.0/24\"\n\
             ranges = [[\"10.77.0.100\", \"10.77.0.199\"]]\n\n\
             [tftp]\n{tftp_section}\n{}",
            api_section(d),
        );
        write("rackboot.toml", config.as_bytes());
        let cfg = d.join("rackboot.toml");
        let pid = lab.spawn(
            RACKBOOT,
            &["serve", "--config", cfg.to_str().unwrap()],
            "rackboot.log",
        );
        let server = Server {
            log: lab.dir().join("rackboot.log"),
            lab,
            dir,
            pid,
        };
        let up = poll_until(STARTUP, || {
            if read_text(&server.log).contains("rackboot serving") {
                Some(true)
            } else if !server.lab.is_running(pid) {
                Some(false)
            } else {
                None
            }
        });
        assert!(
            up == Some(true),
            "rackboot did not start within {STARTUP:?}:\n{}",
            tail(&read_text(&server.log), 20)
        );
        server
    }

    fn big_sha(&self) -> String {
        sha256_of(&self.dir.path().join("assets").join(BIG))
    }

    /// One sample of `GET /metrics` (`name` with its labels, as the text has it).
    fn metric(&self, series: &str) -> f64 {
        let out = self.lab.run(
            "curl",
            &["-sf", "-m", "5", &format!("http://{SERVER_IP}/metrics")],
            CMD,
        );
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        t.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{t}"))
    }

    fn assert_still_serving(&self) {
        assert!(
            self.lab.is_running(self.pid),
            "rackboot exited:\n{}",
            tail(&read_text(&self.log), 20)
        );
        let local = self.lab.dir().join("after.curl");
        let out = curl(&self.lab, &[], BIG, &local, CMD);
        assert!(out.status.success(), "curl after refusals: {}", text(&out));
        assert_eq!(sha256_of(&local), self.big_sha());
    }
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
    run_bounded("ip", &all, CMD)
}

fn sha256_of(path: &std::path::Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    format!("{:x}", Sha256::digest(&bytes))
}

/// Deterministic, non-repeating bytes (xorshift64), so a misplaced block cannot compare equal.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn curl_and_atftp_fetch_1mib_identically_with_blksize_windowsize_and_tsize() {
    let s = Server::start("tftp-options", "");
    let want = s.big_sha();
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
            sha256_of(&s.dir.path().join("assets").join(file)),
            "tftp-hpa {file}: bytes differ"
        );
    }
    // Every transfer above (curl's three, atftp's two, tftp-hpa's two) counted as sent.
    assert!(s.metric(r#"rackboot_tftp_transfers_total{result="sent"}"#) >= 7.0);
}

#[test]
fn reads_outside_the_assets_and_writes_get_error_packets_and_serving_continues() {
    let s = Server::start("tftp-refusals", "");
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
    assert!(!s.dir.path().join("assets/upload.bin").exists());

    s.assert_still_serving();
}

/// Links inside the assets directory lead nowhere: a linked directory out of it (`evil-dir ->
/// /etc`), a link up and out (`x86_64/up -> ../..`, beside the config and the API tokens) and
/// even a link that stays inside are refused by TFTP (access violation) and HTTP (403), while
/// the regular file next to them is served by both.
#[test]
fn links_in_the_assets_lead_nowhere_over_tftp_or_http() {
    let s = Server::start("tftp-links", "");
    let assets = s.dir.path().join("assets");
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
    s.assert_still_serving();
}

/// A client namespace behind a veth pair to `br0`, at 10.77.0.50, losing a share of the
/// client's packets.
struct LossyClient {
    ns: String,
}

impl LossyClient {
    fn new(lab: &Lab, percent: u32) -> LossyClient {
        let c = LossyClient::plain(lab, "rb-lossy-", None);
        c.lose(lab, percent);
        c
    }

    /// The namespace and its veth, with `mtu` on both ends if given.
    fn plain(lab: &Lab, prefix: &str, mtu: Option<u32>) -> LossyClient {
        let ns = lab.ns().replacen("rb-", prefix, 1);
        ip(&["netns", "add", &ns]);
        // From here on Drop deletes the namespace (and with it the veth pair).
        let c = LossyClient { ns };
        ip(&["-n", &c.ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            lab.ns(),
            "link",
            "add",
            "lossybr",
            "type",
            "veth",
            "peer",
            "name",
            "lossy0",
            "netns",
            &c.ns,
        ]);
        ip(&[
            "-n",
            lab.ns(),
            "link",
            "set",
            "lossybr",
            "master",
            BRIDGE,
            "up",
        ]);
        if let Some(mtu) = mtu {
            let mtu = mtu.to_string();
            ip(&["-n", lab.ns(), "link", "set", "lossybr", "mtu", &mtu]);
            ip(&["-n", &c.ns, "link", "set", "lossy0", "mtu", &mtu]);
        }
        ip(&["-n", &c.ns, "addr", "add", "10.77.0.50/24", "dev", "lossy0"]);
        ip(&["-n", &c.ns, "link", "set", "lossy0", "up"]);
        c
    }

    /// Drops `percent` % of the client's packets.
    fn lose(&self, lab: &Lab, percent: u32) {
        let c = self;
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

    fn run(&self, cmd: &str, args: &[&str], limit: Duration) -> Output {
        let mut all = vec!["netns", "exec", &self.ns, cmd];
        all.extend_from_slice(args);
        run_bounded("ip", &all, limit)
    }
}

impl Drop for LossyClient {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn ip(args: &[&str]) {
    let out = run_bounded("ip", args, CMD);
    assert!(out.status.success(), "ip {args:?}: {}", text(&out));
}

/// Runs `cmd`, killing it by PID if it outlives `limit`.
fn run_bounded(cmd: &str, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{cmd}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd} {args:?} did not finish within {limit:?}");
        }
    }
}

#[test]
fn a_fetch_completes_identically_with_ten_percent_loss() {
    let s = Server::start("tftp-loss", "");
    let client = LossyClient::new(&s.lab, 10);
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
    assert_eq!(sha256_of(&local), s.big_sha(), "bytes differ under loss");
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
        s.big_sha(),
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
    let s = Server::start("tftp-mtu", "");
    // The client's link carries 1000-byte packets. The bridge keeps its 1500 (set explicitly, or
    // it would shrink to its smallest port's MTU), and the route to the client says 1000, as it
    // would behind a narrower link: rackboot learns it per transfer from IP_MTU.
    let client = LossyClient::plain(&s.lab, "rb-mtu-", Some(1000));
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
        s.big_sha(),
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
        s.big_sha(),
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
    let s = Server::start(
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
        format!("bytes {BIG_LEN} sha256 {}", s.big_sha()),
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
    let s = Server::start(
        "tftp-cap",
        "max_transfers = 4\nmax_transfers_per_address = 0",
    );
    let want = s.big_sha();
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
    let log = read_text(&s.log);
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
