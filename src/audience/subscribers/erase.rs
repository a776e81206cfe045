//! Erasure: the subscriber gone, their address kept only as a hash so they are never re-added.

use super::*;
use crate::audience::Actor;
use crate::audience::records::{self, kind};
use crate::core::error::Result;
use crate::core::values::{Channel, suppression_hash};
use crate::store::Db;
use crate::store::entities::{event, outbox, pending_trigger, subscriber, suppression};
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

/// Erases a person: deletes their data and keeps only hashes of their addresses, so that they
/// are never re-added by accident. The timeline keeps one `erased` event with no personal data.
pub async fn erase(db: &Db, now: DateTime<Utc>, actor: &Actor, id: Uuid) -> Result<()> {
    let txn = db.begin_write().await?;
    let current = find(&txn, id).await?;
    let mut hashes = Vec::new();
    if let Some(key) = &current.email_key {
        hashes.push((Channel::Email, suppression_hash(Channel::Email, key)));
    }
    if let Some(phone) = &current.phone {
        hashes.push((Channel::Sms, suppression_hash(Channel::Sms, phone)));
    }
    let rows = hashes.into_iter().map(|(channel, hash)| suppression::ActiveModel {
        hash: Set(hash),
        channel: Set(channel.as_str().to_owned()),
        reason: Set("erased".to_owned()),
        created_at: Set(now),
    });
    suppression::Entity::insert_many(rows).on_conflict_do_nothing().exec_without_returning(&txn).await?;
    event::Entity::delete_many().filter(event::Column::SubscriberId.eq(id)).exec(&txn).await?;
    // Messages not yet sent and queued triggers hold the address or lead to one: they go too.
    outbox::Entity::delete_many().filter(outbox::Column::SubscriberId.eq(id)).exec(&txn).await?;
    pending_trigger::Entity::delete_many().filter(pending_trigger::Column::SubscriberId.eq(id)).exec(&txn).await?;
    subscriber::Entity::delete_by_id(id).exec(&txn).await?;
    records::event(id, kind::ERASED, json!({"by": actor.label()}), now).insert(&txn).await?;
    txn.commit().await?;
    Ok(())
}
