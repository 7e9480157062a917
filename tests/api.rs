//! The admin API (`/api/v1`) against the real `rackboot serve`, in a private network namespace,
//! with real curl: every endpoint, every refusal, and that a refused request changes nothing.
//!
//! Needs root (namespaces) and curl; openssl for the HTTPS test. Every wait is bounded; each
//! test's rackboot is ended by PID when its lab drops.

mod common;

use common::api::{ADMIN_TOKEN, READ_TOKEN};
use common::server::Server;
use common::setup::{LAB_CIDR, Setup, rsa_cert};

// ---------------------------------------------------------------------------------------------
// Auth

#[test]
fn every_api_request_needs_a_token_of_the_right_scope() {
    let rb = Setup::new("api-auth").standard_files().start();

    let r = rb.request("GET", "/api/v1/nodes", None, None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );

    let r = rb.request(
        "GET",
        "/api/v1/nodes",
        Some("not-a-token-at-all-0000"),
        None,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown API token")
    );

    // Unknown endpoints are not revealed before the token is checked.
    let r = rb.request("GET", "/api/v1/nope", None, None);
    assert_eq!(r.status, 401, "{}", r.text());

    let r = rb.request("GET", "/api/v1/nodes", Some(READ_TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().is_array());

    let body = r#"{"mac": "52:54:00:aa:00:01"}"#;
    let r = rb.request("POST", "/api/v1/nodes", Some(READ_TOKEN), Some(body));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("may only read")
    );
    // Nothing was created.
    let r = rb.request(
        "GET",
        "/api/v1/nodes/52:54:00:aa:00:01",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());

    let r = rb.request("GET", "/api/v1/nope", Some(ADMIN_TOKEN), None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"].is_string());

    // Metrics stay open for Prometheus.
    let r = rb.request("GET", "/metrics", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn without_a_tokens_file_the_api_is_disabled() {
    let rb = Setup::new("api-off")
        .standard_files()
        .no_api_tokens()
        .start();
    for token in [None, Some(ADMIN_TOKEN)] {
        let r = rb.request("GET", "/api/v1/nodes", token, None);
        assert_eq!(r.status, 403, "{}", r.text());
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            msg.contains("the API is disabled: set api.tokens_file in")
                && msg.contains("rackboot.toml"),
            "{msg}"
        );
    }
}

#[test]
fn the_tokens_file_reloads_and_a_bad_one_is_refused() {
    let rb = Setup::new("api-tokens-reload").standard_files().start();
    let file = rb.path("api-tokens");
    let new = "admin fresh-token-0123456789abcdef\n";
    std::fs::write(&file, new).unwrap();
    let ok = common::lab::poll_until(std::time::Duration::from_secs(15), || {
        (rb.request(
            "GET",
            "/api/v1/nodes",
            Some("fresh-token-0123456789abcdef"),
            None,
        )
        .status
            == 200)
            .then_some(())
    });
    assert!(ok.is_some(), "new token not in force:\n{}", rb.log_text());
    assert_eq!(
        rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None)
            .status,
        401,
        "the old token must be gone"
    );
    // A broken file keeps the tokens in force and says why.
    std::fs::write(&file, "superuser fresh-token-0123456789abcdef\n").unwrap();
    let logged = common::lab::poll_until(std::time::Duration::from_secs(15), || {
        rb.log_text()
            .contains("line 1: unknown scope `superuser`")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", rb.log_text());
    assert_eq!(
        rb.request(
            "GET",
            "/api/v1/nodes",
            Some("fresh-token-0123456789abcdef"),
            None
        )
        .status,
        200
    );
}

/// Deleting the tokens file is how an admin revokes every API token at once: the tokens it
/// held stop working (the answer says the file is gone) until a file is back.
#[test]
fn deleting_the_tokens_file_revokes_every_token() {
    let rb = Setup::new("api-tokens-gone").standard_files().start();
    assert_eq!(
        rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None)
            .status,
        200
    );
    let file = rb.path("api-tokens");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let refused = common::lab::poll_until(std::time::Duration::from_secs(15), || {
        let r = rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None);
        (r.status == 403).then_some(r)
    });
    let r = refused.unwrap_or_else(|| panic!("token still valid:\n{}", rb.log_text()));
    assert!(r.text().contains("is gone"), "{}", r.text());
    assert!(
        rb.log_text().contains("every API token is revoked"),
        "{}",
        rb.log_text()
    );
    std::fs::write(&file, text).unwrap();
    let back = common::lab::poll_until(std::time::Duration::from_secs(15), || {
        (rb.request("GET", "/api/v1/nodes", Some(ADMIN_TOKEN), None)
            .status
            == 200)
            .then_some(())
    });
    assert!(back.is_some(), "{}", rb.log_text());
}

#[test]
fn a_bad_tokens_file_stops_start_up_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("bootenvs")).unwrap();
    std::fs::write(
        d.join("bootenvs/discovery.toml"),
        "[arch.bios]\nlocal = \"exit\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("tokens"),
        "# ok\nadmin 0123456789abcdef0123\nread short\n",
    )
    .unwrap();
    let config = d.join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{p}/state\"\nassets_dir = \"{p}\"\nbootenvs_dir = \"{p}/bootenvs\"\n\
             scripts_dir = \"{p}/scripts\"\n[network]\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
             [dhcp]\nenabled = false\n[tftp]\nenabled = false\n[http]\nenabled = false\n\
             [dns]\nenabled = false\n[api]\ntokens_file = \"tokens\"\n",
            p = d.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rackboot"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = format!(
        "{}: line 3: the token is 5 characters",
        d.join("tokens").display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(
        err.trim().lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Nodes

fn admin(rb: &Server, method: &str, path: &str, body: Option<&str>) -> common::server::Reply {
    rb.request(method, path, Some(ADMIN_TOKEN), body)
}

/// Creates a node; panics unless 201.
fn create(rb: &Server, body: &str) -> serde_json::Value {
    let r = admin(rb, "POST", "/api/v1/nodes", Some(body));
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    r.json()
}

fn macs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n.as_str()
                .unwrap_or_else(|| n["mac"].as_str().unwrap())
                .to_string()
        })
        .collect()
}

