//! Admin changes to node records: create, patch, bulk, import, delete, and
//! a reconfigure (config scripts run again, no reboot). One
//! function per operation, each reading the record(s) as they are inside
//! the store's atomic edit, passing every one through the one protection
//! check ([`crate::boot::guard`]) and, once written, leaving an audit entry:
//! an `admin.change` / `admin.delete` event on the node's timeline and a log
//! line (target `rackboot::audit`) naming the API token, the operation, each
//! field before → after, and whether a protected node was forced.
//!
//! The API parses and validates requests and maps the errors to HTTP; the
//! decisions (what may change, what counts as forced) are policy's
//! (`boot::edit`). Nothing here knows about HTTP.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use super::fleet::Nodes;
use crate::boot::{Guarded, NodeInput, Protected, ValidPatch, changes, guard};
use crate::model::{
    DeletedRecord, Event, EventData, FieldChange, LabelSelector, Mac, Node, Timestamp,
};
use crate::nodes::new_token;
use crate::store::{NodeMap, Refusal, Store, StoreError};

/// The `tracing` target of audit log lines: `RACKBOOT_LOG=rackboot::audit=info`
/// keeps them when everything else is quieter.
pub const AUDIT_TARGET: &str = "rackboot::audit";

/// Who made an admin change: an API token, by the name its line in
/// `api.tokens_file` gives it. (The API takes no request without a token, so
/// every admin change has one.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The token named `name`; an unnamed one is told apart by the first
    /// bytes of its SHA-256 (`fingerprint`, hex), never by the token itself.
    pub fn token(name: &str, fingerprint: &str) -> Actor {
        if name.is_empty() {
            Actor(format!("unnamed token sha256:{fingerprint}"))
        } else {
            Actor(format!("token `{name}`"))
        }
    }
}

impl Actor {
    /// A rollout acting on its nodes.
    pub fn rollout(id: &str) -> Actor {
        Actor(format!("rollout {id}"))
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an admin change was not made; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no node with MAC {0}")]
    NoSuchNode(Mac),
    #[error("node {0} exists")]
    Exists(Mac),
    /// A protected node, not forced. `index`: the import record at fault.
    #[error("{refusal}")]
    Protected {
        index: Option<usize>,
        refusal: Protected,
    },
    /// An import record whose hostname or address another record holds.
    #[error("{message}")]
    Clash {
        index: usize,
        field: &'static str,
        message: String,
    },
    /// A bulk edit's selector matches other nodes than those previewed.
    #[error(
        "the selector `{selector}` matches {now} nodes now, not the {previewed} previewed (nodes came, went or changed labels): nothing was changed; preview again"
    )]
    Moved {
        selector: String,
        previewed: usize,
        now: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An admin error as the refusal of a store edit: the edit refuses with it,
/// and [`refused_why`] takes it back out of the store's answer.
fn refusal(e: AdminError) -> Refusal {
    Box::new(e)
}

/// [`guard`] inside a store edit of one record: its refusal as the edit's.
fn protection(before: &Node, after: &Node, force: bool) -> Result<(), Refusal> {
    guard(Some(before), Some(after), force)
        .map(|_| ())
        .map_err(|refused| {
            refusal(AdminError::Protected {
                index: None,
                refusal: refused,
            })
        })
}

/// The admin error an edit refused with, else the store's own error.
fn refused_why(e: StoreError) -> AdminError {
    match e {
        StoreError::Refused(r) => match r.downcast::<AdminError>() {
            Ok(e) => *e,
            Err(r) => AdminError::Store(StoreError::Refused(r)),
        },
        e => AdminError::Store(e),
    }
}

/// Whether writing `after` over `before` forced a protected node. The edit
/// decided it already (and refused where it may not): the same inputs give
/// the same answer here, for the audit.
fn forced(before: Option<&Node>, after: &Node, force: bool) -> Guarded {
    guard(before, Some(after), force).unwrap_or(Guarded::Forced)
}

/// The audit entry of one written record: a log line and an `admin.change`
/// event. Nothing when no field changed. `selector`: a bulk edit's.
async fn audit(
    store: &dyn Store,
    actor: &Actor,
    (op, selector): (&str, Option<&str>),
    before: Option<&Node>,
    after: &Node,
    guarded: Guarded,
) {
    let fields = changes(before, after);
    if fields.is_empty() {
        return;
    }
    let forced = guarded == Guarded::Forced;
    let what: Vec<String> = fields.iter().map(ToString::to_string).collect();
    let op_text = match selector {
        Some(s) => format!("{op} `{s}`"),
        None => op.to_string(),
    };
    tracing::info!(
        target: AUDIT_TARGET,
        mac = %after.mac,
        hostname = %after.hostname,
        by = %actor,
        op = op_text,
        forced,
        "admin change: {}",
        what.join("; ")
    );
    let event = EventData::AdminChange {
        actor: actor.to_string(),
        op: op.to_string(),
        selector: selector.map(str::to_string),
        fields,
        forced,
    };
    record(store, after.mac, event).await;
}

/// Appends an audit event. The change is already written: a timeline that
/// cannot take the event is an error in the log, not a failed request.
async fn record(store: &dyn Store, mac: Mac, data: EventData) {
    let event = Event::new(Timestamp::now(), data);
    if let Err(e) = store.add_event(mac, &event).await {
        tracing::error!(target: AUDIT_TARGET, %mac, error = %e, "could not record the audit event {}: {event}", event.kind());
    }
}

/// What a bulk edit did.
#[derive(Debug)]
pub struct Bulk {
    /// Every node the selector matched, by MAC.
    pub matched: Vec<Mac>,
    /// The matched nodes whose record the patch changed.
    pub changed: Vec<Mac>,
}

/// One node of a bulk edit's preview.
#[derive(Debug)]
pub struct Planned {
    /// The record as it is.
    pub node: Node,
    /// The fields the edit would change, each `field: before → after`.
    pub changes: Vec<String>,
    /// Why the edit would be refused (a protected node, not forced).
    pub refused: Option<String>,
}

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    /// MACs of the records created.
    pub created: Vec<Mac>,
    /// MACs of the existing records replaced.
    pub updated: Vec<Mac>,
}

