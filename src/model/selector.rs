//! Label selectors: which nodes a list or a bulk edit means.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One condition on a node's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// `key=value`
    Is(String, String),
    /// `key!=value`: the label is absent or has another value.
    IsNot(String, String),
    /// `key`: the label is present, whatever its value.
    Has(String),
}

/// `rack=r1,role!=builder,gpu`: comma-separated terms, all of which must hold.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<Term>);

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "label selector `{selector}`: {reason} (expected key=value, key!=value or key, comma-separated)"
)]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// A label key or value: no separators of the selector syntax, no spaces.
pub fn valid_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, ',' | '=' | '!'))
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        let err = |reason: String| SelectorError {
            selector: s.chars().take(200).collect(),
            reason,
        };
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(err("an empty term".into()));
            }
            let term = if let Some((k, v)) = part.split_once("!=") {
                Term::IsNot(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                Term::Is(k.trim().to_string(), v.trim().to_string())
            } else {
                Term::Has(part.to_string())
            };
            let (k, v) = match &term {
                Term::Is(k, v) | Term::IsNot(k, v) => (k, Some(v)),
                Term::Has(k) => (k, None),
            };
            if !valid_label_part(k) || v.is_some_and(|v| !valid_label_part(v)) {
                return Err(err(format!("`{part}` is not a valid term")));
            }
            terms.push(term);
        }
        Ok(Selector(terms))
    }
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::Is(k, v) => labels.get(k) == Some(v),
            Term::IsNot(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|t| match t {
                Term::Is(k, v) => format!("{k}={v}"),
                Term::IsNot(k, v) => format!("{k}!={v}"),
                Term::Has(k) => k.clone(),
            })
            .collect();
        f.write_str(&parts.join(","))
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
    fn terms_all_must_hold() {
        let node = labels(&[("rack", "r1"), ("role", "builder")]);
        let table = [
            ("rack=r1", true),
            ("rack=r1,role=builder", true),
            ("rack=r1,role=web", false),
            ("rack!=r2", true),
            ("gpu!=yes", true),
            ("rack!=r1", false),
            ("role", true),
            ("gpu", false),
            (" rack = r1 , role ", true),
        ];
        for (sel, want) in table {
            let s: Selector = sel.parse().unwrap();
            assert_eq!(s.matches(&node), want, "{sel}");
        }
        assert_eq!(
            "rack=r1,gpu,role!=x"
                .parse::<Selector>()
                .unwrap()
                .to_string(),
            "rack=r1,gpu,role!=x"
        );
    }

    #[test]
    fn malformed_selectors_are_named() {
        for bad in ["", "rack=r1,", "=r1", "rack=", "a b=c", "rack=r1=x"] {
            let e = bad.parse::<Selector>().unwrap_err();
            assert!(e.to_string().contains("label selector"), "{bad}: {e}");
        }
    }
}