#[test]
fn nodes_are_created_listed_edited_and_deleted() {
    let rb = Setup::new("api-nodes").standard_files().start();
    let n = create(
        &rb,
        r#"{"mac":"52-54-00-AA-00-01","labels":{"rack":"r1","role":"builder"},"ipv4":"10.77.0.50"}"#,
    );
    assert_eq!(n["mac"], "52:54:00:aa:00:01");
    assert_eq!(n["hostname"], "node-525400aa0001");
    assert_eq!(n["bootenv"], "discovery");
    assert_eq!(n["state"], "discovered");
    // Its timeline starts with who created it.
    assert_eq!(n["events"][0]["kind"], "admin.change", "{n}");
    assert!(n.get("token").is_none(), "the node token never leaves");
    create(
        &rb,
        r#"{"mac":"52:54:00:aa:00:02","hostname":"b2","labels":{"rack":"r1"},"bootenv":"rescue"}"#,
    );
    create(
        &rb,
        r#"{"mac":"52:54:00:aa:00:03","labels":{"rack":"r2","role":"builder"}}"#,
    );

    // Refusals.
    let r = admin(
        &rb,
        "POST",
        "/api/v1/nodes",
        Some(r#"{"mac":"52:54:00:aa:00:01"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("PATCH"),
        "{}",
        r.text()
    );
    let r = admin(
        &rb,
        "POST",
        "/api/v1/nodes",
        Some(r#"{"mac":"52:54:00:aa:00:09","hostname":"B2"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("already belongs to 52:54:00:aa:00:02"),
        "{}",
        r.text()
    );
    let r = admin(
        &rb,
        "POST",
        "/api/v1/nodes",
        Some(r#"{"mac":"52:54:00:aa:00:09","bootenv":"nope"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("`nope`"),
        "{}",
        r.text()
    );
    let r = admin(
        &rb,
        "POST",
        "/api/v1/nodes",
        Some(r#"{"mac":"52:54:00:aa:00:09","hostnme":"x"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("hostnme"),
        "{}",
        r.text()
    );
    let r = admin(&rb, "POST", "/api/v1/nodes", Some("not json"));
    assert!(r.status == 400 || r.status == 422, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = admin(&rb, "GET", "/api/v1/nodes/not-a-mac", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("not a MAC"));

    // Filters.
    let list = |q: &str| macs(&admin(&rb, "GET", &format!("/api/v1/nodes{q}"), None).json());
    assert_eq!(list("").len(), 3);
    assert_eq!(list("?label=rack=r1,role=builder"), ["52:54:00:aa:00:01"]);
    assert_eq!(list("?label=rack!=r1"), ["52:54:00:aa:00:03"]);
    assert_eq!(list("?label=role").len(), 2);
    assert_eq!(list("?bootenv=rescue"), ["52:54:00:aa:00:02"]);
    assert_eq!(list("?state=discovered").len(), 3);
    assert!(list("?state=booted").is_empty());
    let r = admin(&rb, "GET", "/api/v1/nodes?state=sleeping", None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("discovered"));
    let r = admin(&rb, "GET", "/api/v1/nodes?label=rack=", None);
    assert_eq!(r.status, 400, "{}", r.text());

    // Edit: merge patch.
    let r = admin(
        &rb,
        "PATCH",
        "/api/v1/nodes/52:54:00:aa:00:01",
        Some(
            r#"{"hostname":"b1","labels":{"role":null,"gpu":"a100"},"ipv4":null,"params":{"disk":"/dev/sda"}}"#,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json();
    assert_eq!(n["hostname"], "b1");
    assert_eq!(n["labels"], serde_json::json!({"gpu":"a100","rack":"r1"}));
    assert_eq!(n["ipv4"], serde_json::Value::Null);
    assert_eq!(n["params"]["disk"], "/dev/sda");
    assert!(n["events"].is_array());
    let r = admin(
        &rb,
        "PATCH",
        "/api/v1/nodes/52:54:00:aa:00:01",
        Some(r#"{"hostname":"b2"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = admin(
        &rb,
        "PATCH",
        "/api/v1/nodes/52:54:00:aa:00:01",
        Some(r#"{"bootenv":"nope"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no bootenv `nope`")
    );
    let r = admin(
        &rb,
        "PATCH",
        "/api/v1/nodes/52:54:00:aa:00:77",
        Some(r#"{"hostname":"x"}"#),
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Events of one node.
    let r = admin(&rb, "GET", "/api/v1/nodes/52:54:00:aa:00:01/events", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().is_array());
    assert_eq!(
        admin(&rb, "GET", "/api/v1/nodes/52:54:00:aa:00:77/events", None).status,
        404
    );

    // Delete.
    let r = admin(&rb, "DELETE", "/api/v1/nodes/52:54:00:aa:00:03", None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = admin(&rb, "DELETE", "/api/v1/nodes/52:54:00:aa:00:03", None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"].is_string());
    assert_eq!(list("").len(), 2);

    // Leases (none: DHCP is off here) answer all the same.
    let r = admin(&rb, "GET", "/api/v1/leases", None);
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));
}

#[test]
fn bootenv_changes_now_once_for_and_protected_nodes() {
    let rb = Setup::new("api-bootenv").standard_files().start();
    let mac = "52:54:00:bb:00:01";
    let path = format!("/api/v1/nodes/{mac}");
    create(&rb, &format!(r#"{{"mac":"{mac}","hostname":"p1"}}"#));
    let patch = |body: &str| admin(&rb, "PATCH", &path, Some(body));

    let n = patch(r#"{"bootenv":"rescue","once":true}"#).json();
    assert_eq!(
        (&n["bootenv"], &n["next_bootenv"], &n["bootenv_expires"]),
        (
            &"discovery".into(),
            &"rescue".into(),
            &serde_json::Value::Null
        )
    );
    let before = std::time::SystemTime::now();
    let n = patch(r#"{"bootenv":"rescue","for":"2h"}"#).json();
    assert_eq!(
        (&n["bootenv"], &n["next_bootenv"]),
        (&"discovery".into(), &"rescue".into())
    );
    let expires = humantime::parse_rfc3339(n["bootenv_expires"].as_str().unwrap()).unwrap();
    let lease = expires.duration_since(before).unwrap();
    assert!(
        lease > std::time::Duration::from_secs(7190)
            && lease < std::time::Duration::from_secs(7210),
        "{lease:?}"
    );
    let n = patch(r#"{"bootenv":"local"}"#).json();
    assert_eq!(
        (&n["bootenv"], &n["next_bootenv"], &n["bootenv_expires"]),
        (
            &"local".into(),
            &serde_json::Value::Null,
            &serde_json::Value::Null
        )
    );
    let r = patch(r#"{"bootenv":"rescue","once":true,"for":"1h"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    let r = patch(r#"{"bootenv":"rescue","for":"soon"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("`for`"));

    // Protected.
    assert_eq!(patch(r#"{"protected":true}"#).json()["protected"], true);
    for body in [
        r#"{"bootenv":"rescue"}"#,
        r#"{"bootenv":"rescue","once":true}"#,
        r#"{"bootenv":"rescue","for":"1h"}"#,
    ] {
        let r = patch(body);
        assert_eq!(r.status, 409, "{body}: {}", r.text());
        assert_eq!(
            r.json()["error"],
            format!("node p1 ({mac}) is protected; pass force to change its bootenv")
        );
    }
    let n = admin(&rb, "GET", &path, None).json();
    assert_eq!(
        (&n["bootenv"], &n["next_bootenv"]),
        (&"local".into(), &serde_json::Value::Null),
        "nothing changed"
    );
    // Other fields stay editable.
    assert_eq!(patch(r#"{"labels":{"rack":"r9"}}"#).status, 200);
    let n = patch(r#"{"bootenv":"rescue","once":true,"force":true}"#).json();
    assert_eq!(
        (&n["bootenv"], &n["next_bootenv"], &n["protected"]),
        (&"local".into(), &"rescue".into(), &true.into())
    );
}

#[test]
fn bulk_edits_are_all_or_nothing() {
    let rb = Setup::new("api-bulk").standard_files().start();
    for i in 1..=4 {
        let rack = if i <= 3 { "r12" } else { "r13" };
        create(
            &rb,
            &format!(
                r#"{{"mac":"52:54:00:cc:00:0{i}","hostname":"c{i}","labels":{{"rack":"{rack}"}}}}"#
            ),
        );
    }
    admin(
        &rb,
        "PATCH",
        "/api/v1/nodes/52:54:00:cc:00:02",
        Some(r#"{"protected":true}"#),
    );
    let bulk = |body: &str| admin(&rb, "POST", "/api/v1/nodes/bulk", Some(body));

    let r = bulk(r#"{"selector":"rack=r12","patch":{"bootenv":"rescue"}}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("node c2 (52:54:00:cc:00:02) is protected"),
        "{}",
        r.text()
    );
    for i in 1..=4 {
        let n = admin(
            &rb,
            "GET",
            &format!("/api/v1/nodes/52:54:00:cc:00:0{i}"),
            None,
        )
        .json();
        assert_eq!(n["bootenv"], "discovery", "node {i} must be unchanged");
    }

    let r =
        bulk(r#"{"selector":"rack=r12","patch":{"bootenv":"rescue","once":true,"force":true}}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    assert_eq!(
        macs(&res["matched"]),
        [
            "52:54:00:cc:00:01",
            "52:54:00:cc:00:02",
            "52:54:00:cc:00:03"
        ]
    );
    assert_eq!(macs(&res["changed"]).len(), 3);
    let n = admin(&rb, "GET", "/api/v1/nodes/52:54:00:cc:00:03", None).json();
    assert_eq!(n["next_bootenv"], "rescue");
    let n = admin(&rb, "GET", "/api/v1/nodes/52:54:00:cc:00:04", None).json();
    assert_eq!(n["next_bootenv"], serde_json::Value::Null);
    // The same again changes nothing.
    let res =
        bulk(r#"{"selector":"rack=r12","patch":{"bootenv":"rescue","once":true,"force":true}}"#)
            .json();
    assert_eq!(macs(&res["changed"]).len(), 0);
    // A clash within the set: nothing changes.
    let r = bulk(r#"{"selector":"rack=r12","patch":{"hostname":"same"}}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        admin(&rb, "GET", "/api/v1/nodes/52:54:00:cc:00:01", None).json()["hostname"],
        "c1"
    );
    let r = bulk(r#"{"selector":"","patch":{"bootenv":"rescue"}}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = bulk(r#"{"selector":"rack=r13","patch":{"bootenv":"nope"}}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    let res = bulk(r#"{"selector":"rack=r99","patch":{"bootenv":"rescue"}}"#).json();
    assert_eq!(res, serde_json::json!({"matched": [], "changed": []}));
}

#[test]
fn imports_are_all_or_nothing_and_name_the_bad_record() {
    let rb = Setup::new("api-import").standard_files().start();
    create(
        &rb,
        r#"{"mac":"52:54:00:dd:00:01","hostname":"d1","bootenv":"rescue"}"#,
    );
    let import = |body: &str| admin(&rb, "POST", "/api/v1/nodes/import", Some(body));
    let count = || macs(&admin(&rb, "GET", "/api/v1/nodes", None).json()).len();

    let cases = [
        (
            r#"[{"mac":"52:54:00:dd:00:02"},{"mac":"52:54:00:dd:00:03","hostname":"bad host"}]"#,
            1,
            "hostname",
            422,
        ),
        (
            r#"[{"mac":"52:54:00:dd:00:02"},{"mac":"52:54:00:dd:00:03"},{"hostname":"x"}]"#,
            2,
            "mac",
            422,
        ),
        (
            r#"[{"mac":"52:54:00:dd:00:02","ipv4":"10.0.0.999"}]"#,
            0,
            "ipv4",
            422,
        ),
        (
            r#"[{"mac":"52:54:00:dd:00:02","colour":"red"}]"#,
            0,
            "colour",
            422,
        ),
        (
            r#"[{"mac":"52:54:00:dd:00:02"},{"mac":"52:54:00:dd:00:02"}]"#,
            1,
            "mac",
            422,
        ),
        (
            r#"[{"mac":"52:54:00:dd:00:02","bootenv":"nope"}]"#,
            0,
            "bootenv",
            422,
        ),
        (
            r#"[{"mac":"52:54:00:dd:00:02"},{"mac":"52:54:00:dd:00:03","hostname":"D1"}]"#,
            1,
            "hostname",
            409,
        ),
    ];
    for (body, index, field, status) in cases {
        let r = import(body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["index"], index, "{body}: {e}");
        assert_eq!(e["field"], field, "{body}: {e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("record {index}")),
            "{e}"
        );
        assert_eq!(count(), 1, "{body}: nothing may be imported");
    }
    // Not an array at all: the body is malformed (400), not a record refused.
    let r = import(r#"{"mac":"52:54:00:dd:00:02"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not a JSON array"), "{}", r.text());

    let r = import(
        r#"[{"mac":"52:54:00:dd:00:01","labels":{"rack":"r5"}},
            {"mac":"52:54:00:dd:00:02","hostname":"d2","ipv4":"10.77.0.52","labels":{"rack":"r5"}},
            {"mac":"52:54:00:dd:00:03","bootenv":"local","protected":true}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    assert_eq!(
        macs(&res["created"]),
        ["52:54:00:dd:00:02", "52:54:00:dd:00:03"]
    );
    assert_eq!(macs(&res["updated"]), ["52:54:00:dd:00:01"]);
    let one = admin(&rb, "GET", "/api/v1/nodes/52:54:00:dd:00:01", None).json();
    assert_eq!(
        (&one["hostname"], &one["bootenv"], &one["labels"]["rack"]),
        (&"d1".into(), &"rescue".into(), &"r5".into()),
        "absent fields keep their values"
    );
    let three = admin(&rb, "GET", "/api/v1/nodes/52:54:00:dd:00:03", None).json();
    assert_eq!(
        (&three["hostname"], &three["protected"]),
        (&"node-525400dd0003".into(), &true.into())
    );
}

/// Every path that changes or removes a node passes one protection check: an import that
/// would change what a protected node boots, and a delete, are refused with 409 naming the node
/// (hostname and MAC), and nothing changes (the import's other records are not written either);
/// `force=true` lets each through.
#[test]
fn protected_nodes_refuse_import_and_delete_unless_forced() {
    let rb = Setup::new("api-protect").standard_files().start();
    let mac = "52:54:00:ee:00:03";
    let path = format!("/api/v1/nodes/{mac}");
    create(
        &rb,
        &format!(r#"{{"mac":"{mac}","hostname":"alibuild03","protected":true}}"#),
    );
    let named = format!("node alibuild03 ({mac}) is protected");
    let rack = format!(
        r#"[{{"mac":"52:54:00:ee:00:01"}},{{"mac":"{mac}","bootenv":"rescue","labels":{{"rack":"r1"}}}}]"#
    );

    let r = admin(&rb, "POST", "/api/v1/nodes/import", Some(&rack));
    assert_eq!(r.status, 409, "{}", r.text());
    let e = r.json();
    assert_eq!(
        (&e["index"], &e["field"]),
        (&1.into(), &"bootenv".into()),
        "{e}"
    );
    assert!(e["error"].as_str().unwrap().contains(&named), "{e}");
    let r = admin(&rb, "DELETE", &path, None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains(&named),
        "{}",
        r.text()
    );
    let r = admin(&rb, "DELETE", &format!("{path}?force=false"), None);
    assert_eq!(r.status, 409, "{}", r.text());

    let n = admin(&rb, "GET", &path, None).json();
    assert_eq!(
        (&n["bootenv"], &n["labels"], &n["protected"]),
        (&"discovery".into(), &serde_json::json!({}), &true.into()),
        "nothing changed"
    );
    assert_eq!(
        admin(&rb, "GET", "/api/v1/nodes/52:54:00:ee:00:01", None).status,
        404,
        "all or none: the import's other record was not written"
    );

    // A record that leaves its bootenv alone goes through without force.
    let r = admin(
        &rb,
        "POST",
        "/api/v1/nodes/import",
        Some(&format!(r#"[{{"mac":"{mac}","labels":{{"rack":"r1"}}}}]"#)),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let r = admin(&rb, "POST", "/api/v1/nodes/import?force=true", Some(&rack));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(admin(&rb, "GET", &path, None).json()["bootenv"], "rescue");
    let r = admin(&rb, "DELETE", &format!("{path}?force=true"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(admin(&rb, "GET", &path, None).status, 404);
}

/// "Who put alibuild03 into the installer?": every admin change is an `admin.change` event on
/// the node's timeline (API token's name, operation, field before -> after, forced or not) and
/// an audit log line; `?kind=admin` gives just those. A deletion is logged with the whole record
/// and starts the timeline of a record made again for the MAC.
#[test]
fn admin_changes_are_audited_with_the_token_name() {
    let rb = Setup::new("api-audit").standard_files().start();
    let mac = "52:54:00:ee:01:03";
    let path = format!("/api/v1/nodes/{mac}");
    create(
        &rb,
        &format!(r#"{{"mac":"{mac}","hostname":"alibuild03"}}"#),
    );
    let r = admin(&rb, "PATCH", &path, Some(r#"{"protected":true}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(
        &rb,
        "PATCH",
        &path,
        Some(r#"{"bootenv":"rescue","force":true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A refused change leaves no entry.
    assert_eq!(
        admin(&rb, "PATCH", &path, Some(r#"{"bootenv":"local"}"#)).status,
        409
    );

    let r = admin(&rb, "GET", &format!("{path}/events?kind=admin"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let details: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "admin.change", "{e}");
            e["detail"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        details,
        [
            "token `tests` (create): hostname - -> alibuild03; bootenv - -> discovery",
            "token `tests` (patch): protected false -> true",
            "token `tests` (patch): bootenv discovery -> rescue; forced (the node is protected)",
        ]
    );
    let r = admin(&rb, "GET", &format!("{path}/events?kind=admn"), None);
    assert_eq!(r.status, 400, "{}", r.text());
    let log = common::lab::poll_until(std::time::Duration::from_secs(10), || {
        let log = rb.log_text();
        log.lines()
            .any(|l| l.contains("rackboot::audit") && l.contains("bootenv discovery -> rescue"))
            .then_some(log)
    })
    .unwrap_or_else(|| panic!("no audit log line:\n{}", rb.log_text()));
    let line = log
        .lines()
        .find(|l| l.contains("bootenv discovery -> rescue"))
        .unwrap();
    assert!(
        line.contains("alibuild03")
            && line.contains("token `tests`")
            && line.contains("forced=true"),
        "{line}"
    );

    let r = admin(&rb, "DELETE", &format!("{path}?force=true"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let deleted = common::lab::poll_until(std::time::Duration::from_secs(10), || {
        rb.log_text()
            .lines()
            .find(|l| l.contains("rackboot::audit") && l.contains("op=\"delete\""))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no audit line for the delete:\n{}", rb.log_text()));
    assert!(
        deleted.contains("alibuild03") && deleted.contains(r#""bootenv":"rescue""#),
        "the line carries the record: {deleted}"
    );
    // Made again: its timeline starts with who deleted the old record.
    create(&rb, &format!(r#"{{"mac":"{mac}"}}"#));
    let events = admin(&rb, "GET", &format!("{path}/events?kind=admin"), None).json();
    assert_eq!(events[0]["kind"], "admin.delete", "{events}");
    assert!(
        events[0]["detail"].as_str().unwrap().starts_with(
            "token `tests` (delete): deleted the record: hostname alibuild03, bootenv rescue"
        ),
        "{events}"
    );
}

/// `unknown_clients = "ignore"` holds over HTTP too: an unknown MAC asking for its boot script
/// from such a subnet gets 403 and no node record (so no DHCP lease either); once an admin
/// creates the record, the script is served.
#[test]
fn an_unknown_mac_gets_no_boot_script_where_unknown_clients_are_ignored() {
    let rb = Setup::new("api-ignore")
        .standard_files()
        .subnet(LAB_CIDR, "unknown_clients = \"ignore\"")
        // The admission rule alone: this curl is not at a node's address.
        .tokens_from_any_address()
        .start();
    let mac = "52:54:00:ee:02:01";
    let r = rb.request("GET", &format!("/boot/{mac}.ipxe?arch=bios"), None, None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("10.77.0.0/24"), "{}", r.text());
    assert!(!r.text().contains("rackboot.token"), "{}", r.text());
    assert_eq!(
        admin(&rb, "GET", &format!("/api/v1/nodes/{mac}"), None).status,
        404,
        "no record made"
    );
    create(&rb, &format!(r#"{{"mac":"{mac}"}}"#));
    let r = rb.request("GET", &format!("/boot/{mac}.ipxe?arch=bios"), None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("#!ipxe"), "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// Bootenvs, explain

#[test]
fn bootenvs_are_listed_shown_and_validated() {
    let rb = Setup::new("api-bootenvs").standard_files().start();
    let r = admin(&rb, "GET", "/api/v1/bootenvs", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let names: Vec<&str> = list["bootenvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["discovery", "local", "rescue"]);
    let disc = &list["bootenvs"][0];
    assert_eq!(
        disc["archs"],
        serde_json::json!(["bios", "x86_64_efi", "arm64_efi"])
    );
    assert_eq!(disc["description"], "discovery, for the API tests");
    assert_eq!(disc["scripts"], serde_json::json!(["hello.sh"]));
    assert_eq!(list["rejected"], serde_json::json!([]));
    // Read tokens may read.
    assert_eq!(
        rb.request("GET", "/api/v1/bootenvs/rescue", Some(READ_TOKEN), None)
            .status,
        200
    );

    let b = admin(&rb, "GET", "/api/v1/bootenvs/discovery", None).json();
    assert_eq!(b["arch"]["arm64_efi"]["kernel"], "arm64/Image");
    assert_eq!(
        b["arch"]["arm64_efi"]["initrds"],
        serde_json::json!(["arm64/initrd.img"])
    );
    assert!(
        b["arch"]["bios"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("{{ node.token }}")
    );
    let l = admin(&rb, "GET", "/api/v1/bootenvs/local", None).json();
    assert_eq!(l["arch"]["bios"]["local"], "exit");
    assert_eq!(admin(&rb, "GET", "/api/v1/bootenvs/nope", None).status, 404);

    let validate = |q: &str, body: &str| {
        let r = admin(
            &rb,
            "POST",
            &format!("/api/v1/bootenvs/validate{q}"),
            Some(body),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let good = "description = \"install\"\n[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\ninitrds = [\"x86_64/initrd.img\"]\ncmdline = \"url={{ server_url }}\"\n";
    let v = validate("?name=install", good);
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "name": "install", "errors": []})
    );
    let cases = [
        (
            good.replace("{{ server_url }}", "{{ sever_url }}"),
            5,
            "undefined",
        ),
        (
            good.replace("{{ server_url }}", "{{ server_url "),
            5,
            "cmdline",
        ),
        (good.replace("initrd.img", "nope.img"), 4, "x86_64/nope.img"),
        (good.replace("kernel =", "kernal ="), 3, "kernal"),
        (format!("{good}[arch.bios\n"), 6, "line 6"),
    ];
    for (text, line, want) in cases {
        let v = validate("?name=install", &text);
        assert_eq!(v["ok"], false, "{text}: {v}");
        let e = &v["errors"][0];
        assert_eq!(e["line"], line, "{text}: {v}");
        assert!(e["reason"].as_str().unwrap().contains(want), "{want}: {v}");
        assert!(
            e["file"]
                .as_str()
                .unwrap()
                .ends_with("bootenvs/install.toml"),
            "{v}"
        );
    }
    // Nothing was written: the candidate is not in force.
    assert_eq!(
        admin(&rb, "GET", "/api/v1/bootenvs/install", None).status,
        404
    );
    // Validation is for admins.
    assert_eq!(
        rb.request(
            "POST",
            "/api/v1/bootenvs/validate",
            Some(READ_TOKEN),
            Some(good)
        )
        .status,
        403
    );

    // A broken file on disk is refused by the hot reload and shows here.
    std::fs::write(
        rb.path("bootenvs/broken.toml"),
        "description = \"x\"\n\n[arch.bios]\nkernel = \"gone/vmlinuz\"\n",
    )
    .unwrap();
    let rejected = common::lab::poll_until(std::time::Duration::from_secs(15), || {
        let list = admin(&rb, "GET", "/api/v1/bootenvs", None).json();
        list["rejected"].as_array().unwrap().first().cloned()
    })
    .unwrap_or_else(|| panic!("no rejection shown:\n{}", rb.log_text()));
    assert!(
        rejected["file"]
            .as_str()
            .unwrap()
            .ends_with("bootenvs/broken.toml"),
        "{rejected}"
    );
    assert_eq!(rejected["line"], 4, "{rejected}");
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .contains("gone/vmlinuz"),
        "{rejected}"
    );
    assert!(rejected["at"].is_string());
    let v = validate("?name=other", good);
    assert_eq!(
        v["ok"], false,
        "another broken file keeps any candidate out: {v}"
    );
    assert!(
        v["errors"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.toml"),
        "{v}"
    );
}

#[test]
fn explain_says_what_each_client_gets_and_why() {
    let rb = Setup::new("api-explain").standard_files().start();
    let explain = |q: &str| {
        let r = admin(&rb, "GET", &format!("/api/v1/explain/{q}"), None);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()
    };
    let mac = "52:54:00:ee:00:01";
    let e = explain(&format!("{mac}?arch=0"));
    assert_eq!(
        (&e["known"], &e["decision"], &e["boot_file"]),
        (&false.into(), &"loader".into(), &"undionly.kpxe".into())
    );
    assert_eq!(e["bootenv"], "discovery");
    assert!(e["why"][0].as_str().unwrap().contains("unknown"), "{e}");
    assert_eq!(e["script"], serde_json::Value::Null);
    assert_eq!(
        admin(&rb, "GET", &format!("/api/v1/nodes/{mac}"), None).status,
        404,
        "explain creates nothing"
    );

    let e = explain(&format!("{mac}?arch=x86_64_efi"));
    assert_eq!(
        (&e["decision"], &e["boot_file"], &e["arch"]),
        (
            &"loader".into(),
            &"ipxe-amd64.efi".into(),
            &"x86_64_efi".into()
        )
    );
    let e = explain(&format!("{mac}?arch=11"));
    assert_eq!(
        (&e["boot_file"], &e["arch"]),
        (&"ipxe-arm64.efi".into(), &"arm64_efi".into())
    );
    let e = explain(&format!("{mac}?arch=16"));
    assert_eq!(e["decision"], "http_loader");
    assert_eq!(
        e["boot_file"],
        format!("http://10.77.0.1/assets/ipxe-amd64.efi?mac={mac}")
    );

    // iPXE gets its script, rendered for the arch.
    let e = explain(&format!("{mac}?arch=arm64_efi&user_class=iPXE"));
    assert_eq!(e["decision"], "script");
    assert_eq!(e["boot_file"], format!("http://10.77.0.1/boot/{mac}.ipxe"));
    let script = e["script"].as_str().unwrap();
    assert!(
        script.starts_with("#!ipxe\n") && script.contains("/assets/arm64/Image?mac="),
        "{script}"
    );

    // A known node: its next-boot bootenv wins; rescue has no bios arch.
    create(&rb, &format!(r#"{{"mac":"{mac}","hostname":"e1"}}"#));
    admin(
        &rb,
        "PATCH",
        &format!("/api/v1/nodes/{mac}"),
        Some(r#"{"bootenv":"rescue","once":true}"#),
    );
    let e = explain(&format!("{mac}?arch=7&user_class=iPXE"));
    assert_eq!(
        (&e["known"], &e["bootenv"]),
        (&true.into(), &"rescue".into())
    );
    assert!(
        e["bootenv_reason"].as_str().unwrap().contains("once"),
        "{e}"
    );
    assert!(
        e["script"]
            .as_str()
            .unwrap()
            .contains("bootenv rescue, arch x86_64_efi"),
        "{e}"
    );
    let e = explain(&format!("{mac}?arch=bios&user_class=iPXE"));
    assert_eq!(e["script"], serde_json::Value::Null);
    assert!(
        e["script_error"]
            .as_str()
            .unwrap()
            .contains("nothing for architecture bios"),
        "{e}"
    );
    // Local.
    admin(
        &rb,
        "PATCH",
        &format!("/api/v1/nodes/{mac}"),
        Some(r#"{"bootenv":"local"}"#),
    );
    let e = explain(&format!("{mac}?arch=bios&user_class=iPXE"));
    assert!(e["script"].as_str().unwrap().ends_with("exit\n"), "{e}");

    // Unsupported arch, bad input.
    let e = explain(&format!("{mac}?arch=22"));
    assert_eq!(e["decision"], "ignore");
    assert_eq!(
        admin(&rb, "GET", &format!("/api/v1/explain/{mac}?arch=ppc"), None).status,
        400
    );
    let r = admin(&rb, "GET", &format!("/api/v1/explain/{mac}"), None);
    assert_eq!(r.status, 422, "no arch known yet: {}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("?arch="));
    assert_eq!(admin(&rb, "GET", "/api/v1/explain/zz", None).status, 400);
}

#[test]
fn the_openapi_document_is_served_and_is_the_golden_file() {
    let rb = Setup::new("api-openapi").standard_files().start();
    let r = rb.request("GET", "/api/v1/openapi.json", Some(READ_TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let golden = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/http/openapi.json"
    ))
    .unwrap();
    assert_eq!(r.body, golden, "the served document is the one in the repo");
    assert!(r.json()["paths"]["/api/v1/nodes/{mac}"]["patch"].is_object());
    assert_eq!(
        rb.request("GET", "/api/v1/openapi.json", None, None).status,
        401
    );

    // Every documented operation (the router's every API route is documented, see
    // http::openapi's tests) refuses a request without a token, and a read token on a change.
    let doc = r.json();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let path = path
            .replace("{mac}", "52:54:00:aa:00:09")
            .replace("{name}", "discovery");
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let r = rb.request(&method, &path, None, Some("{}"));
            assert_eq!(
                r.status,
                401,
                "{method} {path} without a token: {}",
                r.text()
            );
            if method != "GET" {
                let r = rb.request(&method, &path, Some(READ_TOKEN), Some("{}"));
                assert_eq!(
                    r.status,
                    403,
                    "{method} {path} with a read token: {}",
                    r.text()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} operations documented");
}

// ---------------------------------------------------------------------------------------------
// HTTPS

#[test]
fn the_api_is_served_over_https_with_an_rsa_certificate() {
    let (_certs, cert, key) = rsa_cert();
    let rb = Setup::new("api-https")
        .standard_files()
        .table(
            "api",
            &format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_port = 8443"),
        )
        .start();
    let url = "https://10.77.0.1:8443/api/v1/nodes";
    for tls in ["--tlsv1.2", "--tlsv1.3"] {
        let max = if tls == "--tlsv1.2" { "1.2" } else { "1.3" };
        let r = rb.curl(
            url,
            "GET",
            Some(ADMIN_TOKEN),
            None,
            &["--cacert", &cert, tls, "--tls-max", max],
        );
        assert_eq!(r.status, 200, "{tls}: {}", r.text());
        assert!(r.json().is_array());
    }
    // The same router: auth, writes and refusals as over HTTP.
    let r = rb.curl(url, "GET", None, None, &["--cacert", &cert]);
    assert_eq!(r.status, 401);
    let r = rb.curl(
        url,
        "POST",
        Some(ADMIN_TOKEN),
        Some(r#"{"mac":"52:54:00:ff:00:01"}"#),
        &["--cacert", &cert],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        admin(&rb, "GET", "/api/v1/nodes/52:54:00:ff:00:01", None).status,
        200
    );
    // A client that does not trust the certificate is refused by curl itself.
    let out = rb.lab.run(
        "curl",
        &["-sS", "-m", "10", url],
        std::time::Duration::from_secs(20),
    );
    assert!(!out.status.success(), "curl must refuse an unknown CA");
    // So is rackboot's own CLI, and it says that TLS failed, not that the
    // server may not be running.
    let out = rb.lab.run(
        env!("CARGO_BIN_EXE_rackboot"),
        &["node", "list", "--server", "https://10.77.0.1:8443"],
        std::time::Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the CLI must refuse an unknown CA");
    assert!(
        err.contains("TLS with rackboot at https://10.77.0.1:8443 failed")
            && err.contains("certificate")
            && !err.contains("is it running"),
        "{err}"
    );
}

#[test]
fn a_bad_certificate_or_key_stops_start_up_naming_the_file() {
    let (certs, cert, key) = rsa_cert();
    let junk = certs.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (_other, other_cert, _) = rsa_cert();
    let junk = junk.display().to_string();
    for (i, (c, k, names)) in [
        (junk.as_str(), key.as_str(), junk.as_str()),
        (cert.as_str(), junk.as_str(), junk.as_str()),
        (other_cert.as_str(), key.as_str(), key.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("bootenvs")).unwrap();
        std::fs::write(
            d.join("bootenvs/discovery.toml"),
            "[arch.bios]\nlocal = \"exit\"\n",
        )
        .unwrap();
        let config = d.join("rackboot.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{p}/state\"\nassets_dir = \"{p}\"\nbootenvs_dir = \"{p}/bootenvs\"\n\
                 scripts_dir = \"{p}/scripts\"\n[network]\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
                 [dhcp]\nenabled = false\n[tftp]\nenabled = false\n[http]\nenabled = false\n\
                 [dns]\nenabled = false\n[api]\ntls_cert = \"{c}\"\ntls_key = \"{k}\"\ntls_port = 8443\n",
                p = d.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rackboot"))
            // `serve` once, to prove the real start-up path refuses it too.
            .args([
                if i == 0 { "serve" } else { "check" },
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{c} {k}");
        assert!(
            err.contains("cannot use TLS") && err.contains(names),
            "{names}: {err}"
        );
    }
}
