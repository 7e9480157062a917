//! Which nodes changed, for whoever watches them live (the console's open
//! pages): a subscriber to the store's change feed that passes on the MAC
//! of every node whose record or timeline changed. It only sends on a
//! broadcast channel (never waits, never calls the store), as a feed
//! subscriber must; what a watcher shows it reads again from the store.

use tokio::sync::broadcast;

use crate::model::Mac;
use crate::store::{Change, Subscriber};

/// Changes held for a watcher that is slow to take them; past this it
/// hears that it lagged (and should read everything again).
const BACKLOG: usize = 1024;

/// The MACs whose record or timeline changed, as they change.
pub struct NodeWatch {
    tx: broadcast::Sender<Mac>,
}

impl Default for NodeWatch {
    fn default() -> NodeWatch {
        NodeWatch {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl NodeWatch {
    /// Every change from now on.
    pub fn watch(&self) -> broadcast::Receiver<Mac> {
        self.tx.subscribe()
    }

    /// Tells every watcher that `mac` changed.
    pub fn tell(&self, mac: Mac) {
        // Nobody watching: the send would fail, and costs a lock.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(mac);
        }
    }
}

impl Subscriber for NodeWatch {
    fn changed(&self, change: &Change<'_>) {
        match *change {
            Change::Node(n) => self.tell(n.mac),
            Change::NodeGone(mac) | Change::Event(mac, _) => self.tell(mac),
            Change::ConfigBumped(macs) => macs.iter().for_each(|mac| self.tell(*mac)),
            Change::Lease(_) | Change::LeaseGone(_) | Change::Loaded => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    #[test]
    fn record_timeline_and_config_changes_are_told_and_leases_are_not() {
        let (a, b): (Mac, Mac) = (
            "52:54:00:00:00:01".parse().unwrap(),
            "52:54:00:00:00:02".parse().unwrap(),
        );
        let watch = NodeWatch::default();
        watch.changed(&Change::Event(a, Timestamp(0)));
        let mut rx = watch.watch();
        watch.changed(&Change::Event(a, Timestamp(0)));
        watch.changed(&Change::NodeGone(b));
        watch.changed(&Change::Loaded);
        watch.changed(&Change::ConfigBumped(&[b, a]));
        let mut heard = Vec::new();
        while let Ok(mac) = rx.try_recv() {
            heard.push(mac);
        }
        assert_eq!(heard, vec![a, b, b, a]);
    }
}
