//! Who is signed in to the console: sessions kept in memory, the cookie
//! that names one, and the CSRF token each form carries.
//!
//! A session holds the SHA-256 of the API token it was opened with, never
//! the token: every request asks [`ApiAuth::grant`] again, so taking a
//! token out of `api.tokens_file` (or deleting the file) ends its sessions
//! at once, and a token's scope is whatever the file says now. The cookie
//! is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//! page sends it) and `Secure` when it was set over HTTPS; the session id
//! itself is 32 random bytes, looked up by its SHA-256 so that the lookup
//! reveals nothing through its timing. Sessions end on sign-out, after
//! `[console] session_idle` unused, and when rackboot stops.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::http::HttpError;
use crate::http::auth::{ApiAuth, Grant};
use crate::routes::CONSOLE_PREFIX;
use crate::secrets::constant_time_eq;

/// The cookie's name.
pub const COOKIE: &str = "rackboot_console";

/// Sessions kept at most: a sign-in needs a valid token, so this only
/// bounds what a token holder signing in in a loop could make us keep.
const MAX_SESSIONS: usize = 4096;

/// A one-shot message shown on the next page (the answer to a form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

struct Session {
    digest: [u8; 32],
    csrf: String,
    last_used: Instant,
    flash: Option<Flash>,
}

/// The signed-in browser a request came from.
#[derive(Clone, Debug)]
pub struct Signed {
    pub grant: Grant,
    /// The value every form of this session posts back.
    pub csrf: String,
    key: [u8; 32],
}

impl Signed {
    pub fn is_admin(&self) -> bool {
        self.grant.scope == crate::http::auth::Scope::Admin
    }
}

pub struct Sessions {
    idle: Duration,
    by_key: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session id a request's cookies name, if any.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // Each use is a few map operations; a panic elsewhere left it whole.
        self.by_key.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session for the token of `grant`; the `Set-Cookie` value
    /// that names it (`secure`: set over HTTPS).
    pub fn open(&self, grant: &Grant, secure: bool) -> HeaderValue {
        let id = random_hex(32);
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key_of(&id),
            Session {
                digest: grant.digest,
                csrf: random_hex(16),
                last_used: now,
                flash: None,
            },
        );
        cookie(&id, self.idle.as_secs(), secure)
    }

    /// The session a request's cookie names, if it is open and its token
    /// still in force. `Err` names why not.
    pub fn signed(&self, headers: &HeaderMap, auth: &ApiAuth) -> Result<Signed, HttpError> {
        let id = cookie_id(headers)
            .ok_or_else(|| HttpError::new(axum::http::StatusCode::UNAUTHORIZED, "not signed in"))?;
        let key = key_of(id);
        let (digest, csrf) = {
            let mut map = self.map();
            let now = Instant::now();
            let Some(s) = map.get_mut(&key) else {
                return Err(HttpError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "the session is over: sign in again",
                ));
            };
            if now.duration_since(s.last_used) >= self.idle {
                map.remove(&key);
                return Err(HttpError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "the session ran out: sign in again",
                ));
            }
            s.last_used = now;
            (s.digest, s.csrf.clone())
        };
        match auth.grant(&digest) {
            Ok(grant) => Ok(Signed { grant, csrf, key }),
            Err(e) => {
                self.map().remove(&key);
                Err(e)
            }
        }
    }

    /// Whether `presented` is the CSRF token of `signed`'s session.
    pub fn csrf_ok(signed: &Signed, presented: &str) -> bool {
        constant_time_eq(signed.csrf.as_bytes(), presented.as_bytes())
    }

    /// Leaves `flash` for the session's next page.
    pub fn flash(&self, signed: &Signed, flash: Flash) {
        if let Some(s) = self.map().get_mut(&signed.key) {
            s.flash = Some(flash);
        }
    }

    /// Takes the message the session's last form left: only a whole page
    /// shows it (a page part or a stream fetched meanwhile must not take it).
    pub fn take_flash(&self, signed: &Signed) -> Option<Flash> {
        self.map().get_mut(&signed.key).and_then(|s| s.flash.take())
    }

    /// Ends `signed`'s session.
    pub fn close(&self, signed: &Signed) {
        self.map().remove(&signed.key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// The `Set-Cookie` value of session `id`, lasting `max_age` seconds.
fn cookie(id: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path={CONSOLE_PREFIX}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("hex and ASCII")
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn cleared(secure: bool) -> HeaderValue {
    cookie("", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::Tokens;
    use std::path::Path;

    const A: &str = "admin-token-0123456789";

    fn auth() -> ApiAuth {
        ApiAuth::with_tokens(
            Path::new("/etc/r.toml"),
            Tokens::parse(Path::new("t"), &format!("admin {A} ops\n")).unwrap(),
        )
    }

    fn with_cookie(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("theme=dark; {pair}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_the_token_it_was_opened_with_and_ends_with_it() {
        let (auth, sessions) = (auth(), Sessions::new(Duration::from_secs(60)));
        let grant = auth.grant(&crate::http::auth::token_digest(A)).unwrap();
        let set = sessions.open(&grant, true);
        let text = set.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
            assert!(text.contains(part), "{text}");
        }
        assert!(!text.contains(A), "{text}");
        let headers = with_cookie(&set);
        let s = sessions.signed(&headers, &auth).unwrap();
        assert!(s.is_admin());
        assert_eq!(s.grant.name, "ops");
        assert!(Sessions::csrf_ok(&s, &s.csrf.clone()));
        assert!(!Sessions::csrf_ok(&s, "0000"));

        sessions.flash(
            &s,
            Flash {
                ok: true,
                text: "done".into(),
            },
        );
        let again = sessions.signed(&headers, &auth).unwrap();
        let flash = sessions.take_flash(&again);
        assert_eq!(flash.map(|f| f.text), Some("done".to_string()));
        assert_eq!(sessions.take_flash(&again), None, "shown once");

        // The token taken out of the file: the session is over.
        auth.replace(Tokens::default());
        let e = sessions.signed(&headers, &auth).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED);
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn no_cookie_an_unknown_one_or_an_idle_one_is_not_signed_in() {
        let (auth, sessions) = (auth(), Sessions::new(Duration::from_millis(1)));
        assert!(sessions.signed(&HeaderMap::new(), &auth).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("{COOKIE}=00ff").parse().unwrap());
        assert!(sessions.signed(&h, &auth).is_err());
        let grant = auth.grant(&crate::http::auth::token_digest(A)).unwrap();
        let set = sessions.open(&grant, false);
        assert!(!set.to_str().unwrap().contains("Secure"));
        std::thread::sleep(Duration::from_millis(5));
        let e = sessions.signed(&with_cookie(&set), &auth).unwrap_err();
        assert!(e.public.contains("ran out"), "{}", e.public);
    }
}
