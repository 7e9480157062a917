//! Remote assets: kernels and initrds a bootenv names by upstream URL and
//! sha256 (`kernel = { url = "...", sha256 = "..." }`) instead of a file.
//!
//! Owns fetching them: on the first HTTP request for one (not when the
//! bootenv loads, so a reload or `rackboot check` never waits for or depends
//! on a mirror, and a bootenv nobody boots costs no bandwidth), from each of
//! its URLs in turn, streamed into a temporary file in the store while it is
//! hashed, and put under `sha256/<hex>` only if the digest matches and, when
//! a bootenv names it as a kernel, only if it is a kernel every such
//! `[arch.…]` table boots (checked as `assets add` checks a file: an EFI
//! application or a compressed kernel is not kept). From then on it is an
//! ordinary stored asset, served like any other.
//!
//! Concurrent first requests for one digest share one download (one
//! "flight"): the first starts it in its own task, so a client that gives up
//! does not cancel it for the others, and every waiter gets its outcome. A
//! failed flight leaves nothing behind and is forgotten, so a later request
//! tries again. Does not own serving the file (HTTP does) or which paths are
//! remote (the catalog).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::boot::catalog::Remote;
use crate::metrics::{AssetFetch, Metrics};

/// Largest download kept: a mirror streaming garbage must not fill the disk
/// (the digest can only be checked at the end). Kernels and installer
/// initrds are well below this.
pub const MAX_BYTES: u64 = 4 << 30;
/// How long connecting to a mirror may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a download may go without receiving a byte. There is no limit on
/// the whole download: a large initrd over a slow link is fine while it moves.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one URL did not give the asset.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Unreachable, timed out, an error status, too large, or cut short.
    #[error("{url}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("{url}: the download's sha256 is {got}, not {want} as the bootenv says")]
    Mismatch {
        url: String,
        got: String,
        want: String,
    },
    /// The right bytes, but not a kernel the tables naming it as one boot.
    /// Every URL of the digest serves these bytes: no other is tried.
    #[error(
        "{url}: the download has the sha256 the bootenv gives, but, named as the kernel of \
         {tables}, it {reason}; name a Linux kernel's URL and sha256 there"
    )]
    NotAKernel {
        url: String,
        tables: String,
        reason: super::KernelError,
    },
    /// rackboot's side: the assets directory is not writable, or full.
    #[error("cannot store the download in {path}: {source}")]
    Store { path: PathBuf, source: io::Error },
}

/// Why no URL of a remote asset gave it; one error per URL tried.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct FetchFailure {
    pub errors: Vec<FetchError>,
}

impl FetchFailure {
    /// The failure is rackboot's own (storing), not the mirror's.
    pub fn is_local(&self) -> bool {
        self.errors
            .iter()
            .any(|e| matches!(e, FetchError::Store { .. }))
    }
}

type Outcome = Option<Result<(), Arc<FetchFailure>>>;

/// Fetches remote assets into `<assets_dir>/sha256/`, one download per digest
/// at a time. Shared by every HTTP request (`Arc`).
pub struct Fetcher {
    client: reqwest::Client,
    store_dir: PathBuf,
    /// Downloads in flight, by digest; an entry leaves when its download ends.
    flights: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
    metrics: Arc<Metrics>,
}

