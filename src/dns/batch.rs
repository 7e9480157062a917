//! UDP datagrams in and out by the batch: one `recvmmsg` takes every question waiting (up to
//! [`BATCH`]), one `sendmmsg` sends all their answers.
//!
//! Why: a server that answers one datagram per `sendto` hands its client one datagram at a time,
//! and the client wakes once per answer; answers sent together arrive together and are read
//! together. On a busy link that is the difference between the client (or the kernel path to it)
//! and the server being the ceiling. It also halves the server's system calls per question.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams taken or sent in one system call.
pub(super) const BATCH: usize = 32;

/// The questions of one `recvmmsg`.
pub(super) struct Inbox {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

impl Inbox {
    /// Room for [`BATCH`] datagrams of up to `size` bytes each (longer ones are truncated).
    pub(super) fn new(size: usize) -> Inbox {
        Inbox {
            bufs: (0..BATCH).map(|_| vec![0; size]).collect(),
            lens: [0; BATCH],
            from: [None; BATCH],
        }
    }

    /// Takes the datagrams waiting on `fd`, without blocking: how many (at least one), or the
    /// error of the first (`WouldBlock` when none waits).
    pub(super) fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = (&raw mut names[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a buffer, an iovec and an address of this frame or of
        // `self.bufs`, all alive and unmoved for the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (msgs[i].msg_len as usize).min(self.bufs[i].len());
            self.from[i] = socket_addr(&names[i]);
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`Inbox::receive`] and its sender (none when its address family
    /// is neither IPv4 nor IPv6: it cannot be answered).
    pub(super) fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.bufs[i][..self.lens[i]], self.from[i])
    }
}

/// Answers queued for one `sendmmsg`.
#[derive(Default)]
pub(super) struct Outbox {
    bufs: Vec<Vec<u8>>,
    to: Vec<SocketAddr>,
    queued: usize,
}

impl Outbox {
    /// A buffer for the next answer, empty; [`Outbox::queue`] keeps what was written to it.
    pub(super) fn next(&mut self) -> &mut Vec<u8> {
        if self.bufs.len() == self.queued {
            self.bufs.push(Vec::new());
        }
        let buf = &mut self.bufs[self.queued];
        buf.clear();
        buf
    }

    /// Keeps the answer last written to [`Outbox::next`] for `to`.
    pub(super) fn queue(&mut self, to: SocketAddr) {
        self.to.truncate(self.queued);
        self.to.push(to);
        self.queued += 1;
    }

    /// The answers queued, in order.
    pub(super) fn queued(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.bufs[..self.queued]
            .iter()
            .map(Vec::as_slice)
            .zip(self.to.iter().copied())
    }

    /// Sends the queued answers from `skip` on over `fd` without blocking: how many the kernel
    /// took (at least one), or the error of the first.
    pub(super) fn send(&self, fd: RawFd, skip: usize) -> io::Result<usize> {
        let count = self.queued - skip;
        if count == 0 {
            return Ok(0);
        }
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let count = count.min(BATCH);
        for i in 0..count {
            let buf = &self.bufs[skip + i];
            iovs[i] = libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_namelen = storage_of(self.to[skip + i], &mut names[i]);
            hdr.msg_name = (&raw mut names[i]).cast();
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
        }
        // SAFETY: as in `Inbox::receive`; the kernel only reads the buffers.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Forgets the queued answers (their buffers are kept for the next batch).
    pub(super) fn clear(&mut self) {
        self.queued = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.queued
    }
}

/// The address a `recvmmsg` filled in.
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `s` as the kernel takes it; its length.
fn storage_of(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo().to_be();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    /// Every datagram waiting is taken in one call with its sender, and the answers go back in
    /// one call, each to its own sender, on IPv4 and IPv6 alike.
    fn round_trip(local: &str) {
        let server = UdpSocket::bind(local).unwrap();
        server.set_nonblocking(true).unwrap();
        let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind(local).unwrap()).collect();
        let mut inbox = Inbox::new(16);
        assert_eq!(
            inbox.receive(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for (i, c) in clients.iter().enumerate() {
            c.send_to(
                format!("question {i} and more").as_bytes(),
                server.local_addr().unwrap(),
            )
            .unwrap();
        }
        let mut outbox = Outbox::default();
        let mut n = 0;
        for _ in 0..100 {
            if let Ok(got) = inbox.receive(server.as_raw_fd()) {
                for i in 0..got {
                    let (question, from) = inbox.get(i);
                    assert_eq!(question.len(), 16, "truncated to the buffer");
                    outbox.next().extend_from_slice(&question[..10]);
                    outbox.queue(from.unwrap());
                }
                n += got;
            }
            if n == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(n, 3);
        assert_eq!(outbox.send(server.as_raw_fd(), 0).unwrap(), 3);
        for (i, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], format!("question {i}").as_bytes());
            assert_eq!(from, server.local_addr().unwrap());
        }
        outbox.clear();
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_batch_of_questions_and_answers_crosses_ipv4() {
        round_trip("127.0.0.1:0");
    }

    #[test]
    fn a_batch_of_questions_and_answers_crosses_ipv6() {
        round_trip("[::1]:0");
    }
}
