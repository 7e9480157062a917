//! One DHCP client exchange, DISCOVER → OFFER → REQUEST → ACK, as PXE
//! firmware or iPXE runs it. Sans-IO: the caller moves the bytes and passes
//! the time in, so the retransmission schedule is tested without sockets.
//!
//! Owns what a client puts in its packets (the PXE options of RFC 4578 and
//! iPXE's user class and option 175), which replies belong to it, and when
//! it sends again. Does not own sockets (`dhcp_socket`) or what the boot
//! file is used for.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption,
};

use super::fleet::NodeId;

/// Who is asking: the firmware's own PXE client, or iPXE once it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Firmware,
    Ipxe,
}

/// RFC 2131 §4.1: the first retransmission after about 4 s, then doubling
/// up to 64 s, each ±1 s at random. Shorter here when configured (a storm
/// on a quiet test network need not wait 4 s for a lost packet).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            first: Duration::from_secs(4),
            max: Duration::from_secs(64),
        }
    }
}

/// What the server handed out, as the ACK (and, where the ACK is silent,
/// the OFFER) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub server_id: Ipv4Addr,
    /// Option 67, else the BOOTP `file` field.
    pub boot_file: Option<String>,
    /// Option 66 if it is an address, else `siaddr` (next-server).
    pub next_server: Option<Ipv4Addr>,
    /// DISCOVERs and REQUESTs sent, retransmissions included.
    pub discovers: u32,
    pub requests: u32,
}

/// Why an exchange ended without a lease. `Display` is the same for every
/// node that failed the same way (failures are grouped by it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    #[error("no OFFER within {after:?} ({sent} DISCOVERs sent)")]
    NoOffer { after: Duration, sent: u32 },
    #[error("no ACK within {after:?} of the OFFER ({sent} REQUESTs sent)")]
    NoAck { after: Duration, sent: u32 },
    #[error("DHCPNAK from {server}: {message}")]
    Nak { server: Ipv4Addr, message: String },
    #[error("OFFER from {siaddr} without a server identifier (option 54): cannot REQUEST it")]
    NoServerId { siaddr: Ipv4Addr },
}

/// What to do next.
#[derive(Debug, PartialEq)]
pub enum Poll {
    Transmit(Message),
    /// Nothing to send before this instant (a reply may come first).
    Wait(Instant),
    Failed(DhcpError),
}

#[derive(Debug, Clone)]
enum State {
    Selecting,
    Requesting { offer: Lease, since: Instant },
    Done,
}

/// What one exchange asks for, and how, fixed for its life.
#[derive(Debug)]
pub struct Ask {
    pub node: NodeId,
    pub flavor: Flavor,
    pub xid: u32,
    /// Send as a relay agent at that address would forward it (giaddr set,
    /// hops 1); `None`: as a client on the link, asking for broadcast
    /// replies.
    pub relay: Option<Ipv4Addr>,
    pub retry: Retry,
    /// Bounds the whole exchange.
    pub timeout: Duration,
}

/// One DORA exchange for one node.
#[derive(Debug)]
pub struct Exchange {
    ask: Ask,
    started: Instant,
    state: State,
    next_send: Instant,
    interval: Duration,
    discovers: u32,
    requests: u32,
}

impl Exchange {
    pub fn new(ask: Ask, now: Instant) -> Exchange {
        Exchange {
            interval: ask.retry.first,
            ask,
            started: now,
            state: State::Selecting,
            next_send: now,
            discovers: 0,
            requests: 0,
        }
    }

    pub fn xid(&self) -> u32 {
        self.ask.xid
    }

    pub fn poll(&mut self, now: Instant) -> Poll {
        let deadline = self.started + self.ask.timeout;
        match &self.state {
            State::Done => return Poll::Wait(deadline),
            _ if now >= deadline => {
                let err = match &self.state {
                    State::Requesting { since, .. } => DhcpError::NoAck {
                        after: now.saturating_duration_since(*since),
                        sent: self.requests,
                    },
                    _ => DhcpError::NoOffer {
                        after: self.ask.timeout,
                        sent: self.discovers,
                    },
                };
                self.state = State::Done;
                return Poll::Failed(err);
            }
            _ => {}
        }
        if now < self.next_send {
            return Poll::Wait(self.next_send.min(deadline));
        }
        let attempt = self.discovers + self.requests;
        let wait = jitter(self.interval, self.ask.xid, attempt);
        self.next_send = now + wait;
        self.interval = (self.interval * 2).min(self.ask.retry.max);
        let elapsed = now.saturating_duration_since(self.started);
        let msg = match &self.state {
            State::Selecting => {
                self.discovers += 1;
                self.message(MessageType::Discover, None, elapsed)
            }
            State::Requesting { offer, .. } => {
                self.requests += 1;
                let offer = (offer.address, offer.server_id);
                self.message(MessageType::Request, Some(offer), elapsed)
            }
            State::Done => unreachable!("handled above"),
        };
        Poll::Transmit(msg)
    }

