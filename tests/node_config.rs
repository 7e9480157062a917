//! The configure side of a node over real HTTP: node identity on every node endpoint, the
//! cloud-init NoCloud documents and installer answer files, label-selected scripts, the
//! reconfigure trigger with the agent's long poll, and stored script reports.
//!
//! Each test runs the real `rackboot serve` in a fresh [`Lab`] namespace with files in a temp
//! dir, and talks to it with `curl` from inside the namespace. Node records with labels are
//! written into the store before rackboot starts (the store is a file; rackboot owns it once
//! running). Needs root and curl. Every wait is bounded; processes end by PID on drop.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::lab::{SERVER_IP, poll_until, tail};
use common::server::{Server, token_in};
use common::setup::{LAB_CIDR, Setup, lab_range};
use rackboot::model::{Node, Timestamp};
use serde_json::Value;

const CMDLINE: &str = "rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }} ds=nocloud;s={{ nocloud_url }}";

/// A node written into the store before rackboot starts: labelled, with a known token.
const BUILDER: &str = "52:54:00:20:00:01";
const BUILDER_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// rackboot serving HTTP only, with a bootenv, two scripts (one selected by labels), cloud-init
/// and answer file templates, and [`BUILDER`] in its store. This curl acts for many nodes from
/// rackboot's own address: the documented opt-out of binding node credentials to node
/// addresses.
fn start(name: &str) -> Server {
    let rb = Setup::new(name)
        .no_address()
        .subnet(LAB_CIDR, &lab_range(100, 199))
        .tokens_from_any_address()
        .dir("cloud_init_dir", "cloud-init")
        .dir("answers_dir", "answers")
        .file("assets/x86_64/vmlinuz", "k")
        .file("assets/x86_64/initrd.img", "i")
        .file(
            "bootenvs/discovery.toml",
            format!(
                "scripts = [\"10-hello.sh\"]\n[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\n\
                 initrds = [\"x86_64/initrd.img\"]\ncmdline = \"{CMDLINE}\"\n"
            ),
        )
        .file(
            "scripts/10-hello.sh",
            "#!/bin/sh\necho hello {{ node.hostname }}\n",
        )
        .file(
            "scripts/20-builder.sh",
            "#!/bin/sh\n# rackboot-selector: role=builder\necho builder {{ node.labels.role }} {{ node.labels.rack | default('-') }}\n",
        )
        .file(
            "cloud-init/user-data",
            "#cloud-config\nhostname: {{ node.hostname }}\nrackboot_mac: {{ node.mac }}\n",
        )
        .file(
            "answers/kickstart.cfg",
            "%post\ncurl -X POST -H \"Authorization: Bearer {{ node.token }}\" {{ callback_url }}\n%end\n",
        )
        .prepare();
    // The labelled node, with a known token.
    let mut n = Node::discovered(
        BUILDER.parse().expect("mac"),
        "discovery",
        BUILDER_TOKEN.into(),
        Timestamp::now(),
    );
    n.labels.insert("role".into(), "builder".into());
    n.labels.insert("rack".into(), "r12".into());
    n.arch = Some(rackboot::model::BootArch::X86_64Efi);
    rb.seed_nodes(vec![n]);
    rb.serve();
    rb
}

/// curl `http://10.77.0.1<path>` with `token` as bearer, if given: status and body.
fn get(rb: &Server, token: Option<&str>, path: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let args: Vec<&str> = auth.iter().flat_map(|a| ["-H", a.as_str()]).collect();
    let r = rb.http(&args, path);
    (r.status, r.text())
}

/// `POST` of `body` to `http://10.77.0.1<path>` with `token` as bearer, if given.
fn post(rb: &Server, token: Option<&str>, path: &str, body: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-X", "POST", "--data-binary", body];
    args.extend(auth.iter().flat_map(|a| ["-H", a.as_str()]));
    let r = rb.http(&args, path);
    (r.status, r.text())
}

