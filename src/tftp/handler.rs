//! Which files TFTP hands out, who waits for a transfer slot, and the
//! timeline entries and metrics for each transfer. The server asks; this
//! answers with plain data (a file and its size, a refusal, a slot) and knows
//! nothing of packets or sockets.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::TftpResult;
use super::packet::ErrorCode;
use crate::assets::resolve::{Refusal, resolve};
use crate::control::Control;
use crate::control::bind::Binding;
use crate::control::boot::ScriptRefused;
use crate::control::timeline::Timeline;
use crate::metrics::Metrics;
use crate::model::{EventData, Mac, TftpStop, Timestamp};

/// Serves regular files below `root`.
pub struct AssetsHandler {
    root: PathBuf,
    /// Whose transfer a request is, by the address rackboot leased.
    binding: Arc<Binding>,
    timeline: Timeline,
    metrics: Arc<Metrics>,
    /// One permit per transfer allowed to send data at once (`[tftp] max_transfers`).
    slots: Arc<Semaphore>,
    /// The boot flow: GRUB configs, and boots that start with a kernel
    /// fetched by TFTP.
    control: Arc<Control>,
}

/// How long a read waits for a free transfer slot before it is answered
/// "server busy": PXE firmware gives up on a silent server after about as long.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);

/// The ERROR packet that answers a refused read: the codes and messages
/// tftp-hpa and atftp use, which scripts match on.
pub fn error_packet(refusal: &Refusal) -> (ErrorCode, &'static str) {
    match refusal {
        Refusal::OutsideRoot => (ErrorCode::AccessViolation, "Permission denied"),
        Refusal::NotFound => (ErrorCode::FileNotFound, "File not found"),
    }
}

/// What one read transfers.
pub enum Content {
    /// A file below the assets directory.
    File(std::fs::File),
    /// Text rackboot made for this read (a GRUB config).
    Text(Cow<'static, [u8]>),
}

impl Content {
    /// Reads from `offset` into `buf`, as a positional file read does
    /// (0 at the end).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self {
            Content::File(f) => std::os::unix::fs::FileExt::read_at(f, buf, offset),
            Content::Text(t) => {
                let at = usize::try_from(offset).map_or(t.len(), |o| o.min(t.len()));
                let n = buf.len().min(t.len() - at);
                buf[..n].copy_from_slice(&t[at..at + n]);
                Ok(n)
            }
        }
    }
}

/// A file open for one read transfer.
pub struct Transfer {
    pub file: Content,
    pub size: u64,
    pub record: Record,
}

/// How a transfer ended, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Sent,
    /// The client sent an ERROR (code, message).
    ClientError(u16, String),
    /// The client stopped acknowledging.
    TimedOut,
    /// The client acknowledged nothing at all within `[tftp] first_ack_timeout`.
    Unacknowledged,
    /// No transfer slot came free within [`QUEUE_WAIT`].
    Busy,
    /// rackboot failed (a socket or the file); the message says which.
    Failed(String),
}

impl AssetsHandler {
    pub fn new(
        root: PathBuf,
        binding: Arc<Binding>,
        timeline: Timeline,
        metrics: Arc<Metrics>,
        max_transfers: usize,
        control: Arc<Control>,
    ) -> AssetsHandler {
        AssetsHandler {
            root,
            binding,
            timeline,
            metrics,
            slots: Arc::new(Semaphore::new(max_transfers.max(1))),
            control,
        }
    }

