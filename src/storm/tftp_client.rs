//! A TFTP read (RRQ) as a PXE ROM runs it: octet mode, with blksize
//! (RFC 2348), tsize (RFC 2349) and windowsize (RFC 7440) asked for, and a
//! server that ignores options still served. Sans-IO: the caller moves the
//! datagrams and passes the time in.
//!
//! Owns the packets, the window and ACK logic, and retransmission. Does not
//! own sockets or what the bytes are (they are counted, not kept).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// What the client asks for and how patient it is.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Asked for; the server may grant less. 1468 fills an Ethernet frame.
    pub blksize: u16,
    /// Blocks per ACK asked for (1 = classic lockstep).
    pub windowsize: u16,
    /// Resend the last packet after this long without progress.
    pub retransmit: Duration,
    /// Resends before giving up.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            blksize: 1468,
            windowsize: 4,
            retransmit: Duration::from_secs(1),
            retries: 5,
        }
    }
}

/// The transfer is over: bytes received and what was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub bytes: u64,
    pub blksize: u16,
    pub windowsize: u16,
    /// tsize as the server announced it, if it did.
    pub tsize: Option<u64>,
    pub retransmissions: u32,
}

/// Why a read failed. `Display` is the same for every node that failed the
/// same way (failures are grouped by it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP error {code} from the server: {message}")]
    Server { code: u16, message: String },
    #[error("no answer to the read request after {tries} tries {every:?} apart")]
    NoAnswer { tries: u32, every: Duration },
    #[error("transfer stalled: no DATA after block {block} in {tries} tries {every:?} apart")]
    Stalled {
        block: u64,
        tries: u32,
        every: Duration,
    },
    #[error("the server granted {what} {granted}, more than the {asked} asked for")]
    BadOption {
        what: &'static str,
        granted: u64,
        asked: u64,
    },
    #[error("got {got} bytes but the server announced tsize {tsize}")]
    SizeMismatch { got: u64, tsize: u64 },
    #[error("malformed packet from the server: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, PartialEq)]
pub enum Poll {
    Transmit(Vec<u8>, SocketAddr),
    Wait(Instant),
    Done(Received),
    Failed(TftpError),
}

#[derive(Debug)]
enum State {
    /// RRQ sent, no answer yet.
    Requesting,
    /// Blocks flowing from `peer` (the server's transfer id).
    Receiving,
    Over(Result<Received, TftpError>),
}

#[derive(Debug)]
pub struct Transfer {
    opts: Options,
    server: SocketAddr,
    peer: Option<SocketAddr>,
    state: State,
    /// The packet to send again on a timeout (RRQ or the last ACK).
    last_sent: Vec<u8>,
    outbox: Option<Vec<u8>>,
    next_retransmit: Instant,
    tries: u32,
    retransmissions: u32,
    blksize: u16,
    windowsize: u16,
    tsize: Option<u64>,
    /// Blocks received in order so far (the wire number is this + 1, mod 2^16).
    blocks: u64,
    in_window: u16,
    /// An out-of-order block was already answered with an ACK of the last
    /// good one; more of the same window get no further ACK.
    gap_acked: bool,
    bytes: u64,
}

impl Transfer {
    pub fn new(file: &str, server: SocketAddr, opts: Options, now: Instant) -> Transfer {
        let mut rrq = Vec::with_capacity(64 + file.len());
        rrq.extend_from_slice(&RRQ.to_be_bytes());
        for field in [file, "octet"] {
            rrq.extend_from_slice(field.as_bytes());
            rrq.push(0);
        }
        let blksize = opts.blksize.to_string();
        let windowsize = opts.windowsize.to_string();
        for (k, v) in [
            ("blksize", blksize.as_str()),
            ("tsize", "0"),
            ("windowsize", windowsize.as_str()),
        ] {
            rrq.extend_from_slice(k.as_bytes());
            rrq.push(0);
            rrq.extend_from_slice(v.as_bytes());
            rrq.push(0);
        }
        Transfer {
            opts,
            server,
            peer: None,
            state: State::Requesting,
            last_sent: rrq.clone(),
            outbox: Some(rrq),
            next_retransmit: now + opts.retransmit,
            tries: 1,
            retransmissions: 0,
            // RFC 1350 defaults, until an OACK says otherwise.
            blksize: 512,
            windowsize: 1,
            tsize: None,
            blocks: 0,
            in_window: 0,
            gap_acked: false,
            bytes: 0,
        }
    }

