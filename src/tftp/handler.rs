//! Which files TFTP hands out, and the timeline entries for each transfer.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tftp::packet;
use async_tftp::server::Handler;
use blocking::Unblock;
use futures_lite::{AsyncRead, Future};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::boot::bootenv::is_relative_inside;
use crate::events::Timeline;
use crate::metrics::{Metrics, TftpResult};
use crate::model::{EventKind, Mac, Timestamp};
use crate::store::Store;

/// Serves regular files below `root`.
pub struct AssetsHandler {
    root: PathBuf,
    store: Arc<dyn Store>,
    timeline: Timeline,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    /// One permit per transfer allowed to send data at once (`[tftp] max_transfers`).
    slots: Arc<Semaphore>,
}

/// How long a read waits for a free transfer slot before it is answered
/// "server busy": PXE firmware gives up on a silent server after about as long.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);

impl AssetsHandler {
    /// Must be called inside the tokio runtime: async-tftp drives handlers on
    /// its own executor, so store work is sent back to tokio explicitly.
    pub fn new(
        root: PathBuf,
        store: Arc<dyn Store>,
        timeline: Timeline,
        metrics: Arc<Metrics>,
        max_transfers: usize,
    ) -> AssetsHandler {
        AssetsHandler {
            root,
            store,
            timeline,
            metrics,
            runtime: tokio::runtime::Handle::current(),
            slots: Arc::new(Semaphore::new(max_transfers.max(1))),
        }
    }
}

/// Why a read request is refused; each maps to a TFTP error packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Absolute paths, `..`, and anything else that could leave the root.
    OutsideRoot,
    NotFound,
}

/// The file `requested` names under `root`, if it may be served.
pub fn resolve(root: &Path, requested: &Path) -> Result<PathBuf, Refusal> {
    let s = requested.to_str().ok_or(Refusal::OutsideRoot)?;
    // Backslashes are path separators to some Windows-derived PXE stacks.
    if s.contains('\\') || !is_relative_inside(s) {
        return Err(Refusal::OutsideRoot);
    }
    let full = root.join(s);
    match std::fs::symlink_metadata(&full) {
        Ok(m) if m.is_file() => Ok(full),
        _ => Err(Refusal::NotFound),
    }
}

impl Handler for AssetsHandler {
    type Reader = Tracked;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let full = match resolve(&self.root, path) {
            Ok(p) => p,
            Err(Refusal::OutsideRoot) => {
                tracing::warn!(%client, path = %path.display(), "TFTP read outside the assets directory refused");
                self.metrics.tftp_transfer(TftpResult::Refused);
                return Err(packet::Error::PermissionDenied);
            }
            Err(Refusal::NotFound) => {
                tracing::info!(%client, path = %path.display(), "TFTP read of a file that does not exist");
                self.metrics.tftp_transfer(TftpResult::NotFound);
                return Err(packet::Error::FileNotFound);
            }
        };
        let file = std::fs::File::open(&full).map_err(|e| {
            tracing::warn!(path = %full.display(), error = %e, "cannot open file for TFTP");
            self.metrics.tftp_transfer(TftpResult::NotFound);
            packet::Error::FileNotFound
        })?;
        let size = file.metadata().map(|m| m.len()).ok();
        let name = path.display().to_string();
        let mac = self.mac_of(client.ip()).await;
        if let Some(mac) = mac {
            self.spawn_event(
                mac,
                EventKind::TftpStart,
                format!("{name} ({} bytes)", size.unwrap_or(0)),
            );
        }
        Ok((
            Tracked {
                inner: Unblock::new(file),
                done: mac.map(|mac| (mac, name, self.timeline.clone(), self.runtime.clone())),
                sent: 0,
                size,
                metrics: Some(self.metrics.clone()),
                turn: Turn::new(&self.slots, &self.runtime, *client),
            },
            size,
        ))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!(%client, path = %path.display(), "TFTP write refused: rackboot serves TFTP read-only");
        self.metrics.tftp_transfer(TftpResult::Refused);
        Err(packet::Error::Msg("rackboot TFTP is read-only".into()))
    }
}

impl AssetsHandler {
    /// Whose transfer this is: the MAC holding `ip`'s lease, else the MAC the
    /// kernel's neighbour table has for `ip`. A proxyDHCP subnet's addresses
    /// come from another server, so rackboot holds no lease for them; the
    /// client has just ARPed for rackboot, so the kernel knows its MAC.
    async fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        let IpAddr::V4(ip) = ip else { return None };
        let store = self.store.clone();
        let leased = self
            .runtime
            .spawn(async move { store.mac_at(ip, Timestamp::now()).await })
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        leased.or_else(|| {
            let table = std::fs::read_to_string("/proc/net/arp").ok()?;
            mac_in_arp_table(&table, ip)
        })
    }

    fn spawn_event(&self, mac: Mac, kind: EventKind, detail: String) {
        let timeline = self.timeline.clone();
        self.runtime
            .spawn(async move { timeline.record(mac, kind, detail).await });
    }
}

/// The MAC of `ip` in the text of `/proc/net/arp` (IP address, HW type,
/// flags, HW address, mask, device), if the entry is complete (flags != 0).
fn mac_in_arp_table(table: &str, ip: std::net::Ipv4Addr) -> Option<Mac> {
    let ip = ip.to_string();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            [addr, _, flags, hw, ..] if addr == ip && flags != "0x0" => hw.parse().ok(),
            _ => None,
        }
    })
}

