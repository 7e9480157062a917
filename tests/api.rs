//! The admin API (`/api/v1`) against the real `rackboot serve`, in a private network namespace,
//! with real curl: every endpoint, every refusal, and that a refused request changes nothing.
//!
//! Needs root (namespaces) and curl; openssl for the HTTPS test. Every wait is bounded; each
//! test's rackboot is ended by PID when its lab drops.

mod common;

use common::api::{ADMIN_TOKEN, READ_TOKEN};
use common::server::{Server, Setup};

// ---------------------------------------------------------------------------------------------
// Auth

#[test]
fn every_api_request_needs_a_token_of_the_right_scope() {
    let rb = Server::start("api-auth", Setup::default());

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
    let rb = Server::start(
        "api-off",
        Setup {
            api: false,
            ..Setup::default()
        },
    );
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
    let rb = Server::start("api-tokens-reload", Setup::default());
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
