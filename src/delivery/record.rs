//! Recording answers: a batch of attempts written in one transaction, kept in memory while the database refuses.

use super::*;
use crate::audience::records;
use crate::audience::subscribers::mark_bounced;
use crate::core::error::Result;
use crate::core::values::OutboxStatus;
pub use crate::rollups::delivery::{Outcome, Try};
use crate::store::entities::outbox;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use serde_json::{Value, json};
use std::time::Duration;

impl<S: Carrier + 'static> Worker<S> {
    /// Writes the answers kept after a failure, if any; until that works, nothing new is sent.
    pub(super) async fn write_unrecorded(&self) -> Result<()> {
        let answers = std::mem::take(&mut *self.held());
        if answers.is_empty() {
            return Ok(());
        }
        match self.record_retrying(&answers).await {
            Ok(()) => {
                tracing::info!(channel = S::CHANNEL.as_str(), answers = answers.len(), "kept answers written");
                Ok(())
            }
            Err(e) => {
                self.held().extend(answers);
                Err(e)
            }
        }
    }

    /// [`Self::record_all`], tried again when the database gives up on the transaction for a
    /// reason of the moment (PostgreSQL breaking a deadlock, SQLite busy), so the answers of
    /// messages already sent are not dropped: without them the messages would be sent again.
    pub(super) async fn record_retrying(&self, answers: &[Attempted]) -> Result<()> {
        let mut waited = 0;
        loop {
            match self.record_all(answers, self.clock.now()).await {
                Err(e) if waited < 5 && crate::store::is_transient(&e) => {
                    waited += 1;
                    tracing::warn!(error = %e, channel = S::CHANNEL.as_str(), "recording answers: trying again");
                    tokio::time::sleep(Duration::from_millis(20 * waited)).await;
                }
                other => return other,
            }
        }
    }

    /// Records answers on their messages and in the timeline, in one transaction: one UPDATE
    /// for the messages and one INSERT for the timeline entries, and the day's delivery and step
    /// statistics.
    pub(super) async fn record_all(&self, answers: &[Attempted], now: DateTime<Utc>) -> Result<()> {
        use crate::rollups::steps::measure;
        use crate::store::bulk::{OnDuplicate, insert_bound_statement, joined, padded, update_bound_statement};
        use outbox::Column as C;
        let mut updates = Vec::with_capacity(answers.len());
        let mut events = Vec::with_capacity(answers.len());
        let mut bounces = Vec::new();
        let mut fallbacks = Vec::new();
        let mut attempts = crate::rollups::delivery::Attempts::default();
        let mut steps = crate::rollups::steps::Tally::default();
        let day = now.date_naive();
        for (message, answer, tries) in answers {
            attempts.add(S::CHANNEL, tries);
            let (update, event, bounce) = outcome::<S>(message, answer, now, (self.max_age, self.fallback_after));
            // `reach: first`: a message failed for good hands over to the next channel.
            if let (Some(_), sea_orm::ActiveValue::Set(OutboxStatus::Failed)) = (message.fallback_id, &update.status) {
                let why = match &update.last_error {
                    sea_orm::ActiveValue::Set(Some(error)) => error.clone(),
                    _ => "it failed".to_owned(),
                };
                fallbacks.push((message, why));
            }
            let ended = match &update.status {
                sea_orm::ActiveValue::Set(OutboxStatus::Sent) => Some(measure::DELIVERED),
                sea_orm::ActiveValue::Set(OutboxStatus::Failed) => Some(measure::FAILED),
                _ => None,
            };
            if let Some(what) = ended {
                steps.message(day, message, what, "");
            }
            if bounce.is_some() && message.broadcast_id.is_some() {
                steps.message(day, message, measure::BOUNCED, "refused");
            }
            updates.push(update);
            events.extend(event);
            bounces.extend(bounce);
        }
        let backend = self.db.backend();
        let mut columns = vec![C::Status, C::Attempts, C::DueAt, C::SentAt, C::LastError, C::ProviderRef, C::UpdatedAt];
        if self.leases.is_some() {
            columns.extend([C::LeaseUntil, C::LeaseOwner]);
        }
        // On SQLite: the rows padded to a multiple of 32, so the statements come in eight shapes
        // each prepared once (a statement per count of answers was prepared anew nearly every
        // time), and sent as one with the day's figures (see `bulk::joined`).
        let sqlite = backend == sea_orm::DbBackend::Sqlite;
        let (updates, events) = if sqlite { (padded(updates, 32), padded(events, 32)) } else { (updates, events) };
        let statements: Vec<sea_orm::Statement> = update_bound_statement(backend, updates, &columns)
            .into_iter()
            .chain(insert_bound_statement(backend, events, OnDuplicate::Ignore))
            .chain(attempts.statement(backend, day))
            .collect();
        let statements = joined(backend, statements);
        let started = std::time::Instant::now();
        let txn = self.db.begin_write().await?;
        let locked = started.elapsed();
        for statement in statements {
            crate::store::bulk::execute(&txn, statement).await?;
        }
        if let Some(channel) = S::CHANNEL.subscriber_channel() {
            for (subscriber, reason) in bounces {
                mark_bounced(&txn, subscriber, channel, &reason, now).await?;
            }
        }
        for (message, why) in fallbacks {
            crate::audience::reach::fallback::fall_through(&txn, message, &why, now).await?;
        }
        // The sunset rule's question is the engine's to write (delivery renders nothing).
        let mut asked: Vec<uuid::Uuid> = answers
            .iter()
            .filter(|(m, answer, _)| matches!(answer, Answer::Asked(_)) && !m.subscriber_id.is_nil())
            .map(|(m, _, _)| m.subscriber_id)
            .collect();
        asked.sort_unstable();
        asked.dedup();
        for subscriber in asked {
            use sea_orm::ActiveModelTrait;
            records::trigger(subscriber, records::trigger::SUNSET, "", json!({}), now).insert(&txn).await?;
        }
        steps.flush(&txn).await?;
        let wrote = started.elapsed();
        txn.commit().await?;
        if let Some(health) = &self.health {
            let answered = |a: &Answer| matches!(a, Answer::Delivered(_) | Answer::Fail(_) | Answer::Bounce(_));
            if answers.iter().any(|(_, a, _)| answered(a)) {
                health.worked(S::CHANNEL.as_str());
            } else if answers.iter().any(|(_, a, _)| matches!(a, Answer::Retry(_))) {
                health.failed(S::CHANNEL.as_str(), now);
            }
        }
        tracing::debug!(channel = S::CHANNEL.as_str(), answers = answers.len(), ?locked, ?wrote, took = ?started.elapsed(), "answers recorded");
        Ok(())
    }
}