    /// A reply for this exchange's xid and MAC (anything else is ignored).
    /// `Some` once the exchange is over.
    pub fn handle(&mut self, reply: &Message, now: Instant) -> Option<Result<Lease, DhcpError>> {
        if reply.opcode() != Opcode::BootReply
            || reply.xid() != self.ask.xid
            || reply.chaddr().get(..6) != Some(&self.ask.node.mac[..])
        {
            return None;
        }
        let kind = reply.opts().msg_type()?;
        match (&self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let Some(server_id) = server_id(reply) else {
                    self.state = State::Done;
                    return Some(Err(DhcpError::NoServerId {
                        siaddr: reply.siaddr(),
                    }));
                };
                let offer = lease(reply, server_id, None);
                self.state = State::Requesting { offer, since: now };
                // REQUEST at once; its retransmissions start from the first interval.
                self.next_send = now;
                self.interval = self.ask.retry.first;
                None
            }
            (State::Requesting { offer, .. }, MessageType::Ack)
                if server_id(reply).is_none_or(|s| s == offer.server_id) =>
            {
                let mut l = lease(reply, offer.server_id, Some(offer));
                l.discovers = self.discovers;
                l.requests = self.requests;
                self.state = State::Done;
                Some(Ok(l))
            }
            (State::Requesting { offer, .. }, MessageType::Nak)
                if server_id(reply).is_none_or(|s| s == offer.server_id) =>
            {
                let server = offer.server_id;
                let message = match reply.opts().get(OptionCode::Message) {
                    Some(DhcpOption::Message(m)) => m.clone(),
                    _ => "(no message)".into(),
                };
                self.state = State::Done;
                Some(Err(DhcpError::Nak { server, message }))
            }
            // A second server's OFFER, a late duplicate: not ours to act on.
            _ => None,
        }
    }

    fn message(
        &self,
        kind: MessageType,
        selected: Option<(Ipv4Addr, Ipv4Addr)>,
        elapsed: Duration,
    ) -> Message {
        let giaddr = self.ask.relay.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut m = Message::new_with_id(
            self.ask.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            giaddr,
            &self.ask.node.mac,
        );
        m.set_secs(elapsed.as_secs().min(u64::from(u16::MAX)) as u16);
        if self.ask.relay.is_some() {
            // What the relay agent would have done on the way (RFC 1542 §4.1.1).
            m.set_hops(1);
        } else {
            // No address yet, so no unicast to us: PXE ROMs ask for broadcast replies.
            m.set_flags(Flags::default().set_broadcast());
        }
        let arch = self.ask.node.arch.0;
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        if let Some((address, server)) = selected {
            opts.insert(DhcpOption::RequestedIpAddress(address));
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        opts.insert(DhcpOption::MaxMessageSize(1472));
        opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
            arch,
        )));
        // UNDI 3.16 for firmware (EDK2's value), 2.1 for iPXE (what it sends).
        let undi = match self.ask.flavor {
            Flavor::Firmware => (1, 3, 16),
            Flavor::Ipxe => (1, 2, 1),
        };
        opts.insert(DhcpOption::ClientNetworkInterface(undi.0, undi.1, undi.2));
        let mut uuid = vec![0u8];
        uuid.extend_from_slice(&self.ask.node.uuid);
        opts.insert(DhcpOption::ClientMachineIdentifier(uuid));
        opts.insert(DhcpOption::ClassIdentifier(
            format!("PXEClient:Arch:{arch:05}:UNDI:{:03}{:03}", undi.1, undi.2).into_bytes(),
        ));
        let mut wanted: Vec<OptionCode> = [1u8, 3, 6, 12, 15, 17, 28, 43, 60, 66, 67, 97]
            .into_iter()
            .chain(128..=135)
            .map(OptionCode::from)
            .collect();
        if self.ask.flavor == Flavor::Ipxe {
            wanted.push(OptionCode::from(OPTION_IPXE_ENCAP));
            // iPXE sends its user class as one bare string (not RFC 3004 framing).
            opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
            opts.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::from(OPTION_IPXE_ENCAP),
                IPXE_FEATURES.to_vec(),
            )));
        }
        opts.insert(DhcpOption::ParameterRequestList(wanted));
        m
    }
}