impl Fetcher {
    pub fn new(assets_dir: &Path, metrics: Arc<Metrics>) -> Result<Fetcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(IDLE_TIMEOUT)
            .user_agent(concat!("rackboot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Fetcher {
            client,
            store_dir: assets_dir.join(super::STORE_DIR),
            flights: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The stored file of `remote`, fetching it first if it is not stored yet.
    pub async fn ensure(self: &Arc<Self>, remote: &Remote) -> Result<PathBuf, Arc<FetchFailure>> {
        let dest = self.store_dir.join(&remote.sha256);
        if dest.is_file() {
            return Ok(dest);
        }
        let mut rx = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&remote.sha256) {
                Some(rx) => rx.clone(),
                None => {
                    // Again under the lock: a flight stores its file before
                    // it leaves the map, so this never starts a second one.
                    if dest.is_file() {
                        return Ok(dest);
                    }
                    let (tx, rx) = watch::channel(None);
                    flights.insert(remote.sha256.clone(), rx.clone());
                    let (me, remote) = (self.clone(), remote.clone());
                    tokio::spawn(async move {
                        let outcome = me.fetch(&remote).await.map_err(Arc::new);
                        me.flights
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&remote.sha256);
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().expect("waited for Some"),
            // The download task ended without an outcome (a panic).
            Err(_) => Err(Arc::new(FetchFailure {
                errors: vec![FetchError::Store {
                    path: dest.clone(),
                    source: io::Error::other("the download task stopped"),
                }],
            })),
        };
        outcome.map(|()| dest)
    }

    /// Tries each URL in turn until one gives the right bytes.
    async fn fetch(&self, remote: &Remote) -> Result<(), FetchFailure> {
        let mut errors = Vec::new();
        for url in &remote.urls {
            let started = Instant::now();
            match self.fetch_one(url, remote).await {
                Ok(bytes) => {
                    self.metrics.asset_fetched(AssetFetch::Fetched, bytes);
                    tracing::info!(
                        "remote asset sha256/{} fetched from {} ({bytes} bytes in {:.1?})",
                        remote.sha256,
                        redact(url),
                        started.elapsed()
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!("remote asset sha256/{}: {e}", remote.sha256);
                    let same_everywhere = matches!(e, FetchError::NotAKernel { .. });
                    errors.push(e);
                    if same_everywhere {
                        break;
                    }
                }
            }
        }
        self.metrics.asset_fetched(AssetFetch::Failed, 0);
        Err(FetchFailure { errors })
    }

    /// Downloads `url` into a temporary file while hashing it, and links it
    /// to `sha256/<digest>` if the digest matches and, for a kernel, the
    /// tables naming it boot it. Returns the size.
    async fn fetch_one(&self, url: &str, remote: &Remote) -> Result<u64, FetchError> {
        let want = remote.sha256.as_str();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let shown = redact(url);
        let upstream = |reason: String| FetchError::Upstream {
            url: shown.clone(),
            reason,
        };
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| upstream(describe(e)))?;
        if !resp.status().is_success() {
            return Err(upstream(format!("answered {}", resp.status())));
        }
        if let Some(n) = resp.content_length().filter(|n| *n > MAX_BYTES) {
            return Err(upstream(format!(
                "{n} bytes is over the limit of {MAX_BYTES}"
            )));
        }
        let store = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Store { path, source }
        };
        tokio::fs::create_dir_all(&self.store_dir)
            .await
            .map_err(store(&self.store_dir))?;
        let tmp = self.store_dir.join(format!(
            ".fetch-{want}-{}-{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(store(&tmp))?;
        // Removes the temporary file on every way out, a cancelled task included.
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let _cleanup = Cleanup(tmp.clone());

        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        // What kernel detection reads, kept while the rest streams to disk.
        let mut prefix = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| upstream(format!("after {bytes} bytes: {}", describe(e))))?
        {
            bytes += chunk.len() as u64;
            if bytes > MAX_BYTES {
                return Err(upstream(format!("over the limit of {MAX_BYTES} bytes")));
            }
            hasher.update(&chunk);
            let room = super::DETECT_PREFIX.saturating_sub(prefix.len());
            prefix.extend_from_slice(&chunk[..room.min(chunk.len())]);
            file.write_all(&chunk).await.map_err(store(&tmp))?;
        }
        file.sync_all().await.map_err(store(&tmp))?;
        drop(file);
        let got = super::hex(&hasher.finalize());
        if got != want {
            return Err(FetchError::Mismatch {
                url: shown,
                got,
                want: want.to_string(),
            });
        }
        if !remote.kernel_for.is_empty()
            && let Err(reason) = super::check_kernel(&prefix, &remote.kernel_for)
        {
            let tables: Vec<String> = remote
                .kernel_for
                .iter()
                .map(|a| format!("[arch.{a}]"))
                .collect();
            return Err(FetchError::NotAKernel {
                url: shown,
                tables: tables.join(" "),
                reason,
            });
        }
        let dest = self.store_dir.join(want);
        match std::fs::hard_link(&tmp, &dest) {
            Ok(()) => Ok(bytes),
            // Stored meanwhile by `assets add` or the drop folder: same digest, same bytes.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(bytes),
            Err(e) => Err(store(&dest)(e)),
        }
    }
}

/// A URL as logs and clients see it: no user, password or query (signed
/// mirror URLs carry credentials there).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(invalid URL)".into(),
    }
}

/// A reqwest error with its causes (connection refused, DNS, TLS...), without
/// the URL it embeds, which may carry credentials.
fn describe(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    if timeout {
        out.push_str(" (timed out)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BootArch;

    /// A mirror on 127.0.0.1: answers every GET with `body` and counts them.
    async fn mirror(body: Vec<u8>) -> (String, Arc<AtomicU64>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/asset", listener.local_addr().unwrap());
        let gets = Arc::new(AtomicU64::new(0));
        let counted = gets.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (body, gets) = (body.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    gets.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        (url, gets)
    }

    fn remote(body: &[u8], urls: &[&str], kernel_for: &[BootArch]) -> Remote {
        Remote {
            sha256: super::super::hex(&Sha256::digest(body)),
            urls: urls.iter().map(|u| u.to_string()).collect(),
            kernel_for: kernel_for.to_vec(),
        }
    }

    /// What iPXE's .efi starts with, in a body of 64 KiB.
    fn efi_application() -> Vec<u8> {
        let mut b = crate::assets::test_headers::efi_application(0x8664);
        b.resize(64 * 1024, 7);
        b
    }

    /// An EFI-stub bzImage: a kernel, in a body of 64 KiB.
    fn bzimage() -> Vec<u8> {
        let mut b = crate::assets::test_headers::bzimage(0x020f, 1, true);
        b.resize(64 * 1024, 7);
        b
    }

    fn stored(assets: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(assets.join(super::super::STORE_DIR))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_downloaded_kernel_is_kept_only_if_its_tables_boot_it() {
        let assets = tempfile::tempdir().unwrap();
        let fetcher = Arc::new(Fetcher::new(assets.path(), Arc::new(Metrics::new(&[]))).unwrap());

        // iPXE named as [arch.bios]'s kernel, on two mirrors: the digest matches, the
        // first download is refused for what it is, and the second mirror is not asked
        // (same digest, same bytes).
        let ipxe = efi_application();
        let (url1, gets1) = mirror(ipxe.clone()).await;
        let (url2, gets2) = mirror(ipxe.clone()).await;
        let r = remote(&ipxe, &[&url1, &url2], &[BootArch::Bios]);
        let err = fetcher.ensure(&r).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{url1}: the download has the sha256 the bootenv gives"))
                && msg.contains("named as the kernel of [arch.bios], it is an x86_64 EFI application, not a Linux kernel"),
            "{msg}"
        );
        assert_eq!(err.errors.len(), 1, "{msg}");
        assert!(!err.is_local());
        assert_eq!(
            (gets1.load(Ordering::SeqCst), gets2.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert!(
            stored(assets.path()).is_empty(),
            "nothing kept, not even a temporary file"
        );

        // The same bytes named as an initrd are just bytes: kept.
        let r = remote(&ipxe, &[&url1], &[]);
        fetcher.ensure(&r).await.unwrap();
        assert_eq!(stored(assets.path()), vec![r.sha256.clone()]);

        // An EFI-stub bzImage named as the kernel of both x86_64 tables: kept.
        let kernel = bzimage();
        let (url, _) = mirror(kernel.clone()).await;
        let r = remote(&kernel, &[&url], &[BootArch::Bios, BootArch::X86_64Efi]);
        let path = fetcher.ensure(&r).await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), kernel);
        // ... but not as arm64's.
        let other = {
            let mut k = bzimage();
            k[0x1000] ^= 1;
            k
        };
        let (url, _) = mirror(other.clone()).await;
        let r = remote(&other, &[&url], &[BootArch::Arm64Efi]);
        let msg = fetcher.ensure(&r).await.unwrap_err().to_string();
        assert!(
            msg.contains("it is for x86_64") && msg.contains("not arm64"),
            "{msg}"
        );
        assert_eq!(stored(assets.path()).len(), 2);
    }

    #[test]
    fn redacted_urls_carry_no_credentials() {
        assert_eq!(
            redact("https://user:secret@mirror.example/k?token=x#y"),
            "https://mirror.example/k"
        );
        assert_eq!(redact("nonsense"), "(invalid URL)");
    }
}
