//! The bodies of rackboot's fuzz targets: one function per parser of
//! untrusted input, each taking arbitrary bytes. The `cargo fuzz` targets in
//! `fuzz/` call these, and `tests/fuzz_corpus.rs` replays every corpus file
//! and every past crash through the very same functions, so a crash found by
//! the fuzzer is a plain `cargo test` failure from then on.
//!
//! Each function feeds its input to the code a request (or a file) reaches,
//! as the server calls it, and asserts what must hold for any input: no
//! panic (the process refuses bad input, it never dies of it), and where an
//! emitter exists, parse → emit → parse gives the same thing back.
//!
//! Not part of rackboot's interface: hidden from the docs, no stability.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dhcproto::v4::{Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};

/// A target's body: any bytes in, a panic on what must not happen.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and its
/// `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` folders.
pub const TARGETS: &[(&str, Target)] = &[
    ("dhcp", dhcp),
    ("tftp_packet", tftp_packet),
    ("tftp_session", tftp_session),
    ("http_head", http_head),
    ("dns", dns),
    ("selector", selector),
    ("bootenv", bootenv),
    ("config", config),
    ("node_csv", node_csv),
];

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out))
        .expect("a Message rackboot holds encodes");
    out
}

/// DHCP on ports 67 and 4011: the checked decode, classification, the boot
/// decision for a new node, and every reply the server can build from the
/// request. A packet that decodes must re-encode to one that decodes and
/// classifies the same; every reply must pass rackboot's own wire check.
pub fn dhcp(data: &[u8]) {
    use crate::dhcp::classify::classify;
    use crate::dhcp::reply::{self, ServerParams};
    use crate::dhcp::wire;

    let Ok(msg) = wire::decode_request(data) else {
        return;
    };
    let classified = classify(&msg);
    let again = wire::decode_request(&encode(&msg))
        .expect("a decoded request re-encodes to one that decodes");
    assert_eq!(
        classify(&again),
        classified,
        "a request classifies the same after a round trip"
    );
    let Ok(req) = classified else {
        return;
    };
    let loaders = crate::config::LoaderMap::default();
    let urls = crate::routes::Urls {
        http_base: "http://10.77.0.1".into(),
    };
    let now = crate::model::Timestamp(0);
    let node = crate::model::Node::discovered(req.client.mac, "discovery", "t".into(), now);
    let decision = crate::boot::decide_for_node(
        &req.client,
        &node,
        crate::boot::Loader::Ipxe,
        &loaders,
        &urls,
        now,
    );
    let boot = decision.boot_file();
    let params = ServerParams {
        server_ip: Ipv4Addr::new(10, 77, 0, 1),
        subnet: "10.77.0.0/24".parse().expect("a subnet"),
        router: Some(Ipv4Addr::new(10, 77, 0, 254)),
        dns: Some(Ipv4Addr::new(10, 77, 0, 1)),
        domain: Some("rack.internal".into()),
    };
    let grant = Some(reply::Grant {
        ip: Ipv4Addr::new(10, 77, 0, 100),
        seconds: 3600,
    });
    let host = node.hostname.as_str();
    let answers = [
        (MessageType::Offer, grant, Some(host), req.client.is_ipxe),
        (MessageType::Ack, grant, Some(host), req.client.is_ipxe),
        (MessageType::Ack, None, None, false),
    ]
    .map(|(kind, addr, host, ipxe)| reply::answer(&msg, kind, addr, host, &boot, ipxe, &params));
    let replies = answers.into_iter().chain([
        reply::nak(&msg, params.server_ip, "requested address is not yours"),
        reply::proxy_offer(&msg, MessageType::Offer, &boot, &params),
        reply::proxy_offer(&msg, MessageType::Ack, &boot, &params),
    ]);
    for r in replies {
        let bytes = encode(&r);
        let back = wire::decode(&bytes).expect("a reply passes rackboot's own wire check");
        assert_eq!(back.opcode(), Opcode::BootReply);
        assert_eq!(back.xid(), msg.xid());
        assert_eq!(back.chaddr(), msg.chaddr());
        assert!(back.opts().msg_type().is_some());
    }
}

