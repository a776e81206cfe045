//! Time as marketers write it: durations (`2d`), weekdays (`mon`), clock times (`09:00`), and
//! classic five-field cron (`0 9 * * 1-5`), translated for the `cron` crate.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use crate::core::error::{Reason, reason};

/// A length of time: a whole number and a unit, `30s`, `15m`, `2h`, `3d`, `1w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    seconds: i64,
}

impl Span {
    /// No time at all.
    pub const ZERO: Self = Self { seconds: 0 };
    /// One day.
    pub const DAY: Self = Self { seconds: 86_400 };

    pub fn seconds(self) -> i64 {
        self.seconds
    }

    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.seconds)
    }

    /// Parses `30s`, `15m`, `2h`, `3d`, `1w`; with `signed`, also `-1d`.
    pub fn parse(text: &str, signed: bool) -> Result<Self, Reason> {
        let trimmed = text.trim();
        let (negative, body) = match trimmed.strip_prefix('-') {
            Some(rest) if signed => (true, rest),
            _ => (false, trimmed),
        };
        let hint = "a duration is a whole number and a unit: 30s, 15m, 2h, 3d or 1w";
        let unit_at =
            body.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("'{text}' has no unit: {hint}"))?;
        let (number, unit) = body.split_at(unit_at);
        let number: i64 = number.parse().map_err(|_| format!("'{text}' is not a duration: {hint}"))?;
        let unit_seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(reason!("'{text}' has an unknown unit '{}': {hint}", unit.trim())),
        };
        let seconds = number
            .checked_mul(unit_seconds)
            .filter(|s| *s <= 10 * 365 * 86_400)
            .ok_or_else(|| format!("'{text}' is longer than ten years"))?;
        Ok(Self { seconds: if negative { -seconds } else { seconds } })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        let (sign, s) = if s < 0 { ("-", -s) } else { ("", s) };
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s != 0 && s % size == 0 {
                return write!(f, "{sign}{}{unit}", s / size);
            }
        }
        write!(f, "{sign}{s}s")
    }
}

/// `mon` … `sun` (any case; full names too).
pub fn parse_weekday(text: &str) -> Result<Weekday, Reason> {
    let lower = text.trim().to_ascii_lowercase();
    let day = match lower.get(..3).filter(|_| lower.len() == 3 || Weekday::from_str(&lower).is_ok()) {
        Some("mon") => Weekday::Mon,
        Some("tue") => Weekday::Tue,
        Some("wed") => Weekday::Wed,
        Some("thu") => Weekday::Thu,
        Some("fri") => Weekday::Fri,
        Some("sat") => Weekday::Sat,
        Some("sun") => Weekday::Sun,
        _ => return Err(reason!("'{text}' is not a weekday: use mon, tue, wed, thu, fri, sat or sun")),
    };
    Ok(day)
}

/// `HH:MM` on a 24-hour clock.
pub fn parse_clock(text: &str) -> Result<NaiveTime, Reason> {
    let trimmed = text.trim();
    let valid = trimmed.len() == 5 && trimmed.as_bytes()[2] == b':';
    valid
        .then(|| NaiveTime::parse_from_str(trimmed, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| reason!("'{text}' is not a time of day: use HH:MM on a 24-hour clock, e.g. 09:00"))
}

/// A classic five-field cron expression (`minute hour day-of-month month day-of-week`, with
/// Sunday as 0 or 7), checked and translated into the `cron` crate's dialect (seconds first,
/// Sunday = 1). Day-of-week is rewritten as day names, so `1-5` stays Monday to Friday.
pub fn translate_cron(expression: &str) -> Result<cron::Schedule, Reason> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(reason!(
            "'{expression}' has {} fields; write five: minute hour day-of-month month day-of-week (e.g. \"0 9 * * 1-5\")",
            fields.len()
        ));
    }
    let days = weekday_field(fields[4])?;
    let translated = format!("0 {} {} {} {} {days}", fields[0], fields[1], fields[2], fields[3]);
    cron::Schedule::from_str(&translated).map_err(|e| reason!("'{expression}' is not a valid cron expression: {e}"))
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

