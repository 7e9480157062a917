//! Per-node documents for OS installers and cloud images: the cloud-init
//! NoCloud seed (`meta-data`, `user-data`, `vendor-data`) and installer
//! answer files (kickstart, preseed), rendered from templates like config
//! scripts.
//!
//! cloud-init's NoCloud HTTP datasource and installers fetch these without
//! custom headers, so the node token is part of the URL:
//! `/cloud-init/<mac>/<token>/<document>`, `/answers/<mac>/<token>/<name>`.
//! Bootenv command lines get those URLs as `{{ nocloud_url }}` and
//! `{{ answers_url }}`. Templates are read at each request, so an edit is in
//! force at once; one that does not render is a 500 naming the file, and
//! never a half document. A document that holds a `secret("name")` goes
//! to a node once per boot ([`crate::secrets`]).

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use minijinja::{Environment, UndefinedBehavior};

use super::node::{document_refused, with_token};
use super::{HttpContext, HttpError, Peer, parse_mac};
use crate::beneath::Refused;
use crate::boot::TemplateContext;
use crate::control::agent::DocumentRefused;
use crate::model::{BootArch, Document};

/// The NoCloud documents and what each is when `cloud_init_dir` has no file
/// for it: an instance id and hostname, an empty cloud-config, nothing.
const NOCLOUD: [(&str, &str); 3] = [
    (
        "meta-data",
        "instance-id: rackboot-{{ node.mac | replace(':', '') }}\nlocal-hostname: {{ node.hostname }}\n",
    ),
    ("user-data", "#cloud-config\n"),
    ("vendor-data", ""),
];

/// `GET /cloud-init/<mac>/<token>/<meta-data|user-data|vendor-data>`.
pub async fn cloud_init(
    State(ctx): State<Arc<HttpContext>>,
    Path((mac, token, doc)): Path<(String, String, String)>,
    Peer(peer): Peer,
) -> Result<impl IntoResponse, HttpError> {
    let node = with_token(&ctx, parse_mac(&mac)?, Some(&token), peer).await?;
    let Some((_, default)) = NOCLOUD.iter().find(|(name, _)| *name == doc) else {
        return Err(HttpError::not_found(format!(
            "no NoCloud document `{doc}` (meta-data, user-data, vendor-data)"
        )));
    };
    let template = read_template(&ctx.cloud_init_dir, &doc)
        .await?
        .unwrap_or_else(|| default.to_string());
    let document = Document::CloudInit { name: doc };
    let text = render(&ctx, &node, document, &template, peer).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// `GET /answers/<mac>/<token>/<name>`: `answers_dir/<name>` rendered for the node.
pub async fn answers(
    State(ctx): State<Arc<HttpContext>>,
    Path((mac, token, name)): Path<(String, String, String)>,
    Peer(peer): Peer,
) -> Result<impl IntoResponse, HttpError> {
    let node = with_token(&ctx, parse_mac(&mac)?, Some(&token), peer).await?;
    if !is_file_name(&name) {
        return Err(HttpError::bad_request(format!(
            "`{name}` is not an answer file name (letters, digits, - _ .)"
        )));
    }
    let Some(template) = read_template(&ctx.answers_dir, &name).await? else {
        return Err(HttpError::not_found(format!("no answer file `{name}`")));
    };
    let document = Document::Answers { name };
    let text = render(&ctx, &node, document, &template, peer).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// A plain file name: no directories, no hidden files.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The template `dir/name`, or `None` when there is no such file. Read
/// beneath `dir` through no symbolic link ([`crate::beneath`]): a link to
/// a file outside (the API tokens, say) is refused, not rendered.
async fn read_template(dir: &FsPath, name: &str) -> Result<Option<String>, HttpError> {
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let opened = match crate::beneath::open(&dir, &name) {
            Ok(o) => o,
            Err(Refused::NotFound) => return Ok(None),
            Err(Refused::Io(e)) => {
                return Err(HttpError::internal(format!(
                    "{}: {e}",
                    dir.join(&name).display()
                )));
            }
            Err(e) => {
                return Err(HttpError {
                    status: axum::http::StatusCode::FORBIDDEN,
                    public: format!("template `{name}` cannot be served: {e}"),
                    internal: Some(format!("{}: {e}", dir.join(&name).display())),
                });
            }
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &opened.file, &mut text)
            .map_err(|e| HttpError::internal(format!("{}: {e}", dir.join(&name).display())))?;
        Ok(Some(text))
    })
    .await
    .map_err(HttpError::internal)?
}