/// The admin's changes to node records, over one store.
#[derive(Clone, Copy)]
pub struct Admin<'a> {
    pub store: &'a dyn Store,
    /// What a record an import makes boots when its input names no bootenv.
    pub default_bootenv: &'a str,
}

impl Admin<'_> {
    /// Creates `node` (made from an admin's input); [`AdminError::Exists`] when
    /// its MAC has a record.
    pub async fn create(&self, actor: &Actor, node: Node) -> Result<Node, AdminError> {
        let store = self.store;
        let mac = node.mac;
        let (node, created) = store.create_node_if_absent(node).await?;
        if !created {
            return Err(AdminError::Exists(mac));
        }
        audit(store, actor, ("create", None), None, &node, Guarded::Free).await;
        Ok(node)
    }

    /// Applies `patch` to the record of `mac` at `now`, refused for a protected
    /// node unless the patch says `force`.
    pub async fn patch(
        &self,
        actor: &Actor,
        mac: Mac,
        patch: ValidPatch,
        now: Timestamp,
    ) -> Result<Node, AdminError> {
        let store = self.store;
        let force = patch.force();
        let edited = store
            .update_node(
                mac,
                Box::new(move |n| {
                    let before = n.clone();
                    patch.apply(n, now);
                    protection(&before, n, patch.force())
                }),
            )
            .await
            .map_err(refused_why)?;
        let (before, after) = (&edited.before, &edited.after);
        let guarded = forced(Some(before), after, force);
        audit(store, actor, ("patch", None), Some(before), after, guarded).await;
        Ok(edited.after)
    }

    /// Puts a node's bootenv fields back as they were (`fields`), as a
    /// rollout does to a node that failed; audited like a patch (op
    /// `restore`). A node protected since is refused, like any change.
    pub async fn restore_bootenv(
        &self,
        actor: &Actor,
        mac: Mac,
        fields: crate::model::BootenvFields,
    ) -> Result<Node, AdminError> {
        let store = self.store;
        let edited = store
            .update_node(
                mac,
                Box::new(move |n| {
                    let before = n.clone();
                    n.bootenv = fields.bootenv;
                    n.next_bootenv = fields.next_bootenv;
                    n.bootenv_expires = fields.bootenv_expires;
                    protection(&before, n, false)
                }),
            )
            .await
            .map_err(refused_why)?;
        audit(
            store,
            actor,
            ("restore", None),
            Some(&edited.before),
            &edited.after,
            Guarded::Free,
        )
        .await;
        Ok(edited.after)
    }

    /// Applies `patch` to every node `selector` matches, all or nothing: one
    /// protected node not forced refuses the whole edit, naming it.
    /// `previewed`: the MACs a preview showed (sorted); the edit is
    /// refused ([`AdminError::Moved`]) if the selector matches others now.
    pub async fn bulk(
        &self,
        actor: &Actor,
        selector: LabelSelector,
        selector_text: &str,
        patch: ValidPatch,
        now: Timestamp,
        previewed: Option<Vec<Mac>>,
    ) -> Result<Bulk, AdminError> {
        let store = self.store;
        let force = patch.force();
        let text = selector_text.to_string();
        // Every matched record is written, changed or not (one left as it was
        // is written as it was), so the answer names them all.
        let written = store
            .edit_nodes(Box::new(move |all| {
                let mut nodes: Vec<Node> = all
                    .values()
                    .filter(|n| selector.matches(&n.labels))
                    .collect();
                nodes.sort_by_key(|n| n.mac);
                if let Some(previewed) = &previewed
                    && !nodes.iter().map(|n| n.mac).eq(previewed.iter().copied())
                {
                    return Err(refusal(AdminError::Moved {
                        selector: text.clone(),
                        previewed: previewed.len(),
                        now: nodes.len(),
                    }));
                }
                nodes
                    .into_iter()
                    .map(|n| {
                        let mut edited = n.clone();
                        patch.apply(&mut edited, now);
                        match guard(Some(&n), Some(&edited), patch.force()) {
                            Ok(_) => Ok(edited),
                            Err(refused) => Err(refusal(AdminError::Protected {
                                index: None,
                                refusal: refused,
                            })),
                        }
                    })
                    .collect()
            }))
            .await
            .map_err(refused_why)?;
        let op = ("bulk", Some(selector_text));
        let mut changed = Vec::new();
        for w in &written {
            let before = w.before.as_ref();
            if before != Some(&w.after) {
                changed.push(w.after.mac);
            }
            audit(
                store,
                actor,
                op,
                before,
                &w.after,
                forced(before, &w.after, force),
            )
            .await;
        }
        Ok(Bulk {
            matched: written.iter().map(|w| w.after.mac).collect(),
            changed,
        })
    }

    /// What [`Admin::bulk`] would do with the same selector and patch now,
    /// writing nothing: each matched node (by MAC) with the fields the patch
    /// would change, or why it would refuse the whole edit.
    pub async fn plan_bulk(
        &self,
        selector: &LabelSelector,
        patch: &ValidPatch,
        now: Timestamp,
    ) -> Result<Vec<Planned>, StoreError> {
        let nodes = self.store.nodes_matching(selector).await?;
        Ok(nodes
            .into_iter()
            .map(|node| {
                let mut edited = node.clone();
                patch.apply(&mut edited, now);
                let refused = guard(Some(&node), Some(&edited), patch.force())
                    .err()
                    .map(|p| p.message);
                let changes = changes(Some(&node), &edited)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                Planned {
                    node,
                    changes,
                    refused,
                }
            })
            .collect())
    }

    /// Creates or replaces every record of `inputs` (validated, MACs distinct) in
    /// one transaction: all or nothing. A record that would change what a
    /// protected node boots refuses the whole import unless `force`; a hostname
    /// or address another record holds too; either names the record by index.
    pub async fn import(
        &self,
        actor: &Actor,
        inputs: Vec<NodeInput>,
        force: bool,
        now: Timestamp,
    ) -> Result<Imported, AdminError> {
        let store = self.store;
        let default_bootenv = self.default_bootenv.to_string();
        let written = store
            .edit_nodes(Box::new(move |all| {
                let mut nodes = Vec::with_capacity(inputs.len());
                for (index, input) in inputs.into_iter().enumerate() {
                    let before = all.get(&input.mac);
                    let node = input.into_node(before.as_ref(), &default_bootenv, new_token, now);
                    guard(before.as_ref(), Some(&node), force).map_err(|refused| {
                        refusal(AdminError::Protected {
                            index: Some(index),
                            refusal: refused,
                        })
                    })?;
                    nodes.push(node);
                }
                // Name the record that clashes, with its index, before the store
                // refuses the whole write.
                if let Some((index, field, message)) = clash(all, &nodes) {
                    return Err(refusal(AdminError::Clash {
                        index,
                        field,
                        message,
                    }));
                }
                Ok(nodes)
            }))
            .await
            .map_err(refused_why)?;
        let mut done = Imported {
            created: Vec::new(),
            updated: Vec::new(),
        };
        for w in &written {
            let before = w.before.as_ref();
            let guarded = forced(before, &w.after, force);
            audit(store, actor, ("import", None), before, &w.after, guarded).await;
            match before {
                None => done.created.push(w.after.mac),
                Some(_) => done.updated.push(w.after.mac),
            }
        }
        Ok(done)
    }

    /// Deletes the record of `mac` (its timeline goes with it), refused for a
    /// protected node unless `force`. Returns the record as it was.
    ///
    /// The audit outlives the record: the log line carries the whole record
    /// (what an admin needs to make it again), and an `admin.delete` event is
    /// left on the MAC's timeline, so a record made again for the MAC (by an
    /// admin, or by the machine booting as a new node) starts with who deleted
    /// the old one and what it was.
    ///
    /// The check and the delete are two steps: a record protected in between is
    /// still deleted (as if the delete had come first).
    pub async fn delete(&self, actor: &Actor, mac: Mac, force: bool) -> Result<Node, AdminError> {
        let store = self.store;
        let before = store.node(mac).await?.ok_or(AdminError::NoSuchNode(mac))?;
        let guarded =
            guard(Some(&before), None, force).map_err(|refusal| AdminError::Protected {
                index: None,
                refusal,
            })?;
        if !store.delete_node(mac).await? {
            return Err(AdminError::NoSuchNode(mac));
        }
        let forced = guarded == Guarded::Forced;
        let was = serde_json::to_string(&before).unwrap_or_default();
        tracing::info!(
            target: AUDIT_TARGET,
            %mac,
            hostname = %before.hostname,
            by = %actor,
            op = "delete",
            forced,
            record = %was,
            "admin change: deleted the record of {} ({mac}), bootenv {}",
            before.hostname,
            before.bootenv
        );
        let event = EventData::AdminDelete {
            actor: actor.to_string(),
            record: DeletedRecord {
                hostname: before.hostname.clone(),
                bootenv: before.bootenv.clone(),
                next_bootenv: before.next_bootenv.clone(),
                state: before.state,
                protected: before.protected,
            },
            forced,
        };
        record(store, mac, event).await;
        Ok(before)
    }

    /// Every node `which` names runs its config scripts again: their config
    /// generation moves on in one durable write, and every waiting agent
    /// wakes (each notices whether its own node moved) through the store's
    /// feed ([`super::Control`]'s subscription), whichever appliance made the
    /// change. Each node's timeline says who asked. Returns the MACs bumped;
    /// an unknown MAC among `Macs` refuses them all.
    pub async fn reconfigure(&self, actor: &Actor, which: Nodes) -> Result<Vec<Mac>, StoreError> {
        let store = self.store;
        let (macs, selector) = match which {
            Nodes::Selector(selector) => {
                let macs = store
                    .nodes()
                    .await?
                    .into_iter()
                    .filter(|n| selector.matches(&n.labels))
                    .map(|n| n.mac)
                    .collect();
                (macs, Some(selector.to_string()))
            }
            Nodes::Macs(macs) => (macs, None),
        };
        let bumped = store.bump_config_generation(&macs).await?;
        tracing::info!(
            target: AUDIT_TARGET,
            by = %actor,
            op = "reconfigure",
            selector = selector.as_deref().unwrap_or("-"),
            nodes = bumped.len(),
            "admin change: config generation bumped"
        );
        for &(mac, generation) in &bumped {
            let event = EventData::AdminChange {
                actor: actor.to_string(),
                op: "reconfigure".into(),
                selector: selector.clone(),
                fields: vec![FieldChange {
                    field: "config_generation".into(),
                    before: generation.saturating_sub(1).to_string(),
                    after: generation.to_string(),
                }],
                forced: false,
            };
            record(store, mac, event).await;
        }
        Ok(bumped.into_iter().map(|(m, _)| m).collect())
    }
}

