//! What happens when an admin reinstalls a fleet: a rollout takes a bootenv
//! across the nodes a selector names, never more than `max_unavailable` of
//! them out of service at once (counting those already down), canaries
//! first and alone. Per node: drain hook → its bootenv set (once, or for a
//! while) → power-cycled into PXE through its BMC → waited for until it
//! reports `installed` or `configured` → undrain hook. A node that fails a
//! step or misses its deadline is put back on its previous bootenv and
//! counted; a failed canary, or `max_failed` failures, pause the rollout,
//! saying why.
//!
//! The rollout record in the store is the whole truth: every step is
//! written before it is taken, so a restarted rackboot (or, on PostgreSQL,
//! the appliance that leads after another died) finds each node where it
//! was and takes that step again. Only the leading appliance drives
//! rollouts; any appliance may start, pause, resume or abort one.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Control;
use super::admin::{Actor, AdminError};
use super::fleet::Nodes;
use crate::boot::NodePatch;
use crate::model::{
    BootenvFields, EventData, Hook, LabelSelector, Mac, NodeState, Phase, PowerAction, Rollout,
    RolloutNode, RolloutSpec, RolloutState, Timestamp,
};
use crate::store::{LeaderTicks, Refusal, StoreError};

/// How often the runner looks at every rollout.
const TICK: Duration = Duration::from_secs(1);
/// How often a node waiting for its install is looked at.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// The end of a hook's output kept on the timeline.
/// How many times a node whose boot was lost is power-cycled again.
const MAX_RECYCLES: u32 = 2;
const OUTPUT_TAIL: usize = 1024;

/// What an admin asks for when starting a rollout.
#[derive(Debug, Clone)]
pub struct Start {
    pub spec: RolloutSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0}")]
    Invalid(String),
    #[error("no rollout {0}")]
    NoSuch(String),
    #[error("rollout {id} is {state}: {what}")]
    Refused {
        id: String,
        state: String,
        what: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn state_name(s: &RolloutState) -> &'static str {
    match s {
        RolloutState::Running => "running",
        RolloutState::Paused { .. } => "paused",
        RolloutState::Done => "done",
        RolloutState::Aborted { .. } => "aborted",
    }
}

/// An admin's change to a rollout's course.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    Pause,
    Resume,
    Abort,
}

