//! Which node records a background pass wants, as data: conditions on the
//! columns of a node record that a SQL engine runs as a `WHERE` clause, and
//! an engine that keeps records in memory checks with [`NodeQuery::matches`].
//! A closure over every record would force a networked engine to ship the
//! whole fleet to rackboot on every pass.

use crate::model::{Node, Timestamp};

/// Conditions on a node record; every one that is set must hold (AND), and
/// the empty query selects every record. Each field names its SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQuery {
    /// A next-boot bootenv lease that has run out by then:
    /// `bootenv_expires <= t`.
    pub bootenv_expired_by: Option<Timestamp>,
    /// Nothing heard from the node after then (a record never seen counts
    /// from its creation): `coalesce(last_seen, created) <= t`.
    pub seen_by: Option<Timestamp>,
    /// Made at or before then: `created <= t`.
    pub created_by: Option<Timestamp>,
    /// Only records exactly as DHCP makes them for an unknown MAC
    /// ([`Node::is_bare_discovery`]): `origin = 'discovered' AND state =
    /// 'discovered' AND NOT protected AND ipv4 IS NULL AND next_bootenv IS
    /// NULL AND loader IS NULL AND labels = '{}' AND params = '{}'`.
    pub bare_discovery: bool,
    /// Last relayed with exactly this relay agent information (its switch
    /// port): `relay_info = ?`.
    pub relay_info: Option<String>,
    /// Its firmware sent this SMBIOS UUID: `uuid = ?`.
    pub uuid: Option<String>,
}

impl NodeQuery {
    /// Whether a record seen as `p` (in place, not unpacked) may meet every
    /// condition set: false only when one it shows fails. [`Self::matches`]
    /// decides.
    pub fn may_match(&self, p: &crate::store::packed::Peek<'_>) -> bool {
        self.bootenv_expired_by
            .is_none_or(|t| p.bootenv_expires.is_some_and(|until| until <= t))
            && self
                .seen_by
                .is_none_or(|t| p.last_seen.unwrap_or(p.created) <= t)
            && self.created_by.is_none_or(|t| p.created <= t)
            && self
                .relay_info
                .as_deref()
                .is_none_or(|r| p.relay_info == Some(r))
            && self.uuid.as_deref().is_none_or(|u| p.uuid == Some(u))
    }

    /// Whether `node` meets every condition set.
    pub fn matches(&self, node: &Node) -> bool {
        let expired = |t: Timestamp| node.bootenv_expires.is_some_and(|until| until <= t);
        let seen = |t: Timestamp| node.last_seen.unwrap_or(node.created) <= t;
        self.bootenv_expired_by.is_none_or(expired)
            && self.seen_by.is_none_or(seen)
            && self.created_by.is_none_or(|t| node.created <= t)
            && (!self.bare_discovery || node.is_bare_discovery())
            && self
                .relay_info
                .as_ref()
                .is_none_or(|p| node.relay_info.as_ref() == Some(p))
            && self
                .uuid
                .as_ref()
                .is_none_or(|u| node.uuid.as_ref() == Some(u))
    }

