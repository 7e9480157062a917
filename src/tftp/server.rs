//! The TFTP sockets: the listening socket (port 69) that takes requests, and
//! one fresh socket per transfer, bound to the server's address on an
//! ephemeral port and connected to the client (RFC 1350's transfer IDs: the
//! kernel then delivers only that client's packets to it). Reads the file
//! ahead of the blocks sent ([`ReadAhead`]), polls briefly for a lock-step
//! client's ACK ([`BusyPoll`]) and drives a [`Session`]; what may be read
//! and who waits is the [`AssetsHandler`]'s.

use super::metrics::TftpResult;
use crate::contain;
use crate::metrics::Service;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::handler::{AssetsHandler, Content, Outcome, Transfer};
use super::packet::{self, DATA_HEADER, ErrorCode, MAX_BLKSIZE, Mode, Packet, Request};
use super::session::{Limits, Session, State, Transmit, blksize_for_mtu, negotiate};

/// Requests being served or waiting for a slot at once; past this a request
/// is answered "server busy" at once. It bounds the tasks, open files and
/// queue entries a flood of requests (spoofed ones included) can cost.
pub const MAX_PENDING: usize = 4096;

/// How the server runs, beyond the handler's policy.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub limits: Limits,
    /// The boot interface (`network.interface`), whose MTU caps blksize.
    pub interface: Option<String>,
    /// How long a transfer polls for its client's next packet before it
    /// sleeps until one comes ([`BusyPoll`]); zero: never.
    pub busy_poll: std::time::Duration,
    /// Transfers one client address may have running or queued at once
    /// (`[tftp] max_transfers_per_address`); past it a request is answered
    /// "server busy" at once, so one host cannot take every slot. 0: no limit.
    pub max_per_address: usize,
}

struct Shared {
    handler: AssetsHandler,
    config: ServerConfig,
    local_ip: IpAddr,
    /// Clients with a transfer running or queued.
    active: Mutex<ActiveSet>,
    busy_poll: BusyPoll,
}

/// Serves `handler` on an already-bound socket until `cancel` fires.
pub async fn serve(
    socket: std::net::UdpSocket,
    handler: AssetsHandler,
    config: ServerConfig,
    cancel: CancellationToken,
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    let shared = Arc::new(Shared {
        handler,
        local_ip: local.ip(),
        active: Mutex::new(ActiveSet::default()),
        busy_poll: BusyPoll {
            window: config.busy_poll,
            taken: AtomicBool::new(false),
        },
        config,
    });
    tracing::debug!(%local, "TFTP serving");
    // Requests are small; one that does not fit is cut, and its parse fails.
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, client) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "TFTP receive on {local} failed; carrying on");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let bytes = &buf[..n];
        let metrics = shared.handler.metrics();
        let Some(parsed) = contain::request(metrics, Service::Tftp, client, bytes, || {
            Packet::parse(bytes)
        }) else {
            continue;
        };
        match parsed {
            Ok(Packet::Rrq(req)) => start(&shared, client, req, &cancel),
            Ok(Packet::Wrq(req)) => {
                let (code, msg) = shared.handler.refuse_write(client, &req.filename);
                spawn_error(&shared, client, code, msg.to_string());
            }
            Ok(other) => {
                tracing::debug!(%client, packet = ?other, "TFTP packet on the request port that is not a request: ignored");
            }
            Err(e) if matches!(bytes, [0, 1 | 2, ..]) => {
                tracing::info!(%client, error = %e, "malformed TFTP request refused");
                spawn_error(
                    &shared,
                    client,
                    ErrorCode::IllegalOperation,
                    format!("malformed request: {e}"),
                );
            }
            Err(e) => tracing::debug!(%client, error = %e, "not a TFTP packet: ignored"),
        }
    }
}

/// The clients with a transfer running or queued: by address and port (a
/// retransmitted RRQ from one of them is a duplicate, not a new transfer),
/// and how many each address has.
#[derive(Default)]
struct ActiveSet {
    clients: HashSet<SocketAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl ActiveSet {
    fn insert(&mut self, client: SocketAddr) {
        self.clients.insert(client);
        *self.per_ip.entry(client.ip()).or_default() += 1;
    }

    fn remove(&mut self, client: &SocketAddr) {
        if !self.clients.remove(client) {
            return;
        }
        if let Some(n) = self.per_ip.get_mut(&client.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&client.ip());
            }
        }
    }
}

