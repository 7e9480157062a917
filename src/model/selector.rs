//! Label selectors: which nodes a config script or a reconfigure trigger
//! means, by their labels (`role=builder,rack=r12`).
//!
//! Syntax (a small subset of Kubernetes' equality-based selectors): terms
//! separated by commas, all of which must hold (AND):
//!
//! | term | holds when the node |
//! |---|---|
//! | `k=v` | has label `k` with value `v` |
//! | `k!=v` | has no label `k`, or one with another value |
//! | `k` | has label `k` (any value) |
//! | `!k` | has no label `k` |
//!
//! Keys and values are letters, digits, `-`, `_`, `.` and `/` (keys) or
//! letters, digits, `-`, `_` and `.` (values); spaces around terms are
//! ignored. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One condition on a node's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelTerm {
    /// `k=v`
    Equals(String, String),
    /// `k!=v`
    NotEquals(String, String),
    /// `k`
    Exists(String),
    /// `!k`
    Absent(String),
}

impl LabelTerm {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelTerm::Equals(k, v) => labels.get(k) == Some(v),
            LabelTerm::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelTerm::Exists(k) => labels.contains_key(k),
            LabelTerm::Absent(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for LabelTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelTerm::Equals(k, v) => write!(f, "{k}={v}"),
            LabelTerm::NotEquals(k, v) => write!(f, "{k}!={v}"),
            LabelTerm::Exists(k) => f.write_str(k),
            LabelTerm::Absent(k) => write!(f, "!{k}"),
        }
    }
}

/// A label selector: every term must hold. Never empty (an empty selector
/// would silently mean "every node").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<LabelTerm>,
}

impl LabelSelector {
    pub fn terms(&self) -> &[LabelTerm] {
        &self.terms
    }

    /// Whether a node with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| t.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical text, which parses back to the same selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// Why a selector does not parse; says which term and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector `{text}`: {reason}")]
pub struct SelectorError {
    pub text: String,
    pub reason: String,
}

/// A label key (and a params key): what a selector can name.
pub fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// A label value: what a selector can match.
pub fn is_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SelectorError {
            text: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(err(
                "empty: name at least one label (e.g. role=builder)".into()
            ));
        }
        let mut terms = Vec::new();
        for raw in text.split(',') {
            let term = raw.trim();
            // `part` of the term, trimmed, if `valid`; else what it is not.
            let checked = |part: &str, valid: fn(&str) -> bool, not: &str| {
                let part = part.trim();
                if valid(part) {
                    Ok(part.to_string())
                } else {
                    Err(err(format!("`{term}`: `{part}` is not {not}")))
                }
            };
            let key = |k: &str| checked(k, is_key, "a label key (letters, digits, - _ . /)");
            let value = |v: &str| checked(v, is_value, "a label value (letters, digits, - _ .)");
            let t = if let Some((k, v)) = term.split_once("!=") {
                LabelTerm::NotEquals(key(k)?, value(v)?)
            } else if let Some((k, v)) = term.split_once('=') {
                // `k==v` is a common slip for `k=v`: say so rather than
                // complaining about a value that starts with `=`.
                if v.starts_with('=') {
                    return Err(err(format!("`{term}`: use a single `=`")));
                }
                LabelTerm::Equals(key(k)?, value(v)?)
            } else if term.is_empty() {
                return Err(err("an empty term (two commas, or a trailing one)".into()));
            } else if !is_key(term.trim_start_matches('!').trim()) {
                return Err(err(format!(
                    "`{term}` is not `key=value`, `key!=value`, `key` or `!key`"
                )));
            } else if let Some(k) = term.strip_prefix('!') {
                LabelTerm::Absent(key(k)?)
            } else {
                LabelTerm::Exists(key(term)?)
            };
            terms.push(t);
        }
        Ok(LabelSelector { terms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching_table() {
        let builder_r12 = labels(&[("role", "builder"), ("rack", "r12")]);
        let builder_r13 = labels(&[("role", "builder"), ("rack", "r13")]);
        let bare = labels(&[]);
        let table = [
            ("role=builder", [true, true, false]),
            ("role=builder,rack=r12", [true, false, false]),
            (" role = builder , rack=r12 ", [true, false, false]),
            ("rack!=r12", [false, true, true]),
            ("rack", [true, true, false]),
            ("!rack", [false, false, true]),
            ("role=builder,!gpu", [true, true, false]),
            ("role=runner", [false, false, false]),
        ];
        for (sel, want) in table {
            let s: LabelSelector = sel.parse().unwrap_or_else(|e| panic!("{e}"));
            for (l, w) in [&builder_r12, &builder_r13, &bare].into_iter().zip(want) {
                assert_eq!(s.matches(l), w, "{sel} on {l:?}");
            }
        }
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        for (text, canonical) in [
            ("role=builder", "role=builder"),
            (
                " role = builder ,rack!=r1, gpu , !spare",
                "role=builder,rack!=r1,gpu,!spare",
            ),
            ("topology.example.com/zone=a", "topology.example.com/zone=a"),
        ] {
            let s: LabelSelector = text.parse().unwrap();
            assert_eq!(s.to_string(), canonical);
            assert_eq!(canonical.parse::<LabelSelector>().unwrap(), s);
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (text, want) in [
            ("", "empty"),
            ("   ", "empty"),
            ("role=builder,", "empty term"),
            ("a,,b", "empty term"),
            ("role==builder", "single `=`"),
            ("role=", "not a label value"),
            ("=builder", "not a label key"),
            ("role=a b", "not a label value"),
            ("role=a=b", "not a label value"),
            ("ro le", "is not `key=value`"),
            ("!", "is not `key=value`"),
            ("role=${x}", "not a label value"),
        ] {
            let e = text.parse::<LabelSelector>().unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(e.to_string().contains(&format!("`{text}`")), "{e}");
        }
    }
}
