//! One read transfer as a state machine, without I/O: option negotiation,
//! the window of blocks in flight, ACK handling and the retransmission timer.
//! Time is passed in (`now`), so tests drive it with made-up instants; the
//! server owns the socket and the file and asks this what to send and when.
//!
//! Sequence numbers: 0 is the OACK (when options were granted), n ≥ 1 is DATA
//! block n, whose bytes are the file's `(n-1)·blksize ..` and whose wire block
//! number is n mod 65536 (files of more than 65535 blocks roll over to 0, as
//! tftp-hpa, curl, atftp and iPXE expect). The last block is shorter than
//! blksize, possibly empty when the size is a multiple of it.
//!
//! ACKs (RFC 7440 §4): an ACK for a block in flight acknowledges it and every
//! block before it; the window slides past it and sending resumes from the
//! block after it (a windowed client ACKs early only when it saw a gap, and
//! it drops what followed the gap). An ACK for anything already acknowledged
//! is stale and ignored: answering duplicate ACKs with data is what makes the
//! Sorcerer's Apprentice double every packet (RFC 1123 §4.2.3.1). Only the
//! timer resends: when nothing advances for `rto`, the window is sent again
//! from its first unacknowledged block and `rto` doubles (up to `max_timeout`);
//! any progress resets it. A client silent for `give_up` ends the transfer,
//! and one that has acknowledged nothing at all `first_ack` after the start
//! ends it sooner: a real client answers the OACK or the first block within
//! milliseconds, and an RRQ from a spoofed or vanished address must not hold
//! a transfer slot for all of `give_up`.

use std::time::{Duration, Instant};

use super::packet::{DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE, Options};

/// What the server grants and how it retransmits (`[tftp]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest blksize granted whatever the path carries (`max_blksize`).
    pub max_blksize: u16,
    /// Largest windowsize granted (`max_windowsize`).
    pub max_windowsize: u16,
    /// Wait before the first retransmission (`timeout`); doubles per
    /// unanswered retransmission.
    pub timeout: Duration,
    /// The doubling stops here.
    pub max_timeout: Duration,
    /// A transfer whose client has not ACKed anything new for this long ends.
    pub give_up: Duration,
    /// A transfer whose client has ACKed nothing at all (neither the OACK
    /// nor the first block) this long after it started ends (`first_ack_timeout`).
    pub first_ack: Duration,
    /// Grant a client's RFC 2349 `timeout` option and start from it
    /// (`honor_client_timeout`); otherwise it is left out of the OACK.
    pub honor_client_timeout: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(8),
            give_up: Duration::from_secs(20),
            first_ack: Duration::from_secs(4),
            honor_client_timeout: false,
        }
    }
}

/// The largest blksize whose DATA packet fits an `mtu`-byte IPv4 packet
/// unfragmented: less 20 bytes of IP header, 8 of UDP and 4 of TFTP.
pub fn blksize_for_mtu(mtu: u32) -> u16 {
    let room = mtu.saturating_sub(20 + 8 + 4);
    room.clamp(u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE)) as u16
}

/// What was agreed for one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The first retransmission timeout.
    pub timeout: Duration,
    /// The OACK's options, in RFC order; `None`: no OACK, data starts at once.
    pub oack: Option<Vec<(String, String)>>,
}

/// Grants what the client asked within `limits` and `path_blksize` (the
/// MTU-derived cap for this client). RFC 2347: a server may lower blksize
/// and windowsize, answers tsize with the size, and leaves out what it
/// does not grant; with nothing granted there is no OACK at all.
pub fn negotiate(asked: &Options, size: u64, limits: &Limits, path_blksize: u16) -> Negotiated {
    let mut oack = Vec::new();
    let mut blksize = DEFAULT_BLKSIZE;
    if let Some(b) = asked.blksize {
        blksize = b.min(limits.max_blksize).min(path_blksize).max(MIN_BLKSIZE);
        oack.push(("blksize".to_string(), blksize.to_string()));
    }
    if asked.tsize.is_some() {
        oack.push(("tsize".to_string(), size.to_string()));
    }
    let mut timeout = limits.timeout;
    if let Some(t) = asked.timeout.filter(|_| limits.honor_client_timeout) {
        timeout = Duration::from_secs(u64::from(t));
        oack.push(("timeout".to_string(), t.to_string()));
    }
    let mut windowsize = 1;
    if let Some(w) = asked.windowsize {
        windowsize = w.min(limits.max_windowsize).max(1);
        oack.push(("windowsize".to_string(), windowsize.to_string()));
    }
    Negotiated {
        blksize,
        windowsize,
        timeout,
        oack: (!oack.is_empty()).then_some(oack),
    }
}

