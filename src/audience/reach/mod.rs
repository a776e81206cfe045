//! Reachability: how much of the audience can still be reached, with consent, when a channel, a
//! relay or provider, or the social platform people came from goes dark, and how long one
//! message to all of them would take.
//!
//! Every active subscriber has a set of channels that can carry marketing to them now: an
//! address, and consent given (`subscribed`, not pending, withdrawn or bounced). The report
//! counts people per set (one grouped query per view: everyone, per source, per list), then takes
//! the lost channels out of each set in memory, so any drill is the same three queries.
//!
//! - A channel (`email`, `sms`) is lost by name, or when every relay or provider it has is lost
//!   (a channel without any, writing files, cannot be lost that way).
//! - `source:NAME` narrows the report to the people whose first touch came from there: the
//!   platform is gone, and what is left is what the business owns.
//! - An outage message reaches each person once on the first channel left, in the order of
//!   [`Channel::ALL`]; its duration is, per channel, the people it would carry over the rate at
//!   which that channel delivered broadcasts in the last 30 days (channels send side by side).

pub mod fallback;
pub mod grow;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement, Value as SqlValue};
use serde::Serialize;

use crate::core::error::{Error, FieldError, Result};
use crate::core::values::{Channel, OutboxChannel, OutboxStatus};
use crate::store::Db;

/// Sources shown apart in a report; smaller ones are summed as `other`.
const SOURCES_SHOWN: usize = 50;
/// A broadcast's messages on one channel count towards its measured rate when there are at
/// least this many of them, spread over at least a second.
const MEASURED_AT_LEAST: i64 = 10;

/// The relays and providers each channel has, by the names the delivery statistics use.
#[derive(Debug, Clone, Default)]
pub struct Providers(pub Vec<(Channel, String)>);

impl Providers {
    fn of(&self, channel: Channel) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(c, _)| *c == channel).map(|(_, name)| name.as_str())
    }
}

/// What a drill takes away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Without {
    pub channels: Vec<Channel>,
    pub providers: Vec<String>,
    pub sources: Vec<String>,
}

impl Without {
    /// Reads `email`, `sms`, a relay's or provider's name, or `source:NAME`, each item apart
    /// (a comma-separated list is split); every unknown word is reported.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>, providers: &Providers) -> Result<Self> {
        let mut without = Self::default();
        let mut errors = Vec::new();
        for item in items.into_iter().flat_map(|i| i.split(',')).map(str::trim).filter(|i| !i.is_empty()) {
            let lower = item.to_ascii_lowercase();
            if let Ok(channel) = lower.parse::<Channel>() {
                if !without.channels.contains(&channel) {
                    without.channels.push(channel);
                }
            } else if let Some(source) = lower.strip_prefix("source:") {
                match source.trim() {
                    "" => errors.push(FieldError::new("without", "source: needs a name, as in source:instagram")),
                    name => without.sources.push(name.to_owned()),
                }
            } else if let Some((_, name)) = providers.0.iter().find(|(_, name)| name.eq_ignore_ascii_case(item)) {
                if !without.providers.contains(name) {
                    without.providers.push(name.clone());
                }
            } else {
                let known: Vec<&str> = providers.0.iter().map(|(_, n)| n.as_str()).collect();
                let relays = if known.is_empty() {
                    "no relay or provider is configured".to_owned()
                } else {
                    format!("the relays and providers are {}", known.join(", "))
                };
                let channels: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                errors.push(FieldError::new(
                    "without",
                    format!(
                        "'{item}' is not a channel ({}), a relay or provider, or source:NAME; {relays}",
                        channels.join(", ")
                    ),
                ));
            }
        }
        if errors.is_empty() { Ok(without) } else { Err(Error::Invalid(errors)) }
    }

    /// The channels this takes down: named, or with every relay or provider of theirs lost.
    pub fn lost_channels(&self, providers: &Providers) -> Vec<Channel> {
        Channel::ALL
            .iter()
            .copied()
            .filter(|c| {
                self.channels.contains(c) || {
                    let mut theirs = providers.of(*c).peekable();
                    theirs.peek().is_some() && theirs.all(|name| self.providers.iter().any(|p| p == name))
                }
            })
            .collect()
    }

    /// What was taken away, as it was asked.
    pub fn words(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|c| c.as_str().to_owned())
            .chain(self.providers.iter().cloned())
            .chain(self.sources.iter().map(|s| format!("source:{s}")))
            .collect()
    }
}

