//! Lease decisions of RFC 2131 §4.3 on top of the store: which address a
//! client is offered, and whether a REQUEST is acknowledged.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::dhcp::classify::Request;
use crate::model::{Lease, LeaseState, Mac, Timestamp};
use crate::store::{LeaseRequest, Store, StoreError};

/// How long an offered address is held for the client's REQUEST.
pub const OFFER_HOLD_SECS: u64 = 60;

#[derive(Debug, Clone)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub lease_seconds: u32,
    pub server_ip: Ipv4Addr,
}

/// The answer to a DHCPREQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack(Lease),
    Nak(String),
    /// Not for us (the client chose another server): say nothing.
    Silent(String),
}

/// The address to offer `mac`: its live lease if it has one, else a new one
/// held for [`OFFER_HOLD_SECS`]. `None` when the pool is exhausted.
pub async fn offer(
    store: &dyn Store,
    pool: &Pool,
    mac: Mac,
    fixed: Option<Ipv4Addr>,
    wanted: Option<Ipv4Addr>,
    now: Timestamp,
) -> Result<Option<Lease>, StoreError> {
    if let Some(l) = store.lease_of(mac).await? {
        // A node that moved (e.g. known on the boot subnet, now behind a relay)
        // keeps nothing from another subnet: its old address would be NAKed.
        let keeps = l.state == LeaseState::Bound
            && l.is_live(now)
            && pool.subnet.contains(&l.ip)
            && fixed.is_none_or(|f| f == l.ip);
        if keeps {
            return Ok(Some(l));
        }
    }
    store
        .allocate(&LeaseRequest {
            mac,
            ranges: pool.ranges.clone(),
            fixed,
            wanted,
            exact: false,
            state: LeaseState::Offered,
            expires: now.plus_secs(OFFER_HOLD_SECS),
            now,
        })
        .await
}