/// A file reader that puts "sent" on the timeline once the whole file has
/// been read out by the transfer ("stopped", with how far it got, when the
/// transfer ends before that), and counts the bytes and the transfer.
pub struct Tracked {
    inner: Unblock<std::fs::File>,
    done: Option<(Mac, String, Timeline, tokio::runtime::Handle)>,
    sent: u64,
    size: Option<u64>,
    /// Taken when the transfer is counted, so it counts once.
    metrics: Option<Arc<Metrics>>,
    turn: Turn,
}

/// A transfer's slot among `[tftp] max_transfers`. async-tftp has no cap of
/// its own and holds its handler lock while a read is opened, so the wait
/// cannot happen in `read_req_open` without stalling every other request
/// (refusals included). It happens at the first read of the file instead:
/// async-tftp sends the OACK or first DATA only after that read, so a queued
/// client hears nothing until its turn (its retransmitted RRQs are ignored as
/// duplicates). The permit is released when the transfer drops its reader.
enum Turn {
    Waiting {
        since: Instant,
        client: SocketAddr,
        permit: tokio::task::JoinHandle<Option<OwnedSemaphorePermit>>,
    },
    Held(#[allow(dead_code)] OwnedSemaphorePermit),
}

impl Turn {
    fn new(slots: &Arc<Semaphore>, rt: &tokio::runtime::Handle, client: SocketAddr) -> Turn {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Turn::Held(permit);
        }
        tracing::info!(%client, "TFTP transfer queued: all max_transfers slots are sending");
        let slots = slots.clone();
        // tokio's timer needs tokio's runtime; async-tftp polls on its own executor.
        let permit = rt.spawn(async move {
            tokio::time::timeout(QUEUE_WAIT, slots.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        });
        Turn::Waiting {
            since: Instant::now(),
            client,
            permit,
        }
    }

    /// Ready once the transfer may send; an error ("server busy") if no slot
    /// came free within [`QUEUE_WAIT`].
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Turn::Waiting {
            since,
            client,
            permit,
        } = self
        else {
            return Poll::Ready(Ok(()));
        };
        match std::task::ready!(Pin::new(permit).poll(cx)) {
            Ok(Some(p)) => {
                tracing::info!(%client, waited_ms = since.elapsed().as_millis() as u64, "TFTP transfer dequeued");
                *self = Turn::Held(p);
                Poll::Ready(Ok(()))
            }
            _ => {
                tracing::warn!(%client, "TFTP transfer refused: no slot came free within {QUEUE_WAIT:?}");
                // async-tftp turns an I/O error into a TFTP error packet; EBUSY
                // (16) is the closest it carries to "server busy".
                Poll::Ready(Err(std::io::Error::from_raw_os_error(16)))
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.turn.poll_ready(cx))?;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.sent += n as u64;
            if let Some(metrics) = &this.metrics {
                metrics.tftp_sent_bytes(n as u64);
            }
            if n == 0 && !buf.is_empty() {
                if let Some(metrics) = this.metrics.take() {
                    metrics.tftp_transfer(TftpResult::Sent);
                }
                if let Some((mac, name, timeline, rt)) = this.done.take() {
                    let detail = format!("{name} ({} bytes)", this.sent);
                    rt.spawn(
                        async move { timeline.record(mac, EventKind::TftpSent, detail).await },
                    );
                }
            }
        }
        r
    }
}

impl Drop for Tracked {
    /// The transfer is over (the session drops its reader) without the end
    /// of the file having been read: the client gave up, timed out, or only
    /// asked for the size. Reads run up to a window ahead of the client's
    /// acknowledgements, so the count is an upper bound of what it received.
    fn drop(&mut self) {
        // A transfer ended while queued: stop waiting, or the waiter would
        // take a slot that no transfer then uses.
        if let Turn::Waiting { permit, .. } = &self.turn {
            permit.abort();
        }
        let Some((mac, name, timeline, rt)) = self.done.take() else {
            return;
        };
        if self.size.is_some_and(|size| self.sent >= size) {
            return;
        }
        let detail = match (self.sent, self.size) {
            (0, _) => format!(
                "{name}: ended before any data was sent (a size probe, or the client gave up)"
            ),
            (sent, Some(size)) => format!("{name}: stopped after at most {sent} of {size} bytes"),
            (sent, None) => format!("{name}: stopped after at most {sent} bytes"),
        };
        rt.spawn(async move { timeline.record(mac, EventKind::TftpStopped, detail).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_come_from_complete_arp_entries_only() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     10.77.0.100      0x1         0x2         52:54:00:77:00:01     *        br0\n\
                     10.77.0.101      0x1         0x0         00:00:00:00:00:00     *        br0\n";
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            mac_in_arp_table(table, ip("10.77.0.100")),
            Some("52:54:00:77:00:01".parse().unwrap())
        );
        assert_eq!(mac_in_arp_table(table, ip("10.77.0.101")), None);
        assert_eq!(mac_in_arp_table(table, ip("10.77.0.1")), None);
        assert_eq!(mac_in_arp_table("", ip("10.77.0.100")), None);
    }

    #[test]
    fn only_regular_files_below_the_root_are_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"x").unwrap();
        std::fs::write(dir.path().join("sub/a.efi"), b"x").unwrap();
        let r = dir.path();
        assert!(resolve(r, Path::new("undionly.kpxe")).is_ok());
        assert!(resolve(r, Path::new("sub/a.efi")).is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "sub/../../x",
            "sub\\a.efi",
            "./undionly.kpxe",
        ] {
            assert_eq!(
                resolve(r, Path::new(bad)),
                Err(Refusal::OutsideRoot),
                "{bad}"
            );
        }
        assert_eq!(
            resolve(r, Path::new("sub")),
            Err(Refusal::NotFound),
            "directories"
        );
        assert_eq!(resolve(r, Path::new("nope")), Err(Refusal::NotFound));
    }
}