/// Notes an attempt at a relay or provider: in this process's metrics at once, and as a [`Try`]
/// for the delivery statistics, written with the message's answer.
pub(super) fn tried(channel: OutboxChannel, relay: &str, outcome: Outcome, took: Duration) -> Try {
    let labels = [("channel", channel.as_str()), ("relay", relay)];
    crate::core::metrics::observe("ownlist_delivery_duration_seconds", &labels, took.as_secs_f64());
    let name = match outcome {
        Outcome::Sent => "sent",
        Outcome::Failed => "refused",
        Outcome::Retried => "failed",
    };
    crate::core::metrics::inc("ownlist_deliveries_total", &[labels[0], labels[1], ("outcome", name)]);
    Try::new(relay, outcome, took)
}

/// What an answer does: the message's new state (its id and every column `record_all`
/// writes), its timeline entry, and the subscriber to mark bounced. A hold is no attempt: only
/// the time it is due moves, and nothing goes into the timeline.
#[allow(clippy::type_complexity)]
pub(super) fn outcome<S: Carrier>(
    message: &outbox::Model,
    answer: &Answer,
    now: DateTime<Utc>,
    (max_age, fallback_after): (chrono::Duration, chrono::Duration),
) -> (outbox::ActiveModel, Option<crate::store::entities::event::ActiveModel>, Option<(uuid::Uuid, String)>) {
    let (subscriber, id) = (message.subscriber_id, message.id);
    let (step, workflow) = (message.step_id.clone(), message.workflow_id.clone());
    let attempts = message.attempts + 1;
    let age = now - message.created_at;
    let mut active = outbox::ActiveModel {
        id: Set(id),
        status: Set(message.status),
        attempts: Set(message.attempts),
        due_at: Set(message.due_at),
        sent_at: Set(message.sent_at),
        last_error: Set(message.last_error.clone()),
        provider_ref: Set(message.provider_ref.clone()),
        updated_at: Set(now),
        lease_until: Set(None),
        lease_owner: Set(None),
        ..Default::default()
    };
    let mut bounced = None;
    let (outcome, detail) = match answer {
        Answer::Hold(until) => {
            active.due_at = Set(*until);
            return (active, None, None);
        }
        Answer::Held(until, why) => {
            active.due_at = Set(*until);
            let data = json!({"message": id, "workflow": workflow, "step": step, "broadcast": message.broadcast_id,
                "reason": why, "until": until});
            let event =
                (!subscriber.is_nil()).then(|| records::event(subscriber, &format!("{}_held", S::CHANNEL), data, now));
            return (active, event, None);
        }
        Answer::Asked(why) | Answer::Stopped(why) => {
            active.status = Set(OutboxStatus::Cancelled);
            active.last_error = Set(Some(why.clone()));
            let data = json!({"message": id, "workflow": workflow, "step": step, "broadcast": message.broadcast_id,
                "reason": why});
            let kind = match answer {
                Answer::Asked(_) => super::policy::SUNSET_ASKED.to_owned(),
                _ => format!("{}_cancelled", S::CHANNEL),
            };
            let event = (!subscriber.is_nil()).then(|| records::event(subscriber, &kind, data, now));
            return (active, event, None);
        }
        Answer::Delivered(detail) => {
            if let Some(reference) = detail.get("provider_ref").and_then(Value::as_str) {
                active.provider_ref = Set(Some(reference.to_owned()));
            }
            active.status = Set(OutboxStatus::Sent);
            active.sent_at = Set(Some(now));
            active.last_error = Set(None);
            ("sent", detail.clone())
        }
        // `reach: first`: failing for now, it is tried once more after `fallback_after`, and
        // failing then, the next channel goes instead (see `record_all`).
        Answer::Retry(error) if message.fallback_id.is_some() && message.attempts == 0 => {
            active.due_at = Set(now + fallback_after);
            active.last_error = Set(Some(error.clone()));
            ("retrying", json!({"error": error, "next_attempt": now + fallback_after, "then": "the next channel"}))
        }
        Answer::Retry(error) if message.fallback_id.is_some() => {
            let error = format!("still failing after {attempts} attempts: {error}");
            active.status = Set(OutboxStatus::Failed);
            active.last_error = Set(Some(error.clone()));
            ("failed", json!({"error": error, "gave_up": true}))
        }
        Answer::Retry(error) if age < max_age => {
            let wait = backoff(id, attempts);
            active.due_at = Set(now + wait);
            active.last_error = Set(Some(error.clone()));
            ("retrying", json!({"error": error, "next_attempt": now + wait}))
        }
        Answer::Retry(error) => {
            let error = format!("still failing after {} hours and {attempts} attempts: {error}", age.num_hours());
            active.status = Set(OutboxStatus::Failed);
            active.last_error = Set(Some(error.clone()));
            ("failed", json!({"error": error, "gave_up": true}))
        }
        Answer::Fail(error) => {
            active.status = Set(OutboxStatus::Failed);
            active.last_error = Set(Some(error.clone()));
            ("failed", json!({"error": error}))
        }
        Answer::Bounce(error) => {
            active.status = Set(OutboxStatus::Failed);
            active.last_error = Set(Some(error.clone()));
            bounced = Some((subscriber, error.clone()));
            ("failed", json!({"error": error, "bounce": "hard"}))
        }
    };
    active.attempts = Set(attempts);
    let data = json!({"message": id, "workflow": workflow, "step": step, "attempt": attempts, "detail": detail});
    // A test send (the console's) has no subscriber, and so no timeline.
    let event =
        (!subscriber.is_nil()).then(|| records::event(subscriber, &format!("{}_{outcome}", S::CHANNEL), data, now));
    (active, event, bounced)
}