/// One packet the server should send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    Oack {
        retransmission: bool,
    },
    Data {
        block: u16,
        /// Where its bytes start in the file, and how many.
        offset: u64,
        len: usize,
        retransmission: bool,
    },
}

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    /// The last block was acknowledged.
    Done,
    /// The client sent an ERROR (code, message): it gave up, or refused the
    /// OACK after a size probe.
    ClientError(u16, String),
    /// Nothing new was acknowledged for `give_up`.
    TimedOut,
    /// Nothing at all was acknowledged within `first_ack` of the start.
    Unacknowledged,
}

#[derive(Debug)]
pub struct Session {
    blksize: u64,
    window: u64,
    size: u64,
    /// Highest sequence number (the last DATA block).
    last: u64,
    /// First unacknowledged sequence number.
    base: u64,
    /// Next sequence number to send.
    next: u64,
    /// One past the highest sequence number ever sent.
    sent_max: u64,
    first_rto: Duration,
    rto: Duration,
    max_rto: Duration,
    give_up: Duration,
    /// The first sequence number (0 with an OACK, else 1): until it is
    /// acknowledged, the client has shown no sign of life.
    first: u64,
    started: Instant,
    first_ack: Duration,
    /// When the current rto started running: the last progress or retransmission.
    timer_from: Instant,
    progress_at: Instant,
    retransmissions: u64,
    state: State,
}

impl Session {
    /// A transfer of a `size`-byte file as `n` agreed, starting at `now`.
    pub fn new(n: &Negotiated, size: u64, limits: &Limits, now: Instant) -> Session {
        let blksize = u64::from(n.blksize.max(MIN_BLKSIZE));
        let first = if n.oack.is_some() { 0 } else { 1 };
        Session {
            blksize,
            window: u64::from(n.windowsize.max(1)),
            size,
            last: size / blksize + 1,
            base: first,
            next: first,
            sent_max: first,
            first_rto: n.timeout,
            rto: n.timeout,
            max_rto: limits.max_timeout.max(n.timeout),
            give_up: limits.give_up,
            first,
            started: now,
            first_ack: limits.first_ack,
            timer_from: now,
            progress_at: now,
            retransmissions: 0,
            state: State::Running,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn blksize(&self) -> u16 {
        self.blksize as u16
    }

    /// Packets sent again so far (after a timeout or an early ACK).
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    /// File bytes the client has acknowledged.
    pub fn acked_bytes(&self) -> u64 {
        (self.base.saturating_sub(1) * self.blksize).min(self.size)
    }

    /// The next packet to send now, if the window has room.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.state != State::Running {
            return None;
        }
        // The OACK is a window of its own: data waits for its ACK 0.
        let end = if self.base == 0 {
            0
        } else {
            (self.base + self.window - 1).min(self.last)
        };
        if self.next > end {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let retransmission = seq < self.sent_max;
        if retransmission {
            self.retransmissions += 1;
        } else {
            self.sent_max = seq + 1;
        }
        if seq == 0 {
            return Some(Transmit::Oack { retransmission });
        }
        let offset = (seq - 1) * self.blksize;
        Some(Transmit::Data {
            block: seq as u16,
            offset,
            len: self.size.saturating_sub(offset).min(self.blksize) as usize,
            retransmission,
        })
    }

    /// An ACK from the client.
    pub fn on_ack(&mut self, block: u16, now: Instant) {
        if self.state != State::Running || self.sent_max == self.base {
            return;
        }
        // The one sequence number in flight with this wire block number (the
        // span in flight is at most a window, < 65536, so it is unique).
        let d = u64::from(block.wrapping_sub(self.base as u16));
        let seq = self.base + d;
        if seq >= self.sent_max {
            // Stale (already acknowledged) or never sent: ignored, see the module doc.
            return;
        }
        self.base = seq + 1;
        // RFC 7440: resume from the block after the one acknowledged.
        self.next = self.base;
        self.rto = self.first_rto;
        self.timer_from = now;
        self.progress_at = now;
        if self.base > self.last {
            self.state = State::Done;
        }
    }

    /// An ERROR from the client ends the transfer.
    pub fn on_error(&mut self, code: u16, message: &str) {
        if self.state == State::Running {
            self.state = State::ClientError(code, message.to_string());
        }
    }

    /// When [`Session::on_timeout`] wants to run next; `None` once over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resend = self.timer_from + self.rto;
        let deadline = match self.acked_nothing() {
            true => resend.min(self.started + self.first_ack),
            false => resend,
        };
        (self.state == State::Running).then_some(deadline)
    }