/// Starts serving a read request, unless it repeats one already in hand.
fn start(shared: &Arc<Shared>, client: SocketAddr, req: Request, cancel: &CancellationToken) {
    {
        let mut active = shared.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.clients.contains(&client) {
            tracing::debug!(%client, file = %req.filename, "duplicate TFTP request ignored: already being served");
            return;
        }
        let cap = shared.config.max_per_address;
        let from_ip = active.per_ip.get(&client.ip()).copied().unwrap_or(0);
        if cap > 0 && from_ip >= cap {
            drop(active);
            // Debug, not warn: a flood would write a line per packet; the
            // metric counts them.
            tracing::debug!(%client, file = %req.filename, "TFTP request refused: {from_ip} transfers from this address already (tftp.max_transfers_per_address)");
            shared.handler.metrics().tftp_transfer(TftpResult::Limited);
            let msg = format!("server busy: {cap} transfers from your address already");
            spawn_error(shared, client, ErrorCode::NotDefined, msg);
            return;
        }
        if active.clients.len() >= MAX_PENDING {
            tracing::warn!(%client, "TFTP request refused: {MAX_PENDING} transfers already running or queued");
            drop(active);
            spawn_error(shared, client, ErrorCode::NotDefined, "server busy".into());
            return;
        }
        active.insert(client);
    }
    let (shared, cancel) = (shared.clone(), cancel.clone());
    tokio::spawn(async move {
        let _active = Active(&shared, client);
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = read_transfer(&shared, client, req) => {}
        }
    });
}

/// Takes the client out of the active set when its task ends, however it ends.
struct Active<'a>(&'a Shared, SocketAddr);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&self.1);
    }
}

/// One read request, from opening the file to the last ACK.
async fn read_transfer(shared: &Shared, client: SocketAddr, req: Request) {
    if req.mode == Mode::Mail {
        let msg = "mail mode is not served; ask for octet".to_string();
        return send_error(shared, client, ErrorCode::IllegalOperation, msg).await;
    }
    // netascii is served as octet: what is served are binaries, and
    // converting line ends would make tsize lie (async-tftp, which rackboot
    // used before, did the same).
    if !req.options.ignored.is_empty() {
        tracing::debug!(%client, ignored = ?req.options.ignored, "TFTP options left out of the OACK");
    }
    let Transfer { file, size, record } = match shared.handler.open(client, &req.filename).await {
        Ok(o) => o,
        Err(refusal) => {
            let (code, msg) = super::handler::error_packet(&refusal);
            return send_error(shared, client, code, msg.to_string()).await;
        }
    };
    let Some(_slot) = shared.handler.wait_turn(client).await else {
        record.finish(Outcome::Busy, 0);
        let msg = "server busy: no transfer slot came free; try again".to_string();
        return send_error(shared, client, ErrorCode::NotDefined, msg).await;
    };
    let sock = match transfer_socket(shared.local_ip, client).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%client, error = %e, "cannot open a TFTP transfer socket");
            return record.finish(Outcome::Failed(format!("transfer socket: {e}")), 0);
        }
    };
    let limits = &shared.config.limits;
    let interface_mtu = shared.config.interface.as_deref().and_then(interface_mtu);
    let route_mtu = route_mtu(&sock);
    let path_blksize = interface_mtu
        .into_iter()
        .chain(route_mtu)
        .min()
        .map_or(MAX_BLKSIZE, blksize_for_mtu);
    let n = negotiate(&req.options, size, limits, path_blksize);
    tracing::debug!(%client, file = %req.filename, size, ?interface_mtu, ?route_mtu, blksize = n.blksize,
        windowsize = n.windowsize, asked = ?req.options, "TFTP read");
    let oack = n.oack.clone().map(|o| Packet::Oack(o).to_bytes());
    let mut session = Session::new(&n, size, limits, Instant::now());
    let ended = drive(
        &sock,
        &file,
        &mut session,
        oack.as_deref(),
        &record,
        &shared.busy_poll,
    )
    .await;
    let outcome = match (ended, session.state()) {
        (Err(e), _) => Outcome::Failed(e),
        (Ok(()), State::Done) => Outcome::Sent,
        (Ok(()), State::ClientError(code, msg)) => Outcome::ClientError(*code, msg.clone()),
        (Ok(()), State::TimedOut | State::Running) => Outcome::TimedOut,
        (Ok(()), State::Unacknowledged) => Outcome::Unacknowledged,
    };
    match &outcome {
        Outcome::Sent => {
            tracing::debug!(%client, file = %req.filename, retransmissions = session.retransmissions(), "TFTP read done")
        }
        Outcome::ClientError(8, _) => {
            tracing::debug!(%client, file = %req.filename, "TFTP client refused the OACK (a size probe)")
        }
        // Debug: a flood of spoofed requests would write a line each; the
        // metric and the timeline have them.
        Outcome::Unacknowledged => {
            tracing::debug!(%client, file = %req.filename, "TFTP read dropped: the client acknowledged nothing (tftp.first_ack_timeout)")
        }
        o => {
            tracing::info!(%client, file = %req.filename, outcome = ?o, acked = session.acked_bytes(), "TFTP read ended early")
        }
    }
    if let Outcome::Failed(e) = &outcome {
        let _ = sock.send(&error_bytes(ErrorCode::NotDefined, e)).await;
    }
    record.finish(outcome, session.acked_bytes());
}