impl Control {
    /// Makes a rollout of `start` for `actor`: the fleet is the nodes its
    /// selector names now, in MAC order; protected nodes and nodes without a
    /// BMC are skipped (and listed); the first `canary` of the rest are its
    /// canaries.
    pub async fn start_rollout(
        &self,
        actor: &Actor,
        start: Start,
    ) -> Result<Rollout, RolloutError> {
        let hooks = &self.rollout_hooks;
        let spec = start.spec;
        let selector: LabelSelector =
            spec.selector
                .parse()
                .map_err(|e: crate::model::SelectorError| {
                    RolloutError::Invalid(format!("field `selector`: {e}"))
                })?;
        if self.catalog.current().get(&spec.bootenv).is_none() {
            return Err(RolloutError::Invalid(format!(
                "field `bootenv`: there is no bootenv `{}` (see GET /api/v1/bootenvs)",
                spec.bootenv
            )));
        }
        for (field, hook) in [("drain", &spec.drain), ("undrain", &spec.undrain)] {
            if let Some(Hook::Command(name)) = hook
                && !hooks.contains_key(name)
            {
                return Err(RolloutError::Invalid(format!(
                    "field `{field}`: no hook `{name}` in [rollout.hooks] of the configuration \
                     (a hook is named there, or is an http(s) URL)"
                )));
            }
        }
        let fleet = self.store.nodes_matching(&selector).await?;
        if fleet.is_empty() {
            return Err(RolloutError::Invalid(format!(
                "field `selector`: no node matches `{}`",
                spec.selector
            )));
        }
        let now = Timestamp::now();
        let mut canaries = spec.canary as usize;
        let mut nodes: Vec<RolloutNode> = fleet
            .iter()
            .map(|n| {
                let skip = if n.protected {
                    Some("protected (unprotect it, or leave it out of the selector)")
                } else if n.bmc.is_none() {
                    Some("no BMC in its record: rackboot cannot reboot it")
                } else {
                    None
                };
                let canary = skip.is_none() && canaries > 0;
                if canary {
                    canaries -= 1;
                }
                RolloutNode {
                    mac: n.mac,
                    hostname: n.hostname.clone(),
                    canary,
                    phase: match skip {
                        Some(why) => Phase::Skipped { reason: why.into() },
                        None => Phase::Pending,
                    },
                    previous: None,
                    changed: now,
                    recycled: 0,
                }
            })
            .collect();
        // Canaries first, then the rest, each in MAC order.
        nodes.sort_by_key(|n| (!n.canary, n.mac));
        let existing = self.store.rollouts().await?;
        let next = existing
            .iter()
            .filter_map(|r| r.id.strip_prefix("r-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let rollout = Rollout {
            id: format!("r-{next}"),
            spec,
            state: RolloutState::Running,
            actor: actor.to_string(),
            created: now,
            failed_since_resume: 0,
            nodes,
            waiting: None,
        };
        self.store.create_rollout(&rollout).await?;
        tracing::info!(
            target: super::admin::AUDIT_TARGET,
            by = %actor,
            op = "rollout",
            rollout = %rollout.id,
            selector = %rollout.spec.selector,
            bootenv = %rollout.spec.bootenv,
            nodes = rollout.nodes.len(),
            "rollout started"
        );
        for n in &rollout.nodes {
            if let Phase::Skipped { reason } = &n.phase {
                self.rollout_event(&rollout.id, n.mac, "skipped", true, reason.clone())
                    .await;
            }
        }
        Ok(rollout)
    }

    /// Every rollout, as shown to an admin (saying why a running one waits).
    pub async fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let mut all = self.store.rollouts().await?;
        for r in &mut all {
            self.explain_wait(r).await?;
        }
        Ok(all)
    }

    /// Rollout `id` as shown to an admin (saying why it waits, if it does).
    pub async fn rollout_shown(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let Some(mut r) = self.rollout(id).await? else {
            return Ok(None);
        };
        self.explain_wait(&mut r).await?;
        Ok(Some(r))
    }