fn weekday_field(field: &str) -> Result<String, Reason> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let bad =
        || reason!("'{field}' is not a day-of-week field: use 0-7 (0 and 7 are Sunday), mon-sun, ranges and lists");
    let day = |text: &str| -> Result<u8, Reason> {
        match text.parse::<u8>() {
            Ok(n) if n <= 7 => Ok(n % 7),
            Ok(_) => Err(bad()),
            Err(_) => {
                parse_weekday(text).map(|d| u8::try_from(d.num_days_from_sunday()).unwrap_or(0)).map_err(|_| bad())
            }
        }
    };
    let mut set = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<u8>().ok().filter(|s| *s > 0).ok_or_else(bad)?),
            None => (item, 1),
        };
        let (start, end) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) =
                        (day(a)?, b.parse::<u8>().map_or_else(|_| day(b), |n| if n == 7 { Ok(7) } else { day(b) })?);
                    (a, b)
                }
                None if step > 1 => (day(range)?, 6),
                None => {
                    let d = day(range)?;
                    (d, d)
                }
            },
        };
        if start > end {
            return Err(bad());
        }
        let mut d = start;
        while d <= end {
            set.insert(d % 7);
            d += step;
        }
    }
    if set.len() == 7 {
        return Ok("*".into());
    }
    Ok(set.iter().map(|d| DAY_NAMES[usize::from(*d)]).collect::<Vec<_>>().join(","))
}

/// The instant a local wall-clock time happens in `tz`. In a daylight-saving gap (the time does
/// not exist) it is the first instant after the gap; in a repeated hour, the first occurrence.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    for _ in 0..4 {
        if let Some(instant) = tz.from_local_datetime(&probe).earliest() {
            return instant.with_timezone(&Utc);
        }
        probe += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&local)
}

/// The next `time` (on `weekday`, when given) strictly after `now`, in `tz`.
pub fn next_local_time(now: DateTime<Utc>, tz: Tz, weekday: Option<Weekday>, time: NaiveTime) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    for offset in 0..=8 {
        let date = today + chrono::Duration::days(offset);
        if weekday.is_some_and(|w| date.weekday() != w) {
            continue;
        }
        let candidate = local_to_utc(tz, date.and_time(time));
        if candidate > now {
            return candidate;
        }
    }
    now + chrono::Duration::days(7)
}

/// The next tick of a five-field cron expression strictly after `now`, in `tz`. A local time
/// that happens twice (the repeated hour in autumn) fires once.
pub fn next_cron_tick(now: DateTime<Utc>, tz: Tz, expression: &str) -> Option<DateTime<Utc>> {
    let schedule = translate_cron(expression).ok()?;
    let local_now = now.with_timezone(&tz);
    let mut seen_local = None;
    for tick in schedule.after(&local_now).take(4) {
        let naive = tick.naive_local();
        if seen_local == Some(naive) {
            continue;
        }
        seen_local = Some(naive);
        let instant = tick.with_timezone(&Utc);
        if instant > now {
            return Some(instant);
        }
    }
    None
}

/// `None` when `now` is inside the window (subscriber-local); otherwise when it next opens.
pub fn window_opens_at(
    now: DateTime<Utc>,
    tz: Tz,
    days: &[Weekday],
    start: NaiveTime,
    end: NaiveTime,
) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&tz);
    let inside = days.contains(&local.weekday()) && local.time() >= start && local.time() < end;
    if inside {
        return None;
    }
    let today = local.date_naive();
    for offset in 0..=8 {
        let date = today + chrono::Duration::days(offset);
        if !days.contains(&date.weekday()) {
            continue;
        }
        let opening = local_to_utc(tz, date.and_time(start));
        if opening > now {
            return Some(opening);
        }
    }
    Some(now + chrono::Duration::days(7))
}

/// A subscriber's zone, else the workflow's, else UTC.
pub fn zone(subscriber: Option<&str>, workflow: Option<&str>) -> Tz {
    subscriber.and_then(|z| z.parse().ok()).or_else(|| workflow.and_then(|z| z.parse().ok())).unwrap_or(Tz::UTC)
}