fn json(rb: &Server, path: &str) -> Value {
    let (status, body) = get(rb, None, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[test]
fn every_node_endpoint_takes_only_the_nodes_own_token() {
    let rb = start("cfg-token");
    let (a, b) = ("52:54:00:20:01:0a", "52:54:00:20:01:0b");
    let (ta, tb) = (rb.boot(a, "x86_64_efi"), rb.boot(b, "x86_64_efi"));
    assert_ne!(ta, tb);

    // Endpoints with the token in a header: without it 401, with B's 403, with A's 2xx.
    let header_endpoints: [(&str, String, u16); 5] = [
        ("GET", format!("/node/{a}/scripts"), 200),
        ("GET", format!("/node/{a}/scripts/10-hello.sh"), 200),
        ("GET", format!("/node/{a}/wait"), 200),
        (
            "POST",
            format!("/node/{a}/report?state=script&script=10-hello.sh&status=0&duration_ms=12"),
            204,
        ),
        ("POST", format!("/node/{a}/report?state=booted"), 204),
    ];
    for (method, path, ok) in &header_endpoints {
        let call = |t: Option<&str>| match *method {
            "GET" => get(&rb, t, path),
            _ => post(&rb, t, path, "out"),
        };
        let (status, body) = call(None);
        assert_eq!(status, 401, "{method} {path} without a token: {body}");
        let (status, body) = call(Some(&tb));
        assert_eq!(status, 403, "{method} {path} with B's token: {body}");
        assert!(!body.contains(&ta), "a refusal must not reveal the token");
        let (status, body) = call(Some("0000"));
        assert_eq!(status, 403, "{method} {path} with a made-up token: {body}");
        let (status, body) = call(Some(&ta));
        assert_eq!(status, *ok, "{method} {path} with A's token: {body}");
    }
    // B's token did not report for A: only A's own report is stored.
    let reports = json(&rb, &format!("/api/v1/nodes/{a}/reports"));
    assert_eq!(
        reports["reports"].as_array().map(Vec::len),
        Some(1),
        "{reports}"
    );
    assert_eq!(
        json(&rb, &format!("/api/v1/nodes/{b}/reports"))["reports"],
        serde_json::json!([])
    );

    // The install callback: B's token cannot finish A's install.
    let (status, _) = post(&rb, Some(&tb), &format!("/node/{a}/installed"), "");
    assert_eq!(status, 403);
    assert_eq!(json(&rb, &format!("/api/v1/nodes/{a}"))["state"], "booted");

    // Endpoints with the token in the URL (cloud-init, installers send no headers).
    for doc in [
        format!("cloud-init/{a}/{{}}/meta-data"),
        format!("cloud-init/{a}/{{}}/user-data"),
        format!("cloud-init/{a}/{{}}/vendor-data"),
        format!("answers/{a}/{{}}/kickstart.cfg"),
    ] {
        let with = |t: &str| format!("/{}", doc.replace("{}", t));
        let (status, body) = get(&rb, None, &with(&tb));
        assert_eq!(status, 403, "{doc} with B's token: {body}");
        let (status, body) = get(&rb, None, &with("not-the-token"));
        assert_eq!(status, 403, "{doc} with a made-up token: {body}");
        // A's own token on A's URL: nothing of B's comes out of it.
        let (status, body) = get(&rb, None, &with(&ta));
        assert_eq!(status, 200, "{doc} with A's token: {body}");
        assert!(!body.contains(b), "{doc}: {body}");
    }
    let (status, _) = get(
        &rb,
        None,
        &format!("/cloud-init/52:54:00:20:01:ff/{ta}/meta-data"),
    );
    assert_eq!(status, 404, "unknown MAC");
    let (status, _) = get(&rb, None, &format!("/node/{a}/wait?generation=x"));
    assert_eq!(status, 401, "the token is checked before anything else");
    let (status, _) = get(&rb, Some(&ta), &format!("/node/{a}/wait?generation=x"));
    assert_eq!(status, 400);
    rb.assert_running();
}

#[test]
fn cloud_init_and_answer_files_are_rendered_for_that_mac_only() {
    let rb = start("cfg-seed");
    let (a, b) = ("52:54:00:20:02:0a", "52:54:00:20:02:0b");
    let (ta, tb) = (rb.boot(a, "x86_64_efi"), rb.boot(b, "x86_64_efi"));
    // The boot script hands the node its seed URL with that boot's token.
    let (_, script) = get(&rb, None, &format!("/boot/{a}.ipxe?arch=x86_64_efi"));
    let next = token_in(&script);
    assert_ne!(next, ta, "each boot script carries a new token");
    assert!(
        script.contains(&format!(
            "ds=nocloud;s=http://{SERVER_IP}/cloud-init/{a}/{next}/"
        )),
        "{script}"
    );

    for (mac, token, hex) in [(a, &ta, "52540020020a"), (b, &tb, "52540020020b")] {
        let host = format!("node-{hex}");
        let (status, meta) = get(&rb, None, &format!("/cloud-init/{mac}/{token}/meta-data"));
        assert_eq!(status, 200, "{meta}");
        assert_eq!(
            meta,
            format!("instance-id: rackboot-{hex}\nlocal-hostname: {host}\n"),
            "built-in meta-data"
        );
        let (status, user) = get(&rb, None, &format!("/cloud-init/{mac}/{token}/user-data"));
        assert_eq!(status, 200, "{user}");
        assert_eq!(
            user,
            format!("#cloud-config\nhostname: {host}\nrackboot_mac: {mac}\n")
        );
        let (status, vendor) = get(&rb, None, &format!("/cloud-init/{mac}/{token}/vendor-data"));
        assert_eq!((status, vendor.as_str()), (200, ""));
        let (status, ks) = get(&rb, None, &format!("/answers/{mac}/{token}/kickstart.cfg"));
        assert_eq!(status, 200, "{ks}");
        assert!(
            ks.contains(&format!("Bearer {token}"))
                && ks.contains(&format!("/node/{mac}/installed?bootenv=discovery")),
            "{ks}"
        );
    }
    let (status, _) = get(&rb, None, &format!("/cloud-init/{a}/{ta}/network-config"));
    assert_eq!(status, 404);
    let (status, _) = get(&rb, None, &format!("/answers/{a}/{ta}/preseed.cfg"));
    assert_eq!(status, 404, "no such answer file");
    let (status, _) = get(&rb, None, &format!("/answers/{a}/{ta}/..hidden"));
    assert_eq!(status, 400);
    let events = json(&rb, &format!("/api/v1/nodes/{a}"))["events"].clone();
    let seeds: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "http.seed")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(
        seeds,
        [
            "cloud-init meta-data",
            "cloud-init user-data",
            "cloud-init vendor-data",
            "answers kickstart.cfg"
        ]
    );
    rb.assert_running();
}

#[test]
fn scripts_are_assigned_by_bootenv_and_by_label_selector() {
    let rb = start("cfg-selector");
    let plain = "52:54:00:20:03:0a";
    let tp = rb.boot(plain, "x86_64_efi");
    // The labelled node boots too (its record and labels were in the store already); its
    // boot replaces the token it had.
    let builder_token = rb.boot(BUILDER, "x86_64_efi");
    assert_ne!(builder_token, BUILDER_TOKEN);

    let (status, list) = get(
        &rb,
        Some(&builder_token),
        &format!("/node/{BUILDER}/scripts"),
    );
    assert_eq!(
        (status, list.as_str()),
        (200, "10-hello.sh\n20-builder.sh\n")
    );
    let (status, text) = get(
        &rb,
        Some(&builder_token),
        &format!("/node/{BUILDER}/scripts/20-builder.sh"),
    );
    assert_eq!(status, 200);
    assert!(text.ends_with("echo builder builder r12\n"), "{text}");

    let (status, list) = get(&rb, Some(&tp), &format!("/node/{plain}/scripts"));
    assert_eq!((status, list.as_str()), (200, "10-hello.sh\n"));
    let (status, _) = get(
        &rb,
        Some(&tp),
        &format!("/node/{plain}/scripts/20-builder.sh"),
    );
    assert_eq!(status, 404, "not assigned to an unlabelled node");

    // A header that does not parse is refused on reload; the previous scripts keep serving.
    fs::write(
        rb.path("scripts").join("30-bad.sh"),
        "#!/bin/sh\n# rackboot-selector: role==builder\n",
    )
    .expect("write script");
    common::lab::wait_for_file(&rb.log(), "30-bad.sh: line 2", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&rb.log_text(), 10)));
    let (_, list) = get(
        &rb,
        Some(&builder_token),
        &format!("/node/{BUILDER}/scripts"),
    );
    assert_eq!(list, "10-hello.sh\n20-builder.sh\n");
    rb.assert_running();
}