    /// Opens `path` for `client`, or says why not (logged and counted here):
    /// a file below the assets directory, or a GRUB config rackboot renders.
    pub async fn open(&self, client: SocketAddr, path: &str) -> Result<Transfer, Refusal> {
        // GRUB names files from the server's root (`/x86_64/vmlinuz`), as
        // tftp-hpa's clients may: the root is the assets directory.
        let path = path.strip_prefix('/').unwrap_or(path);
        let peer = match client.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        };
        let text = |t: Cow<'static, [u8]>| (t.len() as u64, Content::Text(t));
        let opened = match self.rendered(client, path, peer).await {
            Some(r) => r.map(text),
            None => resolve(&self.root, path).map(|o| (o.meta.len(), Content::File(o.file))),
        };
        let (size, file) = match opened {
            Ok(opened) => opened,
            Err(r) => {
                match r {
                    Refusal::OutsideRoot => {
                        tracing::warn!(%client, path, "TFTP read refused: outside the assets directory or through a symbolic link");
                        self.metrics.tftp_transfer(TftpResult::Refused);
                    }
                    Refusal::NotFound => {
                        tracing::info!(%client, path, "TFTP read of a file that does not exist");
                        self.metrics.tftp_transfer(TftpResult::NotFound);
                    }
                }
                return Err(r);
            }
        };
        let mac = self.mac_of(client.ip()).await;
        let mut last_of_boot = None;
        if let Some(mac) = mac {
            // A kernel starts the boot of the GRUB config the node was
            // handed, as an HTTP fetch starts an iPXE script's.
            match self
                .control
                .boot_fetch(mac, path, peer, Timestamp::now())
                .await
            {
                Ok(Some((_, true))) => last_of_boot = Some(self.control.clone()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%client, %mac, path, error = %e, "TFTP read refused: the boot it starts cannot be recorded");
                    self.metrics.tftp_transfer(TftpResult::Refused);
                    return Err(Refusal::NotFound);
                }
            }
            let timeline = self.timeline.clone();
            let data = EventData::TftpStart {
                file: path.to_string(),
                size,
            };
            tokio::spawn(async move { timeline.record(mac, data).await });
        }
        Ok(Transfer {
            file,
            size,
            record: Record {
                mac,
                name: path.to_string(),
                size,
                acked: 0,
                timeline: self.timeline.clone(),
                metrics: self.metrics.clone(),
                ended: false,
                last_of_boot,
            },
        })
    }

    /// A file the boot flow renders for `path` (the GRUB chain's configs),
    /// `None` for a file to read from the assets. A refusal reads as a
    /// missing file, or as outside the root when the node's config was
    /// asked for from another address.
    async fn rendered(
        &self,
        client: SocketAddr,
        path: &str,
        peer: Option<std::net::Ipv4Addr>,
    ) -> Option<Result<Cow<'static, [u8]>, Refusal>> {
        let rendered = self.control.tftp_file(path, peer, Timestamp::now()).await?;
        Some(rendered.map_err(|e| match e {
            ScriptRefused::NotItsAddress(_) => {
                tracing::warn!(%client, path, error = ?e, "TFTP read refused: a node's own file asked for from another address");
                Refusal::OutsideRoot
            }
            e => {
                tracing::warn!(%client, path, error = ?e, "TFTP read of a file rackboot could not render");
                Refusal::NotFound
            }
        }))
    }

    /// A write request: refused, rackboot's TFTP is read-only.
    pub fn refuse_write(&self, client: SocketAddr, path: &str) -> (ErrorCode, &'static str) {
        tracing::warn!(%client, path, "TFTP write refused: rackboot serves TFTP read-only");
        self.metrics.tftp_transfer(TftpResult::Refused);
        (ErrorCode::NotDefined, "rackboot TFTP is read-only")
    }

    /// A slot among `[tftp] max_transfers`: at once when one is free, else
    /// after waiting in line (counted in `rackboot_tftp_queued`), or `None`
    /// when none came free within [`QUEUE_WAIT`].
    pub async fn wait_turn(&self, client: SocketAddr) -> Option<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::info!(%client, "TFTP transfer queued: all max_transfers slots are sending");
                let since = Instant::now();
                let _waiting = Gauge::up(&self.metrics, Metrics::tftp_queued);
                match tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => {
                        tracing::info!(%client, waited_ms = since.elapsed().as_millis() as u64, "TFTP transfer dequeued");
                        p
                    }
                    _ => {
                        tracing::warn!(%client, "TFTP transfer refused: no slot came free within {QUEUE_WAIT:?}");
                        return None;
                    }
                }
            }
        };
        Some(Slot {
            _permit: permit,
            _active: Gauge::up(&self.metrics, Metrics::tftp_active),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whose transfer this is: the MAC holding `ip`'s lease, else the MAC the
    /// kernel's neighbour table has for `ip`. A proxyDHCP subnet's addresses
    /// come from another server, so rackboot holds no lease for them; the
    /// client has just ARPed for rackboot, so the kernel knows its MAC.
    async fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        let IpAddr::V4(ip) = ip else { return None };
        let leased = self
            .binding
            .leased_to(ip, Timestamp::now())
            .await
            .ok()
            .flatten();
        leased.or_else(|| {
            // One read: the table is generated afresh per read(2), and
            // read_to_string on a file of size 0 starts with 32 bytes.
            let mut table = String::with_capacity(64 * 1024);
            std::io::Read::read_to_string(&mut std::fs::File::open(ARP_TABLE).ok()?, &mut table)
                .ok()?;
            mac_in_arp_table(&table, ip)
        })
    }
}

