//! Puts edited bootenvs and config scripts in force without a restart: on
//! SIGHUP, and when the files change (polled, which also works on network
//! file systems where inotify does not). A set of files that does not load
//! (parse error, unknown template variable, missing kernel...) is refused with
//! its file and reason; the version in force keeps serving. The API tokens
//! file is watched the same way; deleting it revokes every API token (a file
//! that does not parse keeps the previous tokens: an edit in progress).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::boot::{Catalog, CatalogCell};
use crate::http::ApiAuth;
use crate::http::auth::Tokens;
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
    /// `api.tokens_file` and the access rules it feeds, when configured.
    pub tokens: Option<(PathBuf, Arc<ApiAuth>)>,
}

/// Each file's name, modification time and size: any edit changes it.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The fingerprint of every file in `paths` (directories: their files).
fn fingerprint(paths: &[&Path]) -> Fingerprint {
    let mut out = Vec::new();
    for path in paths {
        if path.is_file() {
            let meta = std::fs::metadata(path).ok();
            out.push((
                path.to_path_buf(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            ));
            continue;
        }
        let dir = path;
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

    fn tokens_fingerprint(&self) -> Fingerprint {
        match &self.tokens {
            Some((file, _)) => fingerprint(&[file]),
            None => Vec::new(),
        }
    }

    /// Puts the tokens file in force again, or keeps the previous tokens.
    fn reload_tokens(&self, why: &str) {
        let Some((path, auth)) = &self.tokens else {
            return;
        };
        match Tokens::load(path) {
            Ok(tokens) => {
                tracing::info!("reloaded API tokens ({why}): {} in force", tokens.len());
                auth.replace(tokens);
            }
            Err(e) if e.is_gone() => {
                tracing::error!(
                    "API tokens file {} is gone ({why}): every API token is revoked until it is back",
                    path.display()
                );
                auth.revoke_all(path);
            }
            Err(e) => {
                tracing::error!("{e}; refused ({why}), the previous API tokens stay in force")
            }
        }
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
                self.cell.set_rejected(Some(crate::boot::Rejection::of(
                    &e,
                    crate::model::Timestamp::now(),
                )));
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
        let mut seen_tokens = self.tokens_fingerprint();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    seen = fingerprint(&self.dirs());
                    seen_tokens = self.tokens_fingerprint();
                    self.reload("SIGHUP").await;
                    self.reload_tokens("SIGHUP");
                }
                _ = tick.tick() => {
                    let now = fingerprint(&self.dirs());
                    if now != seen {
                        seen = now;
                        self.reload("files changed").await;
                    }
                    let now = self.tokens_fingerprint();
                    if now != seen_tokens {
                        seen_tokens = now;
                        self.reload_tokens("file changed");
                    }
                }
            }
        }
    }
}
