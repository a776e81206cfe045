//! `reach: first`: one message per person, on the first channel that can reach them, and the
//! next channel only when that one fails for good.
//!
//! The messages for every channel that reaches the person are rendered and written together, in
//! the same transaction: the first `queued`, the others `standby`, each naming the next in
//! `fallback_id`. When a message fails for good (a hard bounce, an unreachable number, a
//! permanent refusal, still failing after `fallback_after`), [`fall_through`] queues the next one
//! in the transaction that records the failure, so a crash repeats at most what was in flight
//! and a fallback is never queued twice (only a `standby` message is). A fallback whose channel
//! no longer reaches the person (consent withdrawn, address bounced meanwhile) is cancelled and
//! the one after it tried instead.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use crate::audience::records;
use crate::core::error::{Reason, Result, reason};
use crate::core::values::{Channel, ChannelState, OutboxChannel, OutboxStatus, SubscriberStatus, stored};
use crate::store::entities::{outbox, subscriber};

/// The timeline entry of a message sent on another channel because the one before failed.
pub const REACH_FALLBACK: &str = "reach_fallback";
/// The timeline entry of the channel a `reach: first` message was written for, and why.
pub const REACH_CHOSEN: &str = "reach_chosen";
/// How long after a message was sent a hard bounce of its address still sends its fallback
/// (bounce reports arrive within minutes to a few days).
pub const BOUNCE_WINDOW_HOURS: i64 = 72;
/// How long `reach: first` waits, by default, for a message failing for now before trying the
/// next channel (`fallback_after`).
pub const DEFAULT_FALLBACK_AFTER_MINUTES: i64 = 10;

/// The address a channel reaches a subscriber at, if it may carry marketing to them now, or why not.
pub fn reachable(s: &subscriber::Model, channel: Channel) -> std::result::Result<String, Reason> {
    let (address, state) = (s.address_of(channel).map(str::to_owned), stored(s.state_of(channel), ChannelState::None));
    let status = stored(&s.status, SubscriberStatus::Active);
    match (address, state, status) {
        (None, _, _) => {
            Err(reason!("they have no {}", if channel == Channel::Email { "email address" } else { "phone number" }))
        }
        (_, _, SubscriberStatus::Unsubscribed | SubscriberStatus::Bounced | SubscriberStatus::Complained) => {
            Err(reason!("they are {status}"))
        }
        (Some(address), ChannelState::Subscribed, _) => Ok(address),
        (_, other, _) => Err(reason!("{channel} is {other}, not subscribed")),
    }
}

/// After `failed` failed for good (`why`), queues its fallback: the next message of its chain
/// still kept back whose channel reaches the subscriber now (those that no longer can are
/// cancelled on the way), due at once, and says so in the timeline. Returns its id; none when the
/// message has no fallback, or it was queued (or cancelled) already.
pub async fn fall_through(
    txn: &DatabaseTransaction,
    failed: &outbox::Model,
    why: &str,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>> {
    let mut next = failed.fallback_id;
    let person = subscriber::Entity::find_by_id(failed.subscriber_id).one(txn).await?;
    let mut passed_over = Vec::new();
    while let Some(id) = next {
        let Some(message) = outbox::Entity::find_by_id(id).one(txn).await? else { return Ok(None) };
        if message.status != OutboxStatus::Standby {
            return Ok(None);
        }
        next = message.fallback_id;
        let channel = message.channel.subscriber_channel();
        let can = match (&person, channel) {
            (Some(person), Some(channel)) => reachable(person, channel).map(|_| ()),
            _ => Err("the subscriber is gone".into()),
        };
        let mut active = message.clone().into_active_model();
        active.updated_at = Set(now);
        match can {
            Ok(()) => {
                active.status = Set(OutboxStatus::Queued);
                active.due_at = Set(now);
                active.update(txn).await?;
                let data = json!({
                    "message": message.id, "from": failed.channel, "to": message.channel, "reason": why,
                    "failed": failed.id, "workflow": message.workflow_id, "step": message.step_id,
                    "broadcast": message.broadcast_id, "passed_over": passed_over,
                });
                records::event(message.subscriber_id, REACH_FALLBACK, data, now).insert(txn).await?;
                return Ok(Some(message.id));
            }
            Err(cannot) => {
                active.status = Set(OutboxStatus::Cancelled);
                active.last_error = Set(Some(format!("not sent as a fallback: {cannot}")));
                active.update(txn).await?;
                passed_over.push(json!({"channel": message.channel, "reason": cannot.to_string()}));
            }
        }
    }
    Ok(None)
}

/// A subscriber's address on `channel` bounced (`why`): the fallbacks of their `reach: first`
/// messages on that channel from the last [`BOUNCE_WINDOW_HOURS`] (sent, or failed) are queued.
pub async fn bounced(
    txn: &DatabaseTransaction,
    subscriber_id: Uuid,
    channel: Channel,
    why: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    let recent = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(subscriber_id))
        .filter(outbox::Column::Channel.eq(OutboxChannel::from(channel)))
        .filter(outbox::Column::FallbackId.is_not_null())
        .filter(outbox::Column::Status.is_in([OutboxStatus::Sent, OutboxStatus::Failed]))
        .filter(outbox::Column::UpdatedAt.gte(now - chrono::Duration::hours(BOUNCE_WINDOW_HOURS)))
        .limit(100)
        .all(txn)
        .await?;
    let mut queued = Vec::new();
    for message in recent {
        queued.extend(fall_through(txn, &message, why, now).await?);
    }
    Ok(queued)
}
