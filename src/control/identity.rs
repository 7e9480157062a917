//! Identity by place: on a subnet whose `identity` names the switch port
//! (`"port"`) or the board (`"uuid"`), a machine is known by more than the
//! MAC of its boot NIC. A MAC rackboot has no record of, PXE-booting from
//! the port (or with the board) of a known node, is that node's machine
//! replaced: a new server in the same slot, or the same board with a new
//! NIC. Its record takes over the old one's hostname, labels, params,
//! fixed address and bootenv, so the replacement boots what its slot
//! booted, under the same name, with no admin at hand.
//!
//! The old record stays, with an event naming its successor, but stripped
//! to what DHCP makes for an unknown MAC: the lifecycle sweep reaps it once
//! nothing has been heard from it for a while, like any bare discovered
//! record (so made-up MACs on one port churn one record, never fill the
//! store). Its successor's timeline names the old MAC. Both records are
//! written in one store edit: no crash leaves two records with one name or
//! none with it.
//!
//! Only a PXE client takes over (its firmware says so in its vendor class
//! or architecture option): a BMC sharing the host's port (NC-SI) also
//! asks DHCP with a MAC of its own, and must not take the host's record.
//! A protected record is never taken over; neither is one of several that
//! share the port or the UUID (which one would it be?).

use crate::boot::bootenv::LOCAL;
use crate::config::Identity;
use crate::dhcp::classify::Request;
use crate::model::{EventData, Node, NodeOrigin, NodeState, Timestamp};
use crate::nodes;
use crate::store::{NodeQuery, StoreError};

use super::admit::{Door, Place, Via};

/// What an unknown MAC's request says it is besides its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The records that would be this machine's.
    query: NodeQuery,
    /// In words, for the timeline: `port circuit-id=…` or `uuid …`.
    by: String,
}

/// The identity `req` claims on a subnet that accepts `identity`: its
/// switch port first (a slot is what admins plan by), else its board.
/// `None` for a client that is not a PXE firmware, or claims nothing.
pub fn claim(identity: Identity, req: &Request) -> Option<Claim> {
    let pxe = req.client.arch.is_some()
        || req
            .client
            .vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with("PXEClient") || v.starts_with("HTTPClient"));
    if !pxe {
        return None;
    }
    let mut query = NodeQuery::default();
    let by = if identity.port
        && let Some(info) = &req.relay_info
    {
        query.relay_info = Some(info.clone());
        format!("port {info}")
    } else if identity.uuid
        && let Some(uuid) = &req.uuid
    {
        query.uuid = Some(uuid.clone());
        format!("uuid {uuid}")
    } else {
        return None;
    };
    Some(Claim { query, by })
}