    /// Whether `node` meets every condition of at least one of `any_of`
    /// (none: no record does).
    pub fn any_matches(any_of: &[NodeQuery], node: &Node) -> bool {
        any_of.iter().any(|q| q.matches(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mac, NodeOrigin, NodeState};

    fn node() -> Node {
        Node::discovered(
            Mac::new([0x52, 0x54, 0, 0, 0, 1]),
            "discovery",
            "t".into(),
            Timestamp(100),
        )
    }

    #[test]
    fn each_condition_holds_where_its_sql_would() {
        fn t(ms: i64) -> Option<Timestamp> {
            Some(Timestamp(ms))
        }
        let q = |f: fn(&mut NodeQuery)| {
            let mut q = NodeQuery::default();
            f(&mut q);
            q
        };
        let leased = |n: &mut Node| {
            n.next_bootenv = Some("install".into());
            n.bootenv_expires = Some(Timestamp(500));
        };
        let seen_at_300 = |n: &mut Node| n.last_seen = Some(Timestamp(300));
        let seen_before_created = |n: &mut Node| n.last_seen = Some(Timestamp(50));
        let labelled = |n: &mut Node| {
            n.labels.insert("rack".into(), "r1".into());
        };
        let admins = |n: &mut Node| n.origin = NodeOrigin::Admin;
        let booting = |n: &mut Node| n.state = NodeState::Booting;
        let untouched = |_: &mut Node| {};
        let on_port = |n: &mut Node| {
            n.relay_info = Some("circuit-id=Gi1/0/7".into());
            n.uuid = Some("10111213-1415-1617-1819-1a1b1c1d1e1f".into());
        };
        /// What the case is, the query, how the record differs from a fresh
        /// discovered one, whether the query selects it.
        type Case = (&'static str, NodeQuery, fn(&mut Node), bool);
        let cases: &[Case] = &[
            ("the empty query", NodeQuery::default(), untouched, true),
            (
                "no lease",
                q(|q| q.bootenv_expired_by = t(1000)),
                untouched,
                false,
            ),
            (
                "lease runs to 500",
                q(|q| q.bootenv_expired_by = t(499)),
                leased,
                false,
            ),
            (
                "lease ran out",
                q(|q| q.bootenv_expired_by = t(500)),
                leased,
                true,
            ),
            (
                "never seen: created",
                q(|q| q.seen_by = t(100)),
                untouched,
                true,
            ),
            (
                "never seen, too new",
                q(|q| q.seen_by = t(99)),
                untouched,
                false,
            ),
            ("seen since", q(|q| q.seen_by = t(299)), seen_at_300, false),
            ("seen then", q(|q| q.seen_by = t(300)), seen_at_300, true),
            (
                "last seen wins",
                q(|q| q.seen_by = t(60)),
                seen_before_created,
                true,
            ),
            (
                "created after",
                q(|q| q.created_by = t(60)),
                seen_before_created,
                false,
            ),
            (
                "created then",
                q(|q| q.created_by = t(100)),
                untouched,
                true,
            ),
            ("bare", q(|q| q.bare_discovery = true), untouched, true),
            ("labelled", q(|q| q.bare_discovery = true), labelled, false),
            ("an admin's", q(|q| q.bare_discovery = true), admins, false),
            ("booting", q(|q| q.bare_discovery = true), booting, false),
            (
                "on its port",
                q(|q| q.relay_info = Some("circuit-id=Gi1/0/7".into())),
                on_port,
                true,
            ),
            (
                "on another port",
                q(|q| q.relay_info = Some("circuit-id=Gi1/0/8".into())),
                on_port,
                false,
            ),
            (
                "never relayed",
                q(|q| q.relay_info = Some("circuit-id=Gi1/0/7".into())),
                untouched,
                false,
            ),
            (
                "its board",
                q(|q| q.uuid = Some("10111213-1415-1617-1819-1a1b1c1d1e1f".into())),
                on_port,
                true,
            ),
            (
                "another board",
                q(|q| q.uuid = Some("20111213-1415-1617-1819-1a1b1c1d1e1f".into())),
                on_port,
                false,
            ),
            (
                "all of them hold",
                NodeQuery {
                    bootenv_expired_by: t(600),
                    seen_by: t(600),
                    created_by: t(600),
                    bare_discovery: false,
                    ..NodeQuery::default()
                },
                leased,
                true,
            ),
            (
                "all but one hold",
                NodeQuery {
                    bootenv_expired_by: t(600),
                    seen_by: t(600),
                    created_by: t(99),
                    bare_discovery: false,
                    ..NodeQuery::default()
                },
                leased,
                false,
            ),
        ];
        for (what, query, change, want) in cases {
            let mut n = node();
            change(&mut n);
            assert_eq!(query.matches(&n), *want, "{what}: {query:?}");
        }
    }

    #[test]
    fn any_of_is_an_or_and_none_selects_nothing() {
        let n = node();
        let never = NodeQuery {
            bootenv_expired_by: Some(Timestamp(1_000)),
            ..NodeQuery::default()
        };
        assert!(!NodeQuery::any_matches(&[], &n));
        assert!(!NodeQuery::any_matches(std::slice::from_ref(&never), &n));
        assert!(NodeQuery::any_matches(&[never, NodeQuery::default()], &n));
    }
}