    /// Rollout `id` as stored.
    pub async fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        Ok(self
            .store
            .rollouts()
            .await?
            .into_iter()
            .find(|r| r.id == id))
    }

    /// Sets `r.waiting` when it runs, has pending nodes, and none may start.
    async fn explain_wait(&self, r: &mut Rollout) -> Result<(), StoreError> {
        if r.state == RolloutState::Running && r.nodes.iter().any(|n| n.phase == Phase::Pending) {
            let down = self.down(r).await?;
            r.waiting = r.room(&down).err();
        }
        Ok(())
    }

    /// The rollout's nodes out of service for reasons of their own (failed
    /// or unreachable, and not in flight here): hostname and state. Each is
    /// looked up by MAC, so a tick costs the rollout's size, not the store's.
    async fn down(&self, r: &Rollout) -> Result<Vec<(String, String)>, StoreError> {
        let mut down = Vec::new();
        for n in r.nodes.iter().filter(|n| !n.phase.in_flight()) {
            if let Some(node) = self.store.node(n.mac).await?
                && matches!(node.state, NodeState::Failed | NodeState::Unreachable)
            {
                down.push((node.hostname, node.state.as_str().to_string()));
            }
        }
        Ok(down)
    }

    /// Pauses, resumes or aborts rollout `id`. A resume counts failures
    /// afresh, and puts failed canaries back in line (the bootenv was fixed:
    /// they prove it again before the rest go).
    pub async fn steer_rollout(
        &self,
        actor: &Actor,
        id: &str,
        steer: Steer,
    ) -> Result<Rollout, RolloutError> {
        let who = actor.to_string();
        let edited = self
            .store
            .edit_rollout(
                id,
                Box::new(move |r| {
                    let refuse = |what: &str| -> Refusal {
                        Box::new(RolloutError::Refused {
                            id: r.id.clone(),
                            state: state_name(&r.state).into(),
                            what: what.into(),
                        })
                    };
                    match (steer, &r.state) {
                        (_, RolloutState::Done | RolloutState::Aborted { .. }) => {
                            return Err(refuse("it is over"));
                        }
                        (Steer::Pause, RolloutState::Paused { .. }) => {
                            return Err(refuse("it is paused already"));
                        }
                        (Steer::Resume, RolloutState::Running) => {
                            return Err(refuse("it is running"));
                        }
                        (Steer::Pause, _) => {
                            r.state = RolloutState::Paused {
                                reason: format!("paused by {who}"),
                            };
                        }
                        (Steer::Resume, _) => {
                            r.state = RolloutState::Running;
                            r.failed_since_resume = 0;
                            let now = Timestamp::now();
                            for n in r.nodes.iter_mut().filter(|n| n.canary) {
                                if matches!(n.phase, Phase::Failed { .. }) {
                                    n.phase = Phase::Pending;
                                    n.previous = None;
                                    n.changed = now;
                                }
                            }
                        }
                        (Steer::Abort, _) => {
                            r.state = RolloutState::Aborted {
                                reason: format!("aborted by {who}"),
                            };
                        }
                    }
                    Ok(())
                }),
            )
            .await
            .map_err(|e| match e {
                StoreError::Refused(r) => match r.downcast::<RolloutError>() {
                    Ok(e) => *e,
                    Err(r) => RolloutError::Store(StoreError::Refused(r)),
                },
                e => RolloutError::Store(e),
            })?
            .ok_or_else(|| RolloutError::NoSuch(id.to_string()))?;
        tracing::info!(
            target: super::admin::AUDIT_TARGET,
            by = %actor,
            op = "rollout",
            rollout = %id,
            "rollout {}",
            state_name(&edited.state)
        );
        Ok(edited)
    }

    async fn rollout_event(&self, id: &str, mac: Mac, step: &str, ok: bool, detail: String) {
        self.timeline
            .record(
                mac,
                EventData::Rollout {
                    rollout: id.to_string(),
                    step: step.to_string(),
                    ok,
                    detail,
                },
            )
            .await;
    }
}

/// Drives every rollout, on the leading appliance: starts nodes as the
/// budget allows, and one task per node in flight.
pub struct Runner {
    control: Arc<Control>,
    hooks: Arc<BTreeMap<String, String>>,
    /// The nodes with a task driving them, by rollout.
    driving: Arc<Mutex<HashSet<(String, Mac)>>>,
}

