//! The one UDP socket every simulated node's DHCP goes through, and the
//! demultiplexing of replies to the node waiting for them (by xid and MAC).
//!
//! Two ways onto the network:
//! - relay: bound to `<giaddr>:67`, as a relay agent is; requests go by
//!   unicast to the server's port 67 and replies come back to giaddr. The
//!   address must be configured on this host and routed to from the server.
//! - direct: bound to `0.0.0.0:68` on one interface (SO_BINDTODEVICE), as a
//!   client on the link; requests are broadcast with the BROADCAST flag, so
//!   replies come back broadcast.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dhcproto::Encodable;
use dhcproto::v4::Message;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// Replies queued for one node before more are dropped (a node expects
/// one OFFER or ACK at a time; a few spare for duplicates and other servers).
const PER_NODE_QUEUE: usize = 8;
/// The socket's receive buffer: a thousand replies arriving together.
const RCVBUF: usize = 4 << 20;

#[derive(Debug, Clone)]
pub enum Mode {
    Relay { giaddr: Ipv4Addr, server: Ipv4Addr },
    Direct { interface: String },
}

type Key = (u32, [u8; 6]);

pub struct DhcpSocket {
    socket: UdpSocket,
    dest: SocketAddr,
    relay: Option<Ipv4Addr>,
    waiting: Mutex<HashMap<Key, mpsc::Sender<Message>>>,
    /// Replies no node was waiting for (late duplicates, other clients').
    pub unmatched: AtomicU64,
    /// Datagrams that were not DHCP.
    pub undecodable: AtomicU64,
}

/// A node's place in the demultiplexer; leaving it (drop) stops delivery.
pub struct Registration {
    socket: Arc<DhcpSocket>,
    key: Key,
    pub replies: mpsc::Receiver<Message>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.socket
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// An I/O error said as `message` says it (which failed, and what may
/// help), its kind kept.
fn said(message: impl FnOnce(&io::Error) -> String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), message(&e))
}

impl DhcpSocket {
    /// Binds the socket and starts the task that hands replies out. Must be
    /// called inside a tokio runtime.
    pub fn bind(mode: &Mode) -> io::Result<Arc<DhcpSocket>> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = s.set_recv_buffer_size(RCVBUF);
        s.set_nonblocking(true)?;
        let (dest, relay) = match mode {
            Mode::Relay { giaddr, server } => {
                let local = SocketAddrV4::new(*giaddr, SERVER_PORT);
                s.bind(&SocketAddr::from(local).into())
                    .map_err(said(|e| {
                        format!(
                            "cannot bind the relay address {local}: {e} (it must be an address of this host, e.g. `ip addr add {giaddr}/32 dev lo`, that the server routes to; and nothing else, such as a DHCP relay or server, may hold port 67 on it)"
                        )
                    }))?;
                (
                    SocketAddrV4::new(*server, SERVER_PORT).into(),
                    Some(*giaddr),
                )
            }
            Mode::Direct { interface } => {
                s.set_broadcast(true)?;
                s.bind_device(Some(interface.as_bytes()))
                    .map_err(said(|e| {
                        format!("cannot bind to interface {interface}: {e}")
                    }))?;
                let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT);
                s.bind(&SocketAddr::from(local).into())
                    .map_err(said(|e| {
                        format!(
                            "cannot bind UDP port {CLIENT_PORT} on {interface}: {e} (a DHCP client such as dhclient or udhcpc may hold it; stop it, or use --relay)"
                        )
                    }))?;
                (
                    SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT).into(),
                    None,
                )
            }
        };
        let socket = Arc::new(DhcpSocket {
            socket: UdpSocket::from_std(s.into())?,
            dest,
            relay,
            waiting: Mutex::new(HashMap::new()),
            unmatched: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
        });
        // The receive task holds only a weak reference: it ends once the storm drops the socket.
        tokio::spawn(receive(Arc::downgrade(&socket)));
        Ok(socket)
    }

    /// The relay address requests are sent as, if relaying.
    pub fn relay(&self) -> Option<Ipv4Addr> {
        self.relay
    }

    pub fn register(self: &Arc<Self>, xid: u32, mac: [u8; 6]) -> Registration {
        let (tx, rx) = mpsc::channel(PER_NODE_QUEUE);
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((xid, mac), tx);
        Registration {
            socket: self.clone(),
            key: (xid, mac),
            replies: rx,
        }
    }

    pub async fn send(&self, msg: &Message) -> io::Result<()> {
        let bytes = msg
            .to_vec()
            .map_err(|e| io::Error::other(format!("encoding a DHCP message: {e}")))?;
        self.socket.send_to(&bytes, self.dest).await.map(|_| ())
    }
}

async fn receive(socket: std::sync::Weak<DhcpSocket>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Some(s) = socket.upgrade() else { return };
        // Bounded: re-check now and then whether the storm is over.
        let got = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            s.socket.recv_from(&mut buf),
        )
        .await;
        let len = match got {
            Ok(Ok((len, _))) => len,
            Ok(Err(e)) => {
                tracing::debug!("DHCP receive: {e}");
                continue;
            }
            Err(_) => continue,
        };
        let Ok(msg) = crate::dhcp::wire::decode(&buf[..len]) else {
            s.undecodable.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut mac = [0u8; 6];
        match msg.chaddr().get(..6) {
            Some(c) => mac.copy_from_slice(c),
            None => {
                s.undecodable.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let tx = s
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(msg.xid(), mac))
            .cloned();
        match tx {
            // A full queue means duplicates the node has not read: dropping one is harmless.
            Some(tx) => {
                let _ = tx.try_send(msg);
            }
            None => {
                s.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
