//! Creating node records the first time a MAC shows up.

use crate::model::{Mac, Node, Timestamp};
use crate::store::{Store, StoreError};

/// The node record of `mac`, created in state `discovered` with
/// `default_bootenv` when the MAC is new. Returns whether it was created.
pub async fn ensure(
    store: &dyn Store,
    mac: Mac,
    default_bootenv: &str,
    now: Timestamp,
) -> Result<(Node, bool), StoreError> {
    if let Some(node) = store.node(mac).await? {
        return Ok((node, false));
    }
    store
        .create_node_if_absent(Node::discovered(mac, default_bootenv, new_token(), now))
        .await
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
        let (n, created) = ensure(&s, mac, "discovery", Timestamp(1)).await.unwrap();
        assert!(created);
        assert_eq!(n.state, crate::model::NodeState::Discovered);
        assert_eq!(n.bootenv, "discovery");
        assert_eq!(n.token.len(), 32);
        let (again, created) = ensure(&s, mac, "other", Timestamp(2)).await.unwrap();
        assert!(!created);
        assert_eq!(again.token, n.token);
        assert_ne!(new_token(), new_token());
    }
}
