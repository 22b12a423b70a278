//! Dates on the wire, in UTC, with no clock: `DATE`'s `yyyymmddhhmmss`, the `date time [GMT]`
//! arguments of NEWGROUPS and NEWNEWS, and RFC 5322 `Date:` headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day, hour, minute, second, weekday 0 = Sunday) in UTC.
fn parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, usize) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let rem = secs % 86_400;
    let weekday = ((days + 4).rem_euclid(7)) as usize;
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60, weekday)
}

/// `DATE`'s answer: `yyyymmddhhmmss` in UTC (RFC 3977 §7.1).
pub fn nntp_date(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = parts(t);
    format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}")
}

/// An RFC 5322 date in UTC: `Tue, 01 Jul 2025 12:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss, wd) = parts(t);
    format!(
        "{}, {d:02} {} {y:04} {hh:02}:{mm:02}:{ss:02} +0000",
        DAYS[wd],
        MONTHS[m as usize - 1]
    )
}

/// Parses NEWGROUPS/NEWNEWS's `date time`: `yymmdd` or `yyyymmdd`, and `hhmmss`, in UTC (the
/// server's local time is UTC; `GMT` is accepted and changes nothing). A two-digit year is
/// in the current century if not more than the current year, else the previous one
/// (RFC 3977 §7.3.2), given the current year `this_year`.
pub fn parse_date_time(date: &str, time: &str, now: SystemTime) -> Option<SystemTime> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(date) || !digits(time) || time.len() != 6 {
        return None;
    }
    let (year, rest) = match date.len() {
        8 => (date[..4].parse::<i64>().ok()?, &date[4..]),
        6 => {
            let this_year = parts(now).0;
            let yy: i64 = date[..2].parse().ok()?;
            let century = this_year / 100 * 100;
            let y = century + yy;
            (if y > this_year { y - 100 } else { y }, &date[2..])
        }
        _ => return None,
    };
    let month: u32 = rest[..2].parse().ok()?;
    let day: u32 = rest[2..4].parse().ok()?;
    let (hh, mm, ss): (u64, u64, u64) = (
        time[..2].parse().ok()?,
        time[2..4].parse().ok()?,
        time[4..6].parse().ok()?,
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if days < 0 {
        return Some(UNIX_EPOCH);
    }
    Some(UNIX_EPOCH + Duration::from_secs(days as u64 * 86_400 + hh * 3600 + mm * 60 + ss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = UNIX_EPOCH + Duration::from_secs(1_751_371_200); // 2025-07-01 12:00:00 UTC
        assert_eq!(nntp_date(t), "20250701120000");
        assert_eq!(rfc5322_date(t), "Tue, 01 Jul 2025 12:00:00 +0000");
        assert_eq!(nntp_date(UNIX_EPOCH), "19700101000000");
        assert_eq!(parse_date_time("20250701", "120000", t), Some(t));
        assert_eq!(parse_date_time("250701", "120000", t), Some(t));
        // A two-digit year after this one is in the last century.
        let y99 = parse_date_time("990101", "000000", t).unwrap();
        assert_eq!(nntp_date(y99), "19990101000000");
        assert_eq!(
            nntp_date(parse_date_time("20240229", "235959", t).unwrap()),
            "20240229235959"
        );
        for (d, h) in [
            ("20250230", "000000"),
            ("20251301", "000000"),
            ("2025071", "000000"),
            ("20250701", "240000"),
            ("20250701", "12000"),
            ("2025-7-1", "000000"),
            ("20250701", "1200a0"),
            ("", "000000"),
            ("20230229", "000000"),
        ] {
            assert_eq!(parse_date_time(d, h, t), None, "{d} {h}");
        }
        assert_eq!(parse_date_time("19000101", "000000", t), Some(UNIX_EPOCH));
    }
}