/// A set of channels as bits, in the order of [`Channel::ALL`].
type Set = u8;

fn bit(channel: Channel) -> Set {
    1 << Channel::ALL.iter().position(|c| *c == channel).unwrap_or(0)
}

/// How many people have each set of channels.
#[derive(Debug, Clone, Default)]
struct Mix(BTreeMap<Set, u64>);

impl Mix {
    fn add(&mut self, other: &Mix) {
        for (set, n) in &other.0 {
            *self.0.entry(*set).or_default() += n;
        }
    }

    fn people(&self) -> u64 {
        self.0.values().sum()
    }

    /// The people with no channel left once `lost` is gone.
    fn cut_off(&self, lost: Set) -> u64 {
        self.0.iter().filter(|(set, _)| **set != 0 && *set & !lost == 0).map(|(_, n)| n).sum()
    }
}

/// One part of the audience (everyone, a source, a list) with what it comes to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReachGroup {
    /// `all`, a source (`instagram`, `direct` for none) or a list's slug.
    pub name: String,
    /// Active subscribers (a list's: its confirmed members).
    pub audience: u64,
    /// With consent on a channel that is left.
    pub reachable: u64,
    /// With no channel left: an address with consent on none that works.
    pub unreachable: u64,
    /// Reachable on one channel only (one more outage from being lost).
    pub one_channel: u64,
    /// Reachable on two or more channels.
    pub several_channels: u64,
    /// Where one outage message would reach each of them: the first channel left, in order.
    pub reached_on: BTreeMap<String, u64>,
    /// How long that message would take at the rates measured, in seconds; none when a channel
    /// it needs has no measured rate.
    pub outage_message_seconds: Option<f64>,
}

/// A single point of failure: what losing it alone would cut off.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Weakness {
    /// A channel, or a relay or provider.
    pub lose: String,
    /// Active subscribers it would leave with no channel.
    pub unreachable: u64,
    pub share: Option<f64>,
}

/// A channel's delivery rate for broadcasts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelRate {
    /// Messages a second, over every broadcast of the last 30 days with at least ten messages
    /// on the channel (their count over the time from their first to their last send); none
    /// when there is no such broadcast.
    pub per_second: Option<f64>,
    /// The messages measured.
    pub messages: u64,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reachability {
    /// What was taken away, as asked.
    pub without: Vec<String>,
    /// The channels that takes down.
    pub lost_channels: Vec<String>,
    /// Everyone (or, with `source:…`, everyone from there).
    pub total: ReachGroup,
    /// Per source of the first touch (the largest fifty; `other` sums the rest).
    pub sources: Vec<ReachGroup>,
    /// Per list: its confirmed members.
    pub lists: Vec<ReachGroup>,
    /// Per channel, the broadcast delivery rate of the last 30 days.
    pub rates: BTreeMap<String, ChannelRate>,
    /// Among all channels, relays and providers, the one whose loss alone would cut off the
    /// most people (before what `without` takes away); none when nothing would.
    pub weakest: Option<Weakness>,
    /// Share of active subscribers reachable on two or more channels (nothing taken away).
    pub multi_channel_share: Option<f64>,
    /// People who confirmed a second channel through the add-channel page in the last 30 days.
    pub added_channel_30_days: u64,
}

/// The SQL that gives each subscriber's set of channels that can carry marketing now.
fn set_sql() -> String {
    let sum = Channel::ALL
        .iter()
        .map(|c| {
            let (address, state) = match c {
                Channel::Email => ("email", "email_state"),
                Channel::Sms => ("phone", "sms_state"),
                Channel::Whatsapp => ("phone", "whatsapp_state"),
            };
            format!("(CASE WHEN s.{address} IS NOT NULL AND s.{state} = 'subscribed' THEN {} ELSE 0 END)", bit(*c))
        })
        .collect::<Vec<_>>()
        .join(" + ");
    // BIGINT, as COUNT(*) is on PostgreSQL, so both read as i64 on either database.
    format!("CAST({sum} AS BIGINT)")
}