/// Sends what the session asks for, feeds it ACKs, ERRORs and time, until it
/// is over. `Err` when rackboot failed (the message is sent to the client).
async fn drive(
    sock: &UdpSocket,
    file: &Content,
    session: &mut Session,
    oack: Option<&[u8]>,
    record: &super::handler::Record,
    busy_poll: &BusyPoll,
) -> Result<(), String> {
    let mut out = vec![0u8; DATA_HEADER + usize::from(session.blksize())];
    let mut ahead = ReadAhead::default();
    let mut ack = [0u8; 1024];
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    // The deadline the timer is set for. Progress moves the session's deadline
    // later with every ACK; re-arming tokio's timer wheel per block is a
    // measurable share of a lock-step transfer, so the timer is moved only
    // earlier, and when it fires before the session's deadline it is re-armed.
    let mut armed: Option<Instant> = None;
    // Whether the client's last answer came within the busy-poll window
    // (until it has answered, assume so: on a LAN it does).
    let mut answers_fast = true;
    let mut sent_at = Instant::now();
    loop {
        let mut again = 0;
        while let Some(t) = session.poll_transmit() {
            let bytes = match t {
                Transmit::Oack { retransmission } => {
                    again += u64::from(retransmission);
                    oack.unwrap_or_default()
                }
                Transmit::Data {
                    block,
                    offset,
                    len,
                    retransmission,
                } => {
                    packet::put_data_header(&mut out, block);
                    ahead
                        .read(file, offset, &mut out[DATA_HEADER..DATA_HEADER + len])
                        .map_err(|e| format!("reading the file at byte {offset}: {e}"))?;
                    if retransmission {
                        again += 1;
                    } else {
                        record.sent(len as u64);
                    }
                    &out[..DATA_HEADER + len]
                }
            };
            sent_at = Instant::now();
            if let Err(e) = send(sock, bytes).await {
                // ICMP port unreachable from an earlier packet: the client is gone.
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    return Ok(());
                }
                return Err(format!("sending to the client: {e}"));
            }
        }
        if again > 0 {
            record.retransmitted(again);
        }
        let Some(deadline) = session.poll_timeout() else {
            return Ok(());
        };
        if armed.is_none_or(|a| deadline < a) {
            timer.as_mut().reset(deadline.into());
            armed = Some(deadline);
        }
        let polled = match answers_fast {
            true => busy_poll.recv(sock, &mut ack).await,
            false => None,
        };
        let received = match polled {
            Some(r) => r,
            None => tokio::select! {
                biased;
                r = sock.recv(&mut ack) => r,
                _ = &mut timer => {
                    armed = None;
                    if session.on_timeout(Instant::now()) {
                        tracing::debug!(rto = ?session.rto(), "TFTP transfer: no ACK in time, resending the window");
                    }
                    continue;
                }
            },
        };
        match received {
            Ok(n) => match Packet::parse(&ack[..n]) {
                Ok(Packet::Ack(block)) => {
                    let now = Instant::now();
                    answers_fast = now - sent_at <= busy_poll.window;
                    session.on_ack(block, now);
                }
                Ok(Packet::Error { code, message }) => session.on_error(code.as_u16(), &message),
                Ok(other) => {
                    tracing::debug!(packet = ?other, "TFTP transfer: not an ACK or ERROR, ignored")
                }
                Err(e) => tracing::debug!(error = %e, "TFTP transfer: malformed packet ignored"),
            },
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(format!("receiving from the client: {e}")),
        }
    }
}

