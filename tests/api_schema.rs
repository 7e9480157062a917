//! schemathesis (PyPI) against the admin API of a real `rackboot serve`: it reads the OpenAPI
//! document the server serves at `/api/v1/openapi.json`, generates requests from it (valid and
//! invalid ones, then sequences that follow the document's links), sends them with the admin
//! token, and runs every check it has: no 5xx, every status, content type, header and body as
//! the document says, invalid data refused and valid data accepted, and so on.
//!
//! Needs root (the lab's namespace) and schemathesis in the venv boot-assets/setup.sh makes
//! (`/opt/rackboot-schemathesis`; `RACKBOOT_SCHEMATHESIS` names another). Bounded: a few
//! examples per operation and a time budget for the run; a fixed seed, so that a failure repeats
//! (`RACKBOOT_SCHEMATHESIS_SEED` picks another).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::api::AUTH_HEADER;
use common::lab::{SERVER_IP, tail};
use common::setup::Setup;

/// schemathesis' own budget for the run (`--max-time`), and the test's limit around it.
const BUDGET_S: u64 = 120;
const LIMIT: Duration = Duration::from_secs(BUDGET_S + 120);

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("RACKBOOT_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/rackboot-schemathesis/bin/schemathesis"));
    assert!(
        path.is_file(),
        "{} is missing: `sudo boot-assets/setup.sh --packages-only` installs schemathesis \
         (or set RACKBOOT_SCHEMATHESIS to one)",
        path.display()
    );
    path
}

#[test]
fn every_api_answer_to_schemathesis_is_what_the_openapi_document_says() {
    let st = schemathesis();
    let rb = Setup::new("api-schema").standard_files().start();
    let seed = std::env::var("RACKBOOT_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let report = rb.lab.dir().join("schemathesis");
    let junit = report.join("junit.xml");
    let url = format!("http://{SERVER_IP}/api/v1/openapi.json");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let out = rb.lab.run(
        st.to_str().expect("a UTF-8 path"),
        &[
            "--config-file",
            config.to_str().expect("a UTF-8 path"),
            "run",
            &url,
            "--header",
            AUTH_HEADER,
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--max-time",
            &BUDGET_S.to_string(),
            "--seed",
            &seed,
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-junit-path",
            junit.to_str().expect("a UTF-8 path"),
            "--output-truncate",
            "false",
        ],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis (seed {seed}) found answers the OpenAPI document does not allow \
         ({}):\n{stdout}\n{stderr}\nrackboot's log:\n{}",
        out.status,
        tail(&rb.log_text(), 40)
    );
    // It ran the operations it read from the document, not nothing.
    assert!(
        stdout.contains("passed") && Path::new(&junit).is_file(),
        "schemathesis ran no test:\n{stdout}\n{stderr}"
    );
    // And the server is still up and serving.
    let r = rb.request("GET", "/api/v1/nodes", Some(common::api::ADMIN_TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
}
