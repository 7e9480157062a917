//! Who `rackboot serve` runs as once its sockets are bound.
//!
//! Started as root outside systemd (a container, an init script, a shell),
//! rackboot needs root for one thing: binding ports 67, 69, 80 and 53 (and
//! SO_BINDTODEVICE on old kernels). After that nothing it does needs a
//! privilege: TFTP transfers use ephemeral ports, the boot interface is
//! already bound, and the store, assets and configuration are files. So
//! with `[service] user` set, it switches to that account (its group, or
//! `[service] group`) right after binding: `setgroups`, `setgid`, `setuid`,
//! which glibc applies to every thread, and which clears every capability
//! (no `PR_SET_KEEPCAPS`). The state directory and the files in it are
//! given to that account first, since the store keeps creating journal
//! segments there.
//!
//! Without `[service] user`, rackboot stays as started, and warns when that
//! is root. Under systemd the unit already starts it unprivileged
//! (`DynamicUser=`, two ambient capabilities); `[service] user` is then
//! left unset: a process that is not root has nothing to switch.
//!
//! Owns nothing else: binding is [`crate::service`]'s.

use std::ffi::CString;
use std::path::Path;

use crate::config::RunAsConfig;

/// Why rackboot could not become the configured account.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("service.user `{0}`: no such user on this host (create it, e.g. useradd --system {0})")]
    NoUser(String),
    #[error(
        "service.group `{0}`: no such group on this host (create it, e.g. groupadd --system {0})"
    )]
    NoGroup(String),
    #[error(
        "cannot give the state directory {path} to {user}: {source} (chown -R {user} {path} by hand, or fix state_dir)"
    )]
    StateDir {
        path: String,
        user: String,
        source: std::io::Error,
    },
    #[error("cannot switch to user {user} (uid {uid}, gid {gid}): {call} failed: {source}")]
    Switch {
        user: String,
        uid: u32,
        gid: u32,
        call: &'static str,
        source: std::io::Error,
    },
}

/// The account `[service]` names, looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl Account {
    /// Looks up `[service] user` (and `group`) in the host's user database.
    pub fn lookup(cfg: &RunAsConfig) -> Result<Account, PrivilegeError> {
        let (uid, primary) = user_ids(&cfg.user)?;
        let gid = match &cfg.group {
            Some(g) => group_id(g)?,
            None => primary,
        };
        Ok(Account {
            user: cfg.user.clone(),
            uid,
            gid,
        })
    }
}

/// What [`after_binding`] did, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Switched from root to the account.
    Switched,
    /// Not root: nothing to switch (systemd's unit, or a user's shell).
    NotRoot,
    /// Root, and no `[service] user`: stays root.
    StaysRoot,
}

/// Becomes `account` if running as root (giving it `state_dir` first);
/// called once every socket is bound.
pub fn after_binding(
    account: Option<&Account>,
    state_dir: &Path,
) -> Result<Outcome, PrivilegeError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(a) = account.filter(|_| root) else {
        if root {
            tracing::warn!(
                "running as root: set [service] user to an unprivileged account, which rackboot switches to once its ports are bound"
            );
            return Ok(Outcome::StaysRoot);
        }
        return Ok(Outcome::NotRoot);
    };
    give_state_dir(a, state_dir)?;
    let fail = |call, source| PrivilegeError::Switch {
        user: a.user.clone(),
        uid: a.uid,
        gid: a.gid,
        call,
        source,
    };
    let groups = [a.gid as libc::gid_t];
    // SAFETY: plain system calls with a valid array of one group; glibc
    // applies setgroups, setgid and setuid to every thread of the process.
    unsafe {
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err(fail("setgroups", std::io::Error::last_os_error()));
        }
        if libc::setgid(a.gid) != 0 {
            return Err(fail("setgid", std::io::Error::last_os_error()));
        }
        if libc::setuid(a.uid) != 0 {
            return Err(fail("setuid", std::io::Error::last_os_error()));
        }
        // Never back: a process that could regain root gained nothing.
        if libc::setuid(0) == 0 {
            return Err(fail(
                "setuid (regained root after dropping it)",
                std::io::Error::other("the switch did not hold"),
            ));
        }
    }
    tracing::info!(
        user = %a.user,
        uid = a.uid,
        gid = a.gid,
        "sockets bound: switched from root to the service account, with no capabilities"
    );
    Ok(Outcome::Switched)
}

/// Hands `dir` and every file directly in it to the account (the store's
/// file, WAL, lock and journal segments, created by root a moment ago).
fn give_state_dir(a: &Account, dir: &Path) -> Result<(), PrivilegeError> {
    let fail = |source| PrivilegeError::StateDir {
        path: dir.display().to_string(),
        user: a.user.clone(),
        source,
    };
    let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(a.uid), Some(a.gid));
    chown(dir).map_err(fail)?;
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        chown(&entry.map_err(fail)?.path()).map_err(fail)?;
    }
    Ok(())
}

fn user_ids(name: &str) -> Result<(u32, u32), PrivilegeError> {
    by_name(name, libc::getpwnam_r, |pw| (pw.pw_uid, pw.pw_gid))
        .ok_or_else(|| PrivilegeError::NoUser(name.into()))
}

fn group_id(name: &str) -> Result<u32, PrivilegeError> {
    by_name(name, libc::getgrnam_r, |gr| gr.gr_gid)
        .ok_or_else(|| PrivilegeError::NoGroup(name.into()))
}

/// `getpwnam_r` or `getgrnam_r`: they take the same arguments.
type GetByName<T> = unsafe extern "C" fn(
    *const libc::c_char,
    *mut T,
    *mut libc::c_char,
    libc::size_t,
    *mut *mut T,
) -> libc::c_int;

/// What `read` takes from the entry `get` (`getpwnam_r` for a `passwd`,
/// `getgrnam_r` for a `group`) finds for `name`; `None` when there is none.
/// The entry's strings point into a buffer freed on return: only `read`
/// sees them.
fn by_name<T, R>(name: &str, get: GetByName<T>, read: impl FnOnce(&T) -> R) -> Option<R> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: T is passwd or group, plain data; `get` fills it and points
    // into buf, which outlives every read of it (in `read`).
    let mut entry: T = unsafe { std::mem::zeroed() };
    let mut found: *mut T = std::ptr::null_mut();
    let rc = unsafe {
        get(
            c.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then(|| read(&entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_looked_up_by_name() {
        let root = Account::lookup(&RunAsConfig {
            user: "root".into(),
            group: None,
        })
        .unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let e = Account::lookup(&RunAsConfig {
            user: "no-such-rackboot-user".into(),
            group: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("useradd --system"), "{e}");
        let e = Account::lookup(&RunAsConfig {
            user: "root".into(),
            group: Some("no-such-rackboot-group".into()),
        })
        .unwrap_err();
        assert!(e.to_string().contains("no such group"), "{e}");
    }
}