    /// Whether the client has acknowledged nothing yet.
    fn acked_nothing(&self) -> bool {
        self.base == self.first
    }

    /// Time passed: past the deadline the window is resent (from `base`) and
    /// the timeout doubles, or, after `give_up` without progress, the
    /// transfer ends. True when the window is to be resent.
    pub fn on_timeout(&mut self, now: Instant) -> bool {
        if self.state != State::Running {
            return false;
        }
        if self.acked_nothing() && now.saturating_duration_since(self.started) >= self.first_ack {
            self.state = State::Unacknowledged;
            return false;
        }
        if now < self.timer_from + self.rto {
            return false;
        }
        if now.saturating_duration_since(self.progress_at) >= self.give_up {
            self.state = State::TimedOut;
            return false;
        }
        self.next = self.base;
        self.rto = (self.rto * 2).min(self.max_rto);
        self.timer_from = now;
        true
    }

    /// The timeout the next retransmission waits for (for the log).
    pub fn rto(&self) -> Duration {
        self.rto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn opts(
        blksize: Option<u16>,
        tsize: bool,
        timeout: Option<u8>,
        windowsize: Option<u16>,
    ) -> Options {
        Options {
            blksize,
            tsize: tsize.then_some(0),
            timeout,
            windowsize,
            ignored: vec![],
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn negotiation_grants_within_the_caps() {
        let l = Limits {
            max_blksize: 8192,
            max_windowsize: 16,
            ..Limits::default()
        };
        let honor = Limits {
            honor_client_timeout: true,
            ..l.clone()
        };
        let cases = [
            // (asked, limits, path cap, blksize, windowsize, timeout, oack)
            (opts(None, false, None, None), &l, 1468, 512, 1, S, None),
            (
                opts(Some(1468), false, None, None),
                &l,
                1468,
                1468,
                1,
                S,
                kv(&[("blksize", "1468")]),
            ),
            // The path's MTU wins over what firmware asks.
            (
                opts(Some(1468), true, None, None),
                &l,
                968,
                968,
                1,
                S,
                kv(&[("blksize", "968"), ("tsize", "5000")]),
            ),
            (
                opts(Some(65464), false, None, None),
                &l,
                65464,
                8192,
                1,
                S,
                kv(&[("blksize", "8192")]),
            ),
            (
                opts(Some(512), false, None, Some(64)),
                &l,
                1468,
                512,
                16,
                S,
                kv(&[("blksize", "512"), ("windowsize", "16")]),
            ),
            (
                opts(None, false, None, Some(4)),
                &l,
                1468,
                512,
                4,
                S,
                kv(&[("windowsize", "4")]),
            ),
            // timeout: left out unless honoured, then granted as asked (RFC 2349 allows no other value).
            (opts(None, false, Some(5), None), &l, 1468, 512, 1, S, None),
            (
                opts(None, true, Some(5), None),
                &honor,
                1468,
                512,
                1,
                5 * S,
                kv(&[("tsize", "5000"), ("timeout", "5")]),
            ),
        ];
        for (asked, limits, path, blksize, windowsize, timeout, oack) in cases {
            let n = negotiate(&asked, 5000, limits, path);
            assert_eq!(
                (n.blksize, n.windowsize, n.timeout, &n.oack),
                (blksize, windowsize, timeout, &oack),
                "{asked:?}"
            );
        }
    }

    #[test]
    fn mtu_caps() {
        assert_eq!(blksize_for_mtu(1500), 1468);
        assert_eq!(blksize_for_mtu(1000), 968);
        assert_eq!(blksize_for_mtu(9000), 8968);
        assert_eq!(blksize_for_mtu(65536), MAX_BLKSIZE);
        assert_eq!(blksize_for_mtu(0), MIN_BLKSIZE);
    }

    /// A session of `size` bytes at blksize 10, with or without an OACK.
    fn session(size: u64, window: u16, oack: bool, now: Instant) -> Session {
        let n = Negotiated {
            blksize: 10,
            windowsize: window,
            timeout: S,
            oack: oack.then(|| vec![("blksize".into(), "10".into())]),
        };
        Session::new(&n, size, &Limits::default(), now)
    }

    /// Everything the session sends now, as (wire block, len, retransmission); OACK is block -1.
    fn drain(s: &mut Session) -> Vec<(i32, usize, bool)> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|t| match t {
                Transmit::Oack { retransmission } => (-1, 0, retransmission),
                Transmit::Data {
                    block,
                    len,
                    retransmission,
                    ..
                } => (i32::from(block), len, retransmission),
            })
            .collect()
    }

    #[test]
    fn lockstep_ends_on_a_short_block_or_an_empty_one() {
        let t = Instant::now();
        for (size, lens) in [
            (25u64, vec![10, 10, 5]),
            (20, vec![10, 10, 0]),
            (0, vec![0]),
        ] {
            let mut s = session(size, 1, false, t);
            let mut got = vec![];
            for _ in 0..10 {
                let out = drain(&mut s);
                assert_eq!(out.len(), 1, "one block at a time");
                got.push(out[0].1);
                s.on_ack(out[0].0 as u16, t);
                if *s.state() == State::Done {
                    break;
                }
            }
            assert_eq!(got, lens, "size {size}");
            assert_eq!(s.state(), &State::Done);
            assert_eq!(s.acked_bytes(), size);
            assert_eq!(drain(&mut s), vec![]);
        }
    }

    #[test]
    fn oack_first_then_data_after_ack_zero() {
        let t = Instant::now();
        let mut s = session(15, 4, true, t);
        assert_eq!(drain(&mut s), vec![(-1, 0, false)]);
        s.on_ack(1, t); // not sent yet: ignored
        assert_eq!(drain(&mut s), vec![]);
        s.on_ack(0, t);
        assert_eq!(drain(&mut s), vec![(1, 10, false), (2, 5, false)]);
        s.on_ack(2, t);
        assert_eq!(s.state(), &State::Done);
    }

    #[test]
    fn a_client_error_ends_the_transfer() {
        let t = Instant::now();
        let mut s = session(15, 1, true, t);
        drain(&mut s);
        s.on_error(8, "tsize probe");
        assert_eq!(s.state(), &State::ClientError(8, "tsize probe".into()));
        assert_eq!(drain(&mut s), vec![]);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn an_ack_inside_the_window_slides_it_and_resends_after_it() {
        let t = Instant::now();
        let mut s = session(100, 4, false, t); // blocks 1..=11 (11 empty)
        let blocks = |v: Vec<(i32, usize, bool)>| v.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>();
        assert_eq!(
            blocks(drain(&mut s)),
            [(1, false), (2, false), (3, false), (4, false)]
        );
        // The client lost block 3: it ACKs 2, and 3 and 4 are sent again, then 5, 6.
        s.on_ack(2, t);
        assert_eq!(
            blocks(drain(&mut s)),
            [(3, true), (4, true), (5, false), (6, false)]
        );
        assert_eq!(s.retransmissions(), 2);
        // Duplicate and stale ACKs are ignored: no Sorcerer's Apprentice.
        for stale in [2, 2, 1, 0] {
            s.on_ack(stale, t);
            assert_eq!(drain(&mut s), vec![], "ACK {stale}");
        }
        s.on_ack(6, t);
        assert_eq!(
            blocks(drain(&mut s)),
            [(7, false), (8, false), (9, false), (10, false)]
        );
        s.on_ack(10, t);
        assert_eq!(drain(&mut s), vec![(11, 0, false)]);
        s.on_ack(11, t);
        assert_eq!((s.state(), s.retransmissions()), (&State::Done, 2));
    }

    #[test]
    fn the_timer_resends_the_window_with_doubling_timeouts_then_gives_up() {
        let t0 = Instant::now();
        // A client that never answers is dropped at first_ack; this one is
        // given all of give_up to show the backoff.
        let n = Negotiated {
            blksize: 10,
            windowsize: 2,
            timeout: S,
            oack: None,
        };
        let limits = Limits {
            first_ack: 3600 * S,
            ..Limits::default()
        };
        let mut s = Session::new(&n, 100, &limits, t0);
        assert_eq!(drain(&mut s).len(), 2);
        // Early wake-ups do nothing.
        s.on_timeout(t0 + S / 2);
        assert_eq!(drain(&mut s), vec![]);
        // Unanswered: resent after 1, then 2, 4, 8, 8 s (the cap) ...
        let mut at = t0;
        let mut waits = vec![];
        while *s.state() == State::Running {
            let due = s.poll_timeout().unwrap();
            waits.push((due - at).as_secs());
            at = due;
            s.on_timeout(at);
            if *s.state() == State::Running {
                assert_eq!(drain(&mut s), vec![(1, 10, true), (2, 10, true)]);
            }
        }
        // ... until 20 s (give_up) have passed without progress.
        assert_eq!(waits, [1, 2, 4, 8, 8]);
        assert_eq!((s.state(), s.retransmissions()), (&State::TimedOut, 8));
    }

    #[test]
    fn a_client_that_acknowledges_nothing_is_dropped_after_first_ack() {
        let t0 = Instant::now();
        let limits = Limits {
            first_ack: S * 5 / 2,
            ..Limits::default()
        };
        for oack in [false, true] {
            let n = Negotiated {
                blksize: 10,
                windowsize: 1,
                timeout: S,
                oack: oack.then(|| vec![("blksize".into(), "10".into())]),
            };
            let mut s = Session::new(&n, 100, &limits, t0);
            assert_eq!(drain(&mut s).len(), 1);
            assert_eq!(
                s.poll_timeout(),
                Some(t0 + S),
                "the first resend comes first"
            );
            assert!(s.on_timeout(t0 + S));
            assert_eq!(drain(&mut s).len(), 1, "resent once");
            // The next resend would be at 3 s; first_ack (2.5 s) comes before it.
            assert_eq!(s.poll_timeout(), Some(t0 + S * 5 / 2));
            assert!(!s.on_timeout(t0 + S * 5 / 2));
            assert_eq!(s.state(), &State::Unacknowledged, "oack {oack}");
            assert_eq!(s.poll_timeout(), None);
            assert_eq!(drain(&mut s), vec![]);
        }
        // One ACK (of the OACK) is a live client: from then on only give_up counts.
        let n = Negotiated {
            blksize: 10,
            windowsize: 1,
            timeout: S,
            oack: Some(vec![("blksize".into(), "10".into())]),
        };
        let mut s = Session::new(&n, 100, &limits, t0);
        drain(&mut s);
        s.on_ack(0, t0 + S / 10);
        drain(&mut s);
        let mut at = t0;
        while *s.state() == State::Running {
            at = s.poll_timeout().unwrap();
            s.on_timeout(at);
            drain(&mut s);
        }
        assert_eq!(s.state(), &State::TimedOut);
        assert!(at - t0 >= limits.give_up, "gave up at {:?}", at - t0);
    }

    #[test]
    fn progress_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = session(100, 1, false, t0);
        drain(&mut s);
        s.on_timeout(t0 + S);
        s.on_timeout(t0 + 3 * S);
        assert_eq!(s.rto(), 4 * S);
        drain(&mut s);
        let t = t0 + 4 * S;
        s.on_ack(1, t);
        assert_eq!(s.rto(), S);
        assert_eq!(s.poll_timeout(), Some(t + S));
        // give_up counts from the last progress, not from the start.
        s.on_timeout(t0 + 21 * S);
        assert_eq!(s.state(), &State::Running);
    }

    #[test]
    fn block_numbers_roll_over_past_65535() {
        let t = Instant::now();
        let size = 70_000 * 10;
        let mut s = session(size, 8, false, t);
        let mut seen = 0u64;
        let mut last_block = 0u16;
        while *s.state() == State::Running {
            let out = drain(&mut s);
            for (b, len, _) in &out {
                if seen > 0 {
                    assert_eq!(*b as u16, last_block.wrapping_add(1));
                }
                last_block = *b as u16;
                seen += 1;
                if seen == 65_536 {
                    assert_eq!(*b, 0, "block after 65535");
                }
                assert!(*len == 10 || seen == 70_001);
            }
            s.on_ack(out.last().unwrap().0 as u16, t);
        }
        assert_eq!(seen, 70_001);
        assert_eq!(s.acked_bytes(), size);
    }
}
