//! The send policy: how much marketing one person gets, and when. Frequency caps per subscriber
//! and channel (at most N a rolling day, M a rolling week: `email_per_day`, `email_per_week`,
//! `sms_per_day`, `sms_per_week`) and a sending calendar (`send_days`, `holidays`, in the
//! subscriber's time zone), shared by workflow steps and broadcasts. Confirmations, replies and
//! test sends are never held. A held message waits in the outbox until it may go, and its
//! timeline says why; it is never dropped. And a sunset rule (`sunset_after`): marketing email
//! to someone who has had it for that long without a person's open or click is not sent (the
//! message is cancelled, and the timeline says why).

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::core::error::Result;
use crate::core::values::{OutboxChannel, OutboxStatus};
use crate::store::Db;
use crate::store::entities::{outbox, subscriber};

/// A day no marketing goes out: every year on a month and day, or once on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holiday {
    Yearly { month: u32, day: u32 },
    Once(NaiveDate),
}

impl Holiday {
    /// `MM-DD` (every year) or `YYYY-MM-DD`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Ok(Self::Once(date));
        }
        let problem = || format!("'{text}' is not a date like 12-25 (every year) or 2026-12-24");
        let (month, day) = text.split_once('-').ok_or_else(problem)?;
        let (month, day) = (month.parse().map_err(|_| problem())?, day.parse().map_err(|_| problem())?);
        // 2024 is a leap year: 02-29 is a valid yearly holiday.
        NaiveDate::from_ymd_opt(2024, month, day).ok_or_else(problem)?;
        Ok(Self::Yearly { month, day })
    }

    fn is(&self, date: NaiveDate) -> bool {
        match self {
            Self::Yearly { month, day } => date.month() == *month && date.day() == *day,
            Self::Once(once) => *once == date,
        }
    }
}

/// The policy of one channel.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    pub per_day: Option<u32>,
    pub per_week: Option<u32>,
    /// Monday first: the days marketing may go out.
    pub days: [bool; 7],
    pub holidays: Vec<Holiday>,
    /// The time zone of subscribers without one.
    pub default_zone: chrono_tz::Tz,
    /// Email only: no more marketing to someone with no open or click by a person this long.
    pub sunset_after: Option<Duration>,
    /// Before stopping, ask them once whether they still want email (`sunset = "ask"`).
    pub sunset_asks: bool,
    /// Email only: the hours of the day marketing may arrive (`email_hours`; SMS keeps to
    /// `sms_hours` in its sender).
    pub hours: Option<super::sms::SendingHours>,
}

/// What the policy says of a marketing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Not before this time, for this reason.
    Hold(DateTime<Utc>, String),
    /// Not at all, for this reason (the sunset rule).
    Stop(String),
    /// Not at all, and they are to be asked once whether they still want email.
    Ask(String),
}

