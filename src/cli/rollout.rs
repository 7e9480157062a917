//! `rackboot rollout start|list|status|pause|resume|abort`: reinstalling a
//! fleet through the API (`/api/v1/rollouts`).

use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::client::{Client, cell, flag, print_json, print_rows};
use crate::routes::api;

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Take a bootenv across the nodes a selector names, a few at a time:
    /// drain, set the bootenv, power-cycle into PXE, wait for `installed`
    /// or `configured`, undrain. Canaries go first, alone.
    Start {
        #[arg(long, short)]
        selector: String,
        #[arg(long)]
        bootenv: String,
        /// Boot the bootenv for this long (e.g. 4h) instead of once.
        #[arg(long = "for", value_name = "DURATION")]
        r#for: Option<String>,
        /// Nodes that go first, alone; the rest wait for their success.
        #[arg(long, default_value_t = 0)]
        canary: u32,
        /// Nodes out of service at once: a count (2) or a share (10%),
        /// counting nodes of the fleet already failed or unreachable.
        #[arg(long, value_name = "N|P%")]
        max_unavailable: String,
        /// Failed nodes at which the rollout pauses itself.
        #[arg(long, default_value_t = 1)]
        max_failed: u32,
        /// A hook named in [rollout.hooks] of the configuration, or an
        /// http(s) URL that is POSTed the node.
        #[arg(long, value_name = "HOOK|URL")]
        drain: Option<String>,
        #[arg(long, value_name = "HOOK|URL")]
        undrain: Option<String>,
        /// How long a hook may run (default 30m).
        #[arg(long, value_name = "DURATION")]
        hook_timeout: Option<String>,
        /// How long a node may take from its reboot to `installed` or
        /// `configured` before it is reverted (default 3h).
        #[arg(long, value_name = "DURATION")]
        deadline: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every rollout, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One rollout: its state, and where each node is.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// No node starts; nodes in flight finish their step.
    Pause { id: String },
    /// Go on; failures are counted afresh, failed canaries go again first.
    Resume { id: String },
    /// Stop for good; every node stays where it is.
    Abort { id: String },
}

pub fn run(client: &Client, cmd: RolloutCommand) -> anyhow::Result<()> {
    match cmd {
        RolloutCommand::Start {
            selector,
            bootenv,
            r#for,
            canary,
            max_unavailable,
            max_failed,
            drain,
            undrain,
            hook_timeout,
            deadline,
            json,
        } => {
            let mut body = Map::new();
            body.insert("selector".into(), json!(selector));
            body.insert("bootenv".into(), json!(bootenv));
            body.insert("canary".into(), json!(canary));
            body.insert("max_unavailable".into(), json!(max_unavailable));
            body.insert("max_failed".into(), json!(max_failed));
            for (k, v) in [
                ("for", r#for),
                ("drain", drain),
                ("undrain", undrain),
                ("hook_timeout", hook_timeout),
                ("deadline", deadline),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            let r = client.post(api::ROLLOUTS, &Value::Object(body))?;
            if json {
                print_json(&r);
            } else {
                print_rollout(&r);
            }
        }
        RolloutCommand::List { json } => {
            let all = client.get(api::ROLLOUTS)?;
            if json {
                print_json(&all);
            } else {
                let headers = ["ID", "STATE", "SELECTOR", "BOOTENV", "NODES", "CREATED"];
                print_rows(&headers, &all, |r| {
                    let (spec, created) = (&r["spec"], cell(&r["created"]));
                    let (selector, bootenv) = (cell(&spec["selector"]), cell(&spec["bootenv"]));
                    vec![
                        cell(&r["id"]),
                        cell(&r["state"]),
                        selector,
                        bootenv,
                        progress(r),
                        created,
                    ]
                });
            }
        }
        RolloutCommand::Status { id, json } => {
            let r = client.get(&api::rollout(&id))?;
            if json {
                print_json(&r);
            } else {
                print_rollout(&r);
            }
        }
        RolloutCommand::Pause { id } => steer(client, &id, "pause")?,
        RolloutCommand::Resume { id } => steer(client, &id, "resume")?,
        RolloutCommand::Abort { id } => steer(client, &id, "abort")?,
    }
    Ok(())
}

fn steer(client: &Client, id: &str, action: &str) -> anyhow::Result<()> {
    let r = client.post(&format!("{}/{action}", api::rollout(id)), &json!({}))?;
    print_rollout(&r);
    Ok(())
}

/// `3 done, 1 in flight, 0 failed, 1 skipped of 5`.
fn progress(r: &Value) -> String {
    let nodes = r["nodes"].as_array().cloned().unwrap_or_default();
    let count = |f: &dyn Fn(&str) -> bool| {
        nodes
            .iter()
            .filter(|n| f(n["phase"].as_str().unwrap_or("")))
            .count()
    };
    format!(
        "{} done, {} in flight, {} failed, {} skipped of {}",
        count(&|p| p == "done"),
        count(&|p| matches!(p, "draining" | "rebooting" | "installing" | "undraining")),
        count(&|p| p == "failed"),
        count(&|p| p == "skipped"),
        nodes.len()
    )
}

fn print_rollout(r: &Value) {
    let state = match r["reason"].as_str() {
        Some(why) => format!("{} ({why})", cell(&r["state"])),
        None => cell(&r["state"]),
    };
    println!("{:<16}{}", "rollout:", cell(&r["id"]));
    println!("{:<16}{state}", "state:");
    println!(
        "{:<16}{} -> {} (max unavailable {}, canaries {}, max failed {})",
        "what:",
        cell(&r["spec"]["selector"]),
        cell(&r["spec"]["bootenv"]),
        budget(&r["spec"]["max_unavailable"]),
        cell(&r["spec"]["canary"]),
        cell(&r["spec"]["max_failed"]),
    );
    println!("{:<16}{}", "nodes:", progress(r));
    if let Some(why) = r["waiting"].as_str() {
        println!("{:<16}{why}", "waiting:");
    }
    println!("{:<16}{}", "started by:", cell(&r["actor"]));
    println!();
    print_rows(&["MAC", "HOSTNAME", "", "PHASE", "WHY"], &r["nodes"], |n| {
        let (mac, hostname) = (cell(&n["mac"]), cell(&n["hostname"]));
        let why = n["reason"].as_str().unwrap_or("").to_string();
        vec![
            mac,
            hostname,
            flag(&n["canary"], "canary", ""),
            cell(&n["phase"]),
            why,
        ]
    });
}

/// `{"percent": 10}` as `10%`, `{"nodes": 2}` as `2`.
fn budget(v: &Value) -> String {
    if let Some(p) = v["percent"].as_u64() {
        format!("{p}%")
    } else {
        cell(&v["nodes"])
    }
}
