//! What happens when a booted node's agent talks to rackboot: it pulls its
//! config script list and each script, reports (booted, each script's
//! result, configured or failed), waits for a reconfigure (its heartbeat),
//! and an installer says its install is complete. The cloud-init and
//! answer documents an installer fetches are served here too.
//!
//! Every request carries the node's own token, that of its current boot,
//! and comes from the node's own address ([`super::bind`]):
//! [`Control::agent`] checks both, and every other call here takes the
//! record it returned.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Control;
use super::bind::Refusal;
use super::boot::booted_bootenv;
use crate::boot::bootenv::LOCAL;
use crate::boot::{Progress, TemplateContext, lifecycle};
use crate::model::{
    BootArch, Document, EventData, EventKind, Mac, Node, NodeState, ScriptReport, Timestamp,
};
use crate::store::StoreError;

/// How much of a script's output is kept on the timeline and in its report.
const TAIL_BYTES: usize = 4096;

/// Why an agent's request was not taken as the node's.
#[derive(Debug)]
pub enum AgentRefused {
    NoSuchNode(Mac),
    /// Not from the node's own address (or rackboot knows none for it).
    NotItsAddress(Refusal),
    NoToken,
    /// A token that is not the one of the node's current boot.
    WrongToken,
    Store(StoreError),
}

impl From<StoreError> for AgentRefused {
    fn from(e: StoreError) -> AgentRefused {
        AgentRefused::Store(e)
    }
}

/// Why a document (a config script, a cloud-init or answer file) did not
/// go out.
#[derive(Debug)]
pub enum DocumentRefused {
    /// Not one of the node's config scripts.
    NotAssigned,
    /// Its template does not render for this node.
    Render(String),
    /// It holds a secret and went to the node once in this boot already.
    SecretServed,
}

/// What an agent reports.
pub enum Report<'a> {
    /// Its kernel and initrds are in, the agent runs.
    Booted {
        output: &'a str,
    },
    /// One script's result.
    Script {
        script: String,
        status: i32,
        duration_ms: Option<u64>,
        /// The config generation it ran for; the node's current one if unsaid.
        generation: Option<u64>,
        output: &'a str,
    },
    Configured {
        output: &'a str,
    },
    Failed {
        script: Option<String>,
        status: Option<i32>,
        output: &'a str,
    },
}

/// The install callback came from a node whose current boot is not of
/// that installer: nothing was changed.
#[derive(Debug)]
pub enum InstallRefused {
    NotInstalling { installer: String, current: String },
    Store(StoreError),
}

impl From<StoreError> for InstallRefused {
    fn from(e: StoreError) -> InstallRefused {
        InstallRefused::Store(e)
    }
}

/// Wakes the agents' long polls. One signal for every node: a bump wakes
/// each waiting request once, and each re-reads only its own node's
/// generation (from memory), so 1000 waiting nodes cost 1000 map lookups
/// per reconfigure and no task of their own.
pub struct ConfigWaits {
    bumped: watch::Sender<u64>,
    /// Ends every wait at shutdown, so a long poll never holds the server's
    /// graceful stop for its whole bound.
    closing: CancellationToken,
}

impl ConfigWaits {
    pub fn new(closing: CancellationToken) -> ConfigWaits {
        ConfigWaits {
            bumped: watch::Sender::new(0),
            closing,
        }
    }

