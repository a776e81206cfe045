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
    /// Messages whose pixel a machine loaded (a privacy proxy, a scanner), first time each;
    /// `opened` counts people only.
    pub const OPENED_BY_MACHINE: &str = "opened_by_machine";
    /// Messages with a link a machine followed (a link scanner), first time each; `clicked`
    /// counts people only.
    pub const CLICKED_BY_MACHINE: &str = "clicked_by_machine";
    /// Subscribers who withdrew consent for the channel after this step's message was the last
    /// one they got on it (for a broadcast, also those who left its list that way).
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    /// Broadcasts only: messages whose address bounced for good (refused when sent, or reported
    /// by a bounce webhook about the last message the address got).
    pub const BOUNCED: &str = "bounced";
    /// Broadcasts only: spam complaints about the last message the address got.
    pub const COMPLAINED: &str = "complained";
    /// Broadcasts only: every click, with the link's URL as detail.
    pub const CLICKS: &str = "clicks";
    /// Broadcasts only: messages in which a link was followed, per link (URL as detail).
    pub const LINK_CLICKED: &str = "link_clicked";
}

/// The key under which a broadcast's figures are kept in `step_daily` (step `""`): workflow ids
/// never contain a colon, so it cannot be taken for a workflow.
pub fn broadcast_key(id: uuid::Uuid) -> String {
    format!("broadcast:{id}")
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

impl Tally {
    /// Counts one for what produced `message`: its workflow step, or its broadcast (nothing for
    /// confirmations).
    pub fn message(&mut self, day: NaiveDate, message: &outbox::Model, measure: &'static str, detail: &str) {
        if let (Some(workflow), Some(step)) = (&message.workflow_id, &message.step_id) {
            self.add(day, workflow, step, measure, detail);
        } else if let Some(broadcast) = message.broadcast_id {
            self.add(day, &broadcast_key(broadcast), "", measure, detail);
        }
    }
}

/// Counts one for the step or broadcast that produced a message.
pub async fn message_step(
    conn: &impl ConnectionTrait,
    message: &outbox::Model,
    day: NaiveDate,
    measure: &'static str,
) -> Result<()> {
    let mut tally = Tally::default();
    tally.message(day, message, measure, "");
    if tally.is_empty() { Ok(()) } else { tally.flush(conn).await }
}

/// The last message sent to a subscriber on a channel (of list `list`, when given).
async fn last_sent(
    conn: &impl ConnectionTrait,
    subscriber_id: uuid::Uuid,
    channel: Channel,
    list: Option<&str>,
) -> Result<Option<outbox::Model>> {
    let mut query = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(subscriber_id))
        .filter(outbox::Column::Channel.eq(OutboxChannel::from(channel)))
        .filter(outbox::Column::Status.eq(OutboxStatus::Sent));
    if let Some(list) = list {
        query = query.filter(outbox::Column::ListSlug.eq(list));
    }
    Ok(query.order_by_desc(outbox::Column::SentAt).one(conn).await?)
}

/// A subscriber withdrew consent for a channel: counts an unsubscribe (or, for a broadcast, a
/// complaint when `complained`) for the step or broadcast whose message was the last one sent
/// to them on it, if any was.
pub async fn unsubscribed(
    conn: &impl ConnectionTrait,
    subscriber_id: uuid::Uuid,
    channel: Channel,
    day: NaiveDate,
    complained: bool,
) -> Result<()> {
    let Some(message) = last_sent(conn, subscriber_id, channel, None).await? else { return Ok(()) };
    let measure = match (complained, message.broadcast_id) {
        (true, Some(_)) => measure::COMPLAINED,
        _ => measure::UNSUBSCRIBED,
    };
    message_step(conn, &message, day, measure).await
}

/// A subscriber left a list themselves (an unsubscribe link or the preference page): counts an
/// unsubscribe for the broadcast whose email of that list was the last they got, if it was one.
pub async fn left_list(
    conn: &impl ConnectionTrait,
    subscriber_id: uuid::Uuid,
    list: &str,
    day: NaiveDate,
) -> Result<()> {
    match last_sent(conn, subscriber_id, Channel::Email, Some(list)).await? {
        Some(message) if message.broadcast_id.is_some() => {
            message_step(conn, &message, day, measure::UNSUBSCRIBED).await
        }
        _ => Ok(()),
    }
}

/// A bounce webhook reported an address bounced for good: counts it for the broadcast whose
/// message was the last one the address got, if it was one.
pub async fn bounced(
    conn: &impl ConnectionTrait,
    subscriber_id: uuid::Uuid,
    channel: Channel,
    day: NaiveDate,
) -> Result<()> {
    match last_sent(conn, subscriber_id, channel, None).await? {
        Some(message) if message.broadcast_id.is_some() => {
            let mut tally = Tally::default();
            tally.message(day, &message, measure::BOUNCED, "reported");
            tally.flush(conn).await
        }
        _ => Ok(()),
    }
}
