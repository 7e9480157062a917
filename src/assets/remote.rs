//! Remote assets: kernels and initrds a bootenv names by upstream URL and
//! sha256 (`kernel = { url = "...", sha256 = "..." }`) instead of a file.
//!
//! Owns fetching them: on the first HTTP request for one (not when the
//! bootenv loads, so a reload or `rackboot check` never waits for or depends
//! on a mirror, and a bootenv nobody boots costs no bandwidth), from each of
//! its URLs in turn, streamed into a temporary file in the store while it is
//! hashed, and put under `sha256/<hex>` only if the digest matches. From then
//! on it is an ordinary stored asset, served like any other.
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
            match self.fetch_one(url, &remote.sha256).await {
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
                    errors.push(e);
                }
            }
        }
        self.metrics.asset_fetched(AssetFetch::Failed, 0);
        Err(FetchFailure { errors })
    }

    /// Downloads `url` into a temporary file while hashing it, and links it
    /// to `sha256/<want>` if the digest matches. Returns the size.
    async fn fetch_one(&self, url: &str, want: &str) -> Result<u64, FetchError> {
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

    #[test]
    fn redacted_urls_carry_no_credentials() {
        assert_eq!(
            redact("https://user:secret@mirror.example/k?token=x#y"),
            "https://mirror.example/k"
        );
        assert_eq!(redact("nonsense"), "(invalid URL)");
    }
}