    /// Wakes every waiting request (some node's generation changed).
    pub fn notify(&self) {
        self.bumped.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` fires at the next [`ConfigWaits::notify`].
    /// Subscribe before reading a generation, so a bump in between is not missed.
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.bumped.subscribe()
    }
}

impl Control {
    /// The record of `mac` if `token` is its node token, that of its
    /// current boot, and `peer` is the node's address.
    pub async fn agent(
        &self,
        mac: Mac,
        token: Option<&str>,
        peer: Option<Ipv4Addr>,
    ) -> Result<Node, AgentRefused> {
        let node = self
            .store
            .node(mac)
            .await?
            .ok_or(AgentRefused::NoSuchNode(mac))?;
        if let Err(r) = self.binding.check(&node, peer).await? {
            return Err(AgentRefused::NotItsAddress(r));
        }
        let token = token.ok_or(AgentRefused::NoToken)?;
        if !crate::secrets::constant_time_eq(token.trim().as_bytes(), node.token.as_bytes()) {
            return Err(AgentRefused::WrongToken);
        }
        Ok(node)
    }

    /// The node's config scripts in order: those its bootenv lists, then
    /// those whose selector header matches its labels
    /// ([`crate::boot::assign`]).
    fn script_names(&self, node: &Node) -> Vec<String> {
        self.catalog
            .current()
            .scripts_for(node, &booted_bootenv(node))
            .into_iter()
            .map(|a| a.script)
            .collect()
    }

    /// The agent pulls its script list: the names, in the order to run
    /// them; the node moves on to `configuring`.
    pub async fn config_pull(&self, node: &Node) -> Result<Vec<String>, StoreError> {
        let names = self.script_names(node);
        self.timeline
            .record(
                node.mac,
                EventData::ConfigPull {
                    scripts: names.clone(),
                },
            )
            .await;
        self.timeline
            .progress(node.mac, Progress::ConfigPulled)
            .await?;
        Ok(names)
    }

    /// One of the node's config scripts, rendered for it.
    pub async fn config_script(
        &self,
        node: &Node,
        name: &str,
        peer: Option<Ipv4Addr>,
    ) -> Result<String, DocumentRefused> {
        if !self.script_names(node).iter().any(|n| n == name) {
            return Err(DocumentRefused::NotAssigned);
        }
        let catalog = self.catalog.current();
        let document = Document::ConfigScript {
            name: name.to_string(),
        };
        let text = self
            .document(node, &document, peer, |tctx| {
                catalog.render_script(name, tctx).map_err(|e| e.to_string())
            })
            .await?;
        self.timeline
            .record(
                node.mac,
                EventData::ScriptFetch {
                    script: name.to_string(),
                },
            )
            .await;
        Ok(text)
    }

    /// A cloud-init or answer document, `render`ed for the node.
    pub async fn seed_document(
        &self,
        node: &Node,
        document: Document,
        peer: Option<Ipv4Addr>,
        render: impl FnOnce(&TemplateContext<'_>) -> Result<String, String>,
    ) -> Result<String, DocumentRefused> {
        let text = self.document(node, &document, peer, render).await?;
        self.timeline
            .record(node.mac, EventData::HttpSeed { document })
            .await;
        Ok(text)
    }

    /// A document rendered for `node` in its current boot, its secrets read
    /// from `secrets_dir`. One that holds a secret goes to a node once per
    /// boot (its current token): the second request is refused, on the
    /// node's timeline and in the log, since either someone else has the
    /// token or the node is confused, and an admin should look.
    async fn document(
        &self,
        node: &Node,
        document: &Document,
        peer: Option<Ipv4Addr>,
        render: impl FnOnce(&TemplateContext<'_>) -> Result<String, String>,
    ) -> Result<String, DocumentRefused> {
        let bootenv = booted_bootenv(node);
        let arch = node.arch.unwrap_or(BootArch::X86_64Efi);
        let tctx = TemplateContext::new(&self.http_base, node, &bootenv, arch);
        let (text, secrets) = crate::secrets::reading(&self.secrets_dir, || render(&tctx));
        let text = text.map_err(DocumentRefused::Render)?;
        if secrets.is_empty()
            || self
                .secrets_served
                .first_fetch(node.mac, &node.token, &document.to_string())
        {
            return Ok(text);
        }
        self.timeline
            .record(
                node.mac,
                EventData::SecretRefused {
                    document: document.clone(),
                    from: peer,
                },
            )
            .await;
        let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
        tracing::warn!(mac = %node.mac, %document, %from, "document holding a secret asked for twice in one boot: refused");
        Err(DocumentRefused::SecretServed)
    }

    /// A report from the node's agent, with the tail of its output. A
    /// script result is stored durably (the API's reports) before this
    /// returns: a report is never lost to a crash.
    pub async fn reported(&self, node: &Node, report: Report<'_>) -> Result<(), StoreError> {
        let mac = node.mac;
        let (event, progress) = match report {
            Report::Booted { output } => {
                // Its kernel and initrds are in: the boot slot is free (if
                // the end of the last download was not seen, e.g. a proxy
                // between).
                self.boot_slot_done(mac);
                let output = tail(output);
                (EventData::ReportBooted { output }, Some(Progress::Booted))
            }
            Report::Script {
                script,
                status,
                duration_ms,
                generation,
                output,
            } => {
                let output = tail(output);
                let report = ScriptReport {
                    at: Timestamp::now(),
                    generation: generation.unwrap_or(node.config_generation),
                    script: script.clone(),
                    status,
                    duration_ms,
                    output: output.clone(),
                };
                self.store.add_report(mac, &report).await?;
                let event = EventData::ReportScript {
                    script,
                    status,
                    duration_ms,
                    output,
                };
                (event, None)
            }
            Report::Configured { output } => {
                let output = tail(output);
                (
                    EventData::ReportConfigured { output },
                    Some(Progress::Configured),
                )
            }
            Report::Failed {
                script,
                status,
                output,
            } => {
                let reason = EventData::failure_reason(script.as_deref(), status);
                let output = tail(output);
                let event = EventData::ReportFailed {
                    script,
                    status,
                    output,
                };
                (event, Some(Progress::Failed { reason }))
            }
        };
        self.timeline.record(mac, event).await;
        match progress {
            Some(p) => self.timeline.progress(mac, p).await,
            None => Ok(()),
        }
    }

    /// The install-complete callback. The node becomes `installed` and from
    /// now on boots the installer's `after_install` bootenv (`local` unless
    /// its file says otherwise), with no next-boot bootenv, so its next
    /// boot never loops into the installer. `installer` names the
    /// installer that finished; without it, the bootenv of the node's
    /// current boot is taken. Accepted only while the node's current boot
    /// is of an installer bootenv (and, with `installer`, that one). A
    /// protected node is changed too: an installer boot on it was already
    /// allowed by an admin (forced), and this completes it. `output` (an
    /// installer's log tail) goes on the timeline. Returns the bootenv the
    /// node boots next.
    pub async fn install_complete(
        &self,
        node: &Node,
        installer: Option<String>,
        output: &str,
    ) -> Result<String, InstallRefused> {
        let mac = node.mac;
        let current = booted_bootenv(node);
        let installer = installer.unwrap_or_else(|| current.clone());
        let catalog = self.catalog.current();
        let booting_installer = catalog.get(&current).is_some_and(|b| b.installer);
        if !booting_installer || installer != current {
            return Err(InstallRefused::NotInstalling { installer, current });
        }
        // A bootenv removed since the install began still must not loop: local.
        let after = catalog
            .get(&installer)
            .map_or_else(|| LOCAL.to_string(), |b| b.after_install.clone());
        self.timeline
            .record(
                mac,
                EventData::ReportInstalled {
                    bootenv: installer.clone(),
                    output: tail(output),
                },
            )
            .await;
        let change = lifecycle::install_complete(&installer, &after);
        self.timeline
            .complete_install(mac, change, format!("bootenv {installer}"))
            .await?;
        tracing::info!(%mac, installer, after, "install complete");
        Ok(after)
    }

    /// The agent's wait for a reconfigure, and its heartbeat (it refreshes
    /// last-seen; no timeline event). Without `known` it answers at once;
    /// with it, as soon as the node's config generation is not `known`,
    /// else after `bound`. Returns the current generation. A node that was
    /// `unreachable` and is heard from again gets back the state its last
    /// run left.
    pub async fn wait(
        &self,
        node: &Node,
        known: Option<u64>,
        bound: Duration,
    ) -> Result<u64, StoreError> {
        let mac = node.mac;
        self.store.touch_node(mac, None, Timestamp::now()).await?;
        if node.state == NodeState::Unreachable {
            self.resume(node).await?;
        }
        // Subscribed before the generation is read: a bump in between still wakes us.
        let mut bumped = self.config_waits.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let current = self
                .store
                .node(mac)
                .await?
                .ok_or(StoreError::NoSuchNode(mac))?
                .config_generation;
            if known != Some(current) {
                return Ok(current);
            }
            tokio::select! {
                changed = bumped.changed() => if changed.is_err() { return Ok(current) },
                _ = tokio::time::sleep_until(deadline) => return Ok(current),
                _ = self.config_waits.closing.cancelled() => return Ok(current),
            }
        }
    }

    /// An `unreachable` node heard from again: back to what its agent last
    /// reported (`configured`, or `failed` with that run's reason).
    async fn resume(&self, node: &Node) -> Result<(), StoreError> {
        let events = self.store.events(node.mac).await?;
        let last = events.iter().rev().find_map(|e| match &e.data {
            EventData::ReportConfigured { .. } => Some((
                NodeState::Configured,
                "heartbeats resumed; its last run succeeded".to_string(),
            )),
            EventData::ReportFailed { script, status, .. } => Some((
                NodeState::Failed,
                EventData::failure_reason(script.as_deref(), *status),
            )),
            // Reported before events had data: which, but not why.
            EventData::Note { of, .. } if *of == EventKind::ReportConfigured => Some((
                NodeState::Configured,
                "heartbeats resumed; its last run succeeded".to_string(),
            )),
            EventData::Note { of, .. } if *of == EventKind::ReportFailed => Some((
                NodeState::Failed,
                "heartbeats resumed; its last run failed".to_string(),
            )),
            _ => None,
        });
        let Some((state, reason)) = last else {
            return Ok(());
        };
        self.timeline
            .set_state_if(node.mac, state, reason, |n| {
                n.state == NodeState::Unreachable
            })
            .await
            .map(|_| ())
    }
}

/// The last [`TAIL_BYTES`] of `s`, cut at a character boundary.
fn tail(s: &str) -> String {
    let mut start = s.len().saturating_sub(TAIL_BYTES);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        let s = format!("{}é{}", "a".repeat(10), "b".repeat(TAIL_BYTES - 1));
        let t = tail(&s);
        assert!(t.len() <= TAIL_BYTES);
        assert!(t.ends_with('b'));
        assert_eq!(tail("short\n"), "short");
    }
}
