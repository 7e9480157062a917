//! The admin API as the CLI sees it: where the server is, which token to
//! send, one request at a time, and failures that map to exit codes scripts
//! can rely on.

use std::path::PathBuf;

use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How the CLI reaches the API (every `node`, `bootenv`, `explain` and
/// `events` command).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "RACKBOOT_SERVER",
        default_value = "http://127.0.0.1"
    )]
    pub server: String,
    /// An API token (see api.tokens_file); prefer --token-file or the
    /// environment, which do not show in the process list.
    #[arg(long, global = true, env = "RACKBOOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token: just the token, or a tokens-file line
    /// `<scope> <token> [name]` (the first one is used).
    #[arg(long, global = true, env = "RACKBOOT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for an https:// server (e.g. its own
    /// self-signed certificate).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The server refused the request (4xx): bad input, unknown node,
    /// protected node, conflict, missing or wrong token. Exit 1.
    #[error("{what}: {message} (HTTP {status}){hint}")]
    Refused {
        what: String,
        status: u16,
        message: String,
        hint: String,
    },
    /// The input file is wrong before anything was sent. Exit 1.
    #[error("{0}")]
    Input(String),
    /// Nothing to act on was wrong, but a check found problems (exit 4).
    #[error("{0}")]
    CheckFailed(String),
    /// The server could not be reached or failed (5xx). Exit 3.
    #[error("{0}")]
    Unavailable(String),
}

impl Failure {
    /// 1: refused or bad input; 3: server unreachable or failing; 4: a
    /// check found problems. (2 is clap's: a bad command line.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused { .. } | Failure::Input(_) => 1,
            Failure::Unavailable(_) => 3,
            Failure::CheckFailed(_) => 4,
        }
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(c: &Connection) -> anyhow::Result<Client> {
        let token = match (&c.token, &c.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => Some(token_from_file(path)?),
            (None, None) => None,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60));
        if let Some(path) = &c.cacert {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::Input(format!("cannot read --cacert {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Failure::Input(format!(
                    "--cacert {}: not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client {
            base: c.server.trim_end_matches('/').to_string(),
            token,
            http: builder.build()?,
            runtime,
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(Method::POST, path, Some(body.to_string()))
    }

    pub fn post_text(&self, path: &str, text: String) -> Result<Value, Failure> {
        self.send(Method::POST, path, Some(text))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(Method::PATCH, path, Some(body.to_string()))
    }

    pub fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::DELETE, path, None)
    }

    /// One request to `<server>/api/v1<path>`; the JSON answer (`null` for
    /// an empty one) or a [`Failure`] carrying the server's reason.
    fn send(&self, method: Method, path: &str, body: Option<String>) -> Result<Value, Failure> {
        let url = format!("{}{}{path}", self.base, crate::routes::API_PREFIX);
        let what = format!("{method} {url}");
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        self.runtime.block_on(async {
            let resp = req.send().await.map_err(|e| match tls_failure(&e) {
                Some(tls) => Failure::Unavailable(format!(
                    "TLS with rackboot at {} failed: {tls} (is the server's certificate signed by a CA \
                     this host trusts, for the name in --server?)",
                    self.base
                )),
                None => Failure::Unavailable(format!(
                    "cannot reach rackboot at {}: {e} (is it running? set --server or RACKBOOT_SERVER)",
                    self.base
                )),
            })?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| {
                Failure::Unavailable(format!("{what}: the answer broke off: {e}"))
            })?;
            let json: Option<Value> = serde_json::from_str(&text).ok();
            if status.is_success() {
                return Ok(json.unwrap_or(Value::Null));
            }
            let message = json
                .as_ref()
                .and_then(|j| j["error"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| text.trim().to_string());
            if status.is_server_error() {
                return Err(Failure::Unavailable(format!("{what}: {status}: {message}")));
            }
            let hint = match status {
                StatusCode::UNAUTHORIZED if self.token.is_none() => {
                    " (give a token: --token-file FILE or RACKBOOT_TOKEN)".to_string()
                }
                _ => String::new(),
            };
            Err(Failure::Refused {
                what,
                status: status.as_u16(),
                message,
                hint,
            })
        })
    }
}

/// The token in `path`: the file's only word, or the token of its first
/// `<scope> <token>` line (so an admin can point at a copy of a tokens file).
fn token_from_file(path: &std::path::Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Input(format!("cannot read token file {}: {e}", path.display())))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        return match words.as_slice() {
            [token] => Ok(token.to_string()),
            ["admin" | "read", token, ..] => Ok(token.to_string()),
            _ => Err(Failure::Input(format!(
                "{}, line {}: expected a token, or `<scope> <token> [name]`",
                path.display(),
                i + 1
            ))),
        };
    }
    Err(Failure::Input(format!("{} holds no token", path.display())))
}

/// Percent-encodes a query value (selectors hold `=` and `,`).
pub fn query_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Prints rows as columns padded to their widest cell, headers first.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints the JSON array `items` as a table under `headers`, each element
/// made a row by `row` (nothing but the headers when it is no array).
pub fn print_rows(headers: &[&str], items: &Value, row: impl Fn(&Value) -> Vec<String>) {
    let rows: Vec<Vec<String>> = items.as_array().into_iter().flatten().map(row).collect();
    print_table(headers, &rows);
}

/// A JSON flag as a cell: `yes` when it is `true`, else `no`.
pub fn flag(v: &Value, yes: &str, no: &str) -> String {
    (if *v == Value::Bool(true) { yes } else { no }).to_string()
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The TLS error under a failed request, if that is why it failed (an
/// unknown CA, a name the certificate does not hold): rustls' own error,
/// which the connector wraps in I/O errors (two deep with reqwest 0.12), and
/// an I/O error's `source()` skips the error it wraps: `get_ref` reaches it.
fn tls_failure(e: &reqwest::Error) -> Option<rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_bare_or_from_a_tokens_file_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "# mine\nadmin abc123 ops team\n").unwrap();
        assert_eq!(token_from_file(&p).unwrap(), "abc123");
        std::fs::write(&p, "\n  xyz789\n").unwrap();
        assert_eq!(token_from_file(&p).unwrap(), "xyz789");
        std::fs::write(&p, "root abc def\n").unwrap();
        let e = token_from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(query_value("rack=r1,role!=x"), "rack%3Dr1%2Crole%21%3Dx");
    }
}