/// The TFTP packet parser: parse → emit → parse gives the same packet (an
/// RRQ's ignored options are not emitted, so they are left out).
pub fn tftp_packet(data: &[u8]) {
    use crate::tftp::packet::Packet;

    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let bytes = packet.to_bytes();
    let mut back = Packet::parse(&bytes)
        .unwrap_or_else(|e| panic!("{packet:?} emitted as {bytes:02x?} does not parse: {e}"));
    let mut want = packet;
    for p in [&mut want, &mut back] {
        if let Packet::Rrq(r) | Packet::Wrq(r) = p {
            r.options.ignored.clear();
        }
    }
    assert_eq!(back, want, "round trip through {bytes:02x?}");
}

/// A reader of fuzz bytes for the state machine below: numbers from the
/// front, zero once the input runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }
}

/// The TFTP transfer state machine, driven as a client (or an attacker)
/// could: any request options, then any sequence of ACKs, ERRORs and time
/// passing. Whatever the order, the server never sends bytes past the end of
/// the file or a block outside the window, and a finished transfer had
/// every byte acknowledged.
pub fn tftp_session(data: &[u8]) {
    use crate::tftp::packet::Options;
    use crate::tftp::session::{Limits, Session, State, Transmit, negotiate};

    let mut b = Bytes(data);
    let flags = b.u8();
    let asked = Options {
        blksize: (flags & 1 != 0).then(|| b.u16()),
        tsize: (flags & 2 != 0).then_some(0),
        timeout: (flags & 4 != 0).then(|| b.u8()),
        windowsize: (flags & 8 != 0).then(|| b.u16()),
        ignored: Vec::new(),
    };
    let limits = Limits {
        max_blksize: b.u16(),
        max_windowsize: b.u16(),
        honor_client_timeout: flags & 16 != 0,
        ..Limits::default()
    };
    let size = u64::from(b.u32());
    let path_blksize = b.u16();
    let n = negotiate(&asked, size, &limits, path_blksize);
    let start = Instant::now();
    let mut now = start;
    let mut s = Session::new(&n, size, &limits, now);
    let blksize = u64::from(s.blksize());
    let window = u64::from(n.windowsize.max(1));
    // Highest DATA block sent, to check ACKs of blocks in flight advance.
    let mut steps = 0;
    while !b.0.is_empty() && steps < 10_000 {
        steps += 1;
        match b.u8() % 4 {
            0 => {
                let mut burst = 0;
                while let Some(t) = s.poll_transmit() {
                    burst += 1;
                    assert!(burst <= window.max(1), "a burst larger than the window");
                    if let Transmit::Data { offset, len, .. } = t {
                        assert!(
                            offset + len as u64 <= size,
                            "bytes past the end of the file"
                        );
                        assert!(len as u64 <= blksize, "a block larger than blksize");
                    }
                }
            }
            1 => s.on_ack(b.u16(), now),
            2 => {
                now += Duration::from_millis(u64::from(b.u16()) * 10);
                s.on_timeout(now);
            }
            _ => s.on_error(u16::from(b.u8()), "fuzz"),
        }
        assert!(s.acked_bytes() <= size);
        if *s.state() == State::Done {
            assert_eq!(
                s.acked_bytes(),
                size,
                "done before every byte was acknowledged"
            );
        }
    }
}

/// The boot path's HTTP request-head parser (rackboot's own keep-alive
/// loop). A complete head says how many bytes it took, and those bytes alone
/// parse the same; a partial one is never longer than the limit.
pub fn http_head(data: &[u8]) {
    use crate::http::wire::{Head, MAX_HEAD, parse};

    match parse(data, crate::routes::is_boot_path) {
        Head::Partial => assert!(data.len() <= MAX_HEAD),
        Head::Other => {}
        Head::Boot { req, len, close } => {
            assert!(len <= data.len());
            let Head::Boot {
                req: again,
                len: len2,
                close: close2,
            } = parse(&data[..len], crate::routes::is_boot_path)
            else {
                panic!("the head's own {len} bytes do not parse as the same boot request");
            };
            assert_eq!((len, close), (len2, close2));
            assert_eq!(req.uri(), again.uri());
            assert_eq!(req.headers(), again.headers());
        }
    }
}

