//! Creating node records the first time a MAC shows up.

use crate::config::HostnameScheme;
use crate::model::{Mac, Node, Timestamp};
use crate::store::{Store, StoreError};

/// The node record of `mac`, created in state `discovered` with
/// `default_bootenv` and a hostname by `hostnames` when the MAC is new.
/// Returns whether it was created.
pub async fn ensure(
    store: &dyn Store,
    mac: Mac,
    default_bootenv: &str,
    hostnames: HostnameScheme,
    now: Timestamp,
) -> Result<(Node, bool), StoreError> {
    if let Some(node) = store.node(mac).await? {
        return Ok((node, false));
    }
    // A random name may be taken (one in 2^32 per node): draw again.
    let mut attempt = 0;
    loop {
        let mut node = Node::discovered(mac, default_bootenv, new_token(), now);
        node.hostname = default_hostname(mac, hostnames);
        match store.create_node_if_absent(node).await {
            Err(StoreError::Conflict(_)) if hostnames == HostnameScheme::Random && attempt < 3 => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The hostname a record made by rackboot gets (`[nodes] default_hostname`).
pub fn default_hostname(mac: Mac, scheme: HostnameScheme) -> String {
    match scheme {
        HostnameScheme::Mac => mac.default_hostname(),
        HostnameScheme::Random => format!("node-{}", &new_token()[..8]),
    }
}

/// A node token: 128 random bits, hex. It authenticates the node's own
/// requests, so it must not be guessable from the MAC or the time.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // The OS RNG failing means the machine is unusable; there is no safe fallback.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn a_new_mac_gets_a_discovered_record_once() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mac: Mac = "52:54:00:00:00:07".parse().unwrap();
        let (n, created) = ensure(&s, mac, "discovery", HostnameScheme::Mac, Timestamp(1))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(n.state, crate::model::NodeState::Discovered);
        assert_eq!(n.bootenv, "discovery");
        assert_eq!(n.token.len(), 32);
        let (again, created) = ensure(&s, mac, "other", HostnameScheme::Random, Timestamp(2))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again.token, n.token);
        assert_ne!(new_token(), new_token());
    }

    #[tokio::test]
    async fn a_random_default_hostname_does_not_carry_the_mac() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        assert_eq!(
            n_host(&s, mac, HostnameScheme::Mac).await,
            "node-525400abcd01"
        );
        let other: Mac = "52:54:00:ab:cd:02".parse().unwrap();
        let h = n_host(&s, other, HostnameScheme::Random).await;
        assert!(h.starts_with("node-") && h.len() == 13, "{h}");
        assert!(!h.contains("abcd02") && !h.contains("525400"), "{h}");
    }

    async fn n_host(s: &SqliteStore, mac: Mac, scheme: HostnameScheme) -> String {
        ensure(s, mac, "discovery", scheme, Timestamp(1))
            .await
            .unwrap()
            .0
            .hostname
    }
}
