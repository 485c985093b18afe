//! Event time: parsing Wazuh timestamps, formatting, and watermarks.
//!
//! Sluice runs on event time only. Operators never read a clock: they are
//! told how far event time has advanced through watermarks. A watermark `w`
//! promises that records with `event_time < w` are late.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type EventTime = i64;

/// Event time of "no watermark yet".
pub const MIN_TIME: EventTime = i64::MIN;

/// Parses the timestamp formats Wazuh writes: `2022-05-11T12:29:19.905+0000`
/// (alerts.json), `2022-05-11T12:29:19.905Z` (the indexer's `@timestamp`),
/// and `+hh:mm` offsets; fractional seconds optional.
///
/// Returns `None` for anything else, including out-of-range fields.
pub fn parse_timestamp(s: &str) -> Option<EventTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_min = match &b[i..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn two_digits(a: u8, b: u8) -> Option<i64> {
    (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Displays an event time as RFC 3339 UTC with milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub EventTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", s / 3600, s / 60 % 60, s % 60)
    }
}

/// A duration in config files: human-readable (`"30s"`, `"60m"`, `"6h"`),
/// stored as milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub i64);

impl Duration {
    pub const fn from_secs(s: i64) -> Self {
        Self(s * 1000)
    }
    pub const fn from_mins(m: i64) -> Self {
        Self(m * 60_000)
    }
    pub const fn from_hours(h: i64) -> Self {
        Self(h * 3_600_000)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = std::time::Duration::from_millis(self.0.max(0) as u64);
        write!(f, "{}", humantime::format_duration(d))
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"10m\", \"6h\""))
        })?;
        i64::try_from(parsed.as_millis())
            .map(Duration)
            .map_err(|_| serde::de::Error::custom(format!("duration {s:?} is too large")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wazuh_alerts_json_timestamp() {
        // 2022-05-11T12:29:19.905Z
        assert_eq!(parse_timestamp("2022-05-11T12:29:19.905+0000"), Some(1_652_272_159_905));
        assert_eq!(parse_timestamp("2022-05-11T12:29:19.905Z"), Some(1_652_272_159_905));
        assert_eq!(parse_timestamp("2022-05-11T14:29:19.905+02:00"), Some(1_652_272_159_905));
        assert_eq!(parse_timestamp("2022-05-11T10:29:19.9-0200"), Some(1_652_272_159_900));
        assert_eq!(parse_timestamp("2022-05-11T12:29:19"), Some(1_652_272_159_000));
    }

    #[test]
    fn rejects_garbage_and_out_of_range() {
        for bad in [
            "",
            "yesterday",
            "2022-13-11T12:29:19Z",
            "2022-02-30T12:29:19Z",
            "2022-05-11T24:00:00Z",
            "2022-05-11T12:29:19.Z",
            "2022-05-11T12:29:19+5",
            "2022-05-11T12:29:19 extra",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 59, 365 * 30 + 7, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(Rfc3339(1_652_272_159_905).to_string(), "2022-05-11T12:29:19.905Z");
    }

    #[test]
    fn durations_are_human() {
        let d: Duration = serde_json::from_str("\"90m\"").unwrap();
        assert_eq!(d, Duration::from_mins(90));
        assert!(serde_json::from_str::<Duration>("\"ten minutes\"").is_err());
    }
}