/// People per key and set of channels, from a grouped query whose columns are the key, the set
/// and the count.
async fn mixes(db: &Db, sql: String, values: Vec<SqlValue>) -> Result<BTreeMap<String, Mix>> {
    let rows = db.conn().query_all_raw(Statement::from_sql_and_values(db.backend(), sql, values)).await?;
    let mut out: BTreeMap<String, Mix> = BTreeMap::new();
    for row in rows {
        let key: String = row.try_get_by_index(0)?;
        let set: i64 = row.try_get_by_index(1)?;
        let count: i64 = row.try_get_by_index(2)?;
        *out.entry(key).or_default().0.entry(set as Set).or_default() += count.max(0) as u64;
    }
    Ok(out)
}

/// Each channel's broadcast delivery rate since `since`.
pub async fn rates(db: &Db, since: DateTime<Utc>) -> Result<BTreeMap<String, ChannelRate>> {
    use crate::store::entities::outbox::{Column, Entity};
    use sea_orm::sea_query::{Expr, ExprTrait};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let rows: Vec<(OutboxChannel, i64, DateTime<Utc>, DateTime<Utc>)> = Entity::find()
        .select_only()
        .column(Column::Channel)
        .column_as(Expr::col(Column::Id).count(), "n")
        .column_as(Expr::col(Column::SentAt).min(), "first")
        .column_as(Expr::col(Column::SentAt).max(), "last")
        .filter(Column::Status.eq(OutboxStatus::Sent))
        .filter(Column::BroadcastId.is_not_null())
        .filter(Column::SentAt.gte(since))
        .group_by(Column::Channel)
        .group_by(Column::BroadcastId)
        .into_tuple()
        .all(db.conn())
        .await?;
    let mut sums: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
    for (channel, count, first, last) in rows {
        let span = (last - first).num_milliseconds() as f64 / 1000.0;
        if count >= MEASURED_AT_LEAST && span >= 1.0 {
            let sum = sums.entry(channel.as_str()).or_default();
            sum.0 += count as u64;
            sum.1 += span;
        }
    }
    Ok(Channel::ALL
        .iter()
        .map(|c| {
            let (messages, seconds) = sums.get(c.as_str()).copied().unwrap_or_default();
            let per_second = (seconds > 0.0).then(|| (messages as f64 / seconds * 10.0).round() / 10.0);
            (c.as_str().to_owned(), ChannelRate { per_second, messages })
        })
        .collect())
}

