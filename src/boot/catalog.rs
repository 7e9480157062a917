//! The set of bootenvs and config scripts in force, with their templates
//! compiled once, so rendering per node is cheap and can never meet a
//! template that was not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use super::assign::{self, Assigned, ScriptHeader};
pub use super::bootenv::RemoteAsset;
use super::bootenv::{ArchBoot, Bootenv, BootenvError, LOCAL};
use crate::model::selector::LabelTerm;
use crate::model::{BootArch, Node};
use crate::routes;

/// What a template may use. Anything else is an error when the file is loaded.
#[derive(Debug, Serialize)]
pub struct TemplateContext<'a> {
    /// Base URL of rackboot's HTTP service as the node reaches it, no trailing slash.
    pub server_url: &'a str,
    pub node: NodeView<'a>,
    /// The node's params, also reachable as `node.params`.
    pub params: &'a BTreeMap<String, String>,
    /// `bios`, `x86_64_efi` or `arm64_efi`.
    pub arch: &'a str,
    /// The bootenv being rendered (for a once-only or leased bootenv, not
    /// `node.bootenv`).
    pub bootenv: &'a str,
    /// Where an installer reports that the install is complete (POST, with
    /// `Authorization: Bearer {{ node.token }}`).
    pub callback_url: String,
    /// The node's cloud-init NoCloud seed (ends in `/`; cloud-init appends
    /// `meta-data`, `user-data`, `vendor-data`): `ds=nocloud;s={{ nocloud_url }}`.
    /// It carries the node token, since cloud-init sends no headers.
    pub nocloud_url: String,
    /// Base of the node's installer answer files (no trailing slash):
    /// `inst.ks={{ answers_url }}/kickstart.cfg`, `url={{ answers_url }}/preseed.cfg`.
    pub answers_url: String,
}

/// The node fields templates see (the token included: it reaches the node
/// only through its own script).
#[derive(Debug, Serialize)]
pub struct NodeView<'a> {
    pub mac: String,
    pub hostname: &'a str,
    pub ipv4: Option<String>,
    pub labels: &'a BTreeMap<String, String>,
    pub params: &'a BTreeMap<String, String>,
    pub bootenv: &'a str,
    pub token: &'a str,
}

impl<'a> TemplateContext<'a> {
    pub fn new(server_url: &'a str, node: &'a Node, bootenv: &'a str, arch: BootArch) -> Self {
        TemplateContext {
            callback_url: routes::installed(server_url, &node.mac, bootenv),
            nocloud_url: routes::cloud_init(server_url, &node.mac, &node.token),
            answers_url: routes::answers(server_url, &node.mac, &node.token),
            bootenv,
            server_url,
            node: NodeView {
                mac: node.mac.to_string(),
                hostname: &node.hostname,
                ipv4: node.ipv4.map(|ip| ip.to_string()),
                labels: &node.labels,
                params: &node.params,
                bootenv: &node.bootenv,
                token: &node.token,
            },
            params: &node.params,
            arch: arch.as_str(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Bootenv(#[from] BootenvError),
    #[error("cannot read directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read config script {path}: {source}")]
    ReadScript {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config script {path}: line {line}: {reason}")]
    ScriptHeader {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "config script {path}: rackboot-bootenv `{bootenv}` is not a bootenv (add bootenvs/{bootenv}.toml, or fix the name)"
    )]
    UnknownScriptBootenv { path: PathBuf, bootenv: String },
    #[error("{path}: template does not compile: {message}")]
    Template { path: PathBuf, message: String },
    #[error(
        "bootenv {path}: [arch.{arch}] {what} `{asset}` is not in the assets directory {assets} as a regular file reached through no symbolic link, the only kind rackboot serves (run boot-assets/setup.sh, or fix the path)"
    )]
    MissingAsset {
        path: PathBuf,
        arch: BootArch,
        what: &'static str,
        asset: String,
        assets: PathBuf,
    },
    #[error("bootenv {path}: config script `{script}` does not exist in {dir}")]
    MissingScript {
        path: PathBuf,
        script: String,
        dir: PathBuf,
    },
    #[error(
        "bootenv {path}: after_install `{after_install}` is not a bootenv (add bootenvs/{after_install}.toml, or use `local`)"
    )]
    UnknownAfterInstall {
        path: PathBuf,
        after_install: String,
    },
    #[error("the default bootenv `{0}` is not defined (add bootenvs/{0}.toml)")]
    MissingDefault(String),
}

