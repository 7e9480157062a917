//! What a node does with its iPXE script: which kernel and initrds it
//! fetches, and what the operational image will read from the kernel
//! command line. Pure text handling.
//!
//! Understands the commands that fetch images (`kernel`, `initrd`,
//! `imgfetch`, `module`; `chain` only to say the script chains elsewhere),
//! with iPXE's `--name`/`-n` style options and `|| goto` suffixes. It does
//! not run iPXE's language: no variables, no menus.

use url::Url;

/// The images one script boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImages {
    pub kernel: Url,
    /// Everything after the kernel's URL on its line.
    pub cmdline: String,
    /// initrds and other fetched images, in script order.
    pub initrds: Vec<Url>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("the boot script does not start with #!ipxe")]
    NotIpxe,
    #[error("the boot script boots no kernel (it {0})")]
    NoKernel(String),
    #[error("the boot script's {command} URL `{url}` is not a URL: {why}")]
    BadUrl {
        command: String,
        url: String,
        why: String,
    },
}

/// Reads `script`, fetched from `base` (relative URLs are resolved against it).
pub fn parse(script: &str, base: &Url) -> Result<BootImages, ScriptError> {
    if !script.trim_start().starts_with("#!ipxe") {
        return Err(ScriptError::NotIpxe);
    }
    let mut kernel = None;
    let mut initrds = Vec::new();
    let mut instead = None;
    for line in script.lines() {
        // `cmd args || goto retry`, `cmd args && echo ok`: only the first command counts.
        let line = line
            .split("||")
            .next()
            .and_then(|l| l.split("&&").next())
            .unwrap_or("")
            .trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(':') {
            continue;
        }
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or("");
        match command {
            "kernel" | "initrd" | "imgfetch" | "module" | "chain" | "chainload" => {}
            "exit" | "sanboot" | "shell" | "poweroff" | "reboot" if instead.is_none() => {
                instead = Some(format!("runs `{command}`"));
                continue;
            }
            _ => continue,
        }
        let rest: Vec<&str> = words.collect();
        let (uri, args) = split_options(&rest);
        let Some(uri) = uri else { continue };
        let url = base.join(uri).map_err(|e| ScriptError::BadUrl {
            command: command.to_string(),
            url: uri.to_string(),
            why: e.to_string(),
        })?;
        match command {
            "kernel" if kernel.is_none() => kernel = Some((url, args.join(" "))),
            "chain" | "chainload" if kernel.is_none() && instead.is_none() => {
                instead = Some(format!("chains to {url}"));
            }
            "initrd" | "imgfetch" | "module" => initrds.push(url),
            _ => {}
        }
    }
    let (kernel, cmdline) = kernel.ok_or_else(|| {
        ScriptError::NoKernel(instead.unwrap_or_else(|| "has no kernel line".into()))
    })?;
    Ok(BootImages {
        kernel,
        cmdline,
        initrds,
    })
}

/// Skips iPXE image options (`--name NAME`, `-n NAME`, `--autofree`,
/// `--timeout=N`, ...) before the URI; returns the URI and the words after it.
fn split_options<'a>(words: &[&'a str]) -> (Option<&'a str>, Vec<&'a str>) {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        if !w.starts_with('-') {
            return (Some(w), words[i + 1..].to_vec());
        }
        // Options that take a separate argument (iPXE imgmgmt: --name, --timeout).
        let takes_arg = matches!(*w, "--name" | "-n" | "--timeout" | "-t");
        i += if takes_arg { 2 } else { 1 };
    }
    (None, Vec::new())
}

/// What the operational image reads from its kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentParams {
    pub url: Option<String>,
    pub mac: Option<String>,
    pub token: Option<String>,
}

/// `rackboot.url=`, `rackboot.mac=`, `rackboot.token=` as
/// boot-assets/image/init reads them (whitespace-separated words).
pub fn agent_params(cmdline: &str) -> AgentParams {
    let mut p = AgentParams::default();
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("rackboot.url=") {
            p.url = Some(v.trim_end_matches('/').to_string());
        } else if let Some(v) = word.strip_prefix("rackboot.mac=") {
            p.mac = Some(v.to_ascii_lowercase().replace('-', ":"));
        } else if let Some(v) = word.strip_prefix("rackboot.token=") {
            p.token = Some(v.to_string());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://10.77.0.1/boot/02:00:00:00:00:01.ipxe").unwrap()
    }

    #[test]
    fn rackboots_script_gives_kernel_initrd_and_agent_params() {
        // As src/boot/script.rs renders it (its golden test).
        let s = "\
#!ipxe
# rackboot: node 52:54:00:aa:bb:cc, bootenv discovery, arch arm64_efi
:fetch
kernel --name kernel http://10.0.0.1/assets/arm64/Image?mac=52:54:00:aa:bb:cc initrd=initrd0 console=ttyAMA0 rackboot.url=http://10.0.0.1/ rackboot.mac=52-54-00-AA-BB-CC rackboot.token=tok || goto retry
initrd --name initrd0 http://10.0.0.1/assets/arm64/initrd.img?mac=52:54:00:aa:bb:cc || goto retry
boot || goto retry
:retry
echo rackboot: fetch failed, retrying in 5 seconds
imgfree
sleep 5
goto fetch
";
        let b = parse(s, &base()).unwrap();
        assert_eq!(
            b.kernel.as_str(),
            "http://10.0.0.1/assets/arm64/Image?mac=52:54:00:aa:bb:cc"
        );
        assert_eq!(b.initrds.len(), 1);
        assert!(
            b.initrds[0]
                .as_str()
                .ends_with("initrd.img?mac=52:54:00:aa:bb:cc")
        );
        assert!(b.cmdline.starts_with("initrd=initrd0 console=ttyAMA0"));
        let p = agent_params(&b.cmdline);
        assert_eq!(p.url.as_deref(), Some("http://10.0.0.1"));
        assert_eq!(p.mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        assert_eq!(p.token.as_deref(), Some("tok"));
    }

    #[test]
    fn relative_urls_plain_kernel_lines_and_imgfetch() {
        let s = "#!ipxe\nkernel vmlinuz quiet\nimgfetch -n extra /x/extra.cpio\nmodule initrd.img\nboot\n";
        let b = parse(s, &base()).unwrap();
        assert_eq!(b.kernel.as_str(), "http://10.77.0.1/boot/vmlinuz");
        assert_eq!(b.cmdline, "quiet");
        let urls: Vec<&str> = b.initrds.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "http://10.77.0.1/x/extra.cpio",
                "http://10.77.0.1/boot/initrd.img"
            ]
        );
    }

    #[test]
    fn scripts_that_boot_no_kernel_say_what_they_do() {
        let local = "#!ipxe\necho rackboot: boots from its local disk\nexit\n";
        assert_eq!(
            parse(local, &base()),
            Err(ScriptError::NoKernel("runs `exit`".into()))
        );
        let chain = "#!ipxe\nchain http://10.77.0.1/other.ipxe\n";
        assert!(
            matches!(parse(chain, &base()), Err(ScriptError::NoKernel(w)) if w.contains("chains to"))
        );
        assert_eq!(parse("<html>", &base()), Err(ScriptError::NotIpxe));
    }
}
