//! The DNS service on loopback against the real `dig` client (bind9-dnsutils), and against a
//! real upstream resolver (dnsmasq) for forwarding.
//!
//! Each test binds UDP and TCP on one free port of 127.0.0.1, runs `serve` with a name table
//! filled as the store would fill it, asks `dig`, and checks what came back on the wire. The last
//! test runs the whole `rackboot serve` in a lab namespace, edits nodes through the API and asks
//! `dig` from inside the lab.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsRawFd,
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use hickory_proto::rr::Name;
use ipnet::Ipv4Net;
use rackboot::dns::{NEGATIVE_TTL, Zone, serve};
use rackboot::model::{Lease, LeaseState, Mac, Timestamp};
use rackboot::names::NameTable;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Child, Command},
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

/// Longer than any single exchange here; a test that hits it has hung.
const STEP: Duration = Duration::from_secs(10);

fn mac(n: u8) -> Mac {
    Mac::new([0x52, 0x54, 0, 0, 0xdd, n])
}

/// Node records as the store would report them.
fn rack_nodes() -> Arc<NameTable> {
    let names = Arc::new(NameTable::new());
    names.set_node(mac(1), "node1", Some(Ipv4Addr::new(10, 0, 0, 11)));
    names.set_node(mac(2), "Node2", Some(Ipv4Addr::new(10, 0, 0, 12)));
    // A record the store should never hold; PTR must not point at it.
    names.set_node(mac(3), "bad_name", Some(Ipv4Addr::new(10, 0, 0, 99)));
    // A node on a relayed subnet, addressed by its lease.
    names.set_node(mac(4), "far1", None);
    names.set_lease(&bound(mac(4), [10, 1, 2, 3]));
    names.loaded();
    names
}

fn bound(mac: Mac, ip: [u8; 4]) -> Lease {
    Lease {
        ip: Ipv4Addr::from(ip),
        mac: Some(mac),
        state: LeaseState::Bound,
        expires: Timestamp(Timestamp::now().millis() + 3_600_000),
    }
}

struct Running {
    port: u16,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), rackboot::dns::DnsError>>,
    /// `socket:[inode]` of the server's sockets, to check they are closed after shutdown.
    udp_socket: String,
    tcp_socket: String,
}

/// What `/proc/self/fd/<fd>` links to: `socket:[inode]`, unique while the socket is open.
fn socket_id(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .expect("read /proc/self/fd")
        .to_string_lossy()
        .into_owned()
}

/// Every socket this process holds open.
fn open_sockets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|link| link.to_string_lossy().into_owned())
        .filter(|link| link.starts_with("socket:"))
        .collect()
}

impl Running {
    async fn start(names: Arc<NameTable>) -> Self {
        Self::forwarding(names, Vec::new()).await
    }

    /// Serving the boot subnet 10.0.0.0/24 and the relayed 10.1.0.0/16, forwarding outside
    /// names to `forwarders`.
    async fn forwarding(names: Arc<NameTable>, forwarders: Vec<SocketAddr>) -> Self {
        let (udp, tcp) = bind_pair().await;
        let port = udp.local_addr().expect("UDP local address").port();
        let udp_socket = socket_id(udp.as_raw_fd());
        let tcp_socket = socket_id(tcp.as_raw_fd());
        let subnets: [Ipv4Net; 2] = [
            "10.0.0.0/24".parse().expect("subnet"),
            "10.1.0.0/16".parse().expect("subnet"),
        ];
        let zone = Zone::new(
            Name::from_ascii("rack.internal.").expect("domain"),
            &subnets,
            Ipv4Addr::new(10, 0, 0, 1),
        )
        .expect("zone");
        let cancel = CancellationToken::new();
        let metrics = Arc::new(rackboot::metrics::Metrics::new(&[]));
        let task = tokio::spawn(serve(
            udp,
            tcp,
            zone,
            names,
            forwarders,
            metrics,
            cancel.clone(),
        ));
        Self {
            port,
            cancel,
            task,
            udp_socket,
            tcp_socket,
        }
    }

    fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Runs `dig @127.0.0.1 -p PORT <args>` with a short per-try timeout and returns stdout.
    async fn dig(&self, args: &[&str]) -> String {
        dig_at(self.port, args).await
    }

