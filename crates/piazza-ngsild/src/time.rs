//! Timestamps: NGSI-LD DateTime values, always UTC.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

pub type Timestamp = DateTime<Utc>;

/// The current time, the one clock every system attribute is stamped with,
/// truncated to the microseconds that storage keeps (so that a stored and a
/// fresh copy of an entity compare equal).
pub fn now() -> Timestamp {
    let now = Utc::now();
    now.with_nanosecond(now.timestamp_subsec_micros() * 1000).unwrap_or(now)
}

/// Formats a timestamp the way the API returns system attributes.
pub fn format(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an NGSI-LD DateTime (RFC 3339; a missing offset means UTC).
pub fn parse(text: &str) -> Option<Timestamp> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
        return Some(ts.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// Serde helpers storing timestamps as RFC 3339 strings.
pub mod serde_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    pub fn serialize<S: Serializer>(value: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(ts) => serializer.serialize_str(&super::format(ts)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        Ok(text.and_then(|t| super::parse(&t)))
    }
}