/// iPXE's encapsulated options (175).
pub const OPTION_IPXE_ENCAP: u8 = 175;

/// A current iPXE build's feature list: HTTP (0x13), HTTPS (0x14), PXE
/// extensions (0x10), menu (0x27), then its version 1.21.1 (235). HTTPS in
/// it matters: a server may upgrade an iPXE without it to a newer loader.
const IPXE_FEATURES: [u8; 17] = [
    0x10, 1, 1, 0x13, 1, 1, 0x14, 1, 1, 0x27, 1, 1, 0xeb, 3, 1, 21, 1,
];

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The lease a reply describes; what the ACK leaves out comes from `offer`.
fn lease(m: &Message, server_id: Ipv4Addr, offer: Option<&Lease>) -> Lease {
    let opts = m.opts();
    let boot_file = match opts.get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(text(b)),
        _ => m.fname().map(text),
    }
    .filter(|f| !f.is_empty())
    .or_else(|| offer.and_then(|o| o.boot_file.clone()));
    let tftp_name = match opts.get(OptionCode::TFTPServerName) {
        Some(DhcpOption::TFTPServerName(b)) => text(b).parse::<Ipv4Addr>().ok(),
        _ => None,
    };
    let siaddr = (!m.siaddr().is_unspecified()).then_some(m.siaddr());
    Lease {
        address: m.yiaddr(),
        server_id,
        boot_file,
        next_server: tftp_name
            .or(siaddr)
            .or_else(|| offer.and_then(|o| o.next_server)),
        discovers: 0,
        requests: 0,
    }
}

/// A NUL-padded field or option as text.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches('\0')
        .trim()
        .to_string()
}