impl CatalogError {
    /// The file at fault, when one is.
    pub fn path(&self) -> Option<&Path> {
        match self {
            CatalogError::Bootenv(
                BootenvError::Read { path, .. }
                | BootenvError::Parse { path, .. }
                | BootenvError::Invalid { path, .. },
            ) => Some(path),
            CatalogError::ReadDir { path, .. }
            | CatalogError::ReadScript { path, .. }
            | CatalogError::Template { path, .. }
            | CatalogError::MissingAsset { path, .. }
            | CatalogError::MissingScript { path, .. }
            | CatalogError::UnknownAfterInstall { path, .. }
            | CatalogError::ScriptHeader { path, .. }
            | CatalogError::UnknownScriptBootenv { path, .. } => Some(path),
            CatalogError::MissingDefault(_) => None,
        }
    }

    /// The line of [`CatalogError::path`] at fault, given that file's text:
    /// where the parser stopped, else the line naming the arch table, asset
    /// or script the error is about.
    pub fn line_in(&self, text: &str) -> Option<usize> {
        let line_of = |needle: &str, after: usize| {
            text.lines()
                .enumerate()
                .skip(after)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, _)| i + 1)
        };
        let arch_table = |arch: &str| line_of(&format!("[arch.{arch}]"), 0);
        let quoted = |s: &str| format!("\"{s}\"");
        match self {
            CatalogError::Bootenv(BootenvError::Parse { message, .. }) => message
                .strip_prefix("line ")?
                .split(',')
                .next()?
                .parse()
                .ok(),
            CatalogError::Bootenv(BootenvError::Invalid { reason, .. }) => {
                let arch = reason.strip_prefix("[arch.")?.split(']').next()?;
                arch_table(arch)
            }
            CatalogError::Template { message, .. } => {
                let arch = message.strip_prefix("[arch.")?.split(']').next()?;
                line_of("cmdline", arch_table(arch)?)
            }
            CatalogError::MissingAsset { arch, asset, .. } => {
                line_of(&quoted(asset), arch_table(arch.as_str())?)
            }
            CatalogError::MissingScript { script, .. } => line_of(&quoted(script), 0),
            CatalogError::UnknownAfterInstall { .. } => line_of("after_install", 0),
            CatalogError::ScriptHeader { line, .. } => Some(*line),
            CatalogError::UnknownScriptBootenv { .. } => line_of("rackboot-bootenv", 0),
            _ => None,
        }
    }
}

/// A failure to render a template for one node (e.g. a param the template
/// uses but the node lacks).
#[derive(Debug, thiserror::Error)]
#[error("cannot render {template}: {message}")]
pub struct RenderError {
    pub template: String,
    pub message: String,
}

/// Where a remote asset can be fetched from: every URL the bootenvs give for
/// one digest, tried in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub sha256: String,
    pub urls: Vec<String>,
    /// The `[arch.…]` tables that name it as their kernel: the download is
    /// checked to be a kernel each of them boots before it is kept (empty
    /// for an initrd).
    pub kernel_for: Vec<BootArch>,
}

pub struct Catalog {
    bootenvs: BTreeMap<String, Bootenv>,
    /// Remote assets by local path (`sha256/<hex>`).
    remote: BTreeMap<String, Remote>,
    /// Where each bootenv came from, for messages.
    sources: BTreeMap<String, PathBuf>,
    /// Every config script by file name, with what its header says.
    scripts: BTreeMap<String, ScriptHeader>,
    env: Environment<'static>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("bootenvs", &self.bootenvs.keys().collect::<Vec<_>>())
            .field("scripts", &self.scripts)
            .finish()
    }
}