/// The report for a drill that takes `without` away.
pub async fn report(db: &Db, providers: &Providers, without: &Without, now: DateTime<Utc>) -> Result<Reachability> {
    let set = set_sql();
    let by_source = mixes(
        db,
        format!(
            "SELECT COALESCE(LOWER(TRIM(s.source)), '') AS k, {set} AS c, COUNT(*) FROM subscribers s \
             WHERE s.status = 'active' GROUP BY k, c"
        ),
        Vec::new(),
    )
    .await?;
    let by_source: BTreeMap<String, Mix> = by_source.into_iter().fold(BTreeMap::new(), |mut acc, (key, mix)| {
        let key = if key.is_empty() { "direct".to_owned() } else { key };
        acc.entry(key).or_insert_with(Mix::default).add(&mix);
        acc
    });
    let scoped = |source: &str| without.sources.is_empty() || without.sources.iter().any(|s| s == source);
    let everyone = by_source.values().fold(Mix::default(), |mut all, m| {
        all.add(m);
        all
    });
    let total = by_source.iter().filter(|(k, _)| scoped(k)).fold(Mix::default(), |mut all, (_, m)| {
        all.add(m);
        all
    });
    // The sources as bound values ('' is `direct`: no source recorded).
    let names: Vec<SqlValue> = without
        .sources
        .iter()
        .flat_map(|s| if s == "direct" { vec![s.clone(), String::new()] } else { vec![s.clone()] })
        .map(SqlValue::from)
        .collect();
    let source_filter = if names.is_empty() {
        String::new()
    } else {
        let sqlite = db.backend() == sea_orm::DbBackend::Sqlite;
        let marks: Vec<String> =
            (1..=names.len()).map(|i| if sqlite { "?".to_owned() } else { format!("${i}") }).collect();
        format!(" AND COALESCE(LOWER(TRIM(s.source)), '') IN ({})", marks.join(", "))
    };
    let by_list = mixes(
        db,
        format!(
            "SELECT l.slug AS k, {set} AS c, COUNT(*) FROM memberships m \
             JOIN lists l ON l.id = m.list_id JOIN subscribers s ON s.id = m.subscriber_id \
             WHERE m.status = 'confirmed' AND s.status = 'active'{source_filter} GROUP BY k, c"
        ),
        names,
    )
    .await?;
    let rates = rates(db, now - chrono::Duration::days(30)).await?;
    let lost_channels = without.lost_channels(providers);
    let lost: Set = lost_channels.iter().map(|c| bit(*c)).fold(0, |a, b| a | b);
    let group = |name: &str, mix: &Mix| figures(name, mix, lost, &rates);

    let mut sources: Vec<(&String, &Mix)> = by_source.iter().filter(|(k, _)| scoped(k)).collect();
    sources.sort_by(|a, b| b.1.people().cmp(&a.1.people()).then(a.0.cmp(b.0)));
    let mut shown: Vec<ReachGroup> = sources.iter().take(SOURCES_SHOWN).map(|(k, m)| group(k, m)).collect();
    if sources.len() > SOURCES_SHOWN {
        let rest = sources[SOURCES_SHOWN..].iter().fold(Mix::default(), |mut all, (_, m)| {
            all.add(m);
            all
        });
        shown.push(group(crate::rollups::funnel::OTHER, &rest));
    }
    let multi = everyone.0.iter().filter(|(set, _)| set.count_ones() >= 2).map(|(_, n)| n).sum::<u64>();
    let added = added_channels(db, now - chrono::Duration::days(30)).await?;
    Ok(Reachability {
        without: without.words(),
        lost_channels: lost_channels.iter().map(|c| c.as_str().to_owned()).collect(),
        total: group("all", &total),
        sources: shown,
        lists: by_list.iter().map(|(k, m)| group(k, m)).collect(),
        weakest: weakest(&everyone, providers),
        multi_channel_share: share(multi as i64, everyone.people() as i64),
        rates,
        added_channel_30_days: added,
    })
}

/// How many people confirmed a channel asked for on the add-channel page since `since`.
async fn added_channels(db: &Db, since: DateTime<Utc>) -> Result<u64> {
    use crate::store::entities::signup_confirmation::{Column, Entity};
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let count: Option<i64> = Entity::find()
        .select_only()
        .column_as(Expr::cust("COUNT(DISTINCT subscriber_id)"), "n")
        .filter(Column::Page.eq(grow::ADD_CHANNEL_PAGE))
        .filter(Column::ConfirmedAt.gte(since))
        .into_tuple()
        .one(db.conn())
        .await?;
    Ok(count.unwrap_or(0).max(0) as u64)
}

/// The share of active subscribers reachable on two or more channels, and the worst single
/// point of failure: for the dashboard's overview (one query).
pub async fn overview(db: &Db, providers: &Providers) -> Result<(Option<f64>, Option<Weakness>, u64)> {
    let everyone = mixes(
        db,
        format!(
            "SELECT '' AS k, {} AS c, COUNT(*) FROM subscribers s WHERE s.status = 'active' GROUP BY k, c",
            set_sql()
        ),
        Vec::new(),
    )
    .await?
    .remove("")
    .unwrap_or_default();
    let multi = everyone.0.iter().filter(|(set, _)| set.count_ones() >= 2).map(|(_, n)| n).sum::<u64>();
    Ok((share(multi as i64, everyone.people() as i64), weakest(&everyone, providers), everyone.people()))
}

