//! Delivery counts per relay or provider (`delivery_daily`): every attempt a delivery worker
//! makes is counted, with its duration, in the transaction that records the attempts' answers.

use chrono::NaiveDate;
use sea_orm::EntityTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};

use super::day_key;
use crate::core::values::OutboxChannel;
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
pub(crate) struct Figures {
    pub(crate) sent: i64,
    pub(crate) failed: i64,
    pub(crate) retried: i64,
    pub(crate) attempts: i64,
    pub(crate) latency_ms: i64,
}

impl Figures {
    pub(crate) fn add(&mut self, other: Figures) {
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
pub struct Attempts(std::collections::BTreeMap<(OutboxChannel, String), Figures>);

impl Attempts {
    pub fn add(&mut self, channel: OutboxChannel, tries: &[Try]) {
        for t in tries {
            let one = Figures {
                sent: i64::from(t.outcome == Outcome::Sent),
                failed: i64::from(t.outcome == Outcome::Failed),
                retried: i64::from(t.outcome == Outcome::Retried),
                attempts: 1,
                latency_ms: t.millis,
            };
            self.0.entry((channel, t.relay.clone())).or_default().add(one);
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