    pub fn poll(&mut self, now: Instant) -> Poll {
        if let Some(p) = self.outbox.take() {
            let to = self.peer.unwrap_or(self.server);
            return Poll::Transmit(p, to);
        }
        match &self.state {
            State::Over(Ok(r)) => return Poll::Done(r.clone()),
            State::Over(Err(e)) => return Poll::Failed(e.clone()),
            _ => {}
        }
        if now < self.next_retransmit {
            return Poll::Wait(self.next_retransmit);
        }
        if self.tries > self.opts.retries {
            let (tries, every) = (self.tries, self.opts.retransmit);
            let e = match self.state {
                State::Requesting => TftpError::NoAnswer { tries, every },
                _ => TftpError::Stalled {
                    block: self.blocks,
                    tries,
                    every,
                },
            };
            self.state = State::Over(Err(e.clone()));
            return Poll::Failed(e);
        }
        self.tries += 1;
        self.retransmissions += 1;
        self.next_retransmit = now + self.opts.retransmit;
        // After a loss the window starts again from the last ACK.
        self.in_window = 0;
        self.gap_acked = false;
        let to = self.peer.unwrap_or(self.server);
        Poll::Transmit(self.last_sent.clone(), to)
    }

    /// A datagram from `from`. Datagrams from anyone but the server's
    /// transfer id, once known, are ignored (RFC 1350 §4).
    pub fn handle(&mut self, packet: &[u8], from: SocketAddr, now: Instant) {
        if matches!(self.state, State::Over(_)) {
            return;
        }
        if self.peer.is_some_and(|p| p != from)
            || (self.peer.is_none() && from.ip() != self.server.ip())
        {
            return;
        }
        let Some((op, body)) = packet
            .split_first_chunk::<2>()
            .map(|(op, b)| (u16::from_be_bytes(*op), b))
        else {
            return self.fail(TftpError::Malformed("shorter than an opcode"));
        };
        match op {
            ERROR => {
                let code = body
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                let message = body
                    .get(2..)
                    .map(|m| {
                        String::from_utf8_lossy(m)
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .unwrap_or_default();
                self.fail(TftpError::Server { code, message });
            }
            OACK if matches!(self.state, State::Requesting) => {
                self.peer = Some(from);
                if let Err(e) = self.accept_options(body) {
                    return self.fail(e);
                }
                self.state = State::Receiving;
                self.ack(0, now);
            }
            DATA => {
                let Some((block, data)) = body.split_first_chunk::<2>() else {
                    return self.fail(TftpError::Malformed("DATA without a block number"));
                };
                if matches!(self.state, State::Requesting) {
                    // The server ignored our options: RFC 1350 from here on.
                    self.peer = Some(from);
                    self.state = State::Receiving;
                }
                self.data(u16::from_be_bytes(*block), data.len(), now);
            }
            // A duplicate OACK (our ACK 0 was lost) is answered by the retransmission timer.
            _ => {}
        }
    }

    fn accept_options(&mut self, body: &[u8]) -> Result<(), TftpError> {
        let mut fields = body.split(|&b| b == 0);
        while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
            let key = String::from_utf8_lossy(k).to_ascii_lowercase();
            let Ok(value) = String::from_utf8_lossy(v).parse::<u64>() else {
                return Err(TftpError::Malformed("an OACK option value is not a number"));
            };
            match key.as_str() {
                "blksize" => {
                    if value > u64::from(self.opts.blksize) || value < 8 {
                        return Err(TftpError::BadOption {
                            what: "blksize",
                            granted: value,
                            asked: u64::from(self.opts.blksize),
                        });
                    }
                    self.blksize = value as u16;
                }
                "windowsize" => {
                    if value > u64::from(self.opts.windowsize) || value == 0 {
                        return Err(TftpError::BadOption {
                            what: "windowsize",
                            granted: value,
                            asked: u64::from(self.opts.windowsize),
                        });
                    }
                    self.windowsize = value as u16;
                }
                "tsize" => self.tsize = Some(value),
                _ => {}
            }
        }
        Ok(())
    }

    fn data(&mut self, block: u16, len: usize, now: Instant) {
        let expected = (self.blocks + 1) as u16; // wraps at 65536, as the wire does
        if block != expected {
            // A gap (or a duplicate): ask for everything after the last good block, once.
            if !self.gap_acked {
                self.gap_acked = true;
                self.ack(self.blocks as u16, now);
            }
            return;
        }
        self.gap_acked = false;
        self.blocks += 1;
        self.bytes += len as u64;
        self.in_window += 1;
        self.tries = 1;
        self.next_retransmit = now + self.opts.retransmit;
        let last = len < usize::from(self.blksize);
        if last || self.in_window >= self.windowsize {
            self.in_window = 0;
            self.ack(block, now);
        }
        if last {
            let done = match self.tsize {
                Some(t) if t != self.bytes => Err(TftpError::SizeMismatch {
                    got: self.bytes,
                    tsize: t,
                }),
                _ => Ok(Received {
                    bytes: self.bytes,
                    blksize: self.blksize,
                    windowsize: self.windowsize,
                    tsize: self.tsize,
                    retransmissions: self.retransmissions,
                }),
            };
            self.state = State::Over(done);
        }
    }

    fn ack(&mut self, block: u16, now: Instant) {
        let mut p = Vec::with_capacity(4);
        p.extend_from_slice(&ACK.to_be_bytes());
        p.extend_from_slice(&block.to_be_bytes());
        self.last_sent = p.clone();
        self.outbox = Some(p);
        self.tries = 1;
        self.next_retransmit = now + self.opts.retransmit;
    }

    fn fail(&mut self, e: TftpError) {
        self.state = State::Over(Err(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "10.77.0.1:69";
    const TID: &str = "10.77.0.1:40000";

    fn opts() -> Options {
        Options {
            blksize: 1000,
            windowsize: 2,
            retransmit: Duration::from_secs(1),
            retries: 2,
        }
    }

    fn sent(p: Poll) -> (Vec<u8>, SocketAddr) {
        match p {
            Poll::Transmit(b, to) => (b, to),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn data(block: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0, 3];
        p.extend_from_slice(&block.to_be_bytes());
        p.resize(4 + len, 0xab);
        p
    }

    fn oack(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut p = vec![0, 6];
        for (k, v) in pairs {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        p
    }

    /// A transfer of `f` with `o` that has sent its RRQ at `t0`, and the
    /// address the server answers from.
    fn requested(o: Options, t0: Instant) -> (Transfer, SocketAddr) {
        let mut t = Transfer::new("f", SERVER.parse().unwrap(), o, t0);
        sent(t.poll(t0));
        (t, TID.parse().unwrap())
    }

    fn ack_of(p: &[u8]) -> u16 {
        assert_eq!(&p[..2], &[0, 4], "{p:?}");
        u16::from_be_bytes([p[2], p[3]])
    }

    #[test]
    fn rrq_asks_for_the_options() {
        let t0 = Instant::now();
        let mut t = Transfer::new("undionly.kpxe", SERVER.parse().unwrap(), opts(), t0);
        let (p, to) = sent(t.poll(t0));
        assert_eq!(to, SERVER.parse().unwrap());
        assert_eq!(
            p,
            b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001000\x00tsize\x000\x00windowsize\x002\x00".to_vec()
        );
    }

    #[test]
    fn windowed_transfer_acks_each_window_and_the_last_block() {
        let t0 = Instant::now();
        let (mut t, tid) = requested(opts(), t0);
        t.handle(
            &oack(&[("blksize", "1000"), ("tsize", "2500"), ("windowsize", "2")]),
            tid,
            t0,
        );
        let (p, to) = sent(t.poll(t0));
        assert_eq!((ack_of(&p), to), (0, tid));
        t.handle(&data(1, 1000), tid, t0);
        assert!(matches!(t.poll(t0), Poll::Wait(_)), "mid-window: no ACK");
        t.handle(&data(2, 1000), tid, t0);
        assert_eq!(ack_of(&sent(t.poll(t0)).0), 2);
        t.handle(&data(3, 500), tid, t0);
        assert_eq!(ack_of(&sent(t.poll(t0)).0), 3);
        match t.poll(t0) {
            Poll::Done(r) => {
                assert_eq!(r.bytes, 2500);
                assert_eq!((r.blksize, r.windowsize, r.tsize), (1000, 2, Some(2500)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_gap_is_acked_once_with_the_last_good_block() {
        let t0 = Instant::now();
        let (mut t, tid) = requested(opts(), t0);
        t.handle(&oack(&[("blksize", "1000"), ("windowsize", "2")]), tid, t0);
        sent(t.poll(t0));
        t.handle(&data(1, 1000), tid, t0);
        t.handle(&data(3, 1000), tid, t0); // 2 was lost
        assert_eq!(ack_of(&sent(t.poll(t0)).0), 1);
        t.handle(&data(4, 1000), tid, t0);
        assert!(matches!(t.poll(t0), Poll::Wait(_)), "one ACK per gap");
        t.handle(&data(2, 1000), tid, t0);
        t.handle(&data(3, 10), tid, t0);
        assert_eq!(ack_of(&sent(t.poll(t0)).0), 3);
        assert!(matches!(
            t.poll(t0),
            Poll::Done(Received { bytes: 2010, .. })
        ));
    }

    #[test]
    fn a_server_without_options_is_served_in_512_byte_lockstep() {
        let t0 = Instant::now();
        let (mut t, tid) = requested(opts(), t0);
        t.handle(&data(1, 512), tid, t0);
        assert_eq!(ack_of(&sent(t.poll(t0)).0), 1);
        t.handle(&data(2, 0), tid, t0);
        assert_eq!(ack_of(&sent(t.poll(t0)).0), 2);
        assert!(matches!(
            t.poll(t0),
            Poll::Done(Received {
                bytes: 512,
                blksize: 512,
                ..
            })
        ));
    }

    #[test]
    fn retransmits_then_names_the_stall() {
        let t0 = Instant::now();
        let mut t = Transfer::new("f", SERVER.parse().unwrap(), opts(), t0);
        let (rrq, _) = sent(t.poll(t0));
        let Poll::Wait(t1) = t.poll(t0) else { panic!() };
        assert_eq!(sent(t.poll(t1)).0, rrq);
        let Poll::Wait(t2) = t.poll(t1) else { panic!() };
        assert_eq!(sent(t.poll(t2)).0, rrq);
        let Poll::Wait(t3) = t.poll(t2) else { panic!() };
        match t.poll(t3) {
            Poll::Failed(TftpError::NoAnswer { tries: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_and_strangers() {
        let t0 = Instant::now();
        let (mut t, tid) = requested(opts(), t0);
        // From another host: ignored.
        t.handle(&data(1, 10), "10.9.9.9:5000".parse().unwrap(), t0);
        assert!(matches!(t.poll(t0), Poll::Wait(_)));
        t.handle(b"\0\x05\0\x01File not found\0", tid, t0);
        assert_eq!(
            t.poll(t0),
            Poll::Failed(TftpError::Server {
                code: 1,
                message: "File not found".into()
            })
        );
        let mut t = Transfer::new("f", SERVER.parse().unwrap(), opts(), t0);
        sent(t.poll(t0));
        t.handle(&oack(&[("blksize", "1468")]), tid, t0);
        assert!(matches!(
            t.poll(t0),
            Poll::Failed(TftpError::BadOption {
                what: "blksize",
                ..
            })
        ));
    }

    #[test]
    fn block_numbers_wrap() {
        let t0 = Instant::now();
        let o = Options {
            blksize: 8,
            windowsize: 1,
            ..opts()
        };
        let (mut t, tid) = requested(o, t0);
        t.handle(&oack(&[("blksize", "8")]), tid, t0);
        sent(t.poll(t0));
        for n in 1..=65_537u32 {
            t.handle(&data(n as u16, 8), tid, t0);
            sent(t.poll(t0));
        }
        t.handle(&data(2, 0), tid, t0);
        sent(t.poll(t0));
        assert!(matches!(
            t.poll(t0),
            Poll::Done(Received { bytes: 524_296, .. })
        ));
    }
}
