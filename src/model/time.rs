//! Wall-clock timestamps as stored and shown.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Policy code takes it as an argument
/// (never reads the clock itself) so state machines can be tested with made-up times.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(since.as_millis() as i64)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add((secs as i64).saturating_mul(1000)))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, as the API shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Timestamp(ms as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_rfc3339_and_parses_back() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
        let back: Timestamp = serde_json::from_str(&format!("\"{t}\"")).unwrap();
        assert_eq!(back, t);
    }
}