/// Sends `bytes` on the connected `sock`. Straight to the socket first: a
/// fresh socket's first send would otherwise wait a trip through the
/// reactor for tokio to learn it is writable (it always is, bar a full
/// send buffer, which then waits as usual).
async fn send(sock: &UdpSocket, bytes: &[u8]) -> io::Result<()> {
    loop {
        match nix::sys::socket::send(sock.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return sock.send(bytes).await.map(drop),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Polling for a lock-step client's next ACK instead of sleeping until it
/// comes. Between two cores, a thread woken by a packet costs about as much
/// as the whole round trip (the sleeping core's wake-up, the IPI, the
/// scheduler): a 1 MiB fetch at blksize 1468 took 36 ms sleeping and 18 ms
/// polling. PXE ROMs fetch lock-step, so this is their loader's speed.
///
/// It costs a core while it polls, so it is bounded: one transfer polls at
/// a time (the others sleep as before), only for `window` after each send,
/// and only while the client answers within it (a slow or distant client
/// is never polled for). Each poll yields to the runtime, so DHCP, DNS and
/// HTTP on the same thread go on being served.
struct BusyPoll {
    window: std::time::Duration,
    /// A transfer is polling.
    taken: AtomicBool,
}

impl BusyPoll {
    /// The next packet on `sock` if one comes within the window and no
    /// other transfer is polling; `None`: sleep on it as usual.
    async fn recv(&self, sock: &UdpSocket, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if self.window.is_zero() || self.taken.swap(true, Ordering::Acquire) {
            return None;
        }
        // Released however this ends, the task being dropped mid-poll included.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.taken);
        let start = Instant::now();
        loop {
            // Straight to the socket: tokio's readiness would say "not
            // readable" until the reactor has run, which is the wait this
            // avoids.
            match nix::sys::socket::recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Some(Ok(n)),
                Err(Errno::EAGAIN) if start.elapsed() < self.window => {
                    tokio::task::yield_now().await
                }
                Err(Errno::EAGAIN) => return None,
                Err(Errno::EINTR) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// The file read [`READ_AHEAD`] bytes at a time: a lock-step transfer
/// waits a round trip per block, and a read(2) per block was a syscall on
/// that path. Positional reads (from the page cache: loaders are read by
/// every node), so a window resent from an earlier block just reads again.
#[derive(Default)]
struct ReadAhead {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

/// Bytes per read of a transferred file: 44 blocks of 1468, well under
/// what a window of 16 at the largest blksize rewinds.
const READ_AHEAD: usize = 64 * 1024;

impl ReadAhead {
    fn read(&mut self, file: &Content, offset: u64, to: &mut [u8]) -> io::Result<()> {
        let end = offset + to.len() as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            self.buf.resize(READ_AHEAD.max(to.len()), 0);
            let mut got = 0;
            // Up to the buffer or the end of the file, whichever is first.
            while got < self.buf.len() {
                match file.read_at(&mut self.buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.truncate(got);
            self.start = offset;
            if got < to.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than when the transfer began",
                ));
            }
        }
        let at = (offset - self.start) as usize;
        to.copy_from_slice(&self.buf[at..at + to.len()]);
        Ok(())
    }
}

/// A socket on a fresh port of the server's address, connected to `client`.
async fn transfer_socket(local_ip: IpAddr, client: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    sock.connect(client).await?;
    Ok(sock)
}

/// The MTU of `interface`, from sysfs (read per transfer: an admin may change it).
fn interface_mtu(interface: &str) -> Option<u32> {
    if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The MTU of the route to the connected peer (IP_MTU, ip(7)): the route's
/// own `mtu`, a learnt path MTU, else the outgoing device's.
fn route_mtu(sock: &UdpSocket) -> Option<u32> {
    use std::os::fd::AsRawFd as _;
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor, and an int-sized out buffer with its length.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0 && mtu > 0).then_some(mtu as u32)
}

fn error_bytes(code: ErrorCode, msg: &str) -> Vec<u8> {
    let mut out = Vec::new();
    packet::emit_error(&mut out, code, msg);
    out
}

/// An ERROR to `client` from a fresh port (its transfer ID, as for data).
async fn send_error(shared: &Shared, client: SocketAddr, code: ErrorCode, msg: String) {
    let bytes = error_bytes(code, &msg);
    match transfer_socket(shared.local_ip, client).await {
        Ok(sock) => {
            if let Err(e) = sock.send(&bytes).await {
                tracing::debug!(%client, error = %e, "TFTP error packet not sent");
            }
        }
        Err(e) => {
            tracing::warn!(%client, error = %e, "cannot open a socket for a TFTP error packet")
        }
    }
}

fn spawn_error(shared: &Arc<Shared>, client: SocketAddr, code: ErrorCode, msg: String) {
    let shared = shared.clone();
    tokio::spawn(async move { send_error(&shared, client, code, msg).await });
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn busy_poll_takes_what_comes_in_time_and_one_transfer_polls_at_a_time() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        server.connect(client.local_addr().unwrap()).await.unwrap();
        client.connect(server.local_addr().unwrap()).await.unwrap();
        let poll = BusyPoll {
            window: Duration::from_millis(50),
            taken: AtomicBool::new(false),
        };
        let mut buf = [0u8; 16];

        let t = Instant::now();
        assert!(poll.recv(&server, &mut buf).await.is_none(), "nothing came");
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "polled the whole window"
        );

        let (got, ()) = tokio::join!(poll.recv(&server, &mut buf), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            client.send(b"ack").await.unwrap();
        });
        assert_eq!(got.unwrap().unwrap(), 3);
        assert_eq!(&buf[..3], b"ack");
        assert!(!poll.taken.load(Ordering::SeqCst), "released after use");

        poll.taken.store(true, Ordering::SeqCst);
        let t = Instant::now();
        assert!(
            poll.recv(&server, &mut buf).await.is_none(),
            "another transfer polls"
        );
        assert!(
            t.elapsed() < Duration::from_millis(20),
            "and this one does not wait"
        );

        let off = BusyPoll {
            window: Duration::ZERO,
            taken: AtomicBool::new(false),
        };
        client.send(b"x").await.unwrap();
        assert!(
            off.recv(&server, &mut buf).await.is_none(),
            "busy_poll = 0s: never"
        );
    }

    #[test]
    fn read_ahead_serves_blocks_in_order_after_a_rewind_and_the_short_last_one() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let f = Content::File(f);
        let mut ahead = ReadAhead::default();
        let mut block = vec![0u8; 1468];
        let mut offsets: Vec<u64> = (0..60).map(|b| b * 1468).collect();
        offsets.extend([20 * 1468, 21 * 1468]); // a window resent
        for off in offsets {
            ahead.read(&f, off, &mut block).unwrap();
            assert!(
                block == data[off as usize..off as usize + 1468],
                "block at {off}"
            );
        }
        let last = 136 * 1468;
        let mut tail = vec![0u8; data.len() - last];
        ahead.read(&f, last as u64, &mut tail).unwrap();
        assert!(tail == data[last..]);
        let mut past = vec![0u8; 1468];
        let err = ahead.read(&f, last as u64, &mut past).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