    /// Cancels the server and checks that it stopped cleanly and released its port.
    async fn stop(self) {
        self.cancel.cancel();
        timeout(STEP, self.task)
            .await
            .expect("serve did not stop after cancellation")
            .expect("serve panicked")
            .expect("serve returned an error");
        // The sockets themselves, not the port: with tests running in parallel, another test
        // may be handed the port the moment it is free.
        for (transport, socket) in [("UDP", &self.udp_socket), ("TCP", &self.tcp_socket)] {
            assert!(
                !open_sockets().contains(socket),
                "{transport} socket {socket} still open after shutdown"
            );
        }
    }
}

async fn dig_at(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut command = Command::new("dig");
    command
        .args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=1"])
        .args(args)
        .kill_on_drop(true);
    let output = timeout(STEP, command.output())
        .await
        .unwrap_or_else(|_| panic!("dig {args:?} hung"))
        .expect("dig is not installed; install bind9-dnsutils (apt-get install bind9-dnsutils)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dig {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// UDP and TCP on the same free loopback port, as `dig -p` uses one port for both.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = udp.local_addr().expect("UDP local address");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port was free for both UDP and TCP after 20 tries");
}

/// The `status:` field of dig's header line, such as `NOERROR`.
fn status(out: &str) -> &str {
    field(out, "status: ", ',')
}

/// The header flags dig printed, such as `qr aa rd`.
fn flags(out: &str) -> Vec<&str> {
    field(out, "flags: ", ';').split_whitespace().collect()
}

fn field<'a>(out: &'a str, key: &str, end: char) -> &'a str {
    let start = out
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in dig output:\n{out}"))
        + key.len();
    let rest = &out[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The lines of the ANSWER SECTION.
fn answers(out: &str) -> Vec<&str> {
    section(out, ";; ANSWER SECTION:")
}

/// The lines of the AUTHORITY SECTION.
fn authority(out: &str) -> Vec<&str> {
    section(out, ";; AUTHORITY SECTION:")
}

fn section<'a>(out: &'a str, title: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|line| !line.starts_with(title))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect()
}

/// The serial of the SOA of `zone`, asked over UDP.
async fn serial(server: &Running, zone: &str) -> u32 {
    let out = server.dig(&[zone, "SOA", "+short"]).await;
    out.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial for {zone}: {out:?}"))
}

#[tokio::test]
async fn a_records_over_udp_and_tcp() {
    let server = Running::start(rack_nodes()).await;

    assert_eq!(
        server.dig(&["node1.rack.internal", "A", "+short"]).await,
        "10.0.0.11\n"
    );
    assert_eq!(
        server
            .dig(&["node1.rack.internal", "A", "+short", "+tcp"])
            .await,
        "10.0.0.11\n"
    );
    // Case-insensitive both ways: in the question and in the store.
    assert_eq!(
        server.dig(&["NODE2.Rack.Internal.", "A", "+short"]).await,
        "10.0.0.12\n"
    );

    let out = server.dig(&["node1.rack.internal", "A"]).await;
    assert_eq!(status(&out), "NOERROR");
    let flags = flags(&out);
    assert!(flags.contains(&"aa"), "not authoritative: {flags:?}");
    assert!(!flags.contains(&"ra"), "claims recursion: {flags:?}");
    let answers = answers(&out);
    assert_eq!(answers.len(), 1, "{out}");
    let fields: Vec<&str> = answers[0].split_whitespace().collect();
    assert_eq!(
        fields,
        ["node1.rack.internal.", "60", "IN", "A", "10.0.0.11"],
        "{out}"
    );

    server.stop().await;
}