impl Door {
    /// `mac` (no record) takes over the record `claim` names, if exactly one
    /// other record has that identity and it is not protected. Returns the
    /// new record, durable, with events on both timelines; `None` when
    /// there is nothing to take over (the MAC is then an unknown client).
    pub async fn take_over(
        &self,
        req: &Request,
        claim: Claim,
        place: Place,
        via: Via,
        now: Timestamp,
    ) -> Result<Option<Node>, StoreError> {
        let mac = req.client.mac;
        let mut found = self
            .store
            .nodes_where(std::slice::from_ref(&claim.query))
            .await?;
        found.retain(|n| n.mac != mac);
        let old = match found.as_slice() {
            [] => return Ok(None),
            [old] if old.protected => {
                tracing::warn!(%mac, old = %old.mac, by = %claim.by, "not taking over a protected record: unprotect it to let its replacement in");
                return Ok(None);
            }
            [old] => old.clone(),
            several => {
                let macs: Vec<String> = several.iter().map(|n| n.mac.to_string()).collect();
                tracing::warn!(%mac, by = %claim.by, records = %macs.join(", "), "several records share this identity: taking over none");
                return Ok(None);
            }
        };
        let new = successor(&old, req, now);
        let retired = retired(&old, nodes::default_hostname(old.mac, self.hostnames));
        let (query, old_mac) = (claim.query.clone(), old.mac);
        let written = self
            .store
            .edit_nodes(Box::new(move |nodes| {
                // Checked again where the write happens: another request may
                // have made the record, or changed the old one, meanwhile.
                if nodes.contains_key(&mac) {
                    return Err("the new MAC has a record already".into());
                }
                match nodes.get(&old_mac) {
                    Some(o) if query.matches(&o) && !o.protected => Ok(vec![new, retired]),
                    _ => Err("the record to take over changed meanwhile".into()),
                }
            }))
            .await;
        let node = match written {
            Ok(mut w) if !w.is_empty() => w.swap_remove(0).after,
            Ok(_) => return Ok(None),
            Err(e) if e.is_refused() => {
                tracing::debug!(%mac, error = %e, "identity not taken over");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.created(&node, place, via).await;
        self.timeline
            .record(
                mac,
                EventData::Identity {
                    other: old_mac,
                    by: claim.by.clone(),
                    took_over: true,
                },
            )
            .await;
        self.timeline
            .record(
                old_mac,
                EventData::Identity {
                    other: mac,
                    by: claim.by.clone(),
                    took_over: false,
                },
            )
            .await;
        tracing::info!(%mac, old = %old_mac, by = %claim.by, hostname = %node.hostname, "took over the record of the machine it replaced");
        Ok(Some(node))
    }
}

/// The record of `req`'s MAC as the successor of `old`: the slot's
/// hostname, labels, params, fixed address and bootenv; what belongs to
/// the machine (its BMC, its loader, its state and history) starts afresh.
fn successor(old: &Node, req: &Request, now: Timestamp) -> Node {
    let mut node = Node::discovered(req.client.mac, &old.bootenv, nodes::new_token(), now);
    node.hostname = old.hostname.clone();
    node.ipv4 = old.ipv4;
    node.labels = old.labels.clone();
    node.params = old.params.clone();
    node.next_bootenv = old.next_bootenv.clone();
    node.bootenv_expires = old.bootenv_expires;
    node.origin = old.origin;
    node.relay_info = req.relay_info.clone();
    node.uuid = req.uuid.clone();
    node
}

/// `old` once replaced: what DHCP makes for an unknown MAC (named by
/// `hostname`, booting its own disk), so nothing selects it any more and the
/// sweep reaps it when it stays quiet.
fn retired(old: &Node, hostname: String) -> Node {
    let mut node = old.clone();
    node.hostname = hostname;
    node.ipv4 = None;
    node.labels.clear();
    node.params.clear();
    node.bootenv = LOCAL.to_string();
    node.next_bootenv = None;
    node.bootenv_expires = None;
    node.loader = None;
    node.relay_info = None;
    node.uuid = None;
    node.state = NodeState::Discovered;
    node.state_reason = Some("replaced by another machine in its place".into());
    node.origin = NodeOrigin::Discovered;
    node.bmc = None;
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientArch, Mac};

    fn request(mac: u8, relay: Option<&str>, uuid: Option<&str>, arch: bool) -> Request {
        let m = crate::dhcp::classify::tests::packet(dhcproto::v4::MessageType::Discover);
        let mut r = crate::dhcp::classify::classify(&m).unwrap();
        r.client.mac = Mac::new([0x52, 0x54, 0, 0, 0, mac]);
        r.client.arch = arch.then_some(ClientArch(0));
        r.client.vendor_class = None;
        r.relay_info = relay.map(str::to_string);
        r.uuid = uuid.map(str::to_string);
        r
    }

    #[test]
    fn the_port_is_claimed_before_the_board_and_only_by_pxe_firmware() {
        let both = Identity {
            port: true,
            uuid: true,
        };
        let port = "circuit-id=Gi1/0/7";
        let uuid = "10111213-1415-1617-1819-1a1b1c1d1e1f";
        let c = claim(both, &request(2, Some(port), Some(uuid), true)).unwrap();
        assert_eq!(c.by, format!("port {port}"));
        assert_eq!(c.query.relay_info.as_deref(), Some(port));
        let c = claim(both, &request(2, None, Some(uuid), true)).unwrap();
        assert_eq!(c.by, format!("uuid {uuid}"));
        // Not PXE firmware (a BMC on a shared port): no claim.
        assert_eq!(
            claim(both, &request(2, Some(port), Some(uuid), false)),
            None
        );
        // The subnet accepts only what it names.
        let uuid_only = Identity {
            port: false,
            uuid: true,
        };
        assert_eq!(claim(uuid_only, &request(2, Some(port), None, true)), None);
        assert_eq!(
            claim(
                Identity::default(),
                &request(2, Some(port), Some(uuid), true)
            ),
            None
        );
    }

    #[test]
    fn the_successor_takes_the_slot_and_the_old_record_is_left_bare() {
        let mut old = Node::discovered(
            Mac::new([0x52, 0x54, 0, 0, 0, 1]),
            "local",
            "t".into(),
            Timestamp(1),
        );
        old.hostname = "b7".into();
        old.labels.insert("role".into(), "builder".into());
        old.params.insert("disk".into(), "/dev/sda".into());
        old.bootenv = "fedora-43".into();
        old.ipv4 = Some("10.0.0.7".parse().unwrap());
        old.origin = NodeOrigin::Admin;
        old.state = NodeState::Configured;
        old.relay_info = Some("circuit-id=Gi1/0/7".into());
        let req = request(2, Some("circuit-id=Gi1/0/7"), None, true);
        let new = successor(&old, &req, Timestamp(5));
        assert_eq!(new.mac, req.client.mac);
        assert_eq!(
            (
                new.hostname.as_str(),
                new.bootenv.as_str(),
                new.ipv4,
                new.origin
            ),
            ("b7", "fedora-43", old.ipv4, NodeOrigin::Admin)
        );
        assert_eq!((&new.labels, &new.params), (&old.labels, &old.params));
        assert_eq!(new.state, NodeState::Discovered);
        assert_eq!(new.relay_info, old.relay_info);
        let gone = retired(&old, old.mac.default_hostname());
        assert!(gone.is_bare_discovery(), "{gone:?}");
        assert_eq!(gone.relay_info, None);
        assert_eq!(gone.bootenv, LOCAL);
    }
}
