//! Rollouts as tests drive and watch them: started through `rackboot rollout start --json`,
//! read through `GET /api/v1/rollouts/<id>`, polled (bounded) while counting the nodes in flight,
//! and each node's timeline reduced to the steps a rollout takes.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::{Server, cli_json};

/// How often [`watch`] reads the rollout.
const POLL: Duration = Duration::from_millis(200);

/// `rackboot rollout start --json <args>`, which must succeed; the rollout's id.
pub fn start(rb: &Server, args: &[&str]) -> String {
    let mut all = vec!["rollout", "start", "--json"];
    all.extend_from_slice(args);
    let (code, out) = rb.cli(&all);
    assert_eq!(code, Some(0), "{out}");
    cli_json(&out)["id"].as_str().unwrap().to_string()
}

/// `GET /api/v1/rollouts/<id>`, which must exist.
pub fn rollout(rb: &Server, id: &str) -> Value {
    let r = rb.get(&format!("/api/v1/rollouts/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Each node's phase, by MAC.
pub fn phases(r: &Value) -> HashMap<String, String> {
    r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["mac"].as_str().unwrap().to_string(),
                n["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// How many of its nodes the rollout has out of service.
pub fn in_flight(r: &Value) -> usize {
    phases(r)
        .values()
        .filter(|p| {
            matches!(
                p.as_str(),
                "draining" | "rebooting" | "installing" | "undraining"
            )
        })
        .count()
}

/// Polls the rollout until `done(r)`, at most `within`; the most nodes seen in flight at once.
/// On a timeout it panics with the rollout and `diagnosis()`.
pub fn watch(
    rb: &Server,
    id: &str,
    within: Duration,
    diagnosis: impl Fn() -> String,
    mut done: impl FnMut(&Value) -> bool,
) -> (Value, usize) {
    let start = Instant::now();
    let mut most = 0;
    loop {
        let r = rollout(rb, id);
        most = most.max(in_flight(&r));
        if done(&r) {
            return (r, most);
        }
        assert!(
            start.elapsed() < within,
            "rollout {id} not as awaited within {within:?}: {r:#}\n{}",
            diagnosis()
        );
        std::thread::sleep(POLL);
    }
}

/// The node's timeline as `kind: detail` lines, oldest first: the rollout's own events, power
/// actions, the installer's callback and bootenv changes.
pub fn steps(rb: &Server, mac: &str) -> Vec<String> {
    rb.events(mac)
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "rollout" | "power" | "report.installed" | "bootenv.changed"
            )
        })
        .map(|(k, d)| format!("{k}: {d}"))
        .collect()
}

/// `needles` appear in `lines` in this order (each in a later line than the one before).
pub fn in_order(lines: &[String], needles: &[&str]) {
    let mut at = 0;
    for n in needles {
        match lines[at..].iter().position(|l| l.contains(n)) {
            Some(i) => at += i + 1,
            None => panic!("{n:?} not found after line {at} of:\n{}", lines.join("\n")),
        }
    }
}