fn cmdline_template(bootenv: &str, arch: BootArch) -> String {
    format!("bootenv/{bootenv}/{arch}")
}

fn script_template(name: &str) -> String {
    format!("script/{name}")
}

impl Catalog {
    /// Reads every `*.toml` in `bootenvs_dir` and every file in `scripts_dir`,
    /// and checks that each template compiles and uses only known variables,
    /// that every asset exists under `assets_dir`, that every named script
    /// exists, and that `default_bootenv` is defined.
    pub fn load(
        bootenvs_dir: &Path,
        scripts_dir: &Path,
        assets_dir: &Path,
        default_bootenv: &str,
    ) -> Result<Catalog, CatalogError> {
        Catalog::load_with(bootenvs_dir, scripts_dir, assets_dir, default_bootenv, None)
    }

    /// [`Catalog::load`] as if the bootenv file `replace.0` (in
    /// `bootenvs_dir`, existing or not) held the text `replace.1`: how a
    /// bootenv edit is checked exactly as the server would load it, before
    /// the file on disk is replaced.
    pub fn load_with(
        bootenvs_dir: &Path,
        scripts_dir: &Path,
        assets_dir: &Path,
        default_bootenv: &str,
        replace: Option<(&Path, &str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut bootenvs = BTreeMap::new();
        let mut sources = BTreeMap::new();
        bootenvs.insert(LOCAL.to_string(), Bootenv::builtin_local());
        sources.insert(LOCAL.to_string(), PathBuf::from("(built in)"));
        let mut files = sorted_files(bootenvs_dir)?;
        if let Some((path, _)) = replace
            && !files.iter().any(|p| p == path)
        {
            files.push(path.to_path_buf());
        }
        for path in files {
            if path.extension().is_some_and(|e| e == "toml") {
                let b = match replace {
                    Some((p, text)) if p == path => Bootenv::parse(&path, text)?,
                    _ => Bootenv::load(&path)?,
                };
                sources.insert(b.name.clone(), path);
                bootenvs.insert(b.name.clone(), b);
            }
        }
        let mut scripts = BTreeMap::new();
        if scripts_dir.exists() {
            for path in sorted_files(scripts_dir)? {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name.starts_with('.') {
                    continue;
                }
                let text =
                    std::fs::read_to_string(&path).map_err(|source| CatalogError::ReadScript {
                        path: path.clone(),
                        source,
                    })?;
                let header =
                    assign::parse_header(&text).map_err(|e| CatalogError::ScriptHeader {
                        path: path.clone(),
                        line: e.line,
                        reason: e.reason,
                    })?;
                scripts.insert(name.to_string(), (path.clone(), text, header));
            }
        }

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Command lines and shell scripts are not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        crate::secrets::register(&mut env);

        for (name, b) in &bootenvs {
            let path = &sources[name];
            for (arch, boot) in &b.arches {
                if let ArchBoot::Kernel {
                    kernel,
                    initrds,
                    cmdline,
                } = boot
                {
                    for (what, asset) in std::iter::once(("kernel", kernel))
                        .chain(initrds.iter().map(|i| ("initrd", i)))
                    {
                        // Fetched on first use: its mirror need not be up for a reload.
                        let is_remote = b.remote.iter().any(|r| r.local_path() == *asset);
                        // Checked as it will be served: a link would load here
                        // and then be refused to every node.
                        if is_remote {
                            continue;
                        }
                        let Ok(opened) = crate::beneath::open(assets_dir, asset) else {
                            return Err(CatalogError::MissingAsset {
                                path: path.clone(),
                                arch: *arch,
                                what,
                                asset: asset.clone(),
                                assets: assets_dir.to_path_buf(),
                            });
                        };
                        // Loaded all the same (the bootenv may serve machines
                        // with Secure Boot off), but said: shim refuses it.
                        if what == "kernel"
                            && b.loader == super::bootenv::Loader::Grub
                            && *arch != BootArch::Bios
                            && let Ok(sig) = crate::assets::signature::signature(&opened.file)
                            && sig != crate::assets::Signature::Signed
                        {
                            tracing::warn!(bootenv = %name, %arch, kernel = %asset, "the bootenv boots through GRUB (Secure Boot) but its kernel is {}: Secure Boot firmware will refuse it", sig.as_str());
                        }
                    }
                    env.add_template_owned(cmdline_template(name, *arch), cmdline.clone())
                        .map_err(|e| CatalogError::Template {
                            path: path.clone(),
                            message: format!("[arch.{arch}] cmdline: {e}"),
                        })?;
                }
            }
            if !bootenvs.contains_key(&b.after_install) {
                return Err(CatalogError::UnknownAfterInstall {
                    path: path.clone(),
                    after_install: b.after_install.clone(),
                });
            }
            for s in &b.scripts {
                if !scripts.contains_key(s.as_str()) {
                    return Err(CatalogError::MissingScript {
                        path: path.clone(),
                        script: s.clone(),
                        dir: scripts_dir.to_path_buf(),
                    });
                }
            }
        }
        for (name, (path, text, header)) in &scripts {
            if let Some(b) = &header.bootenv
                && !bootenvs.contains_key(b)
            {
                return Err(CatalogError::UnknownScriptBootenv {
                    path: path.clone(),
                    bootenv: b.clone(),
                });
            }
            env.add_template_owned(script_template(name), text.clone())
                .map_err(|e| CatalogError::Template {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        }
        if !bootenvs.contains_key(default_bootenv) {
            return Err(CatalogError::MissingDefault(default_bootenv.to_string()));
        }

        let mut remote: BTreeMap<String, Remote> = BTreeMap::new();
        for r in bootenvs.values().flat_map(|b| &b.remote) {
            let entry = remote.entry(r.local_path()).or_insert_with(|| Remote {
                sha256: r.sha256.clone(),
                urls: Vec::new(),
                kernel_for: Vec::new(),
            });
            if !entry.urls.contains(&r.url) {
                entry.urls.push(r.url.clone());
            }
        }
        // Every bootenv naming the digest as a kernel counts.
        for b in bootenvs.values() {
            for (arch, boot) in &b.arches {
                if let ArchBoot::Kernel { kernel, .. } = boot
                    && let Some(entry) = remote.get_mut(kernel)
                    && !entry.kernel_for.contains(arch)
                {
                    entry.kernel_for.push(*arch);
                }
            }
        }
        for entry in remote.values_mut() {
            entry.kernel_for.sort();
        }
        let catalog = Catalog {
            remote,
            bootenvs,
            sources,
            scripts: scripts
                .iter()
                .map(|(name, (_, _, header))| (name.clone(), header.clone()))
                .collect(),
            env,
        };
        catalog.check_templates(&scripts)?;
        Ok(catalog)
    }

    /// Renders every template against a sample node, so a misspelt variable
    /// is refused at load time instead of failing a boot.
    fn check_templates(
        &self,
        scripts: &BTreeMap<String, (PathBuf, String, ScriptHeader)>,
    ) -> Result<(), CatalogError> {
        let sample = Node::discovered(
            crate::model::Mac::new([0x52, 0x54, 0, 0, 0, 1]),
            "discovery",
            "sample-token".into(),
            crate::model::Timestamp(0),
        );
        for (name, b) in &self.bootenvs {
            for (arch, boot) in &b.arches {
                if !matches!(boot, ArchBoot::Kernel { .. }) {
                    continue;
                }
                if let Err(e) = self.render_cmdline(
                    name,
                    *arch,
                    &TemplateContext::new("http://192.0.2.1", &sample, name, *arch),
                ) {
                    return Err(CatalogError::Template {
                        path: self.sources[name].clone(),
                        message: format!("[arch.{arch}] cmdline: {}", e.message),
                    });
                }
            }
        }
        for (name, (path, _, header)) in scripts {
            // A script selected by labels may use the labels its selector
            // guarantees (`role=builder` → `node.labels.role`).
            let mut sample = sample.clone();
            for term in header.selector.iter().flat_map(|s| s.terms()) {
                match term {
                    LabelTerm::Equals(k, v) => sample.labels.insert(k.clone(), v.clone()),
                    LabelTerm::Exists(k) => sample.labels.insert(k.clone(), "sample".into()),
                    LabelTerm::NotEquals(..) | LabelTerm::Absent(_) => None,
                };
            }
            let ctx = TemplateContext::new(
                "http://192.0.2.1",
                &sample,
                "discovery",
                BootArch::X86_64Efi,
            );
            if let Err(e) = self.render_script(name, &ctx) {
                return Err(CatalogError::Template {
                    path: path.clone(),
                    message: e.message,
                });
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Bootenv> {
        self.bootenvs.get(name)
    }

    /// The file `name` was read from (`(built in)` for the built-in `local`).
    pub fn source(&self, name: &str) -> Option<&Path> {
        self.sources.get(name).map(PathBuf::as_path)
    }

    pub fn bootenvs(&self) -> impl Iterator<Item = &Bootenv> {
        self.bootenvs.values()
    }

    /// The upstream of `path` (under the assets directory) when a bootenv
    /// names it by URL and digest.
    pub fn remote(&self, path: &str) -> Option<&Remote> {
        self.remote.get(path)
    }

    pub fn has_script(&self, name: &str) -> bool {
        self.scripts.contains_key(name)
    }

    /// The config scripts `node` runs while booted into `bootenv`, in order,
    /// each with why (see [`assign`]). What `GET /node/<mac>/scripts` lists,
    /// and what `rackboot explain` shows.
    pub fn scripts_for(&self, node: &Node, bootenv: &str) -> Vec<Assigned> {
        let listed = self
            .bootenvs
            .get(bootenv)
            .map(|b| b.scripts.as_slice())
            .unwrap_or_default();
        assign::assign(
            bootenv,
            listed,
            self.scripts.iter().map(|(n, h)| (n.as_str(), h)),
            &node.labels,
        )
    }

    /// The kernel command line of `bootenv` on `arch` for one node.
    pub fn render_cmdline(
        &self,
        bootenv: &str,
        arch: BootArch,
        ctx: &TemplateContext<'_>,
    ) -> Result<String, RenderError> {
        self.render(&cmdline_template(bootenv, arch), ctx)
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The text of config script `name` as loaded (to see which secrets it names).
    pub fn script_source(&self, name: &str) -> Option<String> {
        self.env
            .get_template(&script_template(name))
            .ok()
            .map(|t| t.source().to_string())
    }

    /// One config script for one node.
    pub fn render_script(
        &self,
        name: &str,
        ctx: &TemplateContext<'_>,
    ) -> Result<String, RenderError> {
        self.render(&script_template(name), ctx)
    }

    fn render(&self, template: &str, ctx: &TemplateContext<'_>) -> Result<String, RenderError> {
        let err = |e: minijinja::Error| RenderError {
            template: template.to_string(),
            message: match e.detail() {
                Some(d) => format!("{} ({d})", e.kind()),
                None => e.to_string(),
            },
        };
        self.env
            .get_template(template)
            .map_err(err)?
            .render(ctx)
            .map_err(err)
    }
}

fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let read_err = |source| CatalogError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The catalog of a test's `root`: its `bootenvs`, `scripts` and `assets`,
/// `discovery` the default bootenv.
#[cfg(test)]
impl Catalog {
    pub(crate) fn load_test_tree(root: &Path) -> Result<Catalog, CatalogError> {
        Catalog::load(
            &root.join("bootenvs"),
            &root.join("scripts"),
            &root.join("assets"),
            "discovery",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for d in ["bootenvs", "scripts", "assets/x86_64"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            std::fs::write(dir.path().join("assets/x86_64/vmlinuz"), b"k").unwrap();
            std::fs::write(dir.path().join("assets/x86_64/initrd.img"), b"i").unwrap();
            std::fs::write(
                dir.path().join("scripts/hello.sh"),
                "echo {{ node.hostname }} {{ params.role | default('none') }}\n",
            )
            .unwrap();
            let f = Fixture { dir };
            f.bootenv(
                "discovery",
                r#"scripts = ["hello.sh"]
[arch.x86_64_efi]
kernel = "x86_64/vmlinuz"
initrds = ["x86_64/initrd.img"]
cmdline = "console=ttyS0  rackboot.url={{ server_url }} rackboot.mac={{ node.mac }}"
"#,
            );
            f
        }

        fn bootenv(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(format!("bootenvs/{name}.toml")), text).unwrap();
        }

        /// Loading fails, with an error naming `file` and saying `what`.
        fn refused(&self, file: &str, what: &str) {
            let msg = self.load().unwrap_err().to_string();
            assert!(msg.contains(file) && msg.contains(what), "{msg}");
        }

        fn load(&self) -> Result<Catalog, CatalogError> {
            Catalog::load_test_tree(self.dir.path())
        }
    }

    /// The fixture with bootenv `name` of `text` is refused: the error
    /// names its file and says `what`.
    fn refused_bootenv(name: &str, text: &str, what: &str) {
        let f = Fixture::new();
        f.bootenv(name, text);
        f.refused(&format!("{name}.toml"), what);
    }

    /// The sample node's command line in `bootenv` on x86_64 EFI, served
    /// from 10.0.0.1.
    fn cmdline(c: &Catalog, bootenv: &str) -> String {
        let n = node();
        let ctx = TemplateContext::new("http://10.0.0.1", &n, bootenv, BootArch::X86_64Efi);
        c.render_cmdline(bootenv, BootArch::X86_64Efi, &ctx)
            .unwrap()
    }

    fn node() -> Node {
        Node::sample()
    }

    #[test]
    fn renders_cmdline_and_script_for_a_node() {
        let c = Fixture::new().load().unwrap();
        let n = node();
        let ctx = TemplateContext::new("http://10.0.0.1", &n, "discovery", BootArch::X86_64Efi);
        assert_eq!(
            cmdline(&c, "discovery"),
            "console=ttyS0 rackboot.url=http://10.0.0.1 rackboot.mac=52:54:00:aa:bb:cc"
        );
        assert_eq!(
            c.render_script("hello.sh", &ctx).unwrap(),
            "echo node-525400aabbcc none\n"
        );
        assert!(c.get("local").is_some(), "local is built in");
    }

    #[test]
    fn unknown_template_variable_is_refused_at_load() {
        refused_bootenv(
            "typo",
            "[arch.bios]\nkernel = \"x86_64/vmlinuz\"\ncmdline = \"x={{ nod.mac }}\"\n",
            "undefined",
        );
    }

    #[test]
    fn missing_kernel_and_missing_script_are_refused() {
        refused_bootenv(
            "k",
            "[arch.bios]\nkernel = \"x86_64/nope\"\n",
            "x86_64/nope",
        );
        refused_bootenv(
            "s",
            "scripts = [\"gone.sh\"]\n[arch.bios]\nlocal = \"exit\"\n",
            "gone.sh",
        );
    }

    #[test]
    fn installers_name_an_existing_after_install_and_see_their_callback() {
        let f = Fixture::new();
        f.bootenv(
            "install",
            r#"installer = true
after_install = "rescue"
[arch.x86_64_efi]
kernel = "x86_64/vmlinuz"
cmdline = "rackboot.bootenv={{ bootenv }} cb={{ callback_url }}"
"#,
        );
        f.refused("install.toml", "after_install `rescue`");
        f.bootenv("rescue", "[arch.x86_64_efi]\nlocal = \"exit\"\n");
        let c = f.load().unwrap();
        assert!(c.get("install").unwrap().installer);
        assert_eq!(
            cmdline(&c, "install"),
            "rackboot.bootenv=install cb=http://10.0.0.1/node/52:54:00:aa:bb:cc/installed?bootenv=install"
        );
    }

    #[test]
    fn remote_assets_need_not_be_present_and_are_looked_up_by_path() {
        let f = Fixture::new();
        let sha = "0f".repeat(32);
        for (name, url) in [("a", "http://m1/k"), ("b", "http://m2/k")] {
            f.bootenv(
                name,
                &format!(
                    "[arch.bios]\nkernel = {{ url = \"{url}\", sha256 = \"{sha}\" }}\n\
                     initrds = [\"x86_64/initrd.img\"]\n"
                ),
            );
        }
        let initrd = "1e".repeat(32);
        f.bootenv(
            "c",
            &format!(
                "[arch.arm64_efi]\nkernel = {{ url = \"http://m1/k\", sha256 = \"{sha}\" }}\n\
                 initrds = [{{ url = \"http://m1/i\", sha256 = \"{initrd}\" }}]\n"
            ),
        );
        let c = f.load().unwrap();
        let r = c.remote(&format!("sha256/{sha}")).unwrap();
        assert_eq!(r.sha256, sha);
        assert_eq!(r.urls, ["http://m1/k", "http://m2/k"]);
        // Checked as a kernel for every table naming it so.
        assert_eq!(r.kernel_for, [BootArch::Bios, BootArch::Arm64Efi]);
        let i = c.remote(&format!("sha256/{initrd}")).unwrap();
        assert!(i.kernel_for.is_empty(), "an initrd: {i:?}");
        assert!(c.remote("x86_64/initrd.img").is_none());
    }

    #[test]
    fn errors_point_at_their_line() {
        let f = Fixture::new();
        let p = f.dir.path();
        let load = |name: &str, text: &str| {
            let e = Catalog::load_with(
                &p.join("bootenvs"),
                &p.join("scripts"),
                &p.join("assets"),
                "discovery",
                Some((&p.join("bootenvs").join(format!("{name}.toml")), text)),
            )
            .unwrap_err();
            assert!(
                e.path().unwrap().ends_with(format!("bootenvs/{name}.toml")),
                "{e}"
            );
            (e.line_in(text), e.to_string())
        };
        let kernel = "[arch.x86_64_efi]\nkernel = \"x86_64/vmlinuz\"\n";
        let cases = [
            ("description = \"x\"\n[arch.bios\n".to_string(), 2, "line 2"),
            (
                format!("description = \"x\"\n{kernel}cmdline = \"{{{{ nod.mac }}}}\"\n"),
                4,
                "undefined",
            ),
            (
                format!("{kernel}initrds = [\"x86_64/nope.img\"]\n"),
                3,
                "x86_64/nope.img",
            ),
            (format!("scripts = [\"gone.sh\"]\n{kernel}"), 1, "gone.sh"),
            (
                "\n[arch.bios]\nlocal = \"exit\"\nkernel = \"x\"\n".to_string(),
                2,
                "both",
            ),
        ];
        for (text, line, want) in cases {
            let (got, msg) = load("cand", &text);
            assert_eq!(got, Some(line), "{msg}");
            assert!(msg.contains(want), "{msg}");
        }
        // A good candidate loads beside the files on disk, replacing its namesake.
        Catalog::load_with(
            &p.join("bootenvs"),
            &p.join("scripts"),
            &p.join("assets"),
            "discovery",
            Some((&p.join("bootenvs/discovery.toml"), kernel)),
        )
        .unwrap();
    }

    #[test]
    fn script_headers_assign_by_labels_and_bad_ones_are_refused_with_their_line() {
        let f = Fixture::new();
        let script = |name: &str, text: &str| {
            std::fs::write(f.dir.path().join("scripts").join(name), text).unwrap()
        };
        script(
            "20-builder.sh",
            "#!/bin/sh\n# rackboot-selector: role=builder\necho {{ node.labels.role }}\n",
        );
        script(
            "10-rescue.sh",
            "# rackboot-selector: role=builder\n# rackboot-bootenv: rescue\necho\n",
        );
        f.refused("10-rescue.sh", "rackboot-bootenv `rescue`");
        f.bootenv("rescue", "[arch.x86_64_efi]\nlocal = \"exit\"\n");
        let c = f.load().unwrap();
        let mut n = node();
        let names = |c: &Catalog, n: &Node, b: &str| -> Vec<String> {
            c.scripts_for(n, b)
                .into_iter()
                .map(|a| format!("{} ({})", a.script, a.reason))
                .collect()
        };
        assert_eq!(
            names(&c, &n, "discovery"),
            ["hello.sh (listed by bootenv discovery)"]
        );
        n.labels.insert("role".into(), "builder".into());
        assert_eq!(
            names(&c, &n, "discovery"),
            [
                "hello.sh (listed by bootenv discovery)",
                "20-builder.sh (labels match role=builder)"
            ]
        );
        assert_eq!(
            names(&c, &n, "rescue"),
            [
                "10-rescue.sh (labels match role=builder (bootenv rescue))",
                "20-builder.sh (labels match role=builder)"
            ]
        );

        script("30-bad.sh", "#!/bin/sh\n\n# rackboot-selector: role=\n");
        f.refused("30-bad.sh: line 3:", "not a label value");
    }

    #[test]
    fn templates_see_the_nodes_nocloud_and_answers_urls() {
        let f = Fixture::new();
        f.bootenv(
            "install",
            r#"[arch.x86_64_efi]
kernel = "x86_64/vmlinuz"
cmdline = "ds=nocloud;s={{ nocloud_url }} inst.ks={{ answers_url }}/kickstart.cfg"
"#,
        );
        let c = f.load().unwrap();
        assert_eq!(
            cmdline(&c, "install"),
            "ds=nocloud;s=http://10.0.0.1/cloud-init/52:54:00:aa:bb:cc/tok/ \
             inst.ks=http://10.0.0.1/answers/52:54:00:aa:bb:cc/tok/kickstart.cfg"
        );
    }

    #[test]
    fn a_missing_default_bootenv_is_named() {
        let f = Fixture::new();
        std::fs::remove_file(f.dir.path().join("bootenvs/discovery.toml")).unwrap();
        let msg = f.load().unwrap_err().to_string();
        assert!(msg.contains("discovery"), "{msg}");
    }
}

/// A set of files the last reload refused, kept until a reload succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The file at fault, when one is.
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// The whole message, as logged.
    pub reason: String,
    pub at: crate::model::Timestamp,
}

impl Rejection {
    /// Where `e` points, reading the file at fault for the line.
    pub fn of(e: &CatalogError, at: crate::model::Timestamp) -> Rejection {
        let file = e.path().map(Path::to_path_buf);
        let line = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| e.line_in(&text));
        Rejection {
            file,
            line,
            reason: e.to_string(),
            at,
        }
    }
}

/// The catalog in force, replaced whole on reload: a request renders with
/// the version it started with, never half an edit. Also keeps why the
/// latest reload was refused, if it was.
#[derive(Debug)]
pub struct CatalogCell {
    /// The catalog and its generation, swapped together.
    current: std::sync::RwLock<(std::sync::Arc<Catalog>, u64)>,
    rejected: std::sync::Mutex<Option<Rejection>>,
}

impl CatalogCell {
    pub fn new(catalog: Catalog) -> CatalogCell {
        CatalogCell {
            current: std::sync::RwLock::new((std::sync::Arc::new(catalog), 0)),
            rejected: std::sync::Mutex::new(None),
        }
    }

    pub fn current(&self) -> std::sync::Arc<Catalog> {
        self.snapshot().0
    }

    /// The catalog in force and its generation, which every [`Self::replace`]
    /// bumps: whatever was rendered from an older generation (a cached boot
    /// script) is stale.
    pub fn snapshot(&self) -> (std::sync::Arc<Catalog>, u64) {
        let g = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.0.clone(), g.1)
    }

    /// Puts `catalog` in force; the files on disk are good again.
    pub fn replace(&self, catalog: Catalog) {
        {
            let mut g = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let generation = g.1 + 1;
            *g = (std::sync::Arc::new(catalog), generation);
        }
        self.set_rejected(None);
    }

    /// Records why the files on disk were refused (the version in force stays).
    pub fn set_rejected(&self, rejection: Option<Rejection>) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rejection;
    }

    pub fn rejected(&self) -> Option<Rejection> {
        self.rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
