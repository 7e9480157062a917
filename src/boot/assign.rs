//! Which config scripts a node runs after boot, in which order, and why.
//!
//! A script is assigned two ways:
//! 1. its node's bootenv lists it (`scripts = [...]` in the bootenv file);
//! 2. its own header selects the node by labels:
//!
//!    ```sh
//!    #!/bin/sh
//!    # rackboot-selector: role=builder,rack=r12
//!    # rackboot-bootenv: discovery      (optional: only nodes booting this bootenv)
//!    ```
//!
//! Order: the bootenv's scripts in its list order, then the selected ones by
//! file name (run-parts style: `10-disks.sh`, `20-docker.sh`). A script
//! assigned both ways runs once, in its bootenv position. Pure: the header
//! is parsed from text, assignment works on plain data.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::LabelSelector;

/// What a script's header says about its assignment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptHeader {
    /// `# rackboot-selector: …`: nodes whose labels match run it.
    pub selector: Option<LabelSelector>,
    /// `# rackboot-bootenv: NAME`: only while booting that bootenv.
    pub bootenv: Option<String>,
}

/// Why a header was refused, with its 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError {
    pub line: usize,
    pub reason: String,
}

const PREFIX: &str = "rackboot-";

/// Reads the `# rackboot-…:` lines of the comment block at the top of a
/// script (after an optional `#!` line). Unknown `rackboot-` keys, a repeated
/// key, a bad selector, and a `rackboot-` line below the header (where it
/// would silently do nothing) are refused.
pub fn parse_header(text: &str) -> Result<ScriptHeader, HeaderError> {
    let mut header = ScriptHeader::default();
    let mut in_header = true;
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| HeaderError {
            line: i + 1,
            reason,
        };
        let trimmed = line.trim();
        if i == 0 && trimmed.starts_with("#!") {
            continue;
        }
        let directive = trimmed
            .strip_prefix('#')
            .map(str::trim_start)
            .filter(|c| c.starts_with(PREFIX))
            .and_then(|c| c.split_once(':'))
            .filter(|(key, _)| !key.contains(char::is_whitespace));
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_header = false;
        }
        let Some((key, value)) = directive else {
            continue;
        };
        if !in_header {
            return Err(err(format!(
                "`{key}:` must be in the comment block at the top of the script, before any command"
            )));
        }
        let value = value.trim();
        match key {
            "rackboot-selector" => {
                if header.selector.is_some() {
                    return Err(err(
                        "a second `rackboot-selector:` line (join the terms with commas in one)"
                            .into(),
                    ));
                }
                header.selector = Some(value.parse().map_err(|e| err(format!("{e}")))?);
            }
            "rackboot-bootenv" => {
                if header.bootenv.is_some() {
                    return Err(err("a second `rackboot-bootenv:` line".into()));
                }
                if !super::bootenv::is_bootenv_name(value) {
                    return Err(err(format!("`{value}` is not a bootenv name")));
                }
                header.bootenv = Some(value.to_string());
            }
            other => {
                return Err(err(format!(
                    "unknown header `{other}:` (known: rackboot-selector, rackboot-bootenv)"
                )));
            }
        }
    }
    if header.bootenv.is_some() && header.selector.is_none() {
        return Err(HeaderError {
            line: 1,
            reason: "`rackboot-bootenv:` without `rackboot-selector:` (to run a script on every \
                     node of a bootenv, list it in the bootenv's `scripts`)"
                .into(),
        });
    }
    Ok(header)
}

/// Why a node runs a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The node's bootenv lists it.
    ListedByBootenv(String),
    /// Its header's selector matches the node's labels (within `bootenv`, if it names one).
    LabelsMatch {
        selector: LabelSelector,
        bootenv: Option<String>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ListedByBootenv(b) => write!(f, "listed by bootenv {b}"),
            Reason::LabelsMatch {
                selector,
                bootenv: None,
            } => write!(f, "labels match {selector}"),
            Reason::LabelsMatch {
                selector,
                bootenv: Some(b),
            } => write!(f, "labels match {selector} (bootenv {b})"),
        }
    }
}

/// One script a node runs, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub script: String,
    pub reason: Reason,
}

