//! Civil-date arithmetic and the timestamp formats found in Wazuh alerts
//! and the logs they quote, without a date-time dependency.
//!
//! Everything is UTC. The date arithmetic itself is `sluice_operators::time`'s
//! (Howard Hinnant's proleptic-Gregorian algorithms), shared with the decoder.

use std::fmt::Write as _;

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Days since 1970-01-01 of a proleptic-Gregorian date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    sluice_operators::time::days_from_civil(y, i64::from(m), i64::from(d))
}

/// The date (year, month 1–12, day 1–31) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let (y, m, d) = sluice_operators::time::civil_from_days(z);
    (y, m as u32, d as u32)
}

/// A broken-down UTC instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub milli: u32,
}

impl Civil {
    pub(crate) fn from_ms(ms: i64) -> Civil {
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let secs = (rem / 1000) as u32;
        Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            milli: (rem % 1000) as u32,
        }
    }

    fn month_abbr(&self) -> &'static str {
        MONTHS[(self.month - 1) as usize]
    }
}

/// Unix milliseconds of a UTC date and time.
pub(crate) fn ms_from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    days_from_civil(y, mo, d) * 86_400_000 + i64::from(h * 3600 + mi * 60 + s) * 1000
}

/// Hour of the day (0–23) and whether the day is Monday–Friday.
pub(crate) fn hour_and_weekday(ms: i64) -> (u32, bool) {
    let days = ms.div_euclid(86_400_000);
    // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    let weekday = (days + 3).rem_euclid(7);
    (Civil::from_ms(ms).hour, weekday < 5)
}

/// Wazuh's alert `timestamp`: `2026-11-01T00:00:03.123+0000`.
pub(crate) fn write_wazuh(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
    );
}

/// Syslog (RFC 3164) time as the predecoder reports it: `Nov  1 00:00:03`.
pub(crate) fn write_syslog(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(out, "{} {:>2} {:02}:{:02}:{:02}", c.month_abbr(), c.day, c.hour, c.minute, c.second);
}

/// Apache / nginx access-log time: `01/Nov/2026:00:00:03 +0000`.
pub(crate) fn write_clf(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(
        out,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        c.day,
        c.month_abbr(),
        c.year,
        c.hour,
        c.minute,
        c.second
    );
}

/// Windows event `systemTime` with 100 ns ticks: `2026-11-01T00:00:03.1234567Z`.
pub(crate) fn write_windows(out: &mut String, ms: i64, sub_ms_ticks: u32) {
    let c = Civil::from_ms(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{:04}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.milli,
        sub_ms_ticks % 10_000
    );
}

/// Sysmon `UtcTime`: `2026-11-01 00:00:03.123`.
pub(crate) fn write_sysmon(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
    );
}

/// Suricata eve.json time with microseconds: `2026-11-01T00:00:03.123456+0000`.
pub(crate) fn write_eve(out: &mut String, ms: i64, micros: u32) {
    let c = Civil::from_ms(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{:03}+0000",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.milli,
        micros % 1000
    );
}

/// dpkg.log time: `2026-11-01 00:00:03`.
pub(crate) fn write_dpkg(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(out, "{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
}

/// ISO time without zone, as in `syscheck.mtime_after`: `2026-11-01T00:00:03`.
pub(crate) fn write_iso_seconds(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(out, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
}

/// ISO time with `Z` and milliseconds (MS Graph, VirusTotal): `2026-11-01T00:00:03.123Z`.
pub(crate) fn write_iso_z(out: &mut String, ms: i64) {
    let c = Civil::from_ms(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_across_four_centuries() {
        for days in (-800_000..800_000).step_by(13) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // Leap days.
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28), 1);
        assert_eq!(days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28), 2);
        // The sample alert: id "1652272159.…" is 2022-05-11T12:29:19Z.
        let c = Civil::from_ms(1_652_272_159_905);
        assert_eq!((c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli), (2022, 5, 11, 12, 29, 19, 905));
        assert_eq!(ms_from_civil(2026, 11, 1, 0, 0, 0), 1_793_491_200_000);
    }

    #[test]
    fn formats() {
        let ms = ms_from_civil(2026, 11, 1, 7, 5, 3) + 42;
        let mut s = String::new();
        write_wazuh(&mut s, ms);
        assert_eq!(s, "2026-11-01T07:05:03.042+0000");
        s.clear();
        write_syslog(&mut s, ms);
        assert_eq!(s, "Nov  1 07:05:03");
        s.clear();
        write_clf(&mut s, ms);
        assert_eq!(s, "01/Nov/2026:07:05:03 +0000");
        s.clear();
        write_windows(&mut s, ms, 1234);
        assert_eq!(s, "2026-11-01T07:05:03.0421234Z");
        s.clear();
        write_eve(&mut s, ms, 7);
        assert_eq!(s, "2026-11-01T07:05:03.042007+0000");
        s.clear();
        write_dpkg(&mut s, ms);
        assert_eq!(s, "2026-11-01 07:05:03");
        s.clear();
        write_syslog(&mut s, ms_from_civil(2026, 12, 24, 23, 59, 59));
        assert_eq!(s, "Dec 24 23:59:59");
        // Negative times floor correctly.
        s.clear();
        write_wazuh(&mut s, -1);
        assert_eq!(s, "1969-12-31T23:59:59.999+0000");
        // 2026-11-01 is a Sunday.
        assert_eq!(hour_and_weekday(ms), (7, false));
        assert_eq!(hour_and_weekday(ms + 86_400_000), (7, true));
    }
}
