//! Deep receive buffers for the UDP services a boot storm hits at once.
//!
//! A rack powering on sends its DHCP DISCOVERs, and then its DNS questions, within
//! milliseconds, and the kernel's default buffer (about 300 small datagrams) drops the tail of
//! such a burst whenever the server is briefly off the CPU. 4 MiB holds several thousand.

use socket2::SockRef;

/// What a storm-facing UDP socket asks to queue.
pub const STORM_RCVBUF: usize = 4 << 20;

/// Asks for [`STORM_RCVBUF`] on `socket` of `service`. The kernel caps the request at
/// net.core.rmem_max unless the process may exceed it (CAP_NET_ADMIN, which root has); either
/// way what it got is logged, and a small buffer is never an error.
pub fn deepen(socket: SockRef<'_>, service: &str) {
    use std::os::fd::AsRawFd;
    let _ = socket.set_recv_buffer_size(STORM_RCVBUF);
    if socket.recv_buffer_size().unwrap_or(0) < STORM_RCVBUF {
        let size = STORM_RCVBUF as libc::c_int;
        // SAFETY: setsockopt on an open socket, with a c_int option value.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < STORM_RCVBUF {
        tracing::info!(
            bytes = got,
            "{service} receive buffer is below 4 MiB (raise net.core.rmem_max to absorb boot storms)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root (how rackboot binds its ports) the buffer is what was asked, whatever
    /// net.core.rmem_max says; the kernel reports twice the size it was given.
    #[test]
    fn a_storm_buffer_is_granted_to_root() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        deepen(SockRef::from(&s), "test");
        let got = SockRef::from(&s).recv_buffer_size().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(got >= STORM_RCVBUF, "{got}");
        } else {
            assert!(got > 0);
        }
    }
}
