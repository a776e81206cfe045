//! Delivery statistics per relay or provider (`delivery_daily`): every attempt a delivery worker
//! makes is counted, with its duration, in the transaction that records the attempts' answers.

use chrono::NaiveDate;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

use super::{Days, ratio, sum};
use crate::core::error::Result;
use crate::core::values::OutboxChannel;
use crate::rollups::delivery::Figures;
use crate::store::Db;
use crate::store::entities::delivery_day::{self, Column};

/// One relay's or provider's figures for a date range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RelayStats {
    pub channel: OutboxChannel,
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

type Row = (String, OutboxChannel, String, i64, i64, i64, i64, i64);

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
    let mut relays: std::collections::BTreeMap<(OutboxChannel, String), Figures> = std::collections::BTreeMap::new();
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
    pub channel: OutboxChannel,
    pub queued: i64,
    pub due: i64,
    pub oldest_due_seconds: f64,
}

/// The outbox's depth per channel (email, sms, webhook), read now.
pub async fn outbox(db: &Db, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Depth>> {
    use crate::store::entities::outbox;
    use sea_orm::{PaginatorTrait, QueryOrder};
    let conn = db.conn();
    let queued: Vec<(OutboxChannel, i64)> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Channel)
        .expr(Expr::cust("COUNT(*)"))
        .filter(crate::store::queued())
        .group_by(outbox::Column::Channel)
        .into_tuple()
        .all(conn)
        .await?;
    let mut out = Vec::new();
    for &channel in OutboxChannel::ALL {
        let due = outbox::Entity::find()
            .filter(outbox::Column::Channel.eq(channel))
            .filter(crate::store::queued())
            .filter(outbox::Column::DueAt.lte(now));
        let count = due.clone().count(conn).await?;
        let oldest = due.order_by_asc(outbox::Column::DueAt).one(conn).await?;
        out.push(Depth {
            channel,
            queued: queued.iter().find(|(c, _)| *c == channel).map_or(0, |(_, n)| *n),
            due: i64::try_from(count).unwrap_or(i64::MAX),
            oldest_due_seconds: oldest
                .map_or(0.0, |m| Ord::max((now - m.due_at).num_milliseconds(), 0) as f64 / 1000.0),
        });
    }
    Ok(out)
}
