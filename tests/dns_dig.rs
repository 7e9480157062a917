//! The DNS service on loopback against the real `dig` client (bind9-dnsutils).
//!
//! Each test binds UDP and TCP on one free port of 127.0.0.1, runs `serve` with an in-memory
//! `NameSource`, asks `dig`, and checks what came back on the wire.

use std::{
    collections::HashMap,
    future::{Future, pending},
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::rr::Name;
use rackboot::dns::{NameSource, Zone, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    process::Command,
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

/// Longer than any single exchange here; a test that hits it has hung.
const STEP: Duration = Duration::from_secs(10);

/// Node records as the store would give them: hostname → address.
struct Nodes(HashMap<String, Ipv4Addr>);

impl Nodes {
    fn new(nodes: &[(&str, [u8; 4])]) -> Self {
        Self(
            nodes
                .iter()
                .map(|(host, ip)| (host.to_string(), Ipv4Addr::from(*ip)))
                .collect(),
        )
    }
}

impl NameSource for Nodes {
    async fn host_addr(&self, hostname: &str) -> Option<Ipv4Addr> {
        self.0
            .iter()
            .find(|(host, _)| host.eq_ignore_ascii_case(hostname))
            .map(|(_, ip)| *ip)
    }

    async fn addr_host(&self, ip: Ipv4Addr) -> Option<String> {
        self.0
            .iter()
            .find(|(_, addr)| **addr == ip)
            .map(|(host, _)| host.clone())
    }
}

/// A store that never answers, to exercise the lookup timeout.
struct Stuck;

impl NameSource for Stuck {
    fn host_addr(&self, _: &str) -> impl Future<Output = Option<Ipv4Addr>> + Send {
        pending()
    }

    fn addr_host(&self, _: Ipv4Addr) -> impl Future<Output = Option<String>> + Send {
        pending()
    }
}

fn rack_nodes() -> Nodes {
    Nodes::new(&[
        ("node1", [10, 0, 0, 11]),
        ("Node2", [10, 0, 0, 12]),
        // A record the store should never hold; PTR must not point at it.
        ("bad_name", [10, 0, 0, 99]),
    ])
}

struct Running {
    port: u16,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), rackboot::dns::DnsError>>,
}

impl Running {
    async fn start<S: NameSource>(source: S) -> Self {
        let (udp, tcp) = bind_pair().await;
        let port = udp.local_addr().expect("UDP local address").port();
        let zone = Zone::new(
            Name::from_ascii("rack.internal.").expect("domain"),
            Ipv4Addr::new(10, 0, 0, 0),
            24,
        )
        .expect("zone");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(udp, tcp, zone, Arc::new(source), cancel.clone()));
        Self { port, cancel, task }
    }

    fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Runs `dig @127.0.0.1 -p PORT <args>` with a short per-try timeout and returns stdout.
    async fn dig(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut command = Command::new("dig");
        command
            .args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=1"])
            .args(args)
            .kill_on_drop(true);
        let output = timeout(STEP, command.output())
            .await
            .unwrap_or_else(|_| panic!("dig {args:?} hung"))
            .expect(
                "dig is not installed; install bind9-dnsutils (apt-get install bind9-dnsutils)",
            );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "dig {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Cancels the server and checks that it stopped cleanly and released its port.
    async fn stop(self) {
        let addr = self.addr();
        self.cancel.cancel();
        timeout(STEP, self.task)
            .await
            .expect("serve did not stop after cancellation")
            .expect("serve panicked")
            .expect("serve returned an error");
        UdpSocket::bind(addr)
            .await
            .expect("UDP port still held after shutdown");
        TcpListener::bind(addr)
            .await
            .expect("TCP port still held after shutdown");
    }
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
    out.lines()
        .skip_while(|line| !line.starts_with(";; ANSWER SECTION:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect()
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

    // Outside the boot subnet: not ours.
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

    let out = server.dig(&["nosuchnode.rack.internal", "A", "+tcp"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    // The node exists, but has no IPv6 address: NODATA, not NXDOMAIN.
    let out = server.dig(&["node1.rack.internal", "AAAA"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    assert!(answers(&out).is_empty(), "{out}");

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
async fn a_stuck_store_gets_servfail() {
    let server = Running::start(Stuck).await;

    // The lookup timeout is 2 s; give dig longer than that.
    let out = server.dig(&["+time=5", "node1.rack.internal", "A"]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");

    // Questions that need no lookup are still answered.
    let out = server.dig(&["example.com", "A"]).await;
    assert_eq!(status(&out), "REFUSED", "{out}");

    server.stop().await;
}
