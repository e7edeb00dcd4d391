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
    if let Some(ts) = parse_canonical(text) {
        return Some(ts);
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
        return Some(ts.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// The two forms nearly every stored timestamp has, `format`'s
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` and `YYYY-MM-DDTHH:MM:SSZ`, read without
/// chrono's general parser: a stored entity holds several per attribute,
/// and parsing them was 10–12 % of reading entities and rollups. Anything
/// else (other offsets, precisions, leap seconds) is `None`, left to the
/// general path; what this accepts, that path reads the same.
fn parse_canonical(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    let micros = match bytes.len() {
        20 => 0,
        27 if bytes[19] == b'.' => digits(&bytes[20..26])?,
        _ => return None,
    };
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (bytes.len() - 1, b'Z'),
    ];
    if separators.iter().any(|&(at, expected)| bytes[at] != expected) {
        return None;
    }
    let second = digits(&bytes[17..19])?;
    if second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(&bytes[0..4])?).ok()?,
        digits(&bytes[5..7])?,
        digits(&bytes[8..10])?,
    )?;
    let time = chrono::NaiveTime::from_hms_micro_opt(digits(&bytes[11..13])?, digits(&bytes[14..16])?, second, micros)?;
    Some(date.and_time(time).and_utc())
}

/// The number an ASCII run of decimal digits spells.
fn digits(run: &[u8]) -> Option<u32> {
    run.iter().try_fold(0u32, |number, &byte| {
        byte.is_ascii_digit().then(|| number * 10 + u32::from(byte - b'0'))
    })
}

/// Serde helpers storing timestamps as RFC 3339 strings.
pub mod serde_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;
    use crate::BorrowedStr;

    pub fn serialize<S: Serializer>(value: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(ts) => serializer.serialize_str(&super::format(ts)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
        // Borrowed from the document where it can be: every attribute of a
        // stored entity carries two of these.
        let text: Option<BorrowedStr<'de>> = Option::deserialize(deserializer)?;
        Ok(text.and_then(|BorrowedStr(t)| super::parse(&t)))
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use proptest::prelude::*;

    use super::{format, parse, parse_canonical, Timestamp};

    fn general(text: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(text).ok().map(|ts| ts.to_utc())
    }

    proptest! {
        /// Canonical-looking text with any digits, valid dates or not: the
        /// fast path reads what chrono reads, or leaves it to chrono.
        #[test]
        fn the_fast_path_agrees_with_chrono(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{6})?Z",
        ) {
            if let Some(fast) = parse_canonical(&text) {
                prop_assert_eq!(Some(fast), general(&text));
            }
            prop_assert_eq!(parse(&text), general(&text));
        }

        /// Near misses (wrong separators, lengths, lower case) are not
        /// misread.
        #[test]
        fn near_misses_are_left_to_chrono(text in "[0-9tTzZ:.+-]{18,29}") {
            if let Some(fast) = parse_canonical(&text) {
                prop_assert_eq!(Some(fast), general(&text));
            }
        }

        #[test]
        fn what_format_writes_parses_back(micros in 0i64..253_402_300_799_000_000) {
            let ts = DateTime::from_timestamp_micros(micros).expect("in range");
            prop_assert_eq!(parse_canonical(&format(&ts)), Some(ts));
        }
    }

    #[test]
    fn both_canonical_forms_and_the_others_parse() {
        let ts = general("2024-02-29T23:59:58.123456Z").expect("valid");
        assert_eq!(parse_canonical("2024-02-29T23:59:58.123456Z"), Some(ts));
        assert_eq!(parse_canonical("2024-02-29T23:59:58Z"), general("2024-02-29T23:59:58Z"));
        assert_eq!(parse_canonical("2023-02-29T23:59:58Z"), None, "no 29 February in 2023");
        // Other shapes go the general way and still parse.
        for other in [
            "2024-02-29T23:59:58.1Z",
            "2024-02-29T23:59:58+01:00",
            "2024-02-29T23:59:58.123456",
        ] {
            assert_eq!(parse_canonical(other), None, "{other}");
            assert!(parse(other).is_some(), "{other}");
        }
    }
}
