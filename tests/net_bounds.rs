//! Hostile clients on the boot network against the real `rackboot serve`: a flood of idle HTTP
//! connections, slow heads and bodies, responses left unread, never-acknowledged TFTP requests,
//! and newlines smuggled into what rackboot logs. Each test exceeds a bound and then shows real
//! clients (curl, atftp) still served promptly, and what `/metrics` counted.
//!
//! The floods are a few lines of Python over plain sockets, run inside the lab namespace. Many
//! client addresses come from one route: `10.77.1.0/24` is made local on the namespace's `lo`,
//! so a socket may bind any address in it and connect to rackboot (10.77.0.1) from there.
//!
//! Needs root, python3, curl, atftp, prlimit (util-linux) and iproute2. Every wait is bounded;
//! the lab (namespace, rackboot, the flooders) is removed by PID on drop, also on failure.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::api::ADMIN_TOKEN;
use common::lab::{Lab, SERVER_IP, poll_until, read_text, tail};
use common::server::Server;
use common::setup::Setup;

/// The addresses the flooders bind: `FLOOD_NET.<n>`, local on the lab's `lo`.
const FLOOD_NET: &str = "10.77.1.";
/// One curl, one Python client run.
const CMD: Duration = Duration::from_secs(60);
/// What "promptly" means for a real client while a flood holds.
const PROMPT: Duration = Duration::from_secs(3);

fn flood_addresses(lab: &Lab) {
    lab.ip(&["route", "add", "local", "10.77.1.0/24", "dev", "lo"]);
}

/// curl `GET http://10.77.0.1<path>`: (status, body, how long it took).
fn timed_get(s: &Server, path: &str) -> (u16, Vec<u8>, Duration) {
    let t = Instant::now();
    let r = s.request("GET", path, None, None);
    (r.status, r.body, t.elapsed())
}

/// Waits for a line starting with `prefix` in a spawned client's log.
fn wait_line(lab: &Lab, log: &str, prefix: &str, limit: Duration) -> String {
    let path = lab.dir().join(log);
    poll_until(limit, || {
        read_text(&path)
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "no `{prefix}` line in {log} within {limit:?}:\n{}",
            tail(&read_text(&path), 20)
        )
    })
}

/// Opens `per_host` TCP connections to port 80 from each of `hosts` addresses (`FLOOD_NET.10`
/// on), sends nothing, and after a second reports how many are still open and what the closed
/// ones were told; then holds them for `hold` seconds.
const HTTP_FLOOD: &str = r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
server, prefix, hosts, per_host, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
socks, failed = [], 0
for h in range(hosts):
    for _ in range(per_host):
        s = socket.socket()
        s.bind((prefix + str(10 + h), 0))
        s.settimeout(5)
        try:
            s.connect((server, 80))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