/// The kernel's IPv4 neighbour table, as this process's network namespace
/// sees it. Not `/proc/net/arp`: that is a link into `/proc/self`, and
/// systemd's `ProcSubset=pid` (in rackboot's unit) hides every top-level
/// entry of /proc that is not a process, `/proc/net` included, while
/// `/proc/self/net` stays.
pub const ARP_TABLE: &str = "/proc/self/net/arp";

/// A transfer's turn to send; the slot frees when this drops.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _active: Gauge,
}

/// A gauge held up by one while this lives (also when its task is dropped).
struct Gauge {
    metrics: Arc<Metrics>,
    add: fn(&Metrics, i64),
}

impl Gauge {
    fn up(metrics: &Arc<Metrics>, add: fn(&Metrics, i64)) -> Gauge {
        add(metrics, 1);
        Gauge {
            metrics: metrics.clone(),
            add,
        }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.add)(&self.metrics, -1);
    }
}

/// One transfer's accounting: bytes, its outcome in the metrics, and "sent"
/// or "stopped" on the node's timeline. Dropped without [`Record::finish`]
/// (rackboot stopping mid-transfer), it records "stopped".
pub struct Record {
    mac: Option<Mac>,
    name: String,
    size: u64,
    acked: u64,
    timeline: Timeline,
    metrics: Arc<Metrics>,
    ended: bool,
    /// Set when this is the last file of its node's boot: sent in full, it
    /// frees the node's boot slot ([`Control::boot_slot_done`]).
    last_of_boot: Option<Arc<Control>>,
}

impl Record {
    /// `n` file bytes went out for the first time.
    pub fn sent(&self, n: u64) {
        self.metrics.tftp_sent_bytes(n);
    }

    /// `n` packets went out again.
    pub fn retransmitted(&self, n: u64) {
        self.metrics.tftp_retransmitted(n);
    }

    /// The transfer ended; `acked` is how many file bytes the client acknowledged.
    pub fn finish(mut self, outcome: Outcome, acked: u64) {
        self.acked = acked;
        self.ended = true;
        let result = match &outcome {
            Outcome::Sent => TftpResult::Sent,
            Outcome::Busy => TftpResult::Busy,
            Outcome::Unacknowledged => TftpResult::Unacknowledged,
            _ => TftpResult::Aborted,
        };
        self.metrics.tftp_transfer(result);
        if let (Outcome::Sent, Some(control), Some(mac)) = (&outcome, &self.last_of_boot, self.mac)
        {
            control.boot_slot_done(mac);
        }
        let data = match outcome {
            Outcome::Sent => EventData::TftpSent {
                file: self.name.clone(),
                size: self.size,
            },
            Outcome::ClientError(code, message) => {
                self.stopped(TftpStop::ClientError { code, message })
            }
            Outcome::TimedOut => self.stopped(TftpStop::TimedOut),
            Outcome::Unacknowledged => self.stopped(TftpStop::Unacknowledged),
            Outcome::Busy => self.stopped(TftpStop::Busy {
                wait_ms: QUEUE_WAIT.as_millis() as u64,
            }),
            Outcome::Failed(error) => self.stopped(TftpStop::Failed { error }),
        };
        self.record(data);
    }

    fn stopped(&self, why: TftpStop) -> EventData {
        EventData::TftpStopped {
            file: self.name.clone(),
            acked: self.acked,
            size: self.size,
            why,
        }
    }

    fn record(&self, data: EventData) {
        let Some(mac) = self.mac else { return };
        let timeline = self.timeline.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { timeline.record(mac, data).await });
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.ended {
            let data = self.stopped(TftpStop::Failed {
                error: "rackboot stopped".into(),
            });
            self.record(data);
        }
    }
}

/// The MAC of `ip` in the text of [`ARP_TABLE`] (IP address, HW type,
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
}