/// Decides a DHCPREQUEST in any of its RFC 2131 states: SELECTING (server
/// identifier present), INIT-REBOOT (requested address, no ciaddr), RENEWING
/// and REBINDING (ciaddr set).
pub async fn request(
    store: &dyn Store,
    pool: &Pool,
    req: &Request,
    fixed: Option<Ipv4Addr>,
    now: Timestamp,
) -> Result<Outcome, StoreError> {
    let mac = req.client.mac;
    if let Some(sid) = req.server_id
        && sid != pool.server_ip
    {
        // The client took another server's offer: free what we held.
        if let Some(l) = store.lease_of(mac).await?
            && l.state == LeaseState::Offered
        {
            store.release(mac, l.ip).await?;
        }
        return Ok(Outcome::Silent(format!("client chose server {sid}")));
    }
    let asked = match (req.requested_ip, req.ciaddr.is_unspecified()) {
        (Some(ip), _) => ip,
        (None, false) => req.ciaddr,
        (None, true) => return Ok(Outcome::Nak("REQUEST names no address".into())),
    };
    if !pool.subnet.contains(&asked) {
        return Ok(Outcome::Nak(format!("{asked} is not on this network")));
    }
    if let Some(f) = fixed
        && f != asked
    {
        return Ok(Outcome::Nak(format!(
            "this node's address is {f}, not {asked}"
        )));
    }
    let allocated = store
        .allocate(&LeaseRequest {
            mac,
            ranges: pool.ranges.clone(),
            fixed,
            wanted: Some(asked),
            // Only the asked address: anything else would be bound for a full
            // lease and then NAKed, and the pool drained by REQUESTs.
            exact: true,
            state: LeaseState::Bound,
            expires: now.plus_secs(u64::from(pool.lease_seconds)),
            now,
        })
        .await;
    let lease = match allocated {
        Ok(lease) => lease,
        Err(e) if e.is_unavailable() => {
            // Nothing can be committed now (the database is away, the disk is
            // full). A client renewing the lease it holds is told what is
            // committed already: the same address until the same expiry, which
            // no other server sharing the store can give away before then.
            // Anything else would risk an address bound twice: refused.
            return match held(store, mac, asked, now).await? {
                Some(l) => {
                    tracing::info!(%mac, ip = %l.ip, cause = %e,
                        "store cannot commit: renewed a held lease until its committed expiry");
                    Ok(Outcome::Ack(l))
                }
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    Ok(match lease {
        Some(l) if l.ip == asked => Outcome::Ack(l),
        _ => Outcome::Nak(format!(
            "{asked} is not available (outside the ranges or held by another client)"
        )),
    })
}

/// A lease held too briefly to be worth handing out while nothing can be
/// committed: the client would be back at once.
const HELD_AT_LEAST_SECS: i64 = 10;

/// `mac`'s bound lease on `ip`, if it has one that runs for a while yet.
async fn held(
    store: &dyn Store,
    mac: Mac,
    ip: Ipv4Addr,
    now: Timestamp,
) -> Result<Option<Lease>, StoreError> {
    Ok(store.lease_of(mac).await?.filter(|l| {
        l.ip == ip
            && l.state == LeaseState::Bound
            && l.expires.millis() - now.millis() >= HELD_AT_LEAST_SECS * 1000
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientArch, ClientInfo};
    use crate::store::SqliteStore;
    use dhcproto::v4::MessageType;

    fn pool() -> Pool {
        Pool {
            subnet: "10.0.0.0/24".parse().unwrap(),
            ranges: vec![("10.0.0.10".parse().unwrap(), "10.0.0.20".parse().unwrap())],
            lease_seconds: 3600,
            server_ip: "10.0.0.1".parse().unwrap(),
        }
    }

    fn mac(n: u8) -> Mac {
        Mac::new([2, 0, 0, 0, 0, n])
    }

    fn req(m: Mac, requested: Option<&str>, server: Option<&str>, ciaddr: &str) -> Request {
        Request {
            kind: MessageType::Request,
            client: ClientInfo {
                mac: m,
                arch: Some(ClientArch(7)),
                vendor_class: None,
                user_class: None,
                is_ipxe: false,
                ipxe_features: vec![],
                relay: None,
            },
            xid: 1,
            ciaddr: ciaddr.parse().unwrap(),
            requested_ip: requested.map(|s| s.parse().unwrap()),
            server_id: server.map(|s| s.parse().unwrap()),
            broadcast: false,
            relay_info: None,
            uuid: None,
        }
    }

    #[tokio::test]
    async fn a_naked_request_binds_nothing() {
        let s = SqliteStore::in_memory().await.unwrap();
        let p = pool();
        let now = Timestamp(0);
        // More REQUESTs for an address no client may have (rackboot's own) than the pool holds.
        for n in 0..40 {
            let out = request(
                &s,
                &p,
                &req(mac(n), Some("10.0.0.1"), None, "0.0.0.0"),
                None,
                now,
            )
            .await
            .unwrap();
            assert!(matches!(out, Outcome::Nak(_)), "{out:?}");
            assert_eq!(
                s.lease_of(mac(n)).await.unwrap(),
                None,
                "NAK bound an address"
            );
        }
        // The pool is whole: a new client is still offered an address.
        let offered = offer(&s, &p, mac(200), None, None, now).await.unwrap();
        assert_eq!(
            offered.map(|l| l.ip.to_string()).as_deref(),
            Some("10.0.0.10")
        );
    }

    #[tokio::test]
    async fn rfc2131_request_states() {
        let s = SqliteStore::in_memory().await.unwrap();
        let p = pool();
        let now = Timestamp(0);
        let offered = offer(&s, &p, mac(1), None, None, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(offered.ip.to_string(), "10.0.0.10");
        assert_eq!(offered.state, LeaseState::Offered);

        // SELECTING, for us.
        let ip = offered.ip.to_string();
        let out = request(
            &s,
            &p,
            &req(mac(1), Some(&ip), Some("10.0.0.1"), "0.0.0.0"),
            None,
            now,
        )
        .await
        .unwrap();
        assert!(
            matches!(out, Outcome::Ack(ref l) if l.ip == offered.ip && l.state == LeaseState::Bound)
        );
        // A second DISCOVER keeps the bound lease.
        assert_eq!(
            offer(&s, &p, mac(1), None, None, now)
                .await
                .unwrap()
                .unwrap()
                .state,
            LeaseState::Bound
        );
        // RENEWING: ciaddr set.
        let out = request(&s, &p, &req(mac(1), None, None, &ip), None, Timestamp(1000))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Ack(_)));
        // INIT-REBOOT with someone else's address: NAK.
        let out = request(&s, &p, &req(mac(2), Some(&ip), None, "0.0.0.0"), None, now)
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Nak(_)), "{out:?}");
        // Wrong network: NAK.
        let out = request(
            &s,
            &p,
            &req(mac(2), Some("192.168.1.5"), None, "0.0.0.0"),
            None,
            now,
        )
        .await
        .unwrap();
        assert!(matches!(out, Outcome::Nak(ref r) if r.contains("not on this network")));
        // SELECTING another server: silent, and our offer is freed.
        let o2 = offer(&s, &p, mac(3), None, None, now)
            .await
            .unwrap()
            .unwrap();
        let out = request(
            &s,
            &p,
            &req(
                mac(3),
                Some(&o2.ip.to_string()),
                Some("10.0.0.9"),
                "0.0.0.0",
            ),
            None,
            now,
        )
        .await
        .unwrap();
        assert!(matches!(out, Outcome::Silent(_)));
        assert_eq!(s.lease_of(mac(3)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_node_that_moved_subnet_is_offered_an_address_of_the_new_one() {
        let s = SqliteStore::in_memory().await.unwrap();
        let (boot, rack) = (
            pool(),
            Pool {
                subnet: "10.1.0.0/24".parse().unwrap(),
                ranges: vec![("10.1.0.10".parse().unwrap(), "10.1.0.20".parse().unwrap())],
                lease_seconds: 3600,
                server_ip: "10.0.0.1".parse().unwrap(),
            },
        );
        let now = Timestamp(0);
        let o = offer(&s, &boot, mac(1), None, None, now)
            .await
            .unwrap()
            .unwrap();
        let ip = o.ip.to_string();
        let out = request(
            &s,
            &boot,
            &req(mac(1), Some(&ip), None, "0.0.0.0"),
            None,
            now,
        )
        .await
        .unwrap();
        assert!(matches!(out, Outcome::Ack(_)), "{out:?}");
        // The same MAC behind a relay: a live lease on the boot subnet is no offer there.
        let o = offer(&s, &rack, mac(1), None, None, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.ip.to_string(), "10.1.0.10");
    }

    /// The answer to mac 1 REQUESTing `asked` (SELECTING: no ciaddr) while
    /// its record fixes `fixed`.
    async fn selecting(s: &SqliteStore, p: &Pool, asked: &str, fixed: Ipv4Addr) -> Outcome {
        let r = req(mac(1), Some(asked), None, "0.0.0.0");
        request(s, p, &r, Some(fixed), Timestamp(0)).await.unwrap()
    }

    #[tokio::test]
    async fn fixed_address_wins_and_other_addresses_are_refused() {
        let s = SqliteStore::in_memory().await.unwrap();
        let p = pool();
        let fixed: Ipv4Addr = "10.0.0.200".parse().unwrap();
        let o = offer(&s, &p, mac(1), Some(fixed), None, Timestamp(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            o.ip, fixed,
            "a fixed address may lie outside the dynamic range"
        );
        let out = selecting(&s, &p, "10.0.0.10", fixed).await;
        assert!(matches!(out, Outcome::Nak(_)));
        let out = selecting(&s, &p, "10.0.0.200", fixed).await;
        assert!(matches!(out, Outcome::Ack(ref l) if l.ip == fixed));
    }
}
