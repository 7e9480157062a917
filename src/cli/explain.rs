//! `rackboot explain` and `rackboot events`: what a client would be handed
//! and why, and where a node's boot got to.

use serde_json::Value;

use super::client::{Client, cell, print_json, query_value};
use crate::routes::api;

pub fn explain(
    client: &Client,
    mac: &str,
    arch: Option<&str>,
    user_class: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let mut q = Vec::new();
    if let Some(a) = arch {
        q.push(format!("arch={}", query_value(a)));
    }
    if let Some(u) = user_class {
        q.push(format!("user_class={}", query_value(u)));
    }
    let path = if q.is_empty() {
        api::explain(mac)
    } else {
        format!("{}?{}", api::explain(mac), q.join("&"))
    };
    let e = client.get(&path)?;
    if json {
        print_json(&e);
        return Ok(());
    }
    println!(
        "{} ({}), option 93 {}: {} {}",
        cell(&e["mac"]),
        if e["known"] == true {
            "known"
        } else {
            "unknown"
        },
        cell(&e["client_arch"]),
        cell(&e["decision"]),
        e["boot_file"].as_str().unwrap_or_default()
    );
    println!(
        "bootenv: {} ({})",
        cell(&e["bootenv"]),
        cell(&e["bootenv_reason"])
    );
    println!("why:");
    for w in e["why"].as_array().into_iter().flatten() {
        println!("  - {}", cell(w));
    }
    let scripts = e["config_scripts"].as_array().cloned().unwrap_or_default();
    if !scripts.is_empty() {
        println!("config scripts, once booted:");
        for s in &scripts {
            println!("  {}  ({})", cell(&s["script"]), cell(&s["reason"]));
        }
    }
    if let Some(s) = e["script"].as_str() {
        println!("\niPXE script:\n{s}");
    }
    if let Some(s) = e["grub_config"].as_str() {
        println!(
            "\nGRUB config (grub/grub.cfg-{}, by TFTP):\n{s}",
            cell(&e["mac"])
        );
    }
    if let Some(err) = e["script_error"].as_str() {
        println!("\nthe script does not render: {err}");
    }
    Ok(())
}

pub fn events(client: &Client, mac: &str, json: bool) -> anyhow::Result<()> {
    let events = client.get(&api::node_events(mac))?;
    if json {
        print_json(&events);
    } else {
        print_events(&events);
    }
    Ok(())
}

/// A timeline, oldest first: time, kind, the appliance that recorded it
/// (in brackets, where several share a store), the first line of the detail
/// (the rest indented: a failed script's output tail).
pub fn print_events(events: &Value) {
    for e in events.as_array().into_iter().flatten() {
        let detail = e["detail"].as_str().unwrap_or_default();
        let mut lines = detail.lines();
        let by = e["appliance"]
            .as_str()
            .map(|a| format!("[{a}] "))
            .unwrap_or_default();
        println!(
            "{}  {:<18} {by}{}",
            cell(&e["at"]),
            cell(&e["kind"]),
            lines.next().unwrap_or_default()
        );
        for l in lines {
            println!("{:>44}{l}", "");
        }
    }
}
