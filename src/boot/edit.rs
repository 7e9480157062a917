//! What an admin's edit of a node record means: which fields it may change,
//! what makes a value valid, how a bootenv change lands (now, once, or for a
//! while), what protection refuses ([`guard`], the one check every admin
//! change and deletion passes), and what changed, field by field, for the
//! audit trail ([`changes`]). Pure: the catalog's bootenv names and the time
//! are passed in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::bootenv::{LOCAL, is_relative_inside};
use crate::model::selector::{is_key, is_value};
use crate::model::{BmcRecord, Driver, Mac, Node, NodeOrigin, Timestamp};

/// A value that is wrong for one field; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_err(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `Some(None)` for an explicit `null` (clear the field), `None` when absent
/// (leave it): JSON merge patch (RFC 7396).
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A JSON merge patch (RFC 7396) of a node record's editable fields: absent
/// fields stay, `null` clears, `labels` and `params` merge key by key (a
/// `null` value removes the key).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ipv4: Option<Option<Ipv4Addr>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub labels: Option<Option<BTreeMap<String, Option<String>>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub params: Option<Option<BTreeMap<String, Option<String>>>>,
    /// The bootenv to boot. Alone: from now on. With `once`: next boot only,
    /// then back to the current bootenv. With `for`: until the time runs out.
    pub bootenv: Option<String>,
    /// A first-stage loader replacing its architecture's (a path under
    /// assets_dir), or `grub`: the node boots through the signed shim and
    /// GRUB (Secure Boot) whatever its bootenv; `null` returns to the
    /// default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub loader: Option<Option<String>>,
    pub protected: Option<bool>,
    /// Its BMC, for power control (replaced whole); `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BmcRecord>)]
    pub bmc: Option<Option<BmcRecord>>,
    /// With `bootenv`: boot it once, then return to the current bootenv.
    #[serde(default)]
    pub once: bool,
    /// With `bootenv`: boot it for this long (`2h`, `30m`, `1d`), then return.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// Change the bootenv of a protected node.
    #[serde(default)]
    pub force: bool,
}

/// A patch whose values have been checked; only [`ValidPatch::apply`] remains.
#[derive(Debug, Clone)]
pub struct ValidPatch {
    patch: NodePatch,
    lease: Option<Duration>,
}