/// The report as a table for the terminal.
pub fn text(report: &Reachability) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let lost = if report.lost_channels.is_empty() {
        "no channel goes down".to_owned()
    } else {
        format!("down: {}", report.lost_channels.join(", "))
    };
    let _ = match report.without.is_empty() {
        true => writeln!(out, "Reach today (nothing taken away)"),
        false => writeln!(out, "Drill: without {} ({lost})", report.without.join(", ")),
    };
    let header = format!(
        "{:<24} {:>9} {:>9} {:>11} {:>9} {:>9}  {}",
        "", "audience", "reachable", "unreachable", "1 channel", "2+", "one message to all of them"
    );
    let row = |g: &ReachGroup| {
        let on: Vec<String> = g.reached_on.iter().filter(|(_, n)| **n > 0).map(|(c, n)| format!("{c} {n}")).collect();
        let took = match g.outage_message_seconds {
            Some(s) => format!("{} ({})", duration(s), on.join(", ")),
            None if on.is_empty() => "nobody to send to".to_owned(),
            None => format!("no measured rate ({})", on.join(", ")),
        };
        format!(
            "{:<24} {:>9} {:>9} {:>11} {:>9} {:>9}  {took}\n",
            g.name, g.audience, g.reachable, g.unreachable, g.one_channel, g.several_channels
        )
    };
    let _ = writeln!(out, "{header}");
    out.push_str(&row(&report.total));
    for (title, groups) in [("by source", &report.sources), ("by list", &report.lists)] {
        if !groups.is_empty() {
            let _ = writeln!(out, "{title}:");
            groups.iter().for_each(|g| out.push_str(&row(g)));
        }
    }
    let rates: Vec<String> = report
        .rates
        .iter()
        .map(|(c, r)| match r.per_second {
            Some(rate) => format!("{c} {rate}/s over {} messages", r.messages),
            None => format!("{c} not measured"),
        })
        .collect();
    let _ = writeln!(out, "broadcast delivery rates, last 30 days: {}", rates.join("; "));
    if let Some(share) = report.multi_channel_share {
        let _ = writeln!(out, "on two or more channels today: {:.1}% of active subscribers", share * 100.0);
    }
    let _ =
        writeln!(out, "added a second channel on the add-channel page, last 30 days: {}", report.added_channel_30_days);
    match &report.weakest {
        Some(w) => {
            let share = w.share.map(|s| format!(" ({:.1}%)", s * 100.0)).unwrap_or_default();
            let _ = writeln!(out, "weakest point: {} (losing it alone cuts off {}{share})", w.lose, w.unreachable);
        }
        None => {
            let _ = writeln!(out, "weakest point: none (no single loss cuts anyone off)");
        }
    }
    out
}

fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// A part of a whole, to four decimals; none of nothing.
fn share(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

fn figures(name: &str, mix: &Mix, lost: Set, rates: &BTreeMap<String, ChannelRate>) -> ReachGroup {
    let mut group = ReachGroup {
        name: name.to_owned(),
        audience: 0,
        reachable: 0,
        unreachable: 0,
        one_channel: 0,
        several_channels: 0,
        reached_on: Channel::ALL.iter().map(|c| (c.as_str().to_owned(), 0)).collect(),
        outage_message_seconds: None,
    };
    for (set, n) in &mix.0 {
        let left = set & !lost;
        group.audience += n;
        match left.count_ones() {
            0 => group.unreachable += n,
            1 => group.one_channel += n,
            _ => group.several_channels += n,
        }
        if let Some(first) = Channel::ALL.iter().find(|c| left & bit(**c) != 0) {
            group.reachable += n;
            *group.reached_on.entry(first.as_str().to_owned()).or_default() += n;
        }
    }
    group.outage_message_seconds = if group.reachable == 0 {
        None
    } else {
        group
            .reached_on
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(channel, n)| rates.get(channel).and_then(|r| r.per_second).map(|rate| *n as f64 / rate))
            .try_fold(0.0_f64, |longest, seconds| seconds.map(|s| longest.max(s)))
            .map(|s| (s * 10.0).round() / 10.0)
    };
    group
}