impl Default for SendPolicy {
    fn default() -> Self {
        Self {
            per_day: None,
            per_week: None,
            days: [true; 7],
            holidays: Vec::new(),
            default_zone: chrono_tz::UTC,
            sunset_after: None,
            sunset_asks: false,
            hours: None,
        }
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_WORDS: [&str; 7] = ["Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"];

/// `mon-fri`, `mon,wed,fri`, `mon-fri,sun`: the days marketing may go out.
pub fn parse_days(text: &str) -> std::result::Result<[bool; 7], String> {
    let index = |name: &str| {
        let name = name.trim().to_ascii_lowercase();
        DAY_NAMES.iter().position(|d| name.starts_with(d) && !name.is_empty()).ok_or_else(|| {
            format!("'{}' is not a day: use mon, tue, wed, thu, fri, sat, sun (mon-fri, sat,sun)", name.trim())
        })
    };
    let mut days = [false; 7];
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (index(from)?, index(to)?);
                let mut day = from;
                loop {
                    days[day] = true;
                    if day == to {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
            None => days[index(part)?] = true,
        }
    }
    if days.iter().any(|d| *d) { Ok(days) } else { Err("name at least one day".into()) }
}

impl SendPolicy {
    /// Whether it ever holds anything.
    pub fn holds_anything(&self) -> bool {
        self.per_day.is_some()
            || self.per_week.is_some()
            || self.days.contains(&false)
            || !self.holidays.is_empty()
            || self.sunset_after.is_some()
            || self.hours.is_some()
    }

    fn calendar(&self) -> bool {
        self.days.contains(&false) || !self.holidays.is_empty() || self.hours.is_some()
    }

    /// Whether marketing `message` may go now, must wait, or must not go.
    pub async fn judge(&self, db: &Db, message: &outbox::Model, now: DateTime<Utc>) -> Result<Verdict> {
        if !message.is_marketing() || !self.holds_anything() {
            return Ok(Verdict::Go);
        }
        if let Some(span) = self.sunset_after
            && message.channel == OutboxChannel::Email
            && let Some(asked) = unengaged(db, message, now, span).await?
        {
            let days = span.num_days();
            return Ok(match asked {
                Some(at) if self.sunset_asks => Verdict::Stop(format!(
                    "no open or click by a person in {days} days, nor an answer when asked on {}: no more marketing email (sunset_after)",
                    at.date_naive()
                )),
                None if self.sunset_asks => Verdict::Ask(format!(
                    "no open or click by a person in {days} days: asked whether they still want email (sunset_after)"
                )),
                _ => Verdict::Stop(format!(
                    "no open or click by a person in {days} days: no more marketing email (sunset_after)"
                )),
            });
        }
        Ok(match self.hold(db, message, now).await? {
            Some((until, why)) => Verdict::Hold(until, why),
            None => Verdict::Go,
        })
    }

    /// Until when marketing `message` must wait, and why; `None` when it may go now.
    async fn hold(
        &self,
        db: &Db,
        message: &outbox::Model,
        now: DateTime<Utc>,
    ) -> Result<Option<(DateTime<Utc>, String)>> {
        if self.calendar() {
            let zone = match subscriber::Entity::find_by_id(message.subscriber_id).one(db.conn()).await? {
                Some(person) => person.timezone.and_then(|z| z.parse().ok()).unwrap_or(self.default_zone),
                None => self.default_zone,
            };
            if let Some(held) = self.closed(now, zone) {
                return Ok(Some(held));
            }
            if let Some(hours) = self.hours
                && let Some(opens) = hours.opens_at(now, zone)
            {
                let why = format!(
                    "outside the hours marketing email may arrive ({}-{} where they are): held until {}",
                    hours.start.format("%H:%M"),
                    hours.end.format("%H:%M"),
                    opens.format("%Y-%m-%d %H:%M UTC")
                );
                return Ok(Some((opens, why)));
            }
        }
        self.capped(db, message, now).await
    }

    /// When the calendar is closed at `now` in `zone`: until the start of the next open day.
    fn closed(&self, now: DateTime<Utc>, zone: chrono_tz::Tz) -> Option<(DateTime<Utc>, String)> {
        let today = now.with_timezone(&zone).date_naive();
        let why = |date: NaiveDate| -> Option<String> {
            if let Some(holiday) = self.holidays.iter().find(|h| h.is(date)) {
                let day = match holiday {
                    Holiday::Yearly { month, day } => format!("{month:02}-{day:02}"),
                    Holiday::Once(date) => date.to_string(),
                };
                return Some(format!("a holiday ({day})"));
            }
            let weekday = date.weekday().num_days_from_monday() as usize;
            (!self.days[weekday]).then(|| format!("no marketing on {}", DAY_WORDS[weekday]))
        };
        let reason = why(today)?;
        let mut next = today;
        for _ in 0..400 {
            next = next.succ_opt()?;
            if why(next).is_none() {
                break;
            }
        }
        // The start of that day where the subscriber is (the first valid instant, across a
        // change of clocks).
        let midnight = next.and_hms_opt(0, 0, 0)?;
        let start = zone
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| zone.from_local_datetime(&(midnight + Duration::hours(1))).earliest())?;
        Some((start.with_timezone(&Utc), format!("{reason}: held until {next}")))
    }

    /// When a frequency cap is reached: until the oldest marketing message counted against it
    /// leaves its window.
    async fn capped(
        &self,
        db: &Db,
        message: &outbox::Model,
        now: DateTime<Utc>,
    ) -> Result<Option<(DateTime<Utc>, String)>> {
        let window = if self.per_week.is_some() { Duration::days(7) } else { Duration::days(1) };
        if self.per_day.is_none() && self.per_week.is_none() {
            return Ok(None);
        }
        let channel = message.channel;
        let sent: Vec<DateTime<Utc>> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::SentAt)
            .filter(outbox::Column::SubscriberId.eq(message.subscriber_id))
            .filter(outbox::Column::Channel.eq(channel))
            .filter(outbox::Column::Status.eq(OutboxStatus::Sent))
            .filter(outbox::Column::SentAt.gt(now - window))
            .filter(
                sea_orm::Condition::any()
                    .add(outbox::Column::WorkflowId.is_not_null())
                    .add(outbox::Column::BroadcastId.is_not_null()),
            )
            .order_by_asc(outbox::Column::SentAt)
            .into_tuple::<Option<DateTime<Utc>>>()
            .all(db.conn())
            .await?
            .into_iter()
            .flatten()
            .collect();
        let what = match channel {
            OutboxChannel::Sms => "marketing text",
            _ => "marketing email",
        };
        for (limit, span, words) in
            [(self.per_day, Duration::days(1), "a day"), (self.per_week, Duration::days(7), "a week")]
        {
            let Some(limit) = limit else { continue };
            let within: Vec<&DateTime<Utc>> = sent.iter().filter(|at| **at > now - span).collect();
            if within.len() >= limit as usize {
                // The (len - limit + 1)th oldest must leave the window before one more may go.
                let frees = *within[within.len() - limit as usize] + span;
                let plural = if limit == 1 { what.to_owned() } else { format!("{what}s") };
                let reason =
                    format!("at most {limit} {plural} {words}: held until {}", frees.format("%Y-%m-%d %H:%M UTC"));
                return Ok(Some((frees, reason)));
            }
        }
        Ok(None)
    }
}

