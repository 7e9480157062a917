//! Which appliance runs the jobs that must run once: the one holding a
//! PostgreSQL advisory lock on a connection of its own. The lock lives as
//! long as that connection: when the appliance dies (or loses the
//! database), PostgreSQL lets the lock go, and another appliance takes it on
//! its next try, within [`TRY_EVERY`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::rows::describe;
use super::tls::Connector;
use super::writer::connect;

/// How often a follower tries to take the lead, and the leader checks it
/// still holds it.
pub(super) const TRY_EVERY: Duration = Duration::from_secs(2);

/// The advisory lock's key: any number, the same in every rackboot.
const KEY: i64 = 7_365_824;

/// Runs until `stop`, keeping `leading` true exactly while this appliance
/// holds the lock.
pub(super) async fn run(
    config: Connector,
    appliance: String,
    leading: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut held: Option<Client> = None;
    loop {
        let holds = match held.take() {
            // Still ours while the connection answers.
            Some(client) => match client.simple_query("SELECT 1").await {
                Ok(_) => {
                    held = Some(client);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %describe(&e), %appliance, "store: lost the lead (its connection failed)");
                    false
                }
            },
            None => match try_lead(&config, &stop).await {
                Some(client) => {
                    tracing::info!(%appliance, "store: this appliance leads (runs the jobs that run once)");
                    held = Some(client);
                    true
                }
                None => false,
            },
        };
        leading.store(holds, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => {
                leading.store(false, Ordering::Relaxed);
                return;
            }
            _ = tokio::time::sleep(TRY_EVERY) => {}
        }
    }
}

/// A connection holding the lock, or `None` when another appliance holds it
/// (or the database cannot be reached).
async fn try_lead(config: &Connector, stop: &CancellationToken) -> Option<Client> {
    let client = connect(config, stop).await.ok()?;
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&KEY])
        .await
        .ok()?;
    row.get::<_, bool>(0).then_some(client)
}
