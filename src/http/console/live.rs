//! What makes the console live: the nodes that changed
//! ([`crate::control::watch::NodeWatch`], fed by the store's change feed),
//! told to each open page as server-sent events. Each open page holds one
//! `GET /console/stream`: the fleet page hears `fleet` at most once a
//! second while anything changes (a rack powering on changes hundreds of
//! records a second; the page fetches its rows again, not each change), a
//! node page hears `node` when its node changed. The page then fetches the
//! part it shows again (`console.js`), so what it shows is always read
//! from the store, never pieced together from events.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;

use crate::control::watch::NodeWatch;
use crate::model::Mac;
/// The least time between two events to one page.
const COALESCE: Duration = Duration::from_millis(750);
/// A stream ends after this; the browser's EventSource opens a new one
/// (so a page left open does not hold a connection through a restart of
/// the session's rules, and shutdown waits for no stream for long).
const STREAM_LIFE: Duration = Duration::from_secs(300);

/// What one page follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Every node (the fleet page).
    Fleet,
    /// One node (its page).
    Node(Mac),
}

impl Follow {
    fn cares(self, mac: Mac) -> bool {
        match self {
            Follow::Fleet => true,
            Follow::Node(m) => m == mac,
        }
    }

    fn event(self) -> Event {
        match self {
            // Not empty: a browser drops an event without data.
            Follow::Fleet => Event::default().event("fleet").data("changed"),
            Follow::Node(mac) => Event::default().event("node").data(mac.to_string()),
        }
    }
}

struct Listening {
    rx: broadcast::Receiver<Mac>,
    follow: Follow,
    ends: Instant,
    last: Option<Instant>,
}

impl Listening {
    /// Waits for a change the page cares about, then for the rest of the
    /// coalescing interval, taking every change that came meanwhile.
    /// `None` when the stream's life is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let got = tokio::time::timeout_at(self.ends, self.rx.recv()).await;
            match got {
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Ok(mac)) if self.follow.cares(mac) => break,
                Ok(Ok(_)) => {}
            }
        }
        if let Some(last) = self.last {
            tokio::time::sleep_until((last + COALESCE).min(self.ends)).await;
        }
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = self.rx.try_recv() {}
        self.last = Some(Instant::now());
        Some(self.follow.event())
    }
}

/// The event stream of a page that follows `follow`. A page slow to take
/// the changes is told "something changed" (it fetches again anyway).
pub fn stream(
    nodes: &NodeWatch,
    follow: Follow,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let listening = Listening {
        rx: nodes.watch(),
        follow,
        ends: Instant::now() + STREAM_LIFE,
        last: None,
    };
    let stream = futures_util::stream::unfold(listening, |mut l| async move {
        let event = l.next().await?;
        Some((Ok(event), l))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    fn listening(nodes: &NodeWatch, follow: Follow, life: Duration) -> Listening {
        Listening {
            rx: nodes.watch(),
            follow,
            ends: Instant::now() + life,
            last: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_hears_what_it_follows_once_per_burst() {
        let hub = NodeWatch::default();
        let mut fleet = listening(&hub, Follow::Fleet, STREAM_LIFE);
        let mut one = listening(&hub, Follow::Node(mac(2)), STREAM_LIFE);
        hub.tell(mac(1));
        assert!(fleet.next().await.is_some());
        // A burst after that: one event, after the interval.
        for n in 0..50 {
            hub.tell(mac(n));
        }
        let before = Instant::now();
        assert!(fleet.next().await.is_some());
        assert!(Instant::now() - before >= COALESCE);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), fleet.next())
                .await
                .is_err(),
            "the burst was one event"
        );
        // The node page heard only its node, in the burst.
        assert_eq!(
            one.next().await.map(|e| format!("{e:?}").contains("node")),
            Some(true)
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(5), one.next())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_after_its_life() {
        let hub = NodeWatch::default();
        let mut l = listening(&hub, Follow::Fleet, Duration::from_secs(1));
        assert!(l.next().await.is_none());
    }
}