time.sleep(1)
held, told = 0, {}
for s in socks:
    s.setblocking(False)
    try:
        data = s.recv(400)
        key = data.split(b" ")[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
    except BlockingIOError:
        held += 1
        continue
    except OSError:
        key = "reset"
    told[key] = told.get(key, 0) + 1
print("flood attempted", hosts * per_host, "held", held, "failed", failed,
      "told", " ".join("%s=%d" % kv for kv in sorted(told.items())), flush=True)
time.sleep(hold)
"#;

#[test]
fn a_flood_of_idle_connections_leaves_boot_scripts_assets_and_metrics_served() {
    // 256 descriptors: rackboot takes half for HTTP (128 connections), keeps 16 of them in
    // reserve, and lets one address hold 32.
    let s = Setup::new("bounds-http-flood")
        .standard_files()
        .open_files(256)
        .http("header_timeout = \"60s\"")
        // The boot script below is fetched by curl at rackboot's own address.
        .tokens_from_any_address()
        .start();
    let log = s.log_text();
    assert!(
        log.contains("max_connections=128") && log.contains("reserved=16"),
        "the limits follow the open-files limit:\n{}",
        tail(&log, 20)
    );
    flood_addresses(&s.lab);

    // 1,100 connections from 5 addresses, 220 each: the first three get 32 each, the fourth
    // what is left before the reserve, the fifth two of the reserve; the rest are refused.
    let server = SERVER_IP.to_string();
    s.lab.spawn(
        "python3",
        &["-c", HTTP_FLOOD, &server, FLOOD_NET, "5", "220", "60"],
        "http-flood.log",
    );
    let line = wait_line(&s.lab, "http-flood.log", "flood ", CMD);
    let field = |name: &str| -> u32 {
        let at = line.split_whitespace().position(|w| w == name).unwrap();
        line.split_whitespace()
            .nth(at + 1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let held = field("held");
    assert!(
        (100..=128).contains(&held),
        "the flood holds up to max_connections less the reserve: {line}"
    );
    assert!(
        line.contains("429="),
        "per-address refusals told why: {line}"
    );

    // While the flood holds its connections, a machine booting and Prometheus are served.
    let (status, body, took) = timed_get(&s, "/boot/52:54:00:0b:00:01.ipxe?arch=bios");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body.starts_with(b"#!ipxe"), "a boot script");
    assert!(took < PROMPT, "boot script took {took:?}");
    let (status, body, took) = timed_get(&s, "/assets/x86_64/vmlinuz");
    assert_eq!((status, body.as_slice()), (200, &b"x86_64 kernel"[..]));
    assert!(took < PROMPT, "asset took {took:?}");
    let (status, _, took) = timed_get(&s, "/metrics");
    assert_eq!(status, 200);
    assert!(took < PROMPT, "/metrics took {took:?}");

    let per_address = s.metric(r#"rackboot_http_connections_refused_total{reason="per_address"}"#);
    let reserve = s.metric(r#"rackboot_http_connections_refused_total{reason="reserve"}"#);
    assert!(
        per_address >= 3.0 * (220.0 - 32.0),
        "per_address {per_address}"
    );
    assert!(reserve >= 200.0, "reserve {reserve}");
    assert!(
        s.metric("rackboot_http_connections") >= f64::from(held),
        "the flood's connections are open"
    );
    assert!(s.is_running(), "{}", tail(&s.log_text(), 20));
}

/// Five misbehaving clients at once, each timed from its own reference point to the moment
/// rackboot closes its connection; prints one line per client: `<name> <seconds|open> <first
/// response line>`.
const SLOW_CLIENTS: &str = r#"
import socket, sys, threading, time
server, token = sys.argv[1], sys.argv[2]
out = {}

def closed_after(s, t0, got=b""):
    s.settimeout(20)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except socket.timeout:
        return "open", got
    except OSError:
        pass
    return "%.2f" % (time.monotonic() - t0), got

def read_until(s, marker):
    got = b""
    s.settimeout(10)
    while marker not in got:
        d = s.recv(65536)
        if not d:
            raise Exception("closed before %r" % marker)
        got += d
    return got

def case(name):
    s = socket.create_connection((server, 80), timeout=10)
    t0 = time.monotonic()
    if name == "silent":
        pass
    elif name == "half_head":
        s.sendall(b"GET /boot/x.ipxe HTTP/1.1\r\nHo")
    elif name == "idle_after_boot_fetch":
        s.sendall(b"GET /assets/x86_64/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until(s, b"x86_64 kernel")
        t0 = time.monotonic()
    elif name == "hyper_half_head":
        s.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until(s, b"no such endpoint")
        t0 = time.monotonic()
        s.sendall(b"GET /nothing-here HTTP/1.1\r\nHo")
    elif name == "slow_body":
        s.sendall(b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mac\": ")
        t0 = time.monotonic()
    took, got = closed_after(s, t0)
    first = got.split(b"\r\n")[0].decode(errors="replace") or "-"
    body = got.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").replace("\n", " ")
    out[name] = "%s %s %s | %s" % (name, took, first, body)

names = ["silent", "half_head", "idle_after_boot_fetch", "hyper_half_head", "slow_body"]
threads = [threading.Thread(target=case, args=(n,)) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
for n in names:
    print(out.get(n, n + " error"))
"#;

/// Asks for `/assets/big.bin` with a 4 KiB receive buffer and reads nothing for `wait`
/// seconds, then reads what is left: prints the bytes received and whether the server closed.
const UNREAD: &str = r#"
import socket, sys, time
server, wait = sys.argv[1], float(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((server, 80))
s.sendall(b"GET /assets/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
print("asked", flush=True)
time.sleep(wait)
s.settimeout(10)
got, ended = 0, "eof"
try:
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
except socket.timeout:
    ended = "open"
except OSError:
    ended = "reset"
print("unread received", got, ended, flush=True)
"#;

#[test]
fn slow_heads_bodies_idle_and_unread_responses_are_closed_in_seconds_on_both_paths() {
    let s = Setup::new("bounds-http-slow")
        .standard_files()
        .http(
            "header_timeout = \"2s\"\nbody_timeout = \"2s\"\n\
             idle_timeout = \"3s\"\nsend_timeout = \"2s\"",
        )
        .start();
    const BIG: usize = 64 << 20;
    fs::write(s.path("assets/big.bin"), vec![7u8; BIG]).unwrap();

    let server = SERVER_IP.to_string();
    s.lab
        .spawn("python3", &["-c", UNREAD, &server, "8"], "unread.log");
    wait_line(&s.lab, "unread.log", "asked", CMD);
    let asked = Instant::now();

    let out = s
        .lab
        .run("python3", &["-c", SLOW_CLIENTS, &server, ADMIN_TOKEN], CMD);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closed = |name: &str| -> (f64, String) {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"));
        let took = line.split(' ').nth(1).unwrap();
        let secs = took
            .parse()
            .unwrap_or_else(|_| panic!("{name}: still open after 20 s:\n{text}"));
        (secs, line.to_string())
    };
    // The head has 2 s from connecting (own loop) or from the last answer (hyper's timer);
    // a loaded machine adds, never subtracts.
    for name in ["silent", "half_head", "hyper_half_head"] {
        let (secs, line) = closed(name);
        assert!((1.8..6.0).contains(&secs), "{line}\n{text}");
    }
    let (secs, line) = closed("idle_after_boot_fetch");
    assert!((2.8..7.0).contains(&secs), "idle_timeout 3 s: {line}");
    let (secs, line) = closed("slow_body");
    assert!((1.8..6.0).contains(&secs), "body_timeout 2 s: {line}");
    assert!(
        line.contains("400") && line.contains("http.body_timeout"),
        "refused with the reason: {line}"
    );

    // The unread download is given up send_timeout after the client stopped taking bytes.
    let send = poll_until(Duration::from_secs(15), || {
        (s.metric(r#"rackboot_http_timeouts_total{phase="send"}"#) >= 1.0).then(Instant::now)
    })
    .expect("the unread download was never given up");
    assert!(send - asked >= Duration::from_secs(2), "{:?}", send - asked);
    let line = wait_line(&s.lab, "unread.log", "unread ", CMD);
    let got: usize = line.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(
        got < BIG && !line.ends_with("open"),
        "closed short of the body: {line}"
    );

    for (phase, at_least) in [("header", 3.0), ("idle", 1.0), ("body", 1.0)] {
        let n = s.metric(&format!(
            r#"rackboot_http_timeouts_total{{phase="{phase}"}}"#
        ));
        assert!(n >= at_least, "{phase}: {n}");
    }
    let (status, body, took) = timed_get(&s, "/assets/x86_64/vmlinuz");
    assert_eq!((status, body.as_slice()), (200, &b"x86_64 kernel"[..]));
    assert!(took < PROMPT);
}

/// Sends `per_host` RRQs for a file from each of `hosts` addresses (`FLOOD_NET.<first>` on),
/// one socket each, and acknowledges nothing; after a second reports how many got an ERROR and
/// how many got data, then keeps its sockets open (no ICMP unreachable) for `hold` seconds.
const TFTP_FLOOD: &str = r#"
import socket, sys, time
server, name, prefix = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
first, hosts, per_host, hold = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
socks = []
for h in range(hosts):
    for _ in range(per_host):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((prefix + str(first + h), 0))
        s.sendto(b"\0\1" + name + b"\0octet\0", (server, 69))
        socks.append(s)
        # Paced a little: a burst of hundreds could overflow the server's receive buffer.
        time.sleep(0.0005)
time.sleep(1)
busy = data = 0
for s in socks:
    s.setblocking(False)
    try:
        d = s.recv(2048)
    except BlockingIOError:
        continue
    if d[:2] == b"\0\5":
        busy += 1
    elif d[:2] == b"\0\3":
        data += 1
print("flood sent", len(socks), "busy", busy, "data", data, flush=True)
time.sleep(hold)
"#;

#[test]
fn never_acknowledged_tftp_requests_neither_crowd_out_nor_delay_a_real_fetch() {
    let s = Setup::new("bounds-tftp-flood")
        .standard_files()
        .tftp("first_ack_timeout = \"2s\"")
        .start();
    flood_addresses(&s.lab);
    let server = SERVER_IP.to_string();
    let file = "x86_64/vmlinuz";
    let series = |result: &str| format!(r#"rackboot_tftp_transfers_total{{result="{result}"}}"#);

    // 256 RRQs from one address: 8 (max_transfers_per_address) are served, the rest told
    // "server busy" at once.
    s.lab.spawn(
        "python3",
        &[
            "-c", TFTP_FLOOD, &server, file, FLOOD_NET, "10", "1", "256", "40",
        ],
        "tftp-flood-one.log",
    );
    let line = wait_line(&s.lab, "tftp-flood-one.log", "flood ", CMD);
    assert!(
        line.ends_with("busy 248 data 8"),
        "one address gets max_transfers_per_address: {line}"
    );
    assert_eq!(s.metric(&series("limited")), 248.0);
    // Their 8 slots are freed first_ack_timeout after they started, not give_up (20 s).
    let freed = poll_until(Duration::from_secs(10), || {
        (s.metric(&series("unacknowledged")) >= 8.0).then_some(())
    });
    assert!(
        freed.is_some(),
        "the unacknowledged transfers were not dropped"
    );

    // 256 RRQs from 64 addresses take every one of the 256 max_transfers slots.
    s.lab.spawn(
        "python3",
        &[
            "-c", TFTP_FLOOD, &server, file, FLOOD_NET, "20", "64", "4", "40",
        ],
        "tftp-flood-many.log",
    );
    let line = wait_line(&s.lab, "tftp-flood-many.log", "flood ", CMD);
    assert!(line.ends_with("busy 0 data 256"), "{line}");

    // A real fetch waits for the first slot freed: about first_ack_timeout, not give_up.
    let local = s.lab.dir().join("real.curl");
    let t = Instant::now();
    let out = s.lab.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "-o",
            local.to_str().unwrap(),
            &format!("tftp://{SERVER_IP}/{file}"),
        ],
        CMD,
    );
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&local).unwrap(), b"x86_64 kernel");
    assert!(
        took < Duration::from_secs(8),
        "the real fetch took {took:?}"
    );
    let local = s.lab.dir().join("real.atftp");
    let atftp = s.lab.run(
        "atftp",
        &["-g", "-r", file, "-l", local.to_str().unwrap(), &server],
        CMD,
    );
    assert!(
        atftp.status.success() && fs::read(&local).unwrap_or_default() == b"x86_64 kernel",
        "atftp: {}",
        String::from_utf8_lossy(&atftp.stderr)
    );
    let dropped = poll_until(Duration::from_secs(15), || {
        (s.metric(&series("unacknowledged")) >= 8.0 + 256.0).then_some(())
    });
    assert!(dropped.is_some(), "{}", s.metric(&series("unacknowledged")));
    assert!(s.metric(&series("sent")) >= 2.0);
    assert!(s.is_running(), "{}", tail(&s.log_text(), 20));
}

/// Fetches `name` by TFTP, takes its first block, and ends the transfer with an ERROR (which
/// rackboot logs as a read ended early, with the file name).
const TFTP_ABORT: &str = r#"
import socket, sys
server, name = sys.argv[1], sys.argv[2].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"\0\1" + name + b"\0octet\0", (server, 69))
d, peer = s.recvfrom(2048)
assert d[:2] == b"\0\3", d
s.sendto(b"\0\5\0\0bye\0", peer)
print("aborted", flush=True)
"#;

#[test]
fn one_request_is_one_log_line_whatever_its_path_or_file_name_holds() {
    let s = Setup::new("bounds-log").standard_files().tftp("").start();
    // A path whose MAC is a newline and a made-up log line: refused as not a MAC, and logged.
    let r = s.request("GET", "/node/%0aFORGED-HTTP-LINE/scripts", None, None);
    assert_eq!(r.status, 400, "{}", r.text());

    // A file name with a raw newline in it, read and then aborted by the client.
    let name = "x86_64/evil\nFORGED-TFTP-LINE";
    fs::write(s.path(&format!("assets/{name}")), b"evil").unwrap();
    let out = s.lab.run(
        "python3",
        &["-c", TFTP_ABORT, &SERVER_IP.to_string(), name],
        CMD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = poll_until(Duration::from_secs(10), || {
        let log = s.log_text();
        (log.contains("FORGED-HTTP-LINE") && log.contains("FORGED-TFTP-LINE")).then_some(log)
    })
    .unwrap_or_else(|| panic!("not logged:\n{}", tail(&s.log_text(), 20)));
    for forged in ["FORGED-HTTP-LINE", "FORGED-TFTP-LINE"] {
        assert!(
            log.contains(&format!("\\n{forged}")),
            "{forged} logged escaped:\n{}",
            tail(&log, 20)
        );
        assert!(
            !log.lines().any(|l| l.trim_start().starts_with(forged)),
            "{forged} started a line of its own:\n{}",
            tail(&log, 20)
        );
    }
}