/// The scripts a node with `labels` booting `bootenv` (whose list is
/// `listed`) runs, in order, each with its reason. `scripts` is every script
/// with its header, in file name order.
pub fn assign<'a>(
    bootenv: &str,
    listed: &[String],
    scripts: impl IntoIterator<Item = (&'a str, &'a ScriptHeader)>,
    labels: &BTreeMap<String, String>,
) -> Vec<Assigned> {
    let mut out: Vec<Assigned> = Vec::new();
    for s in listed {
        if !out.iter().any(|a| &a.script == s) {
            out.push(Assigned {
                script: s.clone(),
                reason: Reason::ListedByBootenv(bootenv.to_string()),
            });
        }
    }
    for (name, header) in scripts {
        let Some(selector) = &header.selector else {
            continue;
        };
        let in_bootenv = header.bootenv.as_deref().is_none_or(|b| b == bootenv);
        if in_bootenv && selector.matches(labels) && !out.iter().any(|a| a.script == name) {
            out.push(Assigned {
                script: name.to_string(),
                reason: Reason::LabelsMatch {
                    selector: selector.clone(),
                    bootenv: header.bootenv.clone(),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_from_the_top_comment_block() {
        let h = parse_header(
            "#!/bin/sh\n# Installs docker.\n#   rackboot-selector:  role=builder, rack=r12\n\
             #rackboot-bootenv: discovery\n\nset -e\n# rackboot is great: it says so\necho hi\n",
        )
        .unwrap();
        assert_eq!(
            h.selector.map(|s| s.to_string()).as_deref(),
            Some("role=builder,rack=r12")
        );
        assert_eq!(h.bootenv.as_deref(), Some("discovery"));
        assert_eq!(
            parse_header("echo {{ node.mac }}\n").unwrap(),
            ScriptHeader::default()
        );
    }

    #[test]
    fn bad_headers_name_the_line_and_the_problem() {
        for (text, line, want) in [
            (
                "#!/bin/sh\n# rackboot-selecter: a=b\n",
                2,
                "unknown header `rackboot-selecter:`",
            ),
            ("# rackboot-selector: role==x\n", 1, "single `=`"),
            ("# rackboot-selector:\n", 1, "empty"),
            (
                "# rackboot-selector: a\n# rackboot-selector: b\n",
                2,
                "second",
            ),
            (
                "# rackboot-selector: a\n# rackboot-bootenv: no/pe\n",
                2,
                "not a bootenv name",
            ),
            (
                "# rackboot-bootenv: discovery\n",
                1,
                "without `rackboot-selector:`",
            ),
            (
                "#!/bin/sh\necho\n# rackboot-selector: a=b\n",
                3,
                "at the top",
            ),
        ] {
            let e = parse_header(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.reason.contains(want), "{text:?}: {}", e.reason);
        }
    }

    fn header(selector: &str, bootenv: Option<&str>) -> ScriptHeader {
        ScriptHeader {
            selector: Some(selector.parse().unwrap()),
            bootenv: bootenv.map(str::to_string),
        }
    }

    #[test]
    fn bootenv_scripts_first_in_list_order_then_selected_by_file_name() {
        let scripts: BTreeMap<String, ScriptHeader> = [
            ("00-plain.sh", ScriptHeader::default()),
            ("10-builder.sh", header("role=builder", None)),
            ("20-r12.sh", header("rack=r12", None)),
            ("30-rescue-only.sh", header("role=builder", Some("rescue"))),
            ("40-not-gpu.sh", header("!gpu", Some("discovery"))),
            ("zz-listed.sh", header("role=builder", None)),
        ]
        .into_iter()
        .map(|(n, h)| (n.to_string(), h))
        .collect();
        let iter = || scripts.iter().map(|(n, h)| (n.as_str(), h));
        let listed = ["zz-listed.sh".to_string(), "00-plain.sh".to_string()];
        let labels: BTreeMap<String, String> = [("role", "builder"), ("rack", "r12")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();

        let got: Vec<(String, String)> = assign("discovery", &listed, iter(), &labels)
            .into_iter()
            .map(|a| (a.script, a.reason.to_string()))
            .collect();
        let want = [
            ("zz-listed.sh", "listed by bootenv discovery"),
            ("00-plain.sh", "listed by bootenv discovery"),
            ("10-builder.sh", "labels match role=builder"),
            ("20-r12.sh", "labels match rack=r12"),
            ("40-not-gpu.sh", "labels match !gpu (bootenv discovery)"),
        ];
        assert_eq!(
            got,
            want.map(|(s, r)| (s.to_string(), r.to_string())).to_vec()
        );

        // Another bootenv, no labels: only what that bootenv lists.
        let none = BTreeMap::new();
        let got: Vec<String> = assign("rescue", &[], iter(), &none)
            .into_iter()
            .map(|a| a.script)
            .collect();
        assert!(got.is_empty(), "{got:?}");
        let got: Vec<String> = assign("rescue", &[], iter(), &labels)
            .into_iter()
            .map(|a| a.script)
            .collect();
        assert_eq!(
            got,
            [
                "10-builder.sh",
                "20-r12.sh",
                "30-rescue-only.sh",
                "zz-listed.sh"
            ]
        );
    }
}