/// The first record of `nodes` whose hostname or fixed address another
/// record (in force and not replaced, or earlier in `nodes`) holds. The
/// records in force are read in place, none copied: an import into a large
/// fleet costs a pass over its names, not a copy of it.
fn clash(all: &NodeMap, nodes: &[Node]) -> Option<(usize, &'static str, String)> {
    let ours: HashSet<Mac> = nodes.iter().map(|n| n.mac).collect();
    let mut found: Option<(usize, &'static str, String)> = None;
    let mut note = |i: usize, field: &'static str, why: String| {
        if found.as_ref().is_none_or(|(j, _, _)| i < *j) {
            found = Some((i, field, why));
        }
    };
    let mut hostnames: HashMap<String, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let host = n.hostname.to_ascii_lowercase();
        match hostnames.get(&host) {
            Some(j) => note(
                i,
                "hostname",
                format!(
                    "hostname {} already belongs to {}",
                    n.hostname, nodes[*j].mac
                ),
            ),
            None => {
                hostnames.insert(host, i);
            }
        }
        if let Some(ip) = n.ipv4 {
            match addrs.get(&ip) {
                Some(j) => note(
                    i,
                    "ipv4",
                    format!("address {ip} already belongs to {}", nodes[*j].mac),
                ),
                None => {
                    addrs.insert(ip, i);
                }
            }
        }
    }
    let mut lower = String::new();
    for (mac, host, ip) in all.names() {
        if ours.contains(mac) {
            continue;
        }
        lower.clear();
        lower.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        if let Some(&i) = hostnames.get(lower.as_str()) {
            let why = format!("hostname {} already belongs to {mac}", nodes[i].hostname);
            note(i, "hostname", why);
        }
        if let Some(ip) = ip
            && let Some(&i) = addrs.get(&ip)
        {
            note(i, "ipv4", format!("address {ip} already belongs to {mac}"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::NodePatch;
    use crate::store::SqliteStore;

    fn mac(i: u8) -> Mac {
        Mac::new([0x52, 0x54, 0, 0, 0xad, i])
    }

    fn ops() -> Actor {
        Actor::token("ops team", "00")
    }

    fn admin(s: &SqliteStore) -> Admin<'_> {
        Admin {
            store: s,
            default_bootenv: "discovery",
        }
    }

    fn valid(json: &str) -> ValidPatch {
        serde_json::from_str::<NodePatch>(json)
            .unwrap()
            .validate(&|b| matches!(b, "discovery" | "install"))
            .unwrap()
    }

    fn input(json: &str) -> NodeInput {
        serde_json::from_str(json).unwrap()
    }

    async fn store_with_protected() -> SqliteStore {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut n = Node::discovered(mac(3), "discovery", "t".into(), Timestamp(0));
        n.hostname = "alibuild03".into();
        n.protected = true;
        admin(&s).create(&ops(), n).await.unwrap();
        s
    }

    async fn admin_events(s: &SqliteStore, m: Mac) -> Vec<Event> {
        let mut e = s.events(m).await.unwrap();
        e.retain(|e| e.kind().in_family("admin"));
        e
    }

    #[tokio::test]
    async fn every_path_refuses_a_protected_node_unless_forced_and_changes_nothing() {
        let s = store_with_protected().await;
        let named = "node alibuild03 (52:54:00:00:ad:03) is protected";
        let refused = |e: AdminError| match e {
            AdminError::Protected { refusal, .. } => {
                assert!(refusal.message.starts_with(named), "{}", refusal.message);
            }
            other => panic!("not refused as protected: {other}"),
        };
        refused(
            admin(&s)
                .patch(
                    &ops(),
                    mac(3),
                    valid(r#"{"bootenv":"install"}"#),
                    Timestamp(1),
                )
                .await
                .unwrap_err(),
        );
        // `x!=y`: every node (none has label x).
        let sel: LabelSelector = "x!=y".parse().unwrap();
        refused(
            admin(&s)
                .bulk(
                    &ops(),
                    sel,
                    "x!=y",
                    valid(r#"{"bootenv":"install"}"#),
                    Timestamp(1),
                    None,
                )
                .await
                .unwrap_err(),
        );
        let rack = vec![
            input(r#"{"mac":"52:54:00:00:ad:01"}"#),
            input(r#"{"mac":"52:54:00:00:ad:03","bootenv":"install"}"#),
        ];
        match admin(&s)
            .import(&ops(), rack.clone(), false, Timestamp(1))
            .await
            .unwrap_err()
        {
            AdminError::Protected {
                index: Some(1),
                refusal,
            } => assert_eq!(refusal.field, "bootenv"),
            other => panic!("{other}"),
        }
        refused(admin(&s).delete(&ops(), mac(3), false).await.unwrap_err());
        // Nothing changed: same record, the new one of the import not made.
        let n = s.node(mac(3)).await.unwrap().unwrap();
        assert_eq!((n.bootenv.as_str(), n.protected), ("discovery", true));
        assert!(s.node(mac(1)).await.unwrap().is_none());
        assert_eq!(admin_events(&s, mac(3)).await.len(), 1, "only the create");

        // Forced: each goes through, and the audit says it was forced.
        let done = admin(&s)
            .import(&ops(), rack, true, Timestamp(2))
            .await
            .unwrap();
        assert_eq!((done.created, done.updated), (vec![mac(1)], vec![mac(3)]));
        let last = admin_events(&s, mac(3)).await.pop().unwrap();
        assert_eq!(
            last.sentence(),
            "token `ops team` (import): bootenv discovery -> install; forced (the node is protected)"
        );
        let was = admin(&s).delete(&ops(), mac(3), true).await.unwrap();
        assert_eq!(was.hostname, "alibuild03");
        assert!(s.node(mac(3)).await.unwrap().is_none());
        // The deletion stays on the MAC's timeline for a record made again.
        let e = admin_events(&s, mac(3)).await;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].kind(), crate::model::EventKind::AdminDelete);
        assert!(
            e[0].sentence().starts_with("token `ops team` (delete): deleted the record: hostname alibuild03, bootenv install")
                && e[0].sentence().ends_with("protected; forced (the node is protected)"),
            "{}",
            e[0].sentence()
        );
    }

    #[tokio::test]
    async fn each_change_is_audited_with_token_operation_and_fields() {
        let s = store_with_protected().await;
        let first = admin_events(&s, mac(3)).await;
        assert_eq!(
            first[0].sentence(),
            "token `ops team` (create): hostname - -> alibuild03; bootenv - -> discovery; protected - -> true"
        );
        admin(&s)
            .patch(
                &Actor::token("", "1a2b3c4d"),
                mac(3),
                valid(r#"{"bootenv":"install","force":true,"labels":{"rack":"r1"}}"#),
                Timestamp(1),
            )
            .await
            .unwrap();
        // A patch that changes nothing leaves no entry.
        admin(&s)
            .patch(
                &ops(),
                mac(3),
                valid(r#"{"labels":{"rack":"r1"}}"#),
                Timestamp(2),
            )
            .await
            .unwrap();
        let e = admin_events(&s, mac(3)).await;
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[1].sentence(),
            "unnamed token sha256:1a2b3c4d (patch): bootenv discovery -> install; labels - -> rack=r1; forced (the node is protected)"
        );
        let b = admin(&s)
            .bulk(
                &ops(),
                "rack=r1".parse().unwrap(),
                "rack=r1",
                valid(r#"{"protected":false}"#),
                Timestamp(3),
                None,
            )
            .await
            .unwrap();
        assert_eq!((b.matched, b.changed), (vec![mac(3)], vec![mac(3)]));
        let e = admin_events(&s, mac(3)).await;
        assert_eq!(
            e[2].sentence(),
            "token `ops team` (bulk `rack=r1`): protected true -> false"
        );
    }

    #[tokio::test]
    async fn a_bulk_edit_previews_what_it_does_and_refuses_a_selection_that_moved() {
        let s = store_with_protected().await;
        let mut n = Node::discovered(mac(4), "discovery", "t".into(), Timestamp(0));
        n.labels.insert("rack".into(), "r1".into());
        admin(&s).create(&ops(), n).await.unwrap();
        let rack: LabelSelector = "rack=r1".parse().unwrap();
        let patch = valid(r#"{"bootenv":"install"}"#);
        let plan = admin(&s)
            .plan_bulk(&rack, &patch, Timestamp(2))
            .await
            .unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].node.mac, mac(4));
        assert_eq!(plan[0].changes, vec!["bootenv discovery -> install"]);
        assert_eq!(plan[0].refused, None);
        let every: LabelSelector = "x!=y".parse().unwrap();
        let plan = admin(&s)
            .plan_bulk(&every, &patch, Timestamp(2))
            .await
            .unwrap();
        assert!(plan[0].refused.as_deref().unwrap().contains("is protected"));

        // Previewed one node; a second joins the rack before the edit.
        let mut n = Node::discovered(mac(5), "discovery", "t".into(), Timestamp(0));
        n.labels.insert("rack".into(), "r1".into());
        admin(&s).create(&ops(), n).await.unwrap();
        let e = admin(&s)
            .bulk(
                &ops(),
                rack.clone(),
                "rack=r1",
                patch.clone(),
                Timestamp(3),
                Some(vec![mac(4)]),
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("matches 2 nodes now, not the 1 previewed"),
            "{e}"
        );
        assert_eq!(s.node(mac(4)).await.unwrap().unwrap().bootenv, "discovery");
        let done = admin(&s)
            .bulk(
                &ops(),
                rack,
                "rack=r1",
                patch,
                Timestamp(3),
                Some(vec![mac(4), mac(5)]),
            )
            .await
            .unwrap();
        assert_eq!(done.changed, vec![mac(4), mac(5)]);
    }
}