/// `interval` ± up to 1 s (RFC 2131 §4.1), or ± a quarter of it when it is
/// short, so that a rack's nodes do not retransmit in lockstep. Derived from
/// xid and attempt: the exchange stays deterministic for its tests.
fn jitter(interval: Duration, xid: u32, attempt: u32) -> Duration {
    let spread = (interval / 4).min(Duration::from_secs(1));
    let h = xid.rotate_left(attempt * 7) ^ attempt.wrapping_mul(0x9e37_79b9);
    let frac = f64::from(h % 1001) / 1000.0; // 0..=1
    let offset = spread.mul_f64(frac * 2.0);
    (interval + offset).saturating_sub(spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storm::fleet::{ArchMix, node};
    use dhcproto::{Decodable, Decoder, Encodable};

    fn fleet_node() -> NodeId {
        node(7, 1, &"7".parse::<ArchMix>().unwrap())
    }

    fn exchange(flavor: Flavor, relay: Option<Ipv4Addr>, now: Instant) -> Exchange {
        let ask = Ask {
            node: fleet_node(),
            flavor,
            xid: 0x1234,
            relay,
            retry: Retry::default(),
            timeout: Duration::from_secs(30),
        };
        Exchange::new(ask, now)
    }

    /// A firmware exchange that sent its DISCOVER and had an OFFER at `t0`.
    fn offered(t0: Instant) -> Exchange {
        let mut ex = exchange(Flavor::Firmware, None, t0);
        let d = sent(ex.poll(t0));
        ex.handle(&reply(&d, MessageType::Offer, SERVER), t0);
        ex
    }

    fn sent(p: Poll) -> Message {
        match p {
            Poll::Transmit(m) => {
                // What goes on the wire decodes to the same message.
                let bytes = m.to_vec().unwrap();
                let back = Message::decode(&mut Decoder::new(&bytes)).unwrap();
                assert_eq!(back, m);
                m
            }
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn reply(req: &Message, kind: MessageType, server: Ipv4Addr) -> Message {
        let mut m = Message::new_with_id(
            req.xid(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 78, 0, 100),
            server,
            req.giaddr(),
            req.chaddr(),
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    #[test]
    fn firmware_discover_carries_the_pxe_options() {
        let t0 = Instant::now();
        let mut ex = exchange(Flavor::Firmware, None, t0);
        let d = sent(ex.poll(t0));
        let o = d.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Discover));
        assert!(d.flags().broadcast());
        assert_eq!(d.hops(), 0);
        assert!(matches!(
            o.get(OptionCode::ClientSystemArchitecture),
            Some(DhcpOption::ClientSystemArchitecture(a)) if u16::from(*a) == 7
        ));
        assert!(matches!(
            o.get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient:Arch:00007:UNDI:003016"
        ));
        assert!(matches!(
            o.get(OptionCode::ClientMachineIdentifier),
            Some(DhcpOption::ClientMachineIdentifier(v)) if v.len() == 17 && v[0] == 0
        ));
        assert!(o.get(OptionCode::UserClass).is_none());
        assert!(o.get(OptionCode::ParameterRequestList).is_some());
    }

    #[test]
    fn ipxe_says_so_and_a_relayed_packet_has_giaddr_and_a_hop() {
        let t0 = Instant::now();
        let relay = Ipv4Addr::new(10, 78, 0, 1);
        let mut ex = exchange(Flavor::Ipxe, Some(relay), t0);
        let d = sent(ex.poll(t0));
        assert_eq!(d.giaddr(), relay);
        assert_eq!(d.hops(), 1);
        assert!(!d.flags().broadcast());
        assert!(matches!(
            d.opts().get(OptionCode::UserClass),
            Some(DhcpOption::UserClass(v)) if v == b"iPXE"
        ));
        assert!(d.opts().get(OptionCode::from(OPTION_IPXE_ENCAP)).is_some());
    }

    #[test]
    fn dora_ends_in_a_lease_with_the_boot_file() {
        let t0 = Instant::now();
        let mut ex = exchange(Flavor::Firmware, None, t0);
        let d = sent(ex.poll(t0));
        // Someone else's reply, then ours.
        let mut other = reply(&d, MessageType::Offer, SERVER);
        other.set_xid(99);
        assert_eq!(ex.handle(&other, t0), None);
        let mut offer = reply(&d, MessageType::Offer, SERVER);
        offer.set_fname_str("undionly.kpxe");
        assert_eq!(ex.handle(&offer, t0), None);
        let r = sent(ex.poll(t0));
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.xid(), d.xid());
        assert!(matches!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(ip)) if *ip == Ipv4Addr::new(10, 78, 0, 100)
        ));
        assert!(matches!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(ip)) if *ip == SERVER
        ));
        // A second server's late OFFER changes nothing.
        assert_eq!(
            ex.handle(
                &reply(&d, MessageType::Offer, Ipv4Addr::new(1, 2, 3, 4)),
                t0
            ),
            None
        );
        let mut ack = reply(&r, MessageType::Ack, SERVER);
        ack.opts_mut()
            .insert(DhcpOption::BootfileName(b"undionly.kpxe\0".to_vec()));
        let lease = ex.handle(&ack, t0).unwrap().unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 78, 0, 100));
        assert_eq!(lease.boot_file.as_deref(), Some("undionly.kpxe"));
        assert_eq!(lease.next_server, Some(SERVER));
        assert_eq!((lease.discovers, lease.requests), (1, 1));
    }

    #[test]
    fn retransmits_with_backoff_then_gives_up_naming_what_was_missing() {
        let t0 = Instant::now();
        let mut ex = exchange(Flavor::Firmware, None, t0);
        // Each retransmission waits about twice as long as the one before (RFC 2131 §4.1):
        // 4 s ± 1, 8 s ± 1, then at least 15 s.
        let (mut at, mut last_send) = (t0, t0);
        for (least, most) in [(3, 5), (7, 9), (15, 30)] {
            last_send = at;
            sent(ex.poll(at));
            let Poll::Wait(next) = ex.poll(at) else {
                panic!()
            };
            let waited = next - at;
            assert!(
                waited >= Duration::from_secs(least) && waited <= Duration::from_secs(most),
                "{waited:?} after send {at:?}"
            );
            at = next;
        }
        // 30 s bound: the next wait is cut at the deadline, then the exchange fails.
        let Poll::Wait(end) = ex.poll(last_send + Duration::from_millis(1)) else {
            panic!()
        };
        assert!(end <= t0 + Duration::from_secs(30));
        match ex.poll(t0 + Duration::from_secs(30)) {
            Poll::Failed(DhcpError::NoOffer { sent, .. }) => assert_eq!(sent, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nak_ends_the_exchange_with_its_message() {
        let t0 = Instant::now();
        let mut ex = offered(t0);
        let r = sent(ex.poll(t0));
        let mut nak = reply(&r, MessageType::Nak, SERVER);
        nak.opts_mut()
            .insert(DhcpOption::Message("address taken".into()));
        assert_eq!(
            ex.handle(&nak, t0),
            Some(Err(DhcpError::Nak {
                server: SERVER,
                message: "address taken".into()
            }))
        );
    }

    #[test]
    fn no_ack_is_told_apart_from_no_offer() {
        let t0 = Instant::now();
        let mut ex = offered(t0);
        sent(ex.poll(t0));
        match ex.poll(t0 + Duration::from_secs(31)) {
            Poll::Failed(DhcpError::NoAck { sent, .. }) => assert_eq!(sent, 1),
            other => panic!("{other:?}"),
        }
    }
}
