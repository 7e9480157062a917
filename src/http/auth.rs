//! Who may use `/api/v1`: bearer tokens from the file named by
//! `api.tokens_file`, each with a scope (`admin` reads and changes, `read`
//! only reads). Owns the file format, the tokens in force (replaced whole on
//! reload) and the check every API request passes. Node endpoints do not use
//! this: each node presents its own token (see `node.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, HttpContext, HttpError};
use crate::control::admin::Actor;
use crate::secrets::constant_time_eq;
use crate::text_file;

/// Shorter tokens are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// GET only.
    Read,
    /// Everything.
    Admin,
}

/// Why a tokens file cannot be used; one line naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read API tokens file {path}: {source} (api.tokens_file)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API tokens file {path}: line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One token, kept as its SHA-256 so a comparison takes the same time
/// whatever the token's length or how much of it matches.
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    scope: Scope,
    name: String,
}

/// The tokens of one version of the file.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokensError {
    /// The file is not there (deleted, or renamed away).
    pub fn is_gone(&self) -> bool {
        matches!(self, TokensError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl Tokens {
    /// Parses the file's text: `<scope> <token> [name...]` a line, blank
    /// lines and `#` comments allowed.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokensError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason: String| TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let scope = match words.next() {
                Some("admin") => Scope::Admin,
                Some("read") => Scope::Read,
                Some(other) => {
                    return Err(bad(format!(
                        "unknown scope `{other}` (expected `admin` or `read`, then the token)"
                    )));
                }
                None => continue,
            };
            let token = words.next().ok_or_else(|| {
                bad("a scope without a token (expected `<scope> <token> [name]`)".into())
            })?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token is {} characters; use at least {MIN_TOKEN_LEN} (openssl rand -hex 24)",
                    token.len()
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("the token must be printable ASCII".into()));
            }
            let d = digest(token);
            if entries.iter().any(|e| e.digest == d) {
                return Err(bad("this token appears on an earlier line too".into()));
            }
            entries.push(Entry {
                digest: d,
                scope,
                name: words.collect::<Vec<_>>().join(" "),
            });
        }
        Ok(Tokens { entries })
    }

    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        text_file::load(
            path,
            |path, source| TokensError::Read { path, source },
            Tokens::parse,
        )
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scope and name of `token`, if it is one of ours.
    pub fn lookup(&self, token: &str) -> Option<(Scope, &str)> {
        self.lookup_digest(&digest(token))
    }

    /// The scope and name of the token whose SHA-256 is `d`. Every entry is
    /// compared, whether or not an earlier one matched.
    pub fn lookup_digest(&self, d: &[u8; 32]) -> Option<(Scope, &str)> {
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(&e.digest, d) && found.is_none() {
                found = Some((e.scope, e.name.as_str()));
            }
        }
        found
    }
}

/// The API's access rules in force: disabled (no tokens file configured),
/// or the tokens of the file's latest good version, or none at all once the
/// file is gone.
pub struct ApiAuth {
    /// The config file, named in the "disabled" answer.
    config: PathBuf,
    tokens: Option<RwLock<InForce>>,
}

/// What the tokens file last said.
#[derive(Clone)]
enum InForce {
    Tokens(Arc<Tokens>),
    /// The file was deleted (or renamed away): deleting it is how an admin
    /// revokes every token at once, so none stays valid from memory.
    Gone(PathBuf),
}

impl ApiAuth {
    pub fn disabled(config: &Path) -> ApiAuth {
        ApiAuth {
            config: config.to_path_buf(),
            tokens: None,
        }
    }

    pub fn with_tokens(config: &Path, tokens: Tokens) -> ApiAuth {
        ApiAuth {
            config: config.to_path_buf(),
            tokens: Some(RwLock::new(InForce::Tokens(Arc::new(tokens)))),
        }
    }

    /// Puts a new version of the tokens file in force (hot reload).
    pub fn replace(&self, tokens: Tokens) {
        if let Some(cell) = &self.tokens {
            *cell.write().unwrap_or_else(PoisonError::into_inner) =
                InForce::Tokens(Arc::new(tokens));
        }
    }

    /// The tokens file at `path` is gone: every token is refused until a
    /// file is there again.
    pub fn revoke_all(&self, path: &Path) {
        if let Some(cell) = &self.tokens {
            *cell.write().unwrap_or_else(PoisonError::into_inner) =
                InForce::Gone(path.to_path_buf());
        }
    }

