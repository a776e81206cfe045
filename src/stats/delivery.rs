//! Delivery statistics per relay or provider (`delivery_daily`): every attempt a delivery worker
//! makes is counted, with its duration, in the transaction that records the attempts' answers.

use chrono::NaiveDate;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

use super::{Days, day_key, ratio, sum};
use crate::error::Result;
use crate::store::Db;
use crate::store::entities::delivery_day::{self, Column};

/// How one attempt at one relay or provider went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Sent,
    /// Refused for good (the message or its recipient).
    Failed,
    /// Failing for now (the next relay is tried, or the message waits for a retry).
    Retried,
}

/// One attempt at one relay or provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Try {
    pub relay: String,
    pub outcome: Outcome,
    pub millis: i64,
}

impl Try {
    pub fn new(relay: &str, outcome: Outcome, took: std::time::Duration) -> Self {
        Self { relay: relay.to_owned(), outcome, millis: i64::try_from(took.as_millis()).unwrap_or(i64::MAX) }
    }
}

/// One relay's attempts in a write, or in a range of days.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    sent: i64,
    failed: i64,
    retried: i64,
    attempts: i64,
    latency_ms: i64,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.retried += other.retried;
        self.attempts += other.attempts;
        self.latency_ms = self.latency_ms.saturating_add(other.latency_ms);
    }
}

/// Attempts gathered for one write, summed per relay, written in key order (see
/// [`super::steps::Tally`]).
#[derive(Debug, Default)]
pub struct Attempts(std::collections::BTreeMap<(String, String), Figures>);

impl Attempts {
    pub fn add(&mut self, channel: &str, tries: &[Try]) {
        for t in tries {
            let one = Figures {
                sent: i64::from(t.outcome == Outcome::Sent),
                failed: i64::from(t.outcome == Outcome::Failed),
                retried: i64::from(t.outcome == Outcome::Retried),
                attempts: 1,
                latency_ms: t.millis,
            };
            self.0.entry((channel.to_owned(), t.relay.clone())).or_default().add(one);
        }
    }

    /// The statement that adds the counts to the day's rollups (none when nothing was counted),
    /// for the caller to run in its transaction.
    pub fn statement(self, backend: sea_orm::DbBackend, day: NaiveDate) -> Option<sea_orm::Statement> {
        use sea_orm::ActiveValue::Set;
        use sea_orm::QueryTrait;
        if self.0.is_empty() {
            return None;
        }
        let day = day_key(day);
        let rows: Vec<delivery_day::ActiveModel> = self
            .0
            .into_iter()
            .map(|((channel, relay), f)| delivery_day::ActiveModel {
                day: Set(day.clone()),
                channel: Set(channel),
                relay: Set(relay),
                sent: Set(f.sent),
                failed: Set(f.failed),
                retried: Set(f.retried),
                attempts: Set(f.attempts),
                latency_ms: Set(f.latency_ms),
            })
            .collect();
        let add = |column: Column| {
            let excluded = format!("excluded.{}", sea_orm::IdenStatic::as_str(&column));
            (column, Expr::col((delivery_day::Entity, column)).add(Expr::cust(excluded)))
        };
        let mut on_conflict = OnConflict::columns([Column::Day, Column::Channel, Column::Relay]);
        for column in [Column::Sent, Column::Failed, Column::Retried, Column::Attempts, Column::LatencyMs] {
            let (column, value) = add(column);
            on_conflict.value(column, value);
        }
        Some(delivery_day::Entity::insert_many(rows).on_conflict(on_conflict).build(backend))
    }
}

/// One relay's or provider's figures for a date range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RelayStats {
    pub channel: String,
    pub relay: String,
    pub sent: i64,
    pub failed: i64,
    pub retried: i64,
    pub attempts: i64,
    /// Mean duration of an attempt, in milliseconds.
    pub mean_latency_ms: Option<f64>,
    /// sent / attempts.
    pub success_rate: Option<f64>,
}

