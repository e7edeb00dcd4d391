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
    match canonical(ts) {
        Some(text) => text.as_str().to_owned(),
        None => ts.to_rfc3339_opts(SecondsFormat::Micros, true),
    }
}

/// `format`'s text of a timestamp of the years 0–9999 that is not a leap
/// second (every one a clock gives), written without chrono's formatter:
/// each attribute carries two timestamps, and formatting them through
/// `to_rfc3339_opts` was a quarter of writing an entity's document.
/// What this writes, chrono writes the same.
pub(crate) fn canonical(ts: &Timestamp) -> Option<Canonical> {
    let nanos = ts.timestamp_subsec_nanos();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let seconds = ts.timestamp();
    let (year, month, day) = civil_date(seconds.div_euclid(86_400));
    let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
    let of_day = seconds.rem_euclid(86_400) as u32;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (at, width, number) in [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, of_day / 3600),
        (14, 2, of_day / 60 % 60),
        (17, 2, of_day % 60),
        (20, 6, nanos / 1_000),
    ] {
        put_digits(&mut text[at..at + width], number);
    }
    Some(Canonical(text))
}

/// The (proleptic Gregorian) year, month and day of a day counted from
/// 1970-01-01, by whole 400-year eras (Howard Hinnant's `civil_from_days`):
/// chrono's accessors convert the instant again for each field.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A timestamp as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, on the stack.
pub(crate) struct Canonical([u8; 27]);

impl Canonical {
    pub(crate) fn as_str(&self) -> &str {
        // Digits and ASCII separators only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Writes `number` in decimal into `slot`, zero-padded to its width.
fn put_digits(slot: &mut [u8], mut number: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (number % 10) as u8;
        number /= 10;
    }
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
            Some(ts) => match super::canonical(ts) {
                Some(text) => serializer.serialize_str(text.as_str()),
                None => serializer.serialize_str(&super::format(ts)),
            },
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
    use chrono::{DateTime, Timelike};
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

        /// Any instant chrono can hold, leap seconds and years past 9999
        /// or before 0 included: the fast path writes what chrono writes.
        #[test]
        fn format_writes_what_chrono_writes(
            seconds in -300_000_000_000i64..300_000_000_000,
            nanos in prop_oneof![0u32..1_000_000_000, 1_000_000_000u32..2_000_000_000],
        ) {
            if let Some(ts) = DateTime::from_timestamp(seconds, nanos) {
                prop_assert_eq!(format(&ts), ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            }
        }

        #[test]
        fn what_format_writes_parses_back(micros in 0i64..253_402_300_799_000_000) {
            let ts = DateTime::from_timestamp_micros(micros).expect("in range");
            prop_assert_eq!(parse_canonical(&format(&ts)), Some(ts));
        }
    }

    /// Every day of four Gregorian cycles of 400 years (every leap-year
    /// rule), at a time of day that moves with it, and both ends of the
    /// fast path's years.
    #[test]
    fn the_calendar_agrees_with_chrono_day_by_day() {
        let first = DateTime::parse_from_rfc3339("1600-01-01T00:00:00Z")
            .expect("date")
            .timestamp();
        let days = 4 * 146_097;
        for day in 0..days {
            let at = first + day * 86_400 + (day * 7_919) % 86_400;
            let ts = DateTime::from_timestamp(at, ((day % 1_000) * 1_000_123) as u32).expect("in range");
            assert_eq!(format(&ts), ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            let whole_micros = ts.with_nanosecond(ts.timestamp_subsec_micros() * 1_000).expect("valid");
            assert_eq!(parse_canonical(&format(&ts)), Some(whole_micros), "{ts}");
        }
        for edge in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
            let ts = general(edge).expect("edge");
            assert_eq!(format(&ts), ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
    }

    #[test]
    fn leap_seconds_and_far_years_are_formatted_by_chrono() {
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("a leap second");
        let far = DateTime::from_timestamp(300_000_000_000, 0).expect("year 11476");
        let before_zero = DateTime::from_timestamp(-62_200_000_000, 0).expect("year -2");
        for ts in [leap, far, before_zero] {
            assert!(super::canonical(&ts).is_none(), "{ts:?}");
            assert_eq!(format(&ts), ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
        assert_eq!(format(&leap), "2016-12-31T23:59:60.500000Z");
        let now = super::now();
        assert_eq!(
            super::canonical(&now).map(|c| c.as_str().to_owned()),
            Some(format(&now))
        );
    }

    #[test]
    fn both_canonical_forms_and_the_others_parse() {
        let ts = general("2024-02-29T23:59:58.123456Z").expect("valid");
        assert_eq!(parse_canonical("2024-02-29T23:59:58.123456Z"), Some(ts));
        assert_eq!(parse_canonical("2024-02-29T23:59:58Z"), general("2024-02-29T23:59:58Z"));
        assert_eq!(parse_canonical("2023-02-29T23:59:58Z"), None, "no 29 February in 2023");
        // Every month's last day and the day after it, in a leap year, a
        // common one and a century year that is not leap.
        for year in [2024, 2023, 1900] {
            for month in 1..=12u32 {
                for day in 28..=32u32 {
                    let text = format!("{year}-{month:02}-{day:02}T12:00:00Z");
                    assert_eq!(parse_canonical(&text), general(&text), "{text}");
                }
            }
        }
        for text in [
            "2024-00-10T00:00:00Z",
            "2024-13-10T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-10T24:00:00Z",
        ] {
            assert_eq!(parse_canonical(text), None, "{text}");
        }
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
