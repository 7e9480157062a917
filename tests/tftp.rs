//! TFTP against real clients: options, refusals, loss and the concurrency cap.
//!
//! Each test starts the real `rackboot serve` in a fresh [`Lab`] namespace (bridge `br0` =
//! 10.77.0.1/24) serving a 1 MiB pseudo-random file, and fetches it with curl and atftp; every
//! fetched file is compared by SHA-256 with the original. The loss test puts the client in a
//! second namespace behind a veth pair with `tc netem` loss on the client's side.
//!
//! Needs root, curl, atftp (0.8, which speaks windowsize), iproute2, and `tc` with sch_netem or
//! nftables.
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

/// atftp from the lab namespace with `--trace` (which prints the OACK and error packets).
fn atftp(lab: &Lab, args: &[&str]) -> Output {
    let server = SERVER_IP.to_string();
    let mut all = vec!["--trace", "--tftp-timeout", "2"];
    all.extend_from_slice(args);
    all.push(&server);
    lab.run("atftp", &all, CMD)
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

/// A client namespace behind a veth pair to `br0`, losing a share of the client's packets.
struct LossyClient {
    ns: String,
}

impl LossyClient {
    fn new(lab: &Lab, percent: u32) -> LossyClient {
        let ns = lab.ns().replacen("rb-", "rb-lossy-", 1);
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
        ip(&["-n", &c.ns, "addr", "add", "10.77.0.50/24", "dev", "lossy0"]);
        ip(&["-n", &c.ns, "link", "set", "lossy0", "up"]);
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
        c
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
}

#[test]
fn transfers_past_max_transfers_wait_their_turn_and_all_complete() {
    let s = Server::start("tftp-cap", "max_transfers = 4");
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
}
