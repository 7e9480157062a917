//! Secret content in templates: the `secret("name")` function of config
//! scripts, cloud-init documents and installer answer files, which reads
//! `<secrets_dir>/<name>`; which secrets a template references; and which
//! documents holding a secret a node has already been served in its
//! current boot (a second fetch is refused: someone else has the token, or
//! the node is confused).
//!
//! A secret file must be readable by its owner only (mode 0600 or
//! stricter): one that the group or others may read is refused, as ssh
//! refuses such a key. Outside a [`reading`] scope (catalog validation,
//! `rackboot check`, explain, kernel command lines) nothing is read and
//! `secret("name")` renders as `<secret:name>`.
//!
//! Does not own the endpoints that serve documents (`http::node`,
//! `http::seed`), nor the node token that names a boot.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use minijinja::{Environment, Error, ErrorKind};

use crate::model::Mac;

thread_local! {
    /// The scope of the render running on this thread, if it may read secrets.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

struct Scope {
    dir: PathBuf,
    used: BTreeSet<String>,
}

/// Adds `secret(name)` to a template environment.
pub fn register(env: &mut Environment<'_>) {
    env.add_function("secret", secret);
}

fn secret(name: String) -> Result<String, Error> {
    if !is_secret_name(&name) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "secret(\"{name}\"): a secret is named by a file name (letters, digits, - _ .)"
            ),
        ));
    }
    SCOPE.with(|s| match s.borrow_mut().as_mut() {
        None => Ok(format!("<secret:{name}>")),
        Some(scope) => {
            let text = read(&scope.dir, &name)?;
            scope.used.insert(name);
            Ok(text)
        }
    })
}

/// The secret `dir/name`, refused (with the reason in the log, and no
/// path for the client) when missing, unreadable or readable by others.
fn read(dir: &Path, name: &str) -> Result<String, Error> {
    read_file(dir, name).map_err(|why| Error::new(ErrorKind::InvalidOperation, why))
}

/// The content of secret `name` for code other than templates (a BMC's
/// password). A refusal says why in the log (with the path) and, without
/// the path, in the error.
pub fn read_file(dir: &Path, name: &str) -> Result<String, String> {
    if !is_secret_name(name) {
        return Err(format!(
            "secret `{name}`: a secret is named by a file name (letters, digits, - _ .)"
        ));
    }
    let path = dir.join(name);
    let refuse = |why: &str, log: String| {
        tracing::warn!(path = %path.display(), "secret `{name}` refused: {log}");
        format!("secret `{name}` {why} (see the rackboot log)")
    };
    let meta = std::fs::metadata(&path).map_err(|e| refuse("cannot be read", e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("is not a file", "not a regular file".into()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(refuse(
            "is readable by group or others",
            format!("mode {:o}: chmod 600 it", meta.permissions().mode() & 0o777),
        ));
    }
    std::fs::read_to_string(&path).map_err(|e| refuse("cannot be read", e.to_string()))
}

/// A secret's name: a plain file name in `secrets_dir`.
pub(crate) fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Runs `render` (a template render on this thread) with `secret()`
/// reading from `dir`; returns its result and the secrets it read.
pub fn reading<T>(dir: &Path, render: impl FnOnce() -> T) -> (T, BTreeSet<String>) {
    /// Leaves no scope behind, also when `render` panics.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SCOPE.with(|s| s.borrow_mut().take());
        }
    }
    SCOPE.with(|s| {
        *s.borrow_mut() = Some(Scope {
            dir: dir.to_path_buf(),
            used: BTreeSet::new(),
        })
    });
    let reset = Reset;
    let out = render();
    let used = SCOPE
        .with(|s| s.borrow_mut().take())
        .map(|s| s.used)
        .unwrap_or_default();
    drop(reset);
    (out, used)
}