    /// Whether a request with `headers` may use `method`; who it is (the
    /// token's name, for the audit of what it changes).
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Actor, HttpError> {
        self.in_force()?;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::UNAUTHORIZED,
                    "an API token is required: send `Authorization: Bearer <token>` with a token from api.tokens_file",
                )
            })?;
        let grant = self.grant(&digest(presented))?;
        grant.may(method)?;
        Ok(grant.actor)
    }

    /// What the token whose SHA-256 is `digest` may do now: the console keeps
    /// a signed-in token's digest (never the token) and asks again on every
    /// request, so a token taken out of the file (or the file deleted) ends
    /// its sessions at once.
    pub fn grant(&self, digest: &[u8; 32]) -> Result<Grant, HttpError> {
        let tokens = self.in_force()?;
        let (scope, name) = tokens.lookup_digest(digest).ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unknown API token: use one listed in api.tokens_file",
            )
        })?;
        let fingerprint: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Grant {
            scope,
            name: name.to_string(),
            actor: Actor::token(name, &fingerprint),
            digest: *digest,
        })
    }

    /// The tokens in force, or why there are none.
    fn in_force(&self) -> Result<Arc<Tokens>, HttpError> {
        let Some(cell) = &self.tokens else {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the API is disabled: set api.tokens_file in {}",
                    self.config.display()
                ),
            ));
        };
        match &*cell.read().unwrap_or_else(PoisonError::into_inner) {
            InForce::Tokens(t) => Ok(t.clone()),
            InForce::Gone(path) => Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the API tokens file {} is gone (deleted or moved), so every API token is revoked; put a tokens file back to use the API again",
                    path.display()
                ),
            )),
        }
    }
}

/// What one token may do, and who it is.
#[derive(Clone, Debug)]
pub struct Grant {
    pub scope: Scope,
    /// The token's name in the file (may be empty).
    pub name: String,
    /// Who made a change, for its audit.
    pub actor: Actor,
    /// The token's SHA-256.
    pub digest: [u8; 32],
}

impl Grant {
    /// Whether this token may make a request of `method`: a `read` token
    /// only GET and HEAD.
    pub fn may(&self, method: &Method) -> Result<(), HttpError> {
        let reads = matches!(*method, Method::GET | Method::HEAD);
        if self.scope == Scope::Read && !reads {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the token `{}` may only read (scope `read`); {method} needs an `admin` token",
                    self.name
                ),
            ));
        }
        Ok(())
    }
}

/// The SHA-256 of a token as presented.
pub fn token_digest(token: &str) -> [u8; 32] {
    digest(token)
}

/// Middleware in front of every `/api/v1` route (and its fallback); hands
/// the handlers the [`Actor`] (an `Extension`).
pub async fn require_token(
    State(ctx): State<Arc<HttpContext>>,
    mut req: Request,
    next: Next,
) -> Response {
    match ctx.auth.check(req.method(), req.headers()) {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "admin-token-0123456789";
    const R: &str = "read-token-0123456789";

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    fn auth() -> ApiAuth {
        let text = format!("# comment\n\nadmin {A} ops team\nread {R}\n");
        ApiAuth::with_tokens(
            Path::new("/etc/r.toml"),
            Tokens::parse(Path::new("t"), &text).unwrap(),
        )
    }

    #[test]
    fn scopes_decide_what_a_token_may_do() {
        let a = auth();
        let status = |m: Method, t| a.check(&m, &headers(t)).map_err(|e| e.status);
        assert_eq!(
            status(Method::GET, Some(A)),
            Ok(Actor::token("ops team", ""))
        );
        assert!(status(Method::PATCH, Some(A)).is_ok());
        // An unnamed token is told apart by its digest, never shown itself.
        let who = status(Method::GET, Some(R)).unwrap().to_string();
        assert!(who.starts_with("unnamed token sha256:"), "{who}");
        assert!(!who.contains(R), "{who}");
        assert_eq!(status(Method::DELETE, Some(R)), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(Method::GET, None), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(Method::GET, Some("admin-token-012345678")),
            Err(StatusCode::UNAUTHORIZED)
        );
        let off = ApiAuth::disabled(Path::new("/etc/r.toml"));
        let e = off.check(&Method::GET, &headers(Some(A))).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.public.contains("api.tokens_file in /etc/r.toml"),
            "{}",
            e.public
        );
    }

    #[test]
    fn a_deleted_tokens_file_revokes_every_token() {
        let a = auth();
        a.revoke_all(Path::new("/etc/rackboot/api-tokens"));
        for m in [Method::GET, Method::POST] {
            let e = a.check(&m, &headers(Some(A))).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN);
            assert!(
                e.public
                    .contains("/etc/rackboot/api-tokens is gone (deleted or moved)"),
                "{}",
                e.public
            );
        }
        a.replace(Tokens::parse(Path::new("t"), &format!("admin {A}\n")).unwrap());
        assert!(a.check(&Method::GET, &headers(Some(A))).is_ok(), "back");
        let gone = Tokens::load(Path::new("/nonexistent/api-tokens")).unwrap_err();
        assert!(gone.is_gone(), "{gone}");
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            ("owner abcdefghijklmnopq\n", 1, "unknown scope `owner`"),
            ("# x\nadmin\n", 2, "without a token"),
            ("read short\n", 1, "at least 16"),
            (
                "admin abcdefghijklmnopq\nread abcdefghijklmnopq\n",
                2,
                "earlier line",
            ),
        ];
        for (text, line, want) in cases {
            let msg = Tokens::parse(Path::new("/etc/tok"), text)
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(&format!("/etc/tok: line {line}: ")) && msg.contains(want),
                "{msg}"
            );
            assert_eq!(msg.lines().count(), 1);
        }
    }

    #[test]
    fn lookup_finds_the_name() {
        let t = Tokens::parse(Path::new("t"), &format!("admin {A} ops team\n")).unwrap();
        assert_eq!(t.lookup(A), Some((Scope::Admin, "ops team")));
        assert_eq!(t.lookup(R), None);
    }
}