#[tokio::test]
async fn ptr_records() {
    let server = Running::start(rack_nodes()).await;

    assert_eq!(
        server.dig(&["-x", "10.0.0.11", "+short"]).await,
        "node1.rack.internal.\n"
    );
    assert_eq!(
        server.dig(&["-x", "10.0.0.12", "+short", "+tcp"]).await,
        "node2.rack.internal.\n"
    );

    let out = server.dig(&["-x", "10.0.0.11"]).await;
    assert_eq!(status(&out), "NOERROR");
    assert!(flags(&out).contains(&"aa"), "{out}");
    let fields: Vec<&str> = answers(&out)[0].split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "11.0.0.10.in-addr.arpa.",
            "60",
            "IN",
            "PTR",
            "node1.rack.internal."
        ],
        "{out}"
    );

    // An address of the subnet no node holds.
    let out = server.dig(&["-x", "10.0.0.200"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");

    // A hostname that cannot be a DNS label is a store problem, not an answer.
    let out = server.dig(&["-x", "10.0.0.99"]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");

    // A relayed subnet has its reverse zone too; this address is leased.
    assert_eq!(
        server.dig(&["-x", "10.1.2.3", "+short"]).await,
        "far1.rack.internal.\n"
    );
    assert_eq!(
        server.dig(&["far1.rack.internal", "+short"]).await,
        "10.1.2.3\n"
    );
    let out = server.dig(&["-x", "10.1.9.9"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert_eq!(
        authority(&out)[0].split_whitespace().next(),
        Some("1.10.in-addr.arpa."),
        "{out}"
    );

    // Outside every served subnet: not ours.
    let out = server.dig(&["-x", "192.168.1.1"]).await;
    assert_eq!(status(&out), "REFUSED", "{out}");

    server.stop().await;
}

#[tokio::test]
async fn negative_answers() {
    let server = Running::start(rack_nodes()).await;

    let out = server.dig(&["nosuchnode.rack.internal", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    assert!(answers(&out).is_empty(), "{out}");
    // RFC 2308: the zone's SOA in the authority section, with the negative TTL, so resolvers
    // cache the NXDOMAIN only that long.
    let soa = authority(&out);
    assert_eq!(soa.len(), 1, "{out}");
    let fields: Vec<&str> = soa[0].split_whitespace().collect();
    assert_eq!(
        fields[..4],
        ["rack.internal.", &NEGATIVE_TTL.to_string(), "IN", "SOA"],
        "{out}"
    );
    assert_eq!(
        fields[4..6],
        ["rack.internal.", "hostmaster.rack.internal."],
        "{out}"
    );

    let out = server.dig(&["nosuchnode.rack.internal", "A", "+tcp"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    // The node exists, but has no IPv6 address: NODATA, not NXDOMAIN, with the SOA too.
    let out = server.dig(&["node1.rack.internal", "AAAA"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    assert!(answers(&out).is_empty(), "{out}");
    assert!(authority(&out)[0].contains("SOA"), "{out}");

    let out = server.dig(&["nosuchnode.rack.internal", "AAAA"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    let out = server.dig(&["a.node1.rack.internal", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    server.stop().await;
}

#[tokio::test]
async fn never_an_open_resolver() {
    let server = Running::start(rack_nodes()).await;

    for args in [
        &["example.com", "A"][..],
        &["example.com", "A", "+tcp"],
        &["example.com", "A", "+norecurse"],
        &[".", "NS"],
        &["version.bind", "TXT", "CH"],
    ] {
        let out = server.dig(args).await;
        assert_eq!(status(&out), "REFUSED", "{args:?}: {out}");
        let flags = flags(&out);
        assert!(!flags.contains(&"aa"), "{args:?}: {flags:?}");
        assert!(!flags.contains(&"ra"), "{args:?}: {flags:?}");
        assert!(answers(&out).is_empty(), "{args:?}: {out}");
    }

    // Zone transfers would hand out every node at once. dig only says "Transfer failed", so the
    // response code is read off the wire.
    let out = server.dig(&["rack.internal", "AXFR"]).await;
    assert!(out.contains("Transfer failed"), "{out}");
    let mut tcp = TcpStream::connect(server.addr())
        .await
        .expect("connect TCP");
    let mut axfr = vec![
        0x00, 0x1f, 0x77, 0x88, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
    ];
    axfr.extend_from_slice(b"\x04rack\x08internal\x00\x00\xfc\x00\x01");
    assert_eq!(usize::from(axfr[1]), axfr.len() - 2, "length prefix");
    tcp.write_all(&axfr).await.expect("write AXFR");
    let mut reply = [0u8; 14];
    timeout(STEP, tcp.read_exact(&mut reply))
        .await
        .expect("no reply to AXFR")
        .expect("read AXFR reply");
    assert_eq!(reply[2..4], [0x77, 0x88], "reply id");
    assert_eq!(reply[5] & 0x0f, 5, "AXFR reply rcode is not REFUSED");

    server.stop().await;
}

#[tokio::test]
async fn other_opcodes_are_not_implemented() {
    let server = Running::start(rack_nodes()).await;

    let out = server
        .dig(&["+opcode=status", "node1.rack.internal", "A"])
        .await;
    assert_eq!(status(&out), "NOTIMP", "{out}");

    let out = server
        .dig(&["+opcode=notify", "rack.internal", "SOA"])
        .await;
    assert_eq!(status(&out), "NOTIMP", "{out}");

    // EDNS versions above 0 get BADVERS (RFC 6891 §6.1.3). dig retries with version 0 on
    // BADVERS unless told not to.
    let out = server
        .dig(&["+edns=1", "+noednsnegotiation", "node1.rack.internal", "A"])
        .await;
    assert_eq!(status(&out), "BADVERS", "{out}");

    server.stop().await;
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_server() {
    let server = Running::start(rack_nodes()).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    client.connect(server.addr()).await.expect("connect client");
    // Shorter than a header: silently dropped.
    client.send(&[0xde, 0xad]).await.expect("send");
    client.send(&[]).await.expect("send");
    // A header promising one question, then a truncated name: FORMERR.
    let truncated = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, b'n', b'o',
    ];
    client.send(&truncated).await.expect("send");
    let mut reply = [0u8; 512];
    let len = timeout(STEP, client.recv(&mut reply))
        .await
        .expect("no reply to a truncated question")
        .expect("recv");
    assert!(len >= 12, "reply shorter than a header: {len} bytes");
    assert_eq!(reply[..2], [0x12, 0x34], "reply id");
    assert_eq!(reply[3] & 0x0f, 1, "reply rcode is not FORMERR");
    // A name pointer that loops back on itself.
    let looping = [
        0x43, 0x21, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c, 0x00,
        0x01, 0x00, 0x01,
    ];
    client.send(&looping).await.expect("send");
    // Two questions in one query (RFC 9619 says exactly one).
    let two_questions = [
        0x55, 0x66, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00,
        0x00, 0x01, 0x00, 0x01, 0x01, b'b', 0x00, 0x00, 0x01, 0x00, 0x01,
    ];
    client.send(&two_questions).await.expect("send");
    let len = timeout(STEP, async {
        loop {
            let len = client.recv(&mut reply).await.expect("recv");
            if reply[..2] == [0x55, 0x66] {
                return len;
            }
        }
    })
    .await
    .expect("no reply to a two-question query");
    assert!(len >= 12);
    assert_eq!(reply[3] & 0x0f, 1, "two questions did not get FORMERR");

    // Over TCP: a framed message too short to be DNS, then a frame cut off by the client.
    let mut tcp = TcpStream::connect(server.addr())
        .await
        .expect("connect TCP");
    tcp.write_all(&[0x00, 0x03, 1, 2, 3]).await.expect("write");
    tcp.write_all(&[0x01, 0x00, 9]).await.expect("write");
    drop(tcp);
    let mut tcp = TcpStream::connect(server.addr())
        .await
        .expect("connect TCP");
    tcp.write_all(&[0xff]).await.expect("write");
    tcp.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = timeout(STEP, tcp.read_to_end(&mut rest)).await;

    assert_eq!(
        server.dig(&["node1.rack.internal", "A", "+short"]).await,
        "10.0.0.11\n"
    );
    assert_eq!(
        server
            .dig(&["node1.rack.internal", "A", "+short", "+tcp"])
            .await,
        "10.0.0.11\n"
    );

    server.stop().await;
}

#[tokio::test]
async fn apexes_have_soa_and_ns_and_the_serial_follows_changes() {
    let names = rack_nodes();
    let server = Running::start(Arc::clone(&names)).await;

    for zone in [
        "rack.internal.",
        "0.0.10.in-addr.arpa.",
        "1.10.in-addr.arpa.",
    ] {
        let out = server.dig(&[zone, "SOA"]).await;
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(flags(&out).contains(&"aa"), "{out}");
        let fields: Vec<&str> = answers(&out)[0].split_whitespace().collect();
        assert_eq!(fields[..4], [zone, "60", "IN", "SOA"], "{out}");
        assert_eq!(
            server.dig(&[zone, "NS", "+short"]).await,
            "rack.internal.\n",
            "{zone}"
        );
    }
    // The name server's address: rackboot's own.
    assert_eq!(
        server.dig(&["rack.internal.", "A", "+short"]).await,
        "10.0.0.1\n"
    );

    let first = serial(&server, "rack.internal.").await;
    assert_eq!(serial(&server, "1.10.in-addr.arpa.").await, first);
    assert_eq!(
        serial(&server, "rack.internal.").await,
        first,
        "nothing changed"
    );

    // A new lease: the name resolves and the serial grows, at once.
    names.set_node(mac(9), "late", None);
    names.set_lease(&bound(mac(9), [10, 1, 7, 7]));
    let second = serial(&server, "rack.internal.").await;
    assert!(second > first, "{second} after {first}");
    assert_eq!(
        server.dig(&["late.rack.internal", "+short", "+tcp"]).await,
        "10.1.7.7\n"
    );
    assert_eq!(
        server.dig(&["-x", "10.1.7.7", "+short"]).await,
        "late.rack.internal.\n"
    );

    // An admin's edit of a fixed address.
    names.set_node(mac(1), "node1", Some(Ipv4Addr::new(10, 0, 0, 21)));
    let third = serial(&server, "0.0.10.in-addr.arpa.").await;
    assert!(third > second, "{third} after {second}");
    assert_eq!(
        server.dig(&["node1.rack.internal", "+short"]).await,
        "10.0.0.21\n"
    );
    let out = server.dig(&["-x", "10.0.0.11"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    // A lease released: gone, and the serial grows again.
    names.drop_lease(Ipv4Addr::new(10, 1, 7, 7));
    assert!(serial(&server, "rack.internal.").await > third);
    let out = server.dig(&["late.rack.internal"]).await;
    assert_eq!(
        status(&out),
        "NOERROR",
        "the node exists, without an address: {out}"
    );
    assert!(answers(&out).is_empty(), "{out}");

    server.stop().await;
}

/// dnsmasq on a free loopback port as the upstream resolver, answering only from the names it
/// is given (no /etc/resolv.conf, no /etc/hosts). Killed when dropped.
struct Upstream {
    port: u16,
    child: Child,
}

impl Upstream {
    async fn start(records: &[&str]) -> Self {
        let (udp, tcp) = bind_pair().await;
        let port = udp.local_addr().expect("local address").port();
        // Freed for dnsmasq; a test elsewhere grabbing it in between would fail the start below.
        drop((udp, tcp));
        let mut command = Command::new("dnsmasq");
        command
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                "--log-facility=-",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .expect("dnsmasq is not installed; install it (apt-get install dnsmasq-base)");
        // Ready once it answers over TCP too (bounded).
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err).await;
                }
                panic!("dnsmasq exited at start-up ({status}): {err}");
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq did not listen within {STEP:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { port, child }
    }

    fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test]
async fn outside_names_are_forwarded_to_the_upstreams() {
    // A long TXT record: over 512 bytes, so without EDNS the UDP answer is truncated.
    let long = "x".repeat(200);
    let txt = format!("--txt-record=big.example,{long},{long},{long}");
    let upstream = Upstream::start(&[
        "--address=/upstream.example/192.0.2.7",
        // No address: NXDOMAIN for the name.
        "--address=/nothing.example/",
        &txt,
    ])
    .await;
    // The first forwarder never answers: the second is asked after it times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind silent upstream");
    let server = Running::forwarding(
        rack_nodes(),
        vec![silent.local_addr().expect("address"), upstream.addr()],
    )
    .await;

    let out = server.dig(&["+time=8", "upstream.example", "A"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(
        !flags(&out).contains(&"aa"),
        "a relayed answer is not ours: {out}"
    );
    assert_eq!(answers(&out).len(), 1, "{out}");
    assert!(answers(&out)[0].ends_with("192.0.2.7"), "{out}");
    assert_eq!(
        server
            .dig(&["+time=8", "upstream.example", "+short", "+tcp"])
            .await,
        "192.0.2.7\n"
    );
    // The upstream's NXDOMAIN is an answer, relayed as it is.
    let out = server.dig(&["+time=8", "nothing.example", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    // Truncated over UDP without EDNS: relayed truncated (dig +ignore shows the TC bit), and
    // the whole answer comes over TCP.
    let out = server
        .dig(&["+time=8", "+noedns", "+ignore", "big.example", "TXT"])
        .await;
    assert!(flags(&out).contains(&"tc"), "{out}");
    let out = server
        .dig(&["+time=8", "+noedns", "big.example", "TXT"])
        .await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(answers(&out).len(), 1, "{out}");
    assert!(answers(&out)[0].len() > 600, "{out}");

    // Without RD the client asks us as an authority, which we are not for this name.
    let out = server.dig(&["+norecurse", "upstream.example", "A"]).await;
    assert_eq!(status(&out), "REFUSED", "{out}");
    // Our own names are never forwarded.
    let out = server.dig(&["nosuchnode.rack.internal", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    // Nor are zone transfers or other classes.
    let out = server.dig(&["version.bind", "TXT", "CH"]).await;
    assert_eq!(status(&out), "REFUSED", "{out}");

    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind silent upstream");
    let server =
        Running::forwarding(rack_nodes(), vec![silent.local_addr().expect("address")]).await;

    let out = server.dig(&["+time=6", "example.com", "A"]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    let out = server.dig(&["+time=6", "example.com", "A", "+tcp"]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    // Our own names are still answered meanwhile.
    assert_eq!(
        server.dig(&["node1.rack.internal", "+short"]).await,
        "10.0.0.11\n"
    );

    server.stop().await;
}

/// `dig @10.77.0.1 <args>` from inside the lab.
fn lab_dig(rb: &common::server::Server, args: &[&str]) -> String {
    let mut all = vec!["@10.77.0.1", "+time=2", "+tries=1"];
    all.extend_from_slice(args);
    let out = rb.lab.run("dig", &all, STEP);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn lab_serial(rb: &common::server::Server, zone: &str) -> u32 {
    let out = lab_dig(rb, &[zone, "SOA", "+short"]);
    out.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial for {zone}: {out:?}"))
}

#[test]
fn rackboot_serve_answers_from_its_node_records_as_they_change() {
    use common::api::ADMIN_TOKEN;
    use common::setup::{LAB_CIDR, Setup};

    let rb = Setup::new("dns-serve")
        .standard_files()
        .dns("")
        // The lab subnet and a relayed one: a reverse zone each.
        .subnet(LAB_CIDR, "")
        .subnet("10.88.0.0/16", "")
        .start();
    let admin = |method: &str, path: &str, body: Option<&str>| {
        let r = rb.request(method, path, Some(ADMIN_TOKEN), body);
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
    };
    admin(
        "POST",
        "/api/v1/nodes",
        Some(r#"{"mac":"52:54:00:dd:01:01","hostname":"web1","ipv4":"10.77.0.50"}"#),
    );
    admin(
        "POST",
        "/api/v1/nodes",
        Some(r#"{"mac":"52:54:00:dd:01:02","hostname":"far1","ipv4":"10.88.1.2"}"#),
    );

    assert_eq!(
        lab_dig(&rb, &["web1.rack.internal", "+short"]),
        "10.77.0.50\n"
    );
    assert_eq!(
        lab_dig(&rb, &["far1.rack.internal", "+short", "+tcp"]),
        "10.88.1.2\n"
    );
    assert_eq!(
        lab_dig(&rb, &["-x", "10.88.1.2", "+short"]),
        "far1.rack.internal.\n"
    );
    let out = lab_dig(&rb, &["example.com", "A"]);
    assert_eq!(status(&out), "REFUSED", "no forwarders configured: {out}");

    // An admin moves web1: the answer and the serial follow at once.
    let before = lab_serial(&rb, "rack.internal.");
    admin(
        "PATCH",
        "/api/v1/nodes/52:54:00:dd:01:01",
        Some(r#"{"ipv4":"10.77.0.51"}"#),
    );
    assert_eq!(
        lab_dig(&rb, &["web1.rack.internal", "+short"]),
        "10.77.0.51\n"
    );
    let after = lab_serial(&rb, "rack.internal.");
    assert!(after > before, "serial {after} after {before}");
    assert_eq!(lab_serial(&rb, "0.77.10.in-addr.arpa."), after);

    // Deleted: NXDOMAIN, with the zone's SOA.
    admin("DELETE", "/api/v1/nodes/52:54:00:dd:01:02", None);
    let out = lab_dig(&rb, &["-x", "10.88.1.2"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(
        authority(&out)[0].starts_with("88.10.in-addr.arpa."),
        "{out}"
    );
    assert!(lab_serial(&rb, "88.10.in-addr.arpa.") > after);
}