/// The channel, relay or provider whose loss alone cuts off the most people.
fn weakest(everyone: &Mix, providers: &Providers) -> Option<Weakness> {
    let mut candidates: Vec<(String, Set)> = Channel::ALL.iter().map(|c| (c.as_str().to_owned(), bit(*c))).collect();
    for (channel, name) in &providers.0 {
        let alone = Without { providers: vec![name.clone()], ..Without::default() };
        let lost = alone.lost_channels(providers);
        if lost.contains(channel) {
            candidates.push((name.clone(), bit(*channel)));
        }
    }
    let people = everyone.people();
    candidates
        .into_iter()
        .map(|(lose, set)| (everyone.cut_off(set), lose))
        .filter(|(n, _)| *n > 0)
        // The most cut off; a provider before its channel when they cut off the same (it is the
        // narrower thing to fix).
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.contains(':').cmp(&b.1.contains(':'))))
        .map(|(unreachable, lose)| Weakness { lose, unreachable, share: share(unreachable as i64, people as i64) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Providers {
        Providers(vec![
            (Channel::Email, "mail.example:587".into()),
            (Channel::Sms, "twilio:api.twilio.com".into()),
            (Channel::Sms, "http:sms.example".into()),
        ])
    }

    #[test]
    fn a_drill_reads_channels_providers_and_sources_and_names_what_it_does_not_know() {
        let p = providers();
        let w = Without::parse(["sms", "TWILIO:api.twilio.com,source:Instagram"], &p).unwrap();
        assert_eq!(w.channels, vec![Channel::Sms]);
        assert_eq!(w.providers, vec!["twilio:api.twilio.com".to_owned()]);
        assert_eq!(w.sources, vec!["instagram".to_owned()]);
        let Err(Error::Invalid(errors)) = Without::parse(["fax"], &p) else { panic!("fax is no channel") };
        assert!(errors[0].message.contains("mail.example:587"), "{:?}", errors[0].message);
        // One SMS provider of two leaves SMS up; both take it down.
        let one = Without::parse(["twilio:api.twilio.com"], &p).unwrap();
        assert!(one.lost_channels(&p).is_empty());
        let both = Without::parse(["twilio:api.twilio.com", "http:sms.example"], &p).unwrap();
        assert_eq!(both.lost_channels(&p), vec![Channel::Sms]);
        // A channel writing files has no provider to lose.
        assert!(Without::parse(["mail.example:587"], &Providers::default()).is_err());
    }

    #[test]
    fn figures_take_the_lost_channels_out_of_each_persons_set() {
        let (email, sms) = (bit(Channel::Email), bit(Channel::Sms));
        let mix = Mix([(0, 1), (email, 4), (sms, 2), (email | sms, 3)].into_iter().collect());
        let rates: BTreeMap<String, ChannelRate> = [
            ("email".to_owned(), ChannelRate { per_second: Some(100.0), messages: 1000 }),
            ("sms".to_owned(), ChannelRate { per_second: Some(1.0), messages: 100 }),
        ]
        .into_iter()
        .collect();
        let all = figures("all", &mix, 0, &rates);
        assert_eq!(
            (all.audience, all.reachable, all.unreachable, all.one_channel, all.several_channels),
            (10, 9, 1, 6, 3)
        );
        assert_eq!((all.reached_on["email"], all.reached_on["sms"]), (7, 2));
        assert_eq!(all.outage_message_seconds, Some(2.0), "two SMS at one a second outlast seven emails");
        let no_email = figures("all", &mix, email, &rates);
        assert_eq!((no_email.reachable, no_email.unreachable, no_email.one_channel), (5, 5, 5));
        assert_eq!(no_email.reached_on["sms"], 5);
        let unmeasured = figures("all", &mix, 0, &BTreeMap::new());
        assert_eq!(unmeasured.outage_message_seconds, None);
        let weakest = weakest(&mix, &providers()).unwrap();
        assert_eq!((weakest.lose.as_str(), weakest.unreachable), ("mail.example:587", 4));
    }
}