/// When the subscriber has had marketing email for at least `span` with no open or click by a
/// person within it: `Some`, with when they were asked whether they still want it (after their
/// last open or click), if they were. `None` when they are engaged (or new).
async fn unengaged(
    db: &Db,
    message: &outbox::Model,
    now: DateTime<Utc>,
    span: Duration,
) -> Result<Option<Option<DateTime<Utc>>>> {
    use crate::store::entities::event;
    let since = now - span;
    let long_enough = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(message.subscriber_id))
        .filter(outbox::Column::Channel.eq(OutboxChannel::Email))
        .filter(outbox::Column::Status.eq(OutboxStatus::Sent))
        .filter(outbox::Column::SentAt.lte(since))
        .filter(
            sea_orm::Condition::any()
                .add(outbox::Column::WorkflowId.is_not_null())
                .add(outbox::Column::BroadcastId.is_not_null()),
        )
        .one(db.conn())
        .await?
        .is_some();
    if !long_enough {
        return Ok(None);
    }
    let events = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(message.subscriber_id))
        .filter(event::Column::Kind.is_in(["email_opened", "email_clicked", SUNSET_ASKED]))
        .order_by_asc(event::Column::CreatedAt)
        .all(db.conn())
        .await?;
    let last_engaged = events
        .iter()
        .filter(|e| e.kind != SUNSET_ASKED && crate::rollups::by_person(&e.data))
        .map(|e| e.created_at)
        .next_back();
    if last_engaged.is_some_and(|at| at >= since) {
        return Ok(None);
    }
    let asked = events
        .iter()
        .filter(|e| e.kind == SUNSET_ASKED && last_engaged.is_none_or(|engaged| e.created_at > engaged))
        .map(|e| e.created_at)
        .next_back();
    Ok(Some(asked))
}

/// The timeline entry of a subscriber the sunset rule reached, asked whether they still want
/// email.
pub const SUNSET_ASKED: &str = "sunset_asked";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_holidays_parse_and_say_what_is_wrong() {
        assert_eq!(parse_days("mon-fri").unwrap(), [true, true, true, true, true, false, false]);
        assert_eq!(parse_days("fri-mon").unwrap(), [true, false, false, false, true, true, true]);
        assert_eq!(parse_days("sat,sun").unwrap(), [false, false, false, false, false, true, true]);
        assert_eq!(
            parse_days("monday-friday").unwrap(),
            parse_days("mon-fri").unwrap(),
            "a day's name may be spelt out"
        );
        assert!(parse_days("weekdays").unwrap_err().contains("'weekdays' is not a day"));
        assert!(parse_days("").is_err());
        assert_eq!(Holiday::parse("12-25").unwrap(), Holiday::Yearly { month: 12, day: 25 });
        assert!(matches!(Holiday::parse("2026-12-24").unwrap(), Holiday::Once(_)));
        assert!(Holiday::parse("02-30").is_err());
        assert!(Holiday::parse("christmas").unwrap_err().contains("'christmas'"));
    }

    #[test]
    fn a_closed_day_holds_until_the_next_open_one_where_the_subscriber_is() {
        let policy = SendPolicy {
            days: parse_days("mon-fri").unwrap(),
            holidays: vec![Holiday::parse("12-25").unwrap()],
            ..SendPolicy::default()
        };
        let rome: chrono_tz::Tz = "Europe/Rome".parse().unwrap();
        // 23:30 UTC on Thursday 24 December 2026 is already Christmas in Rome; then the weekend.
        let christmas_in_rome = Utc.with_ymd_and_hms(2026, 12, 24, 23, 30, 0).unwrap();
        assert_eq!(policy.closed(christmas_in_rome - Duration::hours(1), rome), None, "23:30 on Thursday is open");
        let (until, why) = policy.closed(christmas_in_rome, rome).unwrap();
        assert_eq!(until, Utc.with_ymd_and_hms(2026, 12, 27, 23, 0, 0).unwrap(), "Monday 00:00 in Rome");
        assert_eq!(why, "a holiday (12-25): held until 2026-12-28");
        let saturday = Utc.with_ymd_and_hms(2026, 12, 26, 12, 0, 0).unwrap();
        assert_eq!(policy.closed(saturday, rome).unwrap().1, "no marketing on Saturdays: held until 2026-12-28");
    }
}