/// `template` rendered for `node` ([`crate::control::Control::seed_document`]:
/// a document holding a secret goes out once per boot); one that does not
/// render is the site's template at fault, a 500.
async fn render(
    ctx: &HttpContext,
    node: &crate::model::Node,
    what: Document,
    template: &str,
    peer: Option<std::net::Ipv4Addr>,
) -> Result<String, HttpError> {
    let shown = what.clone();
    ctx.control
        .seed_document(node, what, peer, |tctx| render_template(template, tctx))
        .await
        .map_err(|r| match r {
            DocumentRefused::Render(e) => HttpError {
                status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                public: format!("template {shown} does not render for this node: {e}"),
                internal: None,
            },
            r => document_refused(ctx, node, &shown, r),
        })
}

/// The secrets the cloud-init and answer templates name (every one a node
/// may fetch), for admins.
pub async fn seed_secrets(ctx: &HttpContext) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for dir in [&ctx.cloud_init_dir, &ctx.answers_dir] {
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
            continue;
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name();
            if name.to_str().is_none_or(|n| !is_file_name(n)) {
                continue;
            }
            if let Ok(text) = tokio::fs::read_to_string(e.path()).await {
                out.extend(crate::secrets::referenced(&text));
            }
        }
    }
    out
}

/// Renders with the rules of config scripts: an unknown variable is an
/// error, nothing is HTML-escaped, the trailing newline is kept.
pub fn render_template(template: &str, ctx: &TemplateContext<'_>) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    crate::secrets::register(&mut env);
    env.render_str(template, ctx).map_err(|e| match e.detail() {
        Some(d) => format!("{} ({d})", e.kind()),
        None => e.to_string(),
    })
}

/// Renders every template in `dir` (if it exists) for a sample node, as
/// `rackboot check` does: the files that would fail a node's request, each
/// with its reason. Returns how many templates were checked.
pub fn check_templates(dir: &FsPath) -> Result<usize, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let sample = crate::model::Node::discovered(
        crate::model::Mac::new([0x52, 0x54, 0, 0, 0, 1]),
        "discovery",
        "sample-token".into(),
        crate::model::Timestamp(0),
    );
    let ctx = TemplateContext::new(
        "http://192.0.2.1",
        &sample,
        "discovery",
        BootArch::X86_64Efi,
    );
    let mut checked = 0;
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden || !path.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        render_template(&text, &ctx).map_err(|e| format!("{}: {e}", path.display()))?;
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;

    fn node() -> Node {
        Node::sample()
    }

    #[test]
    fn nocloud_defaults_render_for_the_node() {
        let n = node();
        let ctx = TemplateContext::new("http://10.0.0.1", &n, "discovery", BootArch::Bios);
        let meta = render_template(NOCLOUD[0].1, &ctx).unwrap();
        assert_eq!(
            meta,
            "instance-id: rackboot-525400aabbcc\nlocal-hostname: node-525400aabbcc\n"
        );
        assert_eq!(
            render_template(NOCLOUD[1].1, &ctx).unwrap(),
            "#cloud-config\n"
        );
        let e = render_template("x {{ nodee.mac }}", &ctx).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
    }

    /// Every shipped cloud-init and answer template renders for a sample node.
    #[test]
    fn every_template_in_configs_renders() {
        let n = node();
        let ctx = TemplateContext::new("http://10.0.0.1", &n, "debian-12", BootArch::X86_64Efi);
        let root = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for dir in ["cloud-init", "answers"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                let out = render_template(&text, &ctx)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(
                    !out.contains("{{"),
                    "{}: unrendered template text",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(seen >= 3, "the examples are shipped");
    }

    #[test]
    fn answer_file_names_stay_in_their_directory() {
        for ok in ["kickstart.cfg", "preseed.cfg", "ks-rocky_9.cfg"] {
            assert!(is_file_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a b", "%2e%2e"] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }
}