/// Delivery figures for a date range, per relay or provider, and by day for all of them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryStats {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub relays: Vec<RelayStats>,
    pub by_day: Vec<DayStats>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DayStats {
    pub day: String,
    pub sent: i64,
    pub failed: i64,
    pub retried: i64,
}

type Row = (String, String, String, i64, i64, i64, i64, i64);

pub async fn delivery(db: &Db, days: Days) -> Result<DeliveryStats> {
    let mut query = delivery_day::Entity::find()
        .select_only()
        .column(Column::Day)
        .column(Column::Channel)
        .column(Column::Relay)
        .expr(sum(Column::Sent))
        .expr(sum(Column::Failed))
        .expr(sum(Column::Retried))
        .expr(sum(Column::Attempts))
        .expr(sum(Column::LatencyMs))
        .group_by(Column::Day)
        .group_by(Column::Channel)
        .group_by(Column::Relay);
    let (from, to) = days.keys();
    if let Some(from) = from {
        query = query.filter(Column::Day.gte(from));
    }
    if let Some(to) = to {
        query = query.filter(Column::Day.lte(to));
    }
    let rows: Vec<Row> = query.into_tuple().all(db.conn()).await?;
    let mut relays: std::collections::BTreeMap<(String, String), Figures> = std::collections::BTreeMap::new();
    let mut by_day: std::collections::BTreeMap<String, Figures> = std::collections::BTreeMap::new();
    for (day, channel, relay, sent, failed, retried, attempts, latency_ms) in rows {
        let f = Figures { sent, failed, retried, attempts, latency_ms };
        relays.entry((channel, relay)).or_default().add(f);
        by_day.entry(day).or_default().add(f);
    }
    Ok(DeliveryStats {
        from: days.from,
        to: days.to,
        relays: relays
            .into_iter()
            .map(|((channel, relay), f)| RelayStats {
                channel,
                relay,
                sent: f.sent,
                failed: f.failed,
                retried: f.retried,
                attempts: f.attempts,
                mean_latency_ms: (f.attempts > 0)
                    .then(|| (f.latency_ms as f64 / f.attempts as f64 * 10.0).round() / 10.0),
                success_rate: ratio(f.sent, f.attempts),
            })
            .collect(),
        by_day: by_day
            .into_iter()
            .map(|(day, f)| DayStats { day, sent: f.sent, failed: f.failed, retried: f.retried })
            .collect(),
    })
}

/// The outbox of one channel now: messages waiting, those due, and how long the oldest due one
/// has waited.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Depth {
    pub channel: String,
    pub queued: i64,
    pub due: i64,
    pub oldest_due_seconds: f64,
}

/// The outbox's depth per channel (email, sms, webhook), read now.
pub async fn outbox(db: &Db, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Depth>> {
    use crate::store::entities::outbox;
    use sea_orm::{PaginatorTrait, QueryOrder};
    let conn = db.conn();
    let queued: Vec<(String, i64)> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Channel)
        .expr(Expr::cust("COUNT(*)"))
        .filter(crate::store::queued())
        .group_by(outbox::Column::Channel)
        .into_tuple()
        .all(conn)
        .await?;
    let mut out = Vec::new();
    for channel in ["email", "sms", "webhook"] {
        let due = outbox::Entity::find()
            .filter(outbox::Column::Channel.eq(channel))
            .filter(crate::store::queued())
            .filter(outbox::Column::DueAt.lte(now));
        let count = due.clone().count(conn).await?;
        let oldest = due.order_by_asc(outbox::Column::DueAt).one(conn).await?;
        out.push(Depth {
            channel: channel.to_owned(),
            queued: queued.iter().find(|(c, _)| c == channel).map_or(0, |(_, n)| *n),
            due: i64::try_from(count).unwrap_or(i64::MAX),
            oldest_due_seconds: oldest
                .map_or(0.0, |m| Ord::max((now - m.due_at).num_milliseconds(), 0) as f64 / 1000.0),
        });
    }
    Ok(out)
}