#[test]
fn reconfigure_wakes_the_waiting_node_at_once_and_reports_are_kept() {
    let rb = start("cfg-reconfigure");
    let plain = "52:54:00:20:04:0a";
    let tp = rb.boot(plain, "x86_64_efi");
    let builder_token = rb.boot(BUILDER, "x86_64_efi");
    assert_ne!(builder_token, BUILDER_TOKEN);
    let wait = |mac: &str, token: &str, query: &str| {
        get(&rb, Some(token), &format!("/node/{mac}/wait{query}"))
    };
    assert_eq!(wait(BUILDER, &builder_token, ""), (200, "0\n".into()));

    // A wait with nothing to say returns its own generation after its bound.
    let started = Instant::now();
    assert_eq!(
        wait(plain, &tp, "?generation=0&timeout=2"),
        (200, "0\n".into())
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1900) && held < Duration::from_secs(10),
        "{held:?}"
    );

    // A long poll in flight returns as soon as its node is reconfigured, with the new generation.
    let out = rb.lab.dir().join("wait.out");
    let url = format!("http://{SERVER_IP}/node/{BUILDER}/wait?generation=0");
    let auth = format!("Authorization: Bearer {builder_token}");
    let poll = rb.lab.spawn(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "-H",
            &auth,
            "-o",
            out.to_str().expect("utf-8"),
            &url,
        ],
        "wait.log",
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        rb.lab.is_running(poll),
        "the wait returned before any reconfigure"
    );

    let (status, body) = post(
        &rb,
        None,
        "/api/v1/reconfigure",
        r#"{"selector": "role=builder"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply, serde_json::json!({ "macs": [BUILDER] }));
    let bumped = Instant::now();
    let done = poll_until(Duration::from_secs(5), || {
        (!rb.lab.is_running(poll)).then_some(())
    });
    assert!(done.is_some(), "the waiting node was not woken");
    assert!(
        bumped.elapsed() < Duration::from_secs(3),
        "{:?}",
        bumped.elapsed()
    );
    assert_eq!(fs::read_to_string(&out).expect("wait output"), "1\n");
    assert_eq!(
        json(&rb, &format!("/api/v1/nodes/{BUILDER}"))["config_generation"],
        1
    );
    assert_eq!(
        json(&rb, &format!("/api/v1/nodes/{plain}"))["config_generation"],
        0
    );
    // A wait is a heartbeat: it moves last-seen, and puts nothing on the timeline.
    let node = json(&rb, &format!("/api/v1/nodes/{BUILDER}"));
    let events = node["events"].as_array().map(Vec::len);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(wait(BUILDER, &builder_token, ""), (200, "1\n".into()));
    let after = json(&rb, &format!("/api/v1/nodes/{BUILDER}"));
    assert_eq!(after["events"].as_array().map(Vec::len), events);
    let seen = |n: &Value| n["last_seen"].as_str().unwrap_or_default().to_string();
    assert!(
        seen(&after) > seen(&node),
        "{} !> {}",
        seen(&after),
        seen(&node)
    );

    // By MAC: both nodes; an unknown MAC bumps nothing.
    let (status, body) = post(
        &rb,
        None,
        "/api/v1/reconfigure",
        &format!(r#"{{"macs": ["{plain}", "{BUILDER}"]}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &rb,
        None,
        "/api/v1/reconfigure",
        &format!(r#"{{"macs": ["{plain}", "52:54:00:20:04:ff"]}}"#),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        json(&rb, &format!("/api/v1/nodes/{plain}"))["config_generation"],
        1
    );
    assert_eq!(wait(plain, &tp, "?generation=0"), (200, "1\n".into()));
    for bad in [
        "{}",
        r#"{"selector": "role=builder", "macs": []}"#,
        r#"{"selector": "role==builder"}"#,
        r#"{"macs": ["nope"]}"#,
        r#"{"selectr": "a=b"}"#,
        "not json",
    ] {
        let (status, body) = post(&rb, None, "/api/v1/reconfigure", bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = post(
        &rb,
        None,
        "/api/v1/reconfigure",
        r#"{"selector": "role=nothing"}"#,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"macs":[]}"#));

    // Reports are kept with their status, duration, output and generation.
    let (status, body) = post(
        &rb,
        Some(&tp),
        &format!(
            "/node/{plain}/report?state=script&script=10-hello.sh&status=3&duration_ms=1500&generation=1"
        ),
        "line 1\nline 2\n",
    );
    assert_eq!(status, 204, "{body}");
    let r = json(&rb, &format!("/api/v1/nodes/{plain}/reports"));
    assert_eq!(r["dropped"], 0, "{r}");
    let report = &r["reports"][0];
    assert_eq!(
        (
            report["script"].as_str(),
            report["status"].as_i64(),
            report["duration_ms"].as_u64(),
            report["generation"].as_u64(),
            report["output"].as_str()
        ),
        (
            Some("10-hello.sh"),
            Some(3),
            Some(1500),
            Some(1),
            Some("line 1\nline 2")
        ),
        "{r}"
    );
    let timeline = json(&rb, &format!("/api/v1/nodes/{plain}"))["events"].to_string();
    assert!(
        timeline.contains("10-hello.sh exited 3 in 1s 500ms"),
        "{timeline}"
    );
    let (status, _) = get(&rb, None, "/api/v1/nodes/52:54:00:20:04:ff/reports");
    assert_eq!(status, 404);
    rb.assert_running();
}