/// The DNS responder over UDP and TCP, with a zone and a name table like a
/// running server's: any message gets a reply that decodes, with the query's
/// ID, within the transport's size, or is dropped or forwarded.
pub fn dns(data: &[u8]) {
    use crate::dns::{Outcome, Transport};

    static RESPONDER: OnceLock<crate::dns::Responder> = OnceLock::new();
    let responder = RESPONDER.get_or_init(|| {
        use crate::model::{Lease, LeaseState, Mac, Timestamp};
        let names = Arc::new(crate::names::NameTable::new());
        names.set_node(
            Mac::new([2, 0, 0, 0, 0, 1]),
            "node1",
            Some(Ipv4Addr::new(10, 0, 0, 11)),
        );
        names.set_node(Mac::new([2, 0, 0, 0, 0, 2]), "relayed", None);
        names.set_node(Mac::new([2, 0, 0, 0, 0, 3]), "not a label", None);
        names.set_lease(&Lease {
            ip: Ipv4Addr::new(10, 1, 2, 3),
            mac: Some(Mac::new([2, 0, 0, 0, 0, 2])),
            state: LeaseState::Bound,
            expires: Timestamp(i64::MAX),
        });
        names.set_lease(&Lease {
            ip: Ipv4Addr::new(10, 0, 0, 12),
            mac: Some(Mac::new([2, 0, 0, 0, 0, 3])),
            state: LeaseState::Bound,
            expires: Timestamp(i64::MAX),
        });
        names.loaded();
        let zone = crate::dns::Zone::new(
            hickory_proto::rr::Name::from_ascii("rack.internal.").expect("a name"),
            &[
                "10.0.0.0/24".parse().expect("a subnet"),
                "10.1.0.0/16".parse().expect("a subnet"),
            ],
            Ipv4Addr::new(10, 0, 0, 1),
        )
        .expect("a zone");
        let metrics = Arc::new(crate::metrics::Metrics::new(&[]));
        crate::dns::Responder::new(zone, names, true, metrics)
    });
    let mut out = Vec::new();
    for (transport, limit) in [
        (Transport::Udp, 1232),
        (Transport::Tcp, usize::from(u16::MAX)),
    ] {
        match responder.respond(data, transport, &mut out) {
            Outcome::Drop | Outcome::Forward => {}
            Outcome::Reply => {
                assert!(out.len() <= limit, "{} bytes over {transport:?}", out.len());
                assert_eq!(
                    out.get(..2),
                    data.get(..2),
                    "the reply carries the query's ID"
                );
                hickory_proto::op::Message::from_vec(&out)
                    .unwrap_or_else(|e| panic!("the reply {out:02x?} does not decode: {e}"));
            }
        }
    }
}

