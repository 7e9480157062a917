//! Two appliances (`rackboot serve`, each in its own lab) on one PostgreSQL database, started
//! by the test in a throwaway cluster: what one is told, the other knows within a second; one
//! runs the jobs that run once and the other takes over when it is killed; when the database
//! goes away both say so (`/healthz`, `/metrics`) and refuse changes, and when it comes back
//! they recover by themselves with nothing lost.
//!
//! Needs root (namespaces) and PostgreSQL's server binaries (setup.sh installs them). Every
//! wait is bounded; the appliances end by PID with their labs, the cluster when dropped.

mod common;

use std::time::Duration;

use common::api::ADMIN_TOKEN;
use common::lab::poll_until;
use common::server::Server;
use common::setup::Setup;
use rackboot::store::postgres::scratch::ScratchCluster;
use serde_json::Value;

/// An appliance called `name` on the database at `url`.
fn appliance(lab: &str, name: &str, url: &str) -> Server {
    Setup::new(lab)
        .standard_files()
        .table(
            "store",
            &format!("engine = \"postgres\"\nurl = \"{url}\"\nappliance = \"{name}\"\n"),
        )
        .start()
}

fn health(rb: &Server) -> (u16, Value) {
    let r = rb.request("GET", "/healthz", None, None);
    (r.status, r.json())
}

/// The node's record as the appliance lists it (from memory: a node's
/// timeline, which `/api/v1/nodes/{mac}` adds, is read from the database).
fn node_on(rb: &Server, mac: &str) -> Option<Value> {
    let r = rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()?
        .iter()
        .find(|n| n["mac"] == mac)
        .cloned()
}

#[test]
fn two_appliances_share_one_database_and_survive_losing_it_and_each_other() {
    let pg = ScratchCluster::start().expect("a scratch PostgreSQL");
    pg.create_database("rackboot").expect("a database");
    let url = pg.url("rackboot");
    let a = appliance("pg-a", "row-a", &url);
    let b = appliance("pg-b", "row-b", &url);

    for rb in [&a, &b] {
        let (status, h) = health(rb);
        assert_eq!(status, 200, "{h}");
        assert_eq!(h["store"]["engine"], "postgres", "{h}");
        assert_eq!(h["store"]["reachable"], true, "{h}");
    }
    // Exactly one runs the jobs that run once.
    let leader = poll_until(Duration::from_secs(10), || {
        let leads = [&a, &b].map(|rb| health(rb).1["leads"] == true);
        match leads {
            [true, false] => Some('a'),
            [false, true] => Some('b'),
            _ => None,
        }
    })
    .expect("one appliance (and only one) leads");

    // Made through one, seen through the other.
    let mac = "52:54:00:7a:00:01";
    let r = a.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(&format!(r#"{{"mac": "{mac}", "hostname": "builder01"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let seen = poll_until(Duration::from_secs(1), || node_on(&b, mac));
    assert_eq!(
        seen.expect("b sees a's node within a second")["hostname"],
        "builder01"
    );

    // A reconfigure sent to b moves the node's config generation, which a sees.
    let r = b.request(
        "POST",
        "/api/v1/reconfigure",
        Some(ADMIN_TOKEN),
        Some(&format!(r#"{{"macs": ["{mac}"]}}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let moved = poll_until(Duration::from_secs(1), || {
        node_on(&a, mac).filter(|n| n["config_generation"] == 1)
    });
    assert!(
        moved.is_some(),
        "a did not see b's reconfigure within a second"
    );

    // The database goes away: both say so and refuse changes; reads go on.
    pg.stop();
    for rb in [&a, &b] {
        let degraded = poll_until(Duration::from_secs(10), || {
            let (status, h) = health(rb);
            (status == 503).then_some(h)
        });
        let h = degraded.expect("/healthz says 503 while the database is away");
        assert_eq!(h["status"], "degraded", "{h}");
        let metrics = rb.request("GET", "/metrics", None, None).text();
        assert!(
            metrics.lines().any(|l| l == "rackboot_store_reachable 0"),
            "{metrics}"
        );
        assert!(node_on(rb, mac).is_some(), "reads go on from memory");
    }
    let r = b.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(r#"{"mac": "52:54:00:7a:00:02"}"#),
    );
    assert_eq!(r.status, 503, "{}", r.text());

    // It comes back: both recover by themselves, nothing lost.
    pg.restart().expect("the database starts again");
    for rb in [&a, &b] {
        let back = poll_until(Duration::from_secs(20), || {
            (health(rb).0 == 200).then_some(())
        });
        assert!(back.is_some(), "/healthz back to 200 once the database is");
        assert_eq!(node_on(rb, mac).expect("kept")["config_generation"], 1);
    }
    let r = b.request(
        "POST",
        "/api/v1/nodes",
        Some(ADMIN_TOKEN),
        Some(r#"{"mac": "52:54:00:7a:00:02"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // The leader is killed: the other takes over the jobs.
    let (gone, other) = if leader == 'a' { (&a, &b) } else { (&b, &a) };
    gone.kill();
    let took = poll_until(Duration::from_secs(10), || {
        (health(other).1["leads"] == true).then_some(())
    });
    assert!(took.is_some(), "the survivor did not take the lead");
    assert!(node_on(other, "52:54:00:7a:00:02").is_some());
}