impl Runner {
    pub fn new(control: Arc<Control>) -> Runner {
        Runner {
            hooks: control.rollout_hooks.clone(),
            control,
            driving: Arc::default(),
        }
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut turns = LeaderTicks::every(TICK);
        while turns.next(&*self.control.store, &cancel).await {
            match self.control.store.rollouts().await {
                Ok(all) => {
                    for r in all.into_iter().filter(|r| !r.state.is_over()) {
                        if let Err(e) = self.advance(&r, &cancel).await {
                            tracing::warn!(rollout = %r.id, error = %e, "rollout: a step failed; retrying");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "rollout: cannot read the rollouts"),
            }
        }
    }

    /// One look at rollout `r`: a task for each node in flight that has
    /// none (after a restart), new nodes started within the budget, and the
    /// rollout done when nothing is left.
    async fn advance(&self, r: &Rollout, cancel: &CancellationToken) -> Result<(), StoreError> {
        for n in r.nodes.iter().filter(|n| n.phase.in_flight()) {
            self.drive(&r.id, n.mac, cancel);
        }
        if r.state != RolloutState::Running {
            return Ok(());
        }
        let in_flight = r.nodes.iter().filter(|n| n.phase.in_flight()).count();
        let pending = r.nodes.iter().any(|n| n.phase == Phase::Pending);
        if !pending {
            if in_flight == 0 {
                self.control
                    .store
                    .edit_rollout(
                        &r.id,
                        Box::new(|r| {
                            if r.state == RolloutState::Running
                                && !r
                                    .nodes
                                    .iter()
                                    .any(|n| n.phase.in_flight() || n.phase == Phase::Pending)
                            {
                                r.state = RolloutState::Done;
                            }
                            Ok(())
                        }),
                    )
                    .await?;
                tracing::info!(rollout = %r.id, "rollout done");
            }
            return Ok(());
        }
        // Out of service: this rollout's nodes in flight, and the fleet's
        // nodes that are down for other reasons.
        let down = self.control.down(r).await?;
        let room = match r.room(&down) {
            Ok(room) => room,
            Err(why) => {
                tracing::debug!(rollout = %r.id, %why, "rollout waits");
                return Ok(());
            }
        };
        // Canaries go first, alone: the rest wait until every one is done.
        let canaries_done = r.canaries_done();
        let next: Vec<Mac> = r
            .nodes
            .iter()
            .filter(|n| n.phase == Phase::Pending && (n.canary || canaries_done))
            .map(|n| n.mac)
            .take(room)
            .collect();
        let now = Timestamp::now();
        let started = next.clone();
        let edited = self
            .control
            .store
            .edit_rollout(
                &r.id,
                Box::new(move |r| {
                    if r.state != RolloutState::Running {
                        return Err("no longer running".into());
                    }
                    for mac in &started {
                        if let Some(n) = r.node_mut(*mac)
                            && n.phase == Phase::Pending
                        {
                            n.phase = Phase::Draining;
                            n.changed = now;
                        }
                    }
                    Ok(())
                }),
            )
            .await;
        match edited {
            Ok(_) => {
                for mac in next {
                    self.drive(&r.id, mac, cancel);
                }
            }
            // Paused or aborted meanwhile: nothing starts.
            Err(StoreError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// A task driving node `mac` of rollout `id` from the step it is at,
    /// unless one is already.
    fn drive(&self, id: &str, mac: Mac, cancel: &CancellationToken) {
        let key = (id.to_string(), mac);
        if !self
            .driving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            return;
        }
        let driver = NodeDriver {
            control: self.control.clone(),
            hooks: self.hooks.clone(),
            id: id.to_string(),
            mac,
        };
        let driving = self.driving.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = driver.run() => {}
            }
            driving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
    }
}

/// One node of one rollout, step by step.
struct NodeDriver {
    control: Arc<Control>,
    hooks: Arc<BTreeMap<String, String>>,
    id: String,
    mac: Mac,
}

/// How a step ended.
enum Next {
    /// Go on to this phase.
    To(Phase),
    /// The node failed: revert it (if its bootenv was changed) and count it.
    Fail(String),
    /// Stop driving (aborted, or no longer the leader); the record says where.
    Stop,
    /// The record was moved on here: read it again and take its step.
    Again,
}

impl NodeDriver {
    async fn run(self) {
        loop {
            let Some((rollout, node)) = self.read().await else {
                return;
            };
            if matches!(rollout.state, RolloutState::Aborted { .. }) || !self.control.store.leads()
            {
                return;
            }
            let next = match &node.phase {
                Phase::Draining => self.hook(&rollout, &node, "drain").await,
                Phase::Rebooting => self.reboot(&rollout, &node).await,
                Phase::Installing { since } => self.wait(&rollout, &node, *since).await,
                Phase::Undraining => self.hook(&rollout, &node, "undrain").await,
                Phase::Pending | Phase::Done | Phase::Failed { .. } | Phase::Skipped { .. } => {
                    return;
                }
            };
            let done = match next {
                Next::Stop => return,
                Next::Again => true,
                Next::To(phase) => self.move_to(&node.phase, phase).await,
                Next::Fail(why) => self.fail(&node, why).await,
            };
            if !done {
                // The store refused or failed: look again after a pause.
                tokio::time::sleep(TICK).await;
            }
        }
    }

    async fn read(&self) -> Option<(Rollout, RolloutNode)> {
        for _ in 0..3 {
            match self.control.rollout(&self.id).await {
                Ok(Some(r)) => {
                    let n = r.nodes.iter().find(|n| n.mac == self.mac)?.clone();
                    return Some((r, n));
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(rollout = %self.id, error = %e, "rollout: cannot read it");
                    tokio::time::sleep(TICK).await;
                }
            }
        }
        None
    }

    async fn event(&self, step: &str, ok: bool, detail: String) {
        self.control
            .rollout_event(&self.id, self.mac, step, ok, detail)
            .await;
    }

    /// Changes this node's entry in the rollout record; whether it was.
    async fn edit_mine(
        &self,
        edit: impl FnOnce(&mut RolloutNode) -> Result<(), Refusal> + Send + 'static,
    ) -> bool {
        let mac = self.mac;
        self.control
            .store
            .edit_rollout(
                &self.id,
                Box::new(move |r| edit(r.node_mut(mac).ok_or("the node left the rollout")?)),
            )
            .await
            .is_ok()
    }

    /// Moves the node from `from` to `to`, if it is still at `from`.
    async fn move_to(&self, from: &Phase, to: Phase) -> bool {
        let (from, now) = (from.clone(), Timestamp::now());
        let to_done = to == Phase::Done;
        let ok = self
            .edit_mine(move |n| {
                if n.phase != from {
                    return Err("moved on meanwhile".into());
                }
                n.phase = to;
                n.changed = now;
                Ok(())
            })
            .await;
        if ok && to_done {
            self.event("done", true, "back in service".into()).await;
        }
        ok
    }

    /// Runs the node's drain or undrain hook.
    async fn hook(&self, r: &Rollout, node: &RolloutNode, phase: &str) -> Next {
        let hook = if phase == "drain" {
            &r.spec.drain
        } else {
            &r.spec.undrain
        };
        let after = if phase == "drain" {
            Phase::Rebooting
        } else {
            Phase::Done
        };
        let Some(hook) = hook else {
            return Next::To(after);
        };
        let timeout = Duration::from_millis(r.spec.hook_timeout_ms);
        let result = match hook {
            Hook::Command(name) => match self.hooks.get(name) {
                Some(line) => run_command(line, &r.id, node, phase, timeout).await,
                None => Err(format!("no hook `{name}` in [rollout.hooks] any more")),
            },
            Hook::Url(url) => post_url(url, &r.id, node, phase, timeout).await,
        };
        match result {
            Ok(said) => {
                self.event(phase, true, format!("{hook}: {said}")).await;
                Next::To(after)
            }
            Err(why) => {
                self.event(phase, false, format!("{hook}: {why}")).await;
                Next::Fail(format!("{phase} failed: {hook}: {why}"))
            }
        }
    }

    /// Sets the bootenv (keeping what it booted before, to revert to), then
    /// power-cycles into PXE; the wait starts when the power was cycled.
    async fn reboot(&self, r: &Rollout, node: &RolloutNode) -> Next {
        let actor = Actor::rollout(&self.id);
        let Ok(Some(record)) = self.control.store.node(self.mac).await else {
            return Next::Fail("the node record is gone".into());
        };
        if node.previous.is_none() {
            let previous = BootenvFields {
                bootenv: record.bootenv.clone(),
                next_bootenv: record.next_bootenv.clone(),
                bootenv_expires: record.bootenv_expires,
            };
            let saved = self
                .edit_mine(move |n| {
                    n.previous.get_or_insert(previous);
                    Ok(())
                })
                .await;
            if !saved {
                return Next::Stop;
            }
        }
        let patch = NodePatch {
            bootenv: Some(r.spec.bootenv.clone()),
            once: r.spec.bootenv_for_ms.is_none(),
            for_: r
                .spec
                .bootenv_for_ms
                .map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string()),
            ..NodePatch::default()
        };
        let catalog = self.control.catalog.current();
        let valid = match patch.validate(&|b| catalog.get(b).is_some()) {
            Ok(v) => v,
            Err(e) => return Next::Fail(format!("bootenv: {e}")),
        };
        match self
            .control
            .admin()
            .patch(&actor, self.mac, valid, Timestamp::now())
            .await
        {
            Ok(n) => {
                let how = match &n.next_bootenv {
                    Some(next) => BootenvFields {
                        bootenv: n.bootenv.clone(),
                        next_bootenv: Some(next.clone()),
                        bootenv_expires: n.bootenv_expires,
                    }
                    .to_string(),
                    None => n.bootenv.clone(),
                };
                self.event("bootenv", true, how).await;
            }
            Err(e) => {
                self.event("bootenv", false, e.to_string()).await;
                return Next::Fail(format!("bootenv: {e}"));
            }
        }
        let done = self
            .control
            .power(
                &actor.to_string(),
                PowerAction::PxeOnce,
                Nodes::Macs(vec![self.mac]),
            )
            .await;
        match done.as_deref() {
            Ok([d]) if d.ok => Next::To(Phase::Installing {
                since: Timestamp::now(),
            }),
            Ok([d]) => Next::Fail(format!("power: {}", d.detail)),
            Ok(_) => Next::Fail("power: the node is gone".into()),
            Err(e) => Next::Fail(format!("power: {e}")),
        }
    }

    /// Waits until the node reports `installed` or `configured` after
    /// `since`, fails, or misses its deadline. A boot that is lost is
    /// power-cycled again (at most [`MAX_RECYCLES`] times): the machine
    /// fetched files naming itself after its power cycle, yet no boot of
    /// it started. That is a boot script this process never handed out (it
    /// was rendered just before rackboot restarted, and a boot is started
    /// only when its kernel is fetched, from memory): its token is dead and
    /// the installer's callback would be refused until the deadline.
    async fn wait(&self, r: &Rollout, node: &RolloutNode, since: Timestamp) -> Next {
        let deadline_ms = i64::try_from(r.spec.deadline_ms).unwrap_or(i64::MAX);
        loop {
            if let Ok(events) = self.control.store.events(self.mac).await {
                let (mut started, mut fetched) = (false, false);
                for e in events.iter().filter(|e| e.at >= since) {
                    match &e.data {
                        EventData::ReportInstalled { .. } => {
                            self.event("installed", true, "the installer called back".into())
                                .await;
                            return Next::To(Phase::Undraining);
                        }
                        EventData::ReportConfigured { .. } => {
                            self.event("installed", true, "configured".into()).await;
                            return Next::To(Phase::Undraining);
                        }
                        EventData::State(crate::model::StateChange::Moved {
                            to: NodeState::Failed,
                            reason,
                            ..
                        }) => return Next::Fail(format!("the node failed: {reason}")),
                        EventData::HttpScript { .. } => started = true,
                        EventData::HttpKernel { .. }
                        | EventData::HttpInitrd { .. }
                        | EventData::HttpAsset { .. } => fetched = true,
                        _ => {}
                    }
                }
                if fetched && !started && node.recycled < MAX_RECYCLES {
                    return self.recycle().await;
                }
            }
            if Timestamp::now().0 >= since.0.saturating_add(deadline_ms) {
                return Next::Fail(format!(
                    "no `installed` or `configured` within {} of its reboot",
                    humantime::format_duration(Duration::from_millis(r.spec.deadline_ms))
                ));
            }
            match self.read().await {
                Some((r, n)) if !matches!(r.state, RolloutState::Aborted { .. }) => {
                    if !matches!(n.phase, Phase::Installing { .. }) {
                        return Next::Stop;
                    }
                }
                _ => return Next::Stop,
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Back to `Rebooting` (its bootenv set again, power-cycled again),
    /// counted in `recycled`.
    async fn recycle(&self) -> Next {
        self.event(
            "reboot",
            false,
            "it fetched files with a boot script rackboot no longer knows (rendered \
             before a restart): its boot cannot report; power-cycling it again"
                .into(),
        )
        .await;
        let now = Timestamp::now();
        let moved = self
            .edit_mine(move |n| {
                if !matches!(n.phase, Phase::Installing { .. }) {
                    return Err("moved on meanwhile".into());
                }
                n.phase = Phase::Rebooting;
                n.recycled += 1;
                n.changed = now;
                Ok(())
            })
            .await;
        if moved { Next::Again } else { Next::Stop }
    }

    /// Puts the node back on its previous bootenv, marks it failed, and
    /// pauses the rollout if it was a canary or `max_failed` is reached.
    async fn fail(&self, node: &RolloutNode, why: String) -> bool {
        let Some((r, current)) = self.read().await else {
            return false;
        };
        if let Some(previous) = current.previous.clone() {
            let actor = Actor::rollout(&self.id);
            match self
                .control
                .admin()
                .restore_bootenv(&actor, self.mac, previous.clone())
                .await
            {
                Ok(_) => {
                    self.event("reverted", true, format!("back to {previous}"))
                        .await
                }
                Err(AdminError::NoSuchNode(_)) => {}
                Err(e) => self.event("reverted", false, e.to_string()).await,
            }
        }
        self.event("failed", false, why.clone()).await;
        let (mac, from, canary, now) =
            (self.mac, node.phase.clone(), node.canary, Timestamp::now());
        let hostname = node.hostname.clone();
        let max_failed = r.spec.max_failed;
        let reason = why.clone();
        self.control
            .store
            .edit_rollout(
                &self.id,
                Box::new(move |r| {
                    let n = r.node_mut(mac).ok_or("the node left the rollout")?;
                    if n.phase != from {
                        return Err("moved on meanwhile".into());
                    }
                    n.phase = Phase::Failed {
                        reason: reason.clone(),
                    };
                    n.changed = now;
                    if !canary {
                        r.failed_since_resume += 1;
                    }
                    if r.state == RolloutState::Running {
                        if canary {
                            r.state = RolloutState::Paused {
                                reason: format!("canary {hostname} ({mac}) failed: {reason}"),
                            };
                        } else if max_failed > 0 && r.failed_since_resume >= max_failed {
                            r.state = RolloutState::Paused {
                                reason: format!(
                                    "{} nodes failed (max_failed {max_failed}); the last, {hostname} ({mac}): {reason}",
                                    r.failed_since_resume
                                ),
                            };
                        }
                    }
                    Ok(())
                }),
            )
            .await
            .is_ok()
    }
}

/// Runs a configured hook line; what it said (its exit status and the end
/// of its output), or why it failed.
async fn run_command(
    line: &str,
    id: &str,
    node: &RolloutNode,
    phase: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", line])
        .env("RACKBOOT_ROLLOUT", id)
        .env("RACKBOOT_MAC", node.mac.to_string())
        .env("RACKBOOT_HOSTNAME", &node.hostname)
        .env("RACKBOOT_PHASE", phase)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "still running after {} (killed)",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = tail(text.trim(), OUTPUT_TAIL);
    match out.status.code() {
        Some(0) => Ok(format!("exited 0: {text}")),
        Some(code) => Err(format!("exited {code}: {text}")),
        None => Err(format!("killed by a signal: {text}")),
    }
}

/// POSTs the node to a hook URL; 2xx is success.
async fn post_url(
    url: &str,
    id: &str,
    node: &RolloutNode,
    phase: &str,
    timeout: Duration,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let body = serde_json::json!({
        "rollout": id,
        "mac": node.mac.to_string(),
        "hostname": node.hostname,
        "phase": phase,
    });
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let text = tail(text.trim(), OUTPUT_TAIL);
    if status.is_success() {
        Ok(format!("HTTP {}: {text}", status.as_u16()))
    } else {
        Err(format!("HTTP {}: {text}", status.as_u16()))
    }
}

/// The last `max` bytes of `s` (on a character boundary).
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}