/// The month and day of a yearly date written `YYYY-MM-DD`, `MM-DD` or `--MM-DD`.
pub(crate) fn month_day(text: &str) -> Option<(u32, u32)> {
    let text = text.trim().trim_start_matches("--");
    let parts: Vec<&str> = text.split('-').collect();
    let (month, day) = match parts.as_slice() {
        [_, m, d] | [m, d] => (m.parse().ok()?, d.parse().ok()?),
        _ => return None,
    };
    // Validate against a leap year so that 29 February is a date.
    chrono::NaiveDate::from_ymd_opt(2024, month, day).map(|_| (month, day))
}

/// When a yearly date (plus offset, at a local time) happens inside [start, end), if it does.
/// 29 February is celebrated on 28 February in other years.
pub(crate) fn occurrence_in(
    (month, day): (u32, u32),
    offset: Span,
    at: chrono::NaiveTime,
    tz: chrono_tz::Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    for year in start.year() - 1..=end.year() + 1 {
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day)
            .or_else(|| chrono::NaiveDate::from_ymd_opt(year, month, day - 1))?;
        let local = date.and_time(at) + offset.as_chrono();
        let moment = local_to_utc(tz, local);
        if moment >= start && moment < end {
            return Some(moment);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Utc};

    use super::*;

    #[test]
    fn the_named_spans_are_what_their_words_parse_to() {
        assert_eq!(Span::parse("1d", false), Ok(Span::DAY));
        assert_eq!(Span::parse("0s", false), Ok(Span::ZERO));
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(Span::parse("30s", false).unwrap().seconds(), 30);
        assert_eq!(Span::parse("2d", false).unwrap().seconds(), 172_800);
        assert_eq!(Span::parse("-1d", true).unwrap().seconds(), -86_400);
        assert!(Span::parse("-1d", false).is_err());
        assert!(Span::parse("2 days", false).unwrap_err().contains("unknown unit"));
        assert!(Span::parse("12", false).unwrap_err().contains("no unit"));
        assert!(Span::parse("99999w", false).is_err());
        assert_eq!(Span::parse("14d", false).unwrap().to_string(), "2w");
        assert_eq!(Span::parse("90m", false).unwrap().to_string(), "90m");
    }

    #[test]
    fn weekdays_and_clock_times() {
        assert_eq!(parse_weekday("MON").unwrap(), Weekday::Mon);
        assert_eq!(parse_weekday("friday").unwrap(), Weekday::Fri);
        assert!(parse_weekday("funday").is_err());
        assert_eq!(parse_clock("09:00").unwrap(), NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        assert!(parse_clock("9:00").is_err());
        assert!(parse_clock("24:00").is_err());
    }

    fn weekdays_fired(expression: &str) -> BTreeSet<u32> {
        let schedule = translate_cron(expression).unwrap();
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        schedule.after(&start).take(30).map(|t| t.weekday().num_days_from_monday()).collect()
    }

    fn days<const N: usize>(days: [Weekday; N]) -> BTreeSet<u32> {
        days.iter().map(Weekday::num_days_from_monday).collect()
    }

    #[test]
    fn monday_to_friday_stays_monday_to_friday() {
        use Weekday::*;
        assert_eq!(weekdays_fired("0 9 * * 1-5"), days([Mon, Tue, Wed, Thu, Fri]));
        assert_eq!(weekdays_fired("0 9 * * MON-FRI"), days([Mon, Tue, Wed, Thu, Fri]));
        assert_eq!(weekdays_fired("0 9 * * 0"), days([Sun]));
        assert_eq!(weekdays_fired("0 9 * * 7"), days([Sun]));
        assert_eq!(weekdays_fired("0 9 * * 5-7"), days([Fri, Sat, Sun]));
        assert_eq!(weekdays_fired("0 9 * * 1,3"), days([Mon, Wed]));
        assert_eq!(weekdays_fired("0 9 * * */2"), days([Sun, Tue, Thu, Sat]));
        assert_eq!(weekdays_fired("30 8 * * *").len(), 7);
        let first =
            translate_cron("0 9 * * MON").unwrap().after(&Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()).next();
        assert_eq!(first.unwrap(), Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
    }

    #[test]
    fn local_times_survive_daylight_saving_changes() {
        let rome: Tz = "Europe/Rome".parse().unwrap();
        let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        // Saturday 2026-03-28 10:00 UTC; clocks in Rome go forward on Sunday 29 March.
        let saturday = Utc.with_ymd_and_hms(2026, 3, 28, 10, 0, 0).unwrap();
        let monday_nine = next_local_time(saturday, rome, Some(Weekday::Mon), nine);
        assert_eq!(monday_nine, Utc.with_ymd_and_hms(2026, 3, 30, 7, 0, 0).unwrap(), "09:00 CEST is 07:00 UTC");
        let before = next_local_time(Utc.with_ymd_and_hms(2026, 3, 26, 10, 0, 0).unwrap(), rome, None, nine);
        assert_eq!(before, Utc.with_ymd_and_hms(2026, 3, 27, 8, 0, 0).unwrap(), "09:00 CET is 08:00 UTC");
        // 02:30 does not exist on 29 March in Rome: the wait ends just after the gap.
        let half_two = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        let gap = next_local_time(saturday, rome, Some(Weekday::Sun), half_two);
        assert_eq!(gap, Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap());
        // 02:30 happens twice on 25 October: a daily cron at 02:30 fires once that night.
        let october = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        let first = next_cron_tick(october, rome, "30 2 * * *").unwrap();
        let second = next_cron_tick(first, rome, "30 2 * * *").unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap());
        assert_eq!(second, Utc.with_ymd_and_hms(2026, 10, 26, 1, 30, 0).unwrap(), "the repeated 02:30 is skipped");
    }

    #[test]
    fn send_windows_open_on_the_next_allowed_day() {
        let rome: Tz = "Europe/Rome".parse().unwrap();
        let weekdays = [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri];
        let (start, end) = (NaiveTime::from_hms_opt(9, 0, 0).unwrap(), NaiveTime::from_hms_opt(18, 0, 0).unwrap());
        // Friday 2026-03-06 19:00 Rome (18:00 UTC): after hours, so Monday 09:00 Rome.
        let friday_evening = Utc.with_ymd_and_hms(2026, 3, 6, 18, 0, 0).unwrap();
        assert_eq!(
            window_opens_at(friday_evening, rome, &weekdays, start, end),
            Some(Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap())
        );
        let tuesday_noon = Utc.with_ymd_and_hms(2026, 3, 10, 11, 0, 0).unwrap();
        assert_eq!(window_opens_at(tuesday_noon, rome, &weekdays, start, end), None);
        let tuesday_early = Utc.with_ymd_and_hms(2026, 3, 10, 6, 0, 0).unwrap();
        assert_eq!(
            window_opens_at(tuesday_early, rome, &weekdays, start, end),
            Some(Utc.with_ymd_and_hms(2026, 3, 10, 8, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_cron_is_explained() {
        assert!(translate_cron("0 9 * *").unwrap_err().contains("five"));
        assert!(translate_cron("0 0 9 * * 1").unwrap_err().contains("6 fields"));
        assert!(translate_cron("0 9 * * 8").unwrap_err().contains("day-of-week"));
        assert!(translate_cron("61 9 * * *").unwrap_err().contains("not a valid cron"));
        assert!(translate_cron("0 9 * * 5-1").is_err());
    }

    #[test]
    fn yearly_dates_fall_in_one_window_each() {
        use chrono::TimeZone;
        let rome: chrono_tz::Tz = "Europe/Rome".parse().unwrap();
        let nine = chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        let day_before = Span::parse("-1d", true).unwrap();
        assert_eq!(month_day("1990-03-10"), Some((3, 10)));
        assert_eq!(month_day("--02-29"), Some((2, 29)));
        assert_eq!(month_day("13-01"), None);
        assert_eq!(month_day("soon"), None);
        // A birthday on 10 March, the day before at 09:00 in Rome: 9 March 08:00 UTC.
        let start = Utc.with_ymd_and_hms(2026, 3, 9, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
        assert_eq!(
            occurrence_in((3, 10), day_before, nine, rome, start, end),
            Some(Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap())
        );
        assert_eq!(occurrence_in((3, 11), day_before, nine, rome, start, end), None);
        // 29 February in a common year: the 28th.
        let feb = Utc.with_ymd_and_hms(2027, 2, 28, 0, 0, 0).unwrap();
        let zero = Span::parse("0s", false).unwrap();
        assert!(occurrence_in((2, 29), zero, nine, chrono_tz::Tz::UTC, feb, feb + chrono::Duration::days(1)).is_some());
    }
}