/// The secrets `template` names literally (`secret("x")` or `secret('x')`),
/// for admins: which secrets a node's documents reference.
pub fn referenced(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = template;
    while let Some(at) = rest.find("secret(") {
        rest = &rest[at + "secret(".len()..];
        let arg = rest.trim_start();
        let Some(quote) = arg.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        if let Some(end) = arg[1..].find(quote) {
            let name = &arg[1..1 + end];
            if is_secret_name(name) {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// MACs remembered by the [`Ledger`]; past it an arbitrary one is
/// forgotten (its documents can be fetched once more). Far above any rack.
const MAX_NODES: usize = 200_000;

/// Which documents holding a secret each node was served in its current
/// boot (named by the boot's node token). In memory: a restart of
/// rackboot allows one more fetch of each.
#[derive(Default)]
pub struct Ledger {
    served: Mutex<HashMap<Mac, (String, HashSet<String>)>>,
}

impl Ledger {
    /// Whether `document` may go to `mac` in the boot of `token`: true the
    /// first time (and it is now counted as served), false after.
    pub fn first_fetch(&self, mac: Mac, token: &str, document: &str) -> bool {
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        if served.len() >= MAX_NODES
            && !served.contains_key(&mac)
            && let Some(victim) = served.keys().next().copied()
        {
            served.remove(&victim);
        }
        let (boot, docs) = served
            .entry(mac)
            .or_insert_with(|| (token.to_string(), HashSet::new()));
        if boot != token {
            *boot = token.to_string();
            docs.clear();
        }
        docs.insert(document.to_string())
    }
}

/// Equal without an early exit, so the time taken says nothing about where
/// two values differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        register(&mut env);
        env
    }

    #[test]
    fn secret_reads_owner_only_files_inside_a_scope_and_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("builder-key");
        std::fs::write(&key, "KEY").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("open");
        std::fs::write(&open, "x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let env = env();
        let t = "k={{ secret('builder-key') }}";

        // Outside a scope: a placeholder, nothing read.
        assert_eq!(env.render_str(t, ()).unwrap(), "k=<secret:builder-key>");
        let (out, used) = reading(dir.path(), || env.render_str(t, ()));
        assert_eq!(out.unwrap(), "k=KEY");
        assert_eq!(used.into_iter().collect::<Vec<_>>(), ["builder-key"]);
        let (out, used) = reading(dir.path(), || env.render_str("plain", ()));
        assert_eq!((out.unwrap().as_str(), used.len()), ("plain", 0));

        for (bad, why) in [
            ("{{ secret('open') }}", "readable by group or others"),
            ("{{ secret('missing') }}", "cannot be read"),
            ("{{ secret('../etc/passwd') }}", "file name"),
        ] {
            let (out, _) = reading(dir.path(), || env.render_str(bad, ()));
            let e = out.unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains(&dir.path().display().to_string()), "{e}");
        }
        // The scope ended with the render.
        assert_eq!(env.render_str(t, ()).unwrap(), "k=<secret:builder-key>");
    }

    #[test]
    fn referenced_names_the_literal_secrets_of_a_template() {
        let t = "a {{ secret(\"ssh-key\") }} b {{ secret( 'db.pw' ) }} {{ secret(name) }} {{ secret('ssh-key') }}";
        assert_eq!(
            referenced(t).into_iter().collect::<Vec<_>>(),
            ["db.pw", "ssh-key"]
        );
        assert!(referenced("no secrets here").is_empty());
    }

    #[test]
    fn a_document_with_a_secret_goes_out_once_per_boot() {
        let l = Ledger::default();
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        assert!(l.first_fetch(mac, "boot1", "user-data"));
        assert!(!l.first_fetch(mac, "boot1", "user-data"));
        assert!(l.first_fetch(mac, "boot1", "script 10-keys.sh"));
        // The next boot (a new token) starts afresh.
        assert!(l.first_fetch(mac, "boot2", "user-data"));
        assert!(!l.first_fetch(mac, "boot2", "user-data"));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