/// Label selectors (script headers, the API's `selector=`, bulk edits): a
/// selector that parses prints as text that parses back to it.
pub fn selector(data: &[u8]) {
    use crate::model::selector::LabelSelector;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = text.parse::<LabelSelector>() else {
        return;
    };
    let canonical = sel.to_string();
    let back: LabelSelector = canonical
        .parse()
        .unwrap_or_else(|e| panic!("`{text}` prints as `{canonical}`, which does not parse: {e}"));
    assert_eq!(back, sel, "`{text}` → `{canonical}`");
    let labels: BTreeMap<String, String> = sel
        .terms()
        .iter()
        .filter_map(|t| match t {
            crate::model::selector::LabelTerm::Equals(k, v) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let _ = sel.matches(&labels);
}

/// The bootenv and config-script loader, as an edit through the API or a
/// reload checks it: the input is a bootenv file's text, optionally followed
/// by a NUL and a config script's text. The bootenv is parsed, then the whole
/// catalog is loaded with it (templates compiled and rendered against a
/// sample node, assets and scripts looked up).
pub fn bootenv(data: &[u8]) {
    use crate::boot::{Bootenv, Catalog};

    let (bootenv, script) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(bootenv) else {
        return;
    };
    let script = match script.map(std::str::from_utf8) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return,
        None => None,
    };
    if let Some(s) = script {
        let _ = crate::boot::assign::parse_header(s);
    }
    let dirs = catalog_dirs();
    let path = dirs.bootenvs.join("fuzz.toml");
    if Bootenv::parse(&path, text).is_err() {
        return;
    }
    let scripts = match script {
        Some(s) => {
            let scripts = dirs.root.join("scripts-with-fuzz");
            std::fs::write(scripts.join("fuzz.sh"), s).expect("the fuzz script is written");
            scripts
        }
        None => dirs.scripts.clone(),
    };
    let _ = Catalog::load_with(
        &dirs.bootenvs,
        &scripts,
        &dirs.assets,
        "discovery",
        Some((&path, text)),
    );
}

/// Folders for [`bootenv`]: configs/'s bootenvs and scripts, and an assets
/// folder with the files they and the seed corpus name.
struct CatalogDirs {
    root: PathBuf,
    bootenvs: PathBuf,
    scripts: PathBuf,
    assets: PathBuf,
}

static DIRS: OnceLock<CatalogDirs> = OnceLock::new();

/// Removes the folders [`bootenv`] made, if it made any (the replay test
/// calls this when done; a fuzzer's run leaves them in its `TMPDIR`).
pub fn remove_scratch() {
    if let Some(d) = DIRS.get() {
        let _ = std::fs::remove_dir_all(&d.root);
    }
}

fn catalog_dirs() -> &'static CatalogDirs {
    DIRS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("rackboot-fuzz-{}", std::process::id()));
        let d = CatalogDirs {
            bootenvs: root.join("bootenvs"),
            scripts: root.join("scripts"),
            assets: root.join("assets"),
            root,
        };
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let with_fuzz = d.root.join("scripts-with-fuzz");
        for dir in [&d.bootenvs, &d.scripts, &d.assets, &with_fuzz] {
            std::fs::create_dir_all(dir).expect("a temporary folder");
        }
        for (from, to) in [
            ("bootenvs", &d.bootenvs),
            ("scripts", &d.scripts),
            ("scripts", &with_fuzz),
        ] {
            for entry in std::fs::read_dir(configs.join(from)).expect("configs/ is readable") {
                let p = entry.expect("configs/ is readable").path();
                std::fs::copy(&p, to.join(p.file_name().expect("a file name")))
                    .expect("configs/ copied");
            }
        }
        for asset in [
            "x86_64/vmlinuz",
            "x86_64/initrd.img",
            "arm64/Image",
            "arm64/initrd.img",
            "vmlinuz",
            "initrd.img",
        ] {
            let p = d.assets.join(asset);
            std::fs::create_dir_all(p.parent().expect("a folder")).expect("an assets folder");
            std::fs::write(p, b"").expect("an asset");
        }
        d
    })
}

/// The configuration file: any text is a config or an error saying what is
/// wrong, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::Config::parse(Path::new("/etc/rackboot/rackboot.toml"), text);
}

/// `rackboot node import` of a CSV file, then what the API does with each
/// record (deserialize, validate, build the node). Records the API accepts
/// export to CSV and read back the same.
pub fn node_csv(data: &[u8]) {
    use crate::boot::NodeInput;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(records) = crate::cli::node::read_csv(Path::new("nodes.csv"), text) else {
        return;
    };
    let known = |b: &str| matches!(b, "discovery" | "local");
    let mut valid = Vec::new();
    for r in records.records {
        let Ok(input) = serde_json::from_value::<NodeInput>(r.clone()) else {
            continue;
        };
        if input.validate(&known).is_err() {
            continue;
        }
        let _ = input.into_node(None, "discovery", || "t".into(), crate::model::Timestamp(0));
        valid.push(r);
    }
    let csv = crate::cli::node::to_csv(&valid).expect("records export to CSV");
    let back = crate::cli::node::read_csv(Path::new("export.csv"), &csv)
        .unwrap_or_else(|e| panic!("an export does not read back: {e}\n{csv}"));
    assert_eq!(back.records, valid, "export round trip through\n{csv}");
}
