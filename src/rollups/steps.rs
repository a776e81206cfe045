//! Workflow step counts (`step_daily`): per workflow, day and step, gathered while the engine
//! advances enrollments and while their messages are delivered, opened, clicked and answered
//! with an unsubscribe, written in the same transaction as what they count.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::day_key;
use crate::core::error::Result;
use crate::core::values::{Channel, OutboxChannel, OutboxStatus};
use crate::store::entities::outbox;
use crate::store::entities::step_day::{self, Column};

/// What a `step_daily` row counts.
pub mod measure {
    /// Workflow level (step ""): enrollments started, completed (every step done), exited
    /// (a goal reached or an exit step).
    pub const ENROLLED: &str = "enrolled";
    /// Step level: enrollments that reached the step.
    pub const ENTERED: &str = "entered";
    /// Done, and on to the next step (also at workflow level: completed the workflow).
    pub const COMPLETED: &str = "completed";
    /// Passed over, with the reason as detail (no consent, a list missing, a rendering error).
    pub const SKIPPED: &str = "skipped";
    /// Left the workflow while at the step (its goal held); at workflow level, every exit.
    pub const EXITED: &str = "exited";
    /// Messages the step wrote to the outbox.
    pub const SENT: &str = "sent";
    /// Messages a relay or provider accepted.
    pub const DELIVERED: &str = "delivered";
    /// Messages that failed for good (refused, bounced, or retried past the age limit).
    pub const FAILED: &str = "failed";
    /// Messages opened (first time each).
    pub const OPENED: &str = "opened";
    /// Messages with a link followed (first time each).
    pub const CLICKED: &str = "clicked";
    /// Subscribers who withdrew consent for the channel after this step's message was the last
    /// one they got on it.
    pub const UNSUBSCRIBED: &str = "unsubscribed";
}

/// The longest reason kept as a skip's detail.
const DETAIL_CHARS: usize = 200;

/// Step counts gathered in a transaction and written before it commits, one row per key, in key
/// order: transactions of several instances then take the rows' locks in the same order, and
/// cannot deadlock on them (PostgreSQL).
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<(String, String, String, &'static str, String), i64>);

impl Tally {
    /// Counts one for a workflow's step (`""`: the workflow) on a day.
    pub fn add(&mut self, day: NaiveDate, workflow: &str, step: &str, measure: &'static str, detail: &str) {
        self.add_n(day, workflow, step, measure, detail, 1);
    }

    pub fn add_n(&mut self, day: NaiveDate, workflow: &str, step: &str, measure: &'static str, detail: &str, n: i64) {
        let detail: String = detail.chars().take(DETAIL_CHARS).collect();
        *self.0.entry((day_key(day), workflow.to_owned(), step.to_owned(), measure, detail)).or_default() += n;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the counts to the rollups, within the caller's transaction.
    pub async fn flush(self, conn: &impl ConnectionTrait) -> Result<()> {
        use sea_orm::ActiveValue::Set;
        let rows: Vec<step_day::ActiveModel> = self
            .0
            .into_iter()
            .map(|((day, workflow_id, step_id, measure, detail), n)| step_day::ActiveModel {
                workflow_id: Set(workflow_id),
                day: Set(day),
                step_id: Set(step_id),
                measure: Set(measure.to_owned()),
                detail: Set(detail),
                n: Set(n),
            })
            .collect();
        for chunk in rows.chunks(500) {
            step_day::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([
                        Column::WorkflowId,
                        Column::Day,
                        Column::StepId,
                        Column::Measure,
                        Column::Detail,
                    ])
                    .value(Column::N, Expr::col((step_day::Entity, Column::N)).add(Expr::cust("excluded.n")))
                    .to_owned(),
                )
                .exec_without_returning(conn)
                .await?;
        }
        Ok(())
    }
}

/// Counts one for the step that produced a message (nothing for broadcasts and confirmations).
pub async fn message_step(
    conn: &impl ConnectionTrait,
    message: &outbox::Model,
    day: NaiveDate,
    measure: &'static str,
) -> Result<()> {
    if let (Some(workflow), Some(step)) = (&message.workflow_id, &message.step_id) {
        let mut tally = Tally::default();
        tally.add(day, workflow, step, measure, "");
        tally.flush(conn).await?;
    }
    Ok(())
}

/// A subscriber withdrew consent for a channel: counts an unsubscribe for the workflow step whose
/// message was the last one sent to them on it, if any was.
pub async fn unsubscribed(
    conn: &impl ConnectionTrait,
    subscriber_id: uuid::Uuid,
    channel: Channel,
    day: NaiveDate,
) -> Result<()> {
    let last = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(subscriber_id))
        .filter(outbox::Column::Channel.eq(OutboxChannel::from(channel)))
        .filter(outbox::Column::Status.eq(OutboxStatus::Sent))
        .order_by_desc(outbox::Column::SentAt)
        .one(conn)
        .await?;
    match last {
        Some(message) => message_step(conn, &message, day, measure::UNSUBSCRIBED).await,
        None => Ok(()),
    }
}
