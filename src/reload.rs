//! Puts edited bootenvs and config scripts in force without a restart: on
//! SIGHUP, and when the files change (polled, which also works on network
//! file systems where inotify does not). A set of files that does not load
//! (parse error, unknown template variable, missing kernel...) is refused with
//! its file and reason; the version in force keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::boot::{Catalog, CatalogCell};
use crate::metrics::{Metrics, ReloadResult};

/// How often the files are compared with the version in force.
pub const POLL: Duration = Duration::from_secs(2);

/// What a reload reads, and where it puts the result.
pub struct Reloader {
    pub bootenvs_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub assets_dir: PathBuf,
    pub default_bootenv: String,
    pub cell: Arc<CatalogCell>,
    pub metrics: Arc<Metrics>,
}

/// Each file's name, modification time and size: any edit changes it.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(dirs: &[&Path]) -> Fingerprint {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            out.push((dir.to_path_buf(), None, 0));
            continue;
        };
        for e in entries.flatten() {
            let meta = e.metadata().ok();
            out.push((
                e.path(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            ));
        }
    }
    out.sort();
    out
}

impl Reloader {
    fn dirs(&self) -> [&Path; 2] {
        [&self.bootenvs_dir, &self.scripts_dir]
    }

    /// Loads the files and puts them in force, or says why not.
    async fn reload(&self, why: &str) {
        let (b, s, a, d) = (
            self.bootenvs_dir.clone(),
            self.scripts_dir.clone(),
            self.assets_dir.clone(),
            self.default_bootenv.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || Catalog::load(&b, &s, &a, &d)).await;
        match loaded {
            Ok(Ok(catalog)) => {
                let n = catalog.bootenvs().count();
                self.cell.replace(catalog);
                self.metrics.catalog_reloaded(ReloadResult::Applied);
                tracing::info!(
                    "reloaded bootenvs and config scripts ({why}): {n} bootenvs in force"
                );
            }
            Ok(Err(e)) => {
                self.metrics.catalog_reloaded(ReloadResult::Rejected);
                tracing::error!(
                    "{e}; refused ({why}), the previous bootenvs and config scripts keep serving"
                );
            }
            Err(e) => tracing::error!("reload task failed: {e}"),
        }
    }

    /// Runs until `cancel` fires.
    pub async fn watch(self, cancel: CancellationToken) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no SIGHUP reload: {e}");
                None
            }
        };
        let mut seen = fingerprint(&self.dirs());
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    seen = fingerprint(&self.dirs());
                    self.reload("SIGHUP").await;
                }
                _ = tick.tick() => {
                    let now = fingerprint(&self.dirs());
                    if now != seen {
                        seen = now;
                        self.reload("files changed").await;
                    }
                }
            }
        }
    }
}