/// A DNS label: what DNS answers for `<hostname>.<domain>` need.
pub fn check_hostname(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{h}` is not a hostname (1-63 letters, digits and -, not starting or ending with -)"
        ))
    }
}

fn check_labels<'a>(
    field: &str,
    keys_values: impl Iterator<Item = (&'a String, Option<&'a String>)>,
) -> Result<(), FieldError> {
    for (k, v) in keys_values {
        if !is_key(k) {
            return Err(field_err(
                field,
                format!("`{k}` is not a key (letters, digits, `-`, `_`, `.`, `/`)"),
            ));
        }
        if field == "labels" && v.is_some_and(|v| !is_value(v)) {
            return Err(field_err(
                field,
                format!(
                    "the value of `{k}` must be letters, digits, `-`, `_` or `.` (selectors match it)"
                ),
            ));
        }
    }
    Ok(())
}

fn check_loader(l: &str) -> Result<(), FieldError> {
    if is_relative_inside(l) {
        Ok(())
    } else {
        Err(field_err(
            "loader",
            format!("`{l}` must be a path inside assets_dir"),
        ))
    }
}

/// A BMC record that can be used: an address its driver can reach, a
/// password that is a secret's name (never a password itself).
fn check_bmc(b: &BmcRecord) -> Result<(), FieldError> {
    let plain = |v: &str| !v.is_empty() && !v.chars().any(|c| c.is_control() || c.is_whitespace());
    if !plain(&b.address) {
        return Err(field_err(
            "bmc.address",
            "the BMC's address is required (no spaces)",
        ));
    }
    match b.driver {
        Driver::Redfish => {
            let ok = ["http://", "https://"].iter().any(|scheme| {
                b.address
                    .strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty())
            });
            if !ok {
                return Err(field_err(
                    "bmc.address",
                    format!(
                        "`{}`: a redfish address is the BMC's URL (https://10.1.0.5 or http://host:8000)",
                        b.address
                    ),
                ));
            }
        }
        Driver::Ipmi => {
            if b.address.contains('/') {
                return Err(field_err(
                    "bmc.address",
                    format!("`{}`: an ipmi address is a host or host:port", b.address),
                ));
            }
        }
        Driver::Command => {}
    }
    if let Some(s) = &b.system
        && !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        return Err(field_err(
            "bmc.system",
            format!("`{s}` is not a Redfish system id (letters, digits, - _ .)"),
        ));
    }
    if b.username.as_deref().is_some_and(|u| !plain(u)) {
        return Err(field_err("bmc.username", "a user name without spaces"));
    }
    if let Some(p) = &b.password_secret
        && !crate::secrets::is_secret_name(p)
    {
        return Err(field_err(
            "bmc.password_secret",
            "the name of a file in secrets_dir holding the password (letters, digits, - _ .), \
             not the password itself",
        ));
    }
    Ok(())
}

/// Whether `name` can be booted: a bootenv of the catalog, or `local`.
fn check_bootenv(field: &str, name: &str, known: &dyn Fn(&str) -> bool) -> Result<(), FieldError> {
    if name == LOCAL || known(name) {
        Ok(())
    } else {
        Err(field_err(
            field,
            format!(
                "there is no bootenv `{name}` (see GET {})",
                crate::routes::api_path(crate::routes::api::BOOTENVS)
            ),
        ))
    }
}

impl NodePatch {
    /// Checks every value; `known` says whether a bootenv exists.
    pub fn validate(self, known: &dyn Fn(&str) -> bool) -> Result<ValidPatch, FieldError> {
        if let Some(h) = &self.hostname {
            check_hostname(h).map_err(|r| field_err("hostname", r))?;
        }
        if let Some(Some(labels)) = &self.labels {
            check_labels("labels", labels.iter().map(|(k, v)| (k, v.as_ref())))?;
        }
        if let Some(Some(params)) = &self.params {
            check_labels("params", params.iter().map(|(k, v)| (k, v.as_ref())))?;
        }
        if let Some(Some(l)) = &self.loader {
            check_loader(l)?;
        }
        if let Some(Some(b)) = &self.bmc {
            check_bmc(b)?;
        }
        if let Some(b) = &self.bootenv {
            check_bootenv("bootenv", b, known)?;
        }
        if self.once && self.for_.is_some() {
            return Err(field_err(
                "once",
                "`once` and `for` exclude each other: choose one",
            ));
        }
        if (self.once || self.for_.is_some()) && self.bootenv.is_none() {
            let f = if self.once { "once" } else { "for" };
            return Err(field_err(f, format!("`{f}` needs a `bootenv` to boot")));
        }
        let lease = match &self.for_ {
            None => None,
            Some(text) => {
                let d = humantime::parse_duration(text).map_err(|e| {
                    field_err(
                        "for",
                        format!("`{text}` is not a duration ({e}); e.g. 90m, 2h, 1d"),
                    )
                })?;
                if d.is_zero() {
                    return Err(field_err("for", "the duration must be longer than 0"));
                }
                Some(d)
            }
        };
        Ok(ValidPatch { patch: self, lease })
    }
}

fn merge(
    map: &mut BTreeMap<String, String>,
    patch: &Option<Option<BTreeMap<String, Option<String>>>>,
) {
    match patch {
        None => {}
        Some(None) => map.clear(),
        Some(Some(p)) => {
            for (k, v) in p {
                match v {
                    Some(v) => {
                        map.insert(k.clone(), v.clone());
                    }
                    None => {
                        map.remove(k);
                    }
                }
            }
        }
    }
}

impl ValidPatch {
    /// Whether the patch says `force` (see [`guard`]).
    pub fn force(&self) -> bool {
        self.patch.force
    }

    /// Applies the patch to `node` at `now`. Protection is not checked
    /// here: the caller passes the record before and after to [`guard`].
    /// A record the patch changes is the admin's from then on (never
    /// reaped as a bare discovery).
    pub fn apply(&self, node: &mut Node, now: Timestamp) {
        let before = node.clone();
        self.apply_fields(node, now);
        if *node != before {
            node.origin = NodeOrigin::Admin;
        }
    }

    fn apply_fields(&self, node: &mut Node, now: Timestamp) {
        let p = &self.patch;
        if let Some(b) = &p.bootenv {
            let wanted = if p.once {
                (node.bootenv.clone(), Some(b.clone()), None)
            } else if let Some(d) = self.lease {
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                (
                    node.bootenv.clone(),
                    Some(b.clone()),
                    Some(Timestamp(now.0.saturating_add(ms))),
                )
            } else {
                (b.clone(), None, None)
            };
            (node.bootenv, node.next_bootenv, node.bootenv_expires) = wanted;
        }
        if let Some(h) = &p.hostname {
            node.hostname = h.clone();
        }
        if let Some(ip) = p.ipv4 {
            node.ipv4 = ip;
        }
        merge(&mut node.labels, &p.labels);
        merge(&mut node.params, &p.params);
        if let Some(l) = &p.loader {
            node.loader = l.clone();
        }
        if let Some(prot) = p.protected {
            node.protected = prot;
        }
        if let Some(b) = &p.bmc {
            node.bmc = b.clone().map(Box::new);
        }
    }
}

/// What [`guard`] let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// Protection had nothing to say (the node is not protected, or the
    /// change leaves what protection covers alone).
    Free,
    /// The node is protected and `force` overrode it: the audit says so.
    Forced,
}

/// Why [`guard`] refused, naming the node (hostname and MAC) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Protected {
    /// The field protection covers that the change touched (`bootenv`,
    /// `next_bootenv`, `bootenv_expires`), or `mac` for a deletion.
    pub field: &'static str,
    pub message: String,
}

/// The one protection check every admin change passes (create, patch, bulk,
/// import, delete): a node protected *before* the change keeps what it boots
/// (`bootenv`, `next_bootenv`, `bootenv_expires`) and keeps existing
/// (`after` is `None` for a deletion) unless the change is forced. Other
/// fields (labels, params, hostname, even `protected` itself) stay editable.
/// A new record (`before` is `None`) has nothing to protect.
pub fn guard(
    before: Option<&Node>,
    after: Option<&Node>,
    force: bool,
) -> Result<Guarded, Protected> {
    let Some(before) = before.filter(|b| b.protected) else {
        return Ok(Guarded::Free);
    };
    let touched = match after {
        None => Some(("mac", "delete it")),
        Some(a) if a.bootenv != before.bootenv => Some(("bootenv", "change its bootenv")),
        Some(a) if a.next_bootenv != before.next_bootenv => {
            Some(("next_bootenv", "change its bootenv"))
        }
        Some(a) if a.bootenv_expires != before.bootenv_expires => {
            Some(("bootenv_expires", "change its bootenv"))
        }
        Some(_) => None,
    };
    match touched {
        None => Ok(Guarded::Free),
        Some(_) if force => Ok(Guarded::Forced),
        Some((field, what)) => Err(Protected {
            field,
            message: format!(
                "node {} ({}) is protected; pass force to {what}",
                before.hostname, before.mac
            ),
        }),
    }
}

/// One field an admin change changed: a model type, as the `admin.change`
/// event carries it.
pub use crate::model::FieldChange;

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

fn pairs(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The editable fields of a record, as text, in the order the audit lists them.
fn editable(n: &Node) -> [(&'static str, String); 10] {
    [
        ("hostname", n.hostname.clone()),
        ("ipv4", opt(&n.ipv4)),
        ("bootenv", n.bootenv.clone()),
        ("next_bootenv", opt(&n.next_bootenv)),
        ("bootenv_expires", opt(&n.bootenv_expires)),
        ("loader", opt(&n.loader)),
        ("protected", n.protected.to_string()),
        ("labels", pairs(&n.labels)),
        ("params", pairs(&n.params)),
        (
            "bmc",
            n.bmc.as_ref().map_or_else(|| "-".into(), |b| b.summary()),
        ),
    ]
}

/// The editable fields that differ between `before` and `after`, before →
/// after; for a new record (`before` is `None`), every field it was given a
/// value in.
pub fn changes(before: Option<&Node>, after: &Node) -> Vec<FieldChange> {
    let now = editable(after);
    let was = before.map(editable);
    now.into_iter()
        .enumerate()
        .filter_map(|(i, (field, after))| {
            let before = match &was {
                Some(w) => w[i].1.clone(),
                None => "-".to_string(),
            };
            let empty = after == "-" || (before == "-" && after == "false");
            (before != after && !(was.is_none() && empty)).then_some(FieldChange {
                field: field.to_string(),
                before,
                after,
            })
        })
        .collect()
}

/// A node record as an admin creates or imports it: `mac` is required, every
/// other field is optional. A new record gets defaults for what is absent
/// (hostname `node-<mac hex>`, the default bootenv); an imported record for
/// an existing MAC keeps the values it has for what is absent.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeInput {
    pub mac: Mac,
    pub hostname: Option<String>,
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ipv4: Option<Ipv4Addr>,
    pub labels: Option<BTreeMap<String, String>>,
    pub params: Option<BTreeMap<String, String>>,
    pub bootenv: Option<String>,
    pub next_bootenv: Option<String>,
    pub bootenv_expires: Option<Timestamp>,
    pub loader: Option<String>,
    pub protected: Option<bool>,
    /// Its BMC, for power control.
    pub bmc: Option<BmcRecord>,
}

impl NodeInput {
    pub fn validate(&self, known: &dyn Fn(&str) -> bool) -> Result<(), FieldError> {
        if let Some(h) = &self.hostname {
            check_hostname(h).map_err(|r| field_err("hostname", r))?;
        }
        if let Some(l) = &self.labels {
            check_labels("labels", l.iter().map(|(k, v)| (k, Some(v))))?;
        }
        if let Some(p) = &self.params {
            check_labels("params", p.iter().map(|(k, v)| (k, Some(v))))?;
        }
        if let Some(l) = &self.loader {
            check_loader(l)?;
        }
        if let Some(b) = &self.bmc {
            check_bmc(b)?;
        }
        if let Some(b) = &self.bootenv {
            check_bootenv("bootenv", b, known)?;
        }
        if let Some(b) = &self.next_bootenv {
            check_bootenv("next_bootenv", b, known)?;
        }
        if self.bootenv_expires.is_some() && self.next_bootenv.is_none() {
            return Err(field_err(
                "bootenv_expires",
                "an expiry needs a `next_bootenv` to expire",
            ));
        }
        Ok(())
    }

    /// The record: `existing` with the given fields replaced, or a new one
    /// (`token` and `default_bootenv` used only then).
    pub fn into_node(
        self,
        existing: Option<&Node>,
        default_bootenv: &str,
        token: impl FnOnce() -> String,
        now: Timestamp,
    ) -> Node {
        let mut node = match existing {
            // Made or replaced by an admin: theirs from now on, never reaped.
            Some(n) => Node {
                origin: NodeOrigin::Admin,
                ..n.clone()
            },
            None => {
                let mut n = Node::discovered(self.mac, default_bootenv, token(), now);
                // Created by an admin: not seen on the wire yet.
                n.last_seen = None;
                n.origin = NodeOrigin::Admin;
                n
            }
        };
        if let Some(h) = self.hostname {
            node.hostname = h;
        }
        if self.ipv4.is_some() {
            node.ipv4 = self.ipv4;
        }
        if let Some(l) = self.labels {
            node.labels = l;
        }
        if let Some(p) = self.params {
            node.params = p;
        }
        if let Some(b) = self.bootenv {
            node.bootenv = b;
        }
        if self.next_bootenv.is_some() {
            node.next_bootenv = self.next_bootenv;
            node.bootenv_expires = self.bootenv_expires;
        }
        if self.loader.is_some() {
            node.loader = self.loader;
        }
        if let Some(p) = self.protected {
            node.protected = p;
        }
        if let Some(b) = self.bmc {
            node.bmc = Some(Box::new(b));
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn node() -> Node {
        let mut n = Node::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            "discovery",
            "t".into(),
            Timestamp(0),
        );
        n.labels.insert("rack".into(), "r1".into());
        n
    }

    fn known(b: &str) -> bool {
        matches!(b, "discovery" | "rescue" | "install")
    }

    fn patch(json: &str) -> Result<ValidPatch, FieldError> {
        serde_json::from_str::<NodePatch>(json)
            .unwrap()
            .validate(&known)
    }

    /// The patch applied and passed through [`guard`], as every admin change is.
    fn applied(n: &Node, json: &str) -> Result<Node, String> {
        let p = patch(json).unwrap();
        let mut after = n.clone();
        p.apply(&mut after, NOW);
        guard(Some(n), Some(&after), p.force()).map_err(|e| e.message)?;
        Ok(after)
    }

    #[test]
    fn bootenv_now_once_and_for() {
        let mut start = node();
        start.next_bootenv = Some("rescue".into());
        start.bootenv_expires = Some(Timestamp(5));
        let n = applied(&start, r#"{"bootenv":"install"}"#).unwrap();
        assert_eq!(
            (n.bootenv.as_str(), n.next_bootenv, n.bootenv_expires),
            ("install", None, None)
        );
        let n = applied(&start, r#"{"bootenv":"install","once":true}"#).unwrap();
        assert_eq!(
            (
                n.bootenv.as_str(),
                n.next_bootenv.as_deref(),
                n.bootenv_expires
            ),
            ("discovery", Some("install"), None)
        );
        let n = applied(&start, r#"{"bootenv":"rescue","for":"2h"}"#).unwrap();
        assert_eq!(
            (
                n.bootenv.as_str(),
                n.next_bootenv.as_deref(),
                n.bootenv_expires
            ),
            (
                "discovery",
                Some("rescue"),
                Some(Timestamp(NOW.0 + 2 * 3600 * 1000))
            )
        );
        let n = applied(&start, r#"{"bootenv":"local"}"#).unwrap();
        assert_eq!(n.bootenv, "local");
    }

    #[test]
    fn a_protected_node_refuses_bootenv_changes_unless_forced() {
        let mut p = node();
        p.protected = true;
        for json in [
            r#"{"bootenv":"install"}"#,
            r#"{"bootenv":"install","once":true}"#,
            r#"{"bootenv":"install","for":"1h"}"#,
            r#"{"bootenv":"install","protected":false}"#,
        ] {
            let e = applied(&p, json).unwrap_err();
            assert_eq!(
                e,
                "node node-525400000001 (52:54:00:00:00:01) is protected; pass force to change its bootenv"
            );
        }
        let n = applied(&p, r#"{"bootenv":"install","force":true}"#).unwrap();
        assert_eq!(n.bootenv, "install");
        // Not a change: allowed. Other fields: allowed.
        applied(&p, r#"{"bootenv":"discovery"}"#).unwrap();
        let n = applied(&p, r#"{"hostname":"b1","protected":false}"#).unwrap();
        assert_eq!((n.hostname.as_str(), n.protected), ("b1", false));
    }

    #[test]
    fn protection_refuses_deletion_and_any_bootenv_field_unless_forced() {
        let mut p = node();
        p.protected = true;
        p.hostname = "alibuild03".into();
        let e = guard(Some(&p), None, false).unwrap_err();
        assert_eq!(e.field, "mac");
        assert_eq!(
            e.message,
            "node alibuild03 (52:54:00:00:00:01) is protected; pass force to delete it"
        );
        assert_eq!(guard(Some(&p), None, true), Ok(Guarded::Forced));
        // An import replaces whole fields: each one protection covers is named.
        type Edit = fn(&mut Node);
        let table: [(&str, Edit); 3] = [
            ("bootenv", |n| n.bootenv = "install".into()),
            ("next_bootenv", |n| n.next_bootenv = Some("install".into())),
            ("bootenv_expires", |n| n.bootenv_expires = Some(NOW)),
        ];
        for (field, edit) in table {
            let mut after = p.clone();
            edit(&mut after);
            assert_eq!(
                guard(Some(&p), Some(&after), false).unwrap_err().field,
                field
            );
            assert_eq!(guard(Some(&p), Some(&after), true), Ok(Guarded::Forced));
        }
        // Other fields, an unprotected node, a new record: nothing to guard.
        let mut after = p.clone();
        after.labels.insert("role".into(), "db".into());
        after.protected = false;
        assert_eq!(guard(Some(&p), Some(&after), false), Ok(Guarded::Free));
        assert_eq!(guard(Some(&node()), None, false), Ok(Guarded::Free));
        assert_eq!(guard(None, Some(&p), false), Ok(Guarded::Free));
        // Forcing what needs no force is not recorded as forced.
        assert_eq!(guard(Some(&p), Some(&p), true), Ok(Guarded::Free));
    }

    #[test]
    fn changes_name_each_field_before_and_after() {
        let before = node();
        let after = applied(
            &before,
            r#"{"bootenv":"install","labels":{"role":"db"},"protected":true}"#,
        )
        .unwrap();
        let text: Vec<String> = changes(Some(&before), &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "bootenv discovery -> install",
                "protected false -> true",
                "labels rack=r1 -> rack=r1,role=db",
            ]
        );
        assert!(changes(Some(&after), &after).is_empty());
        // A new record: the fields it has, from nothing.
        let text: Vec<String> = changes(None, &before)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "hostname - -> node-525400000001",
                "bootenv - -> discovery",
                "labels - -> rack=r1",
            ]
        );
    }

    #[test]
    fn merge_patch_of_maps_and_nullable_fields() {
        let mut start = node();
        start.ipv4 = Some("10.0.0.5".parse().unwrap());
        start.loader = Some("snponly.efi".into());
        let n = applied(
            &start,
            r#"{"labels":{"role":"builder","rack":null},"params":{"k":"v"},"ipv4":null,"loader":null}"#,
        )
        .unwrap();
        assert_eq!(
            n.labels,
            BTreeMap::from([("role".to_string(), "builder".to_string())])
        );
        assert_eq!(n.params["k"], "v");
        assert_eq!((n.ipv4, n.loader), (None, None));
        let n = applied(&start, r#"{"labels":null}"#).unwrap();
        assert!(n.labels.is_empty());
        let n = applied(&start, r#"{}"#).unwrap();
        assert_eq!(n, start);
    }

    #[test]
    fn bad_values_name_their_field() {
        let table = [
            (r#"{"bootenv":"nope"}"#, "bootenv", "no bootenv `nope`"),
            (
                r#"{"bootenv":"rescue","once":true,"for":"1h"}"#,
                "once",
                "exclude",
            ),
            (r#"{"once":true}"#, "once", "needs a `bootenv`"),
            (
                r#"{"bootenv":"rescue","for":"soon"}"#,
                "for",
                "not a duration",
            ),
            (r#"{"hostname":"-x"}"#, "hostname", "not a hostname"),
            (r#"{"labels":{"a b":"c"}}"#, "labels", "not a key"),
            (r#"{"labels":{"rack":"r 1"}}"#, "labels", "value of `rack`"),
            (r#"{"loader":"../x.efi"}"#, "loader", "inside assets_dir"),
            (
                r#"{"bmc":{"driver":"redfish","address":"10.1.0.5"}}"#,
                "bmc.address",
                "the BMC's URL",
            ),
            (
                r#"{"bmc":{"driver":"ipmi","address":"http://10.1.0.5/"}}"#,
                "bmc.address",
                "host or host:port",
            ),
            (
                r#"{"bmc":{"driver":"ipmi","address":""}}"#,
                "bmc.address",
                "required",
            ),
            (
                r#"{"bmc":{"driver":"ipmi","address":"h","password_secret":"../etc/shadow"}}"#,
                "bmc.password_secret",
                "not the password itself",
            ),
            (
                r#"{"bmc":{"driver":"redfish","address":"https://h","system":"1/../2"}}"#,
                "bmc.system",
                "system id",
            ),
        ];
        for (json, field, want) in table {
            let e = patch(json).unwrap_err();
            assert_eq!(e.field, field, "{json}");
            assert!(e.reason.contains(want), "{json}: {e}");
        }
        assert!(serde_json::from_str::<NodePatch>(r#"{"hostnme":"x"}"#).is_err());
        // A password itself is no field of a BMC record.
        assert!(
            serde_json::from_str::<NodePatch>(
                r#"{"bmc":{"driver":"ipmi","address":"h","password":"hunter2"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn a_bmc_is_set_whole_cleared_by_null_and_audited_without_a_password() {
        let mut n = Node::sample();
        patch(r#"{"bmc":{"driver":"ipmi","address":"10.1.0.5:623","username":"admin","password_secret":"bmc-r1"}}"#)
            .unwrap()
            .apply(&mut n, NOW);
        let before = n.clone();
        assert_eq!(n.bmc.as_ref().map(|b| b.driver), Some(Driver::Ipmi));
        patch(r#"{"bmc":{"driver":"redfish","address":"https://10.1.0.5"}}"#)
            .unwrap()
            .apply(&mut n, NOW);
        let b = n.bmc.as_deref().unwrap();
        assert_eq!(
            (b.username.as_deref(), b.password_secret.as_deref()),
            (None, None),
            "replaced whole"
        );
        let audit = changes(Some(&before), &n);
        assert_eq!(
            audit.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["bmc ipmi 10.1.0.5:623 user admin password secret bmc-r1 -> redfish https://10.1.0.5"]
        );
        patch(r#"{"bmc":null}"#).unwrap().apply(&mut n, NOW);
        assert_eq!(n.bmc, None);
    }

    #[test]
    fn input_makes_new_records_with_defaults_and_keeps_what_is_absent() {
        let input: NodeInput =
            serde_json::from_str(r#"{"mac":"52:54:00:00:00:01","labels":{"rack":"r2"}}"#).unwrap();
        input.validate(&known).unwrap();
        let new = input
            .clone()
            .into_node(None, "discovery", || "tok".into(), NOW);
        assert_eq!(new.hostname, "node-525400000001");
        assert_eq!(
            (new.bootenv.as_str(), new.token.as_str()),
            ("discovery", "tok")
        );
        assert_eq!(new.last_seen, None);
        let mut old = node();
        old.bootenv = "rescue".into();
        old.hostname = "b1".into();
        let kept = input.into_node(Some(&old), "discovery", || unreachable!(), NOW);
        assert_eq!(
            (kept.hostname.as_str(), kept.bootenv.as_str()),
            ("b1", "rescue")
        );
        assert_eq!(kept.labels["rack"], "r2");
        assert_eq!(kept.token, "t");
    }
}
