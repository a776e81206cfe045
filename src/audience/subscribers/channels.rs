//! Consent per channel: withdrawals, bounces and complaints, and what they change.

use crate::audience::records::{self, ConsentOrigin, ConsentWording, kind, trigger};
use crate::core::error::Result;
use crate::core::values::{Channel, ChannelState, ConsentMethod, SubscriberStatus, stored};
use crate::store::Db;
use crate::store::entities::subscriber;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
};
use serde_json::json;
use uuid::Uuid;

/// Applies a patch in one transaction, recording each kind of change in the timeline.
/// Marks a channel of a subscriber bounced (the address does not exist), in the caller's
/// transaction; the subscriber becomes `bounced` when no other channel can reach them. Nothing
/// more is sent on that channel until the address changes or consent is given again. Returns
/// whether it was not bounced already.
pub async fn mark_bounced(
    txn: &DatabaseTransaction,
    id: Uuid,
    channel: Channel,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let Some(current) = subscriber::Entity::find_by_id(id).one(txn).await? else { return Ok(false) };
    if stored(current.state_of(channel), ChannelState::None) == ChannelState::Bounced {
        return Ok(false);
    }
    let other_reaches = another_is_live(&current, channel);
    let mut model = current.into_active_model();
    model.set_state(channel, ChannelState::Bounced);
    if !other_reaches {
        model.status = Set(SubscriberStatus::Bounced.as_str().to_owned());
    }
    model.updated_at = Set(now);
    model.update(txn).await?;
    records::event(id, kind::BOUNCED, json!({"channel": channel, "reason": reason}), now).insert(txn).await?;
    // `reach: first`: what went to this address recently goes on the next channel instead.
    crate::audience::reach::fallback::bounced(txn, id, channel, reason, now).await?;
    Ok(true)
}

/// Withdraws email consent: through a signed unsubscribe link (a mail client's one-click request
/// or the link's page: `to` is `Unsubscribed`), or on a spam complaint (`Complained`). The
/// subscriber leaves too when no other channel reaches them. Returns `false`, writing nothing,
/// when there is nothing left to withdraw: already withdrawn, or the subscriber erased.
pub async fn withdraw_email(
    db: &Db,
    now: DateTime<Utc>,
    id: Uuid,
    origin: &ConsentOrigin,
    to: ChannelState,
) -> Result<bool> {
    let txn = db.begin_write().await?;
    let Some(current) = subscriber::Entity::find_by_id(id).one(&txn).await? else { return Ok(false) };
    let changed = change_channel(&txn, now, current, Channel::Email, to, origin).await?;
    txn.commit().await?;
    Ok(changed)
}

/// Moves a subscriber's channel to `to` with a consent record and a timeline entry, if that is a
/// change a person can make: withdrawing (`Unsubscribed`, `Complained`) a live channel
/// (subscribed or pending), or granting (`Subscribed`) one that is pending or was unsubscribed (a
/// bounced or complained channel is not reopened this way). Withdrawing the last live channel
/// makes the subscriber unsubscribed (or complained); granting makes them active again. Returns
/// whether anything changed.
pub async fn change_channel(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    current: subscriber::Model,
    channel: Channel,
    to: ChannelState,
    origin: &ConsentOrigin,
) -> Result<bool> {
    change_channel_with(txn, now, current, channel, to, origin, &ConsentWording::default()).await
}

/// [`change_channel`], recording the words the person agreed to (a landing page's, say).
pub async fn change_channel_with(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    current: subscriber::Model,
    channel: Channel,
    to: ChannelState,
    origin: &ConsentOrigin,
    wording: &ConsentWording,
) -> Result<bool> {
    let live =
        |state: &str| matches!(stored(state, ChannelState::None), ChannelState::Subscribed | ChannelState::Pending);
    let state = current.state_of(channel).to_owned();
    let others_live = another_is_live(&current, channel);
    let granting = to == ChannelState::Subscribed;
    let allowed = if granting {
        matches!(stored(&state, ChannelState::None), ChannelState::Pending | ChannelState::Unsubscribed)
    } else {
        live(&state)
    };
    if !allowed {
        return Ok(false);
    }
    let id = current.id;
    if !granting {
        count_unsubscribe(&current, channel, origin.method);
    }
    let status = stored(&current.status, SubscriberStatus::Active);
    let mut model = current.into_active_model();
    model.set_state(channel, to);
    if granting && status == SubscriberStatus::Unsubscribed {
        model.status = Set(SubscriberStatus::Active.as_str().to_owned());
    } else if !granting && !others_live {
        let status =
            if to == ChannelState::Complained { SubscriberStatus::Complained } else { SubscriberStatus::Unsubscribed };
        model.status = Set(status.as_str().to_owned());
    }
    model.updated_at = Set(now);
    model.update(txn).await?;
    records::consent(id, channel, granting, origin, wording, now).insert(txn).await?;
    if !granting {
        let complained = to == ChannelState::Complained;
        crate::rollups::steps::unsubscribed(txn, id, channel, now.date_naive(), complained).await?;
    }
    // `from`: what the channel was; a channel withdrawn while only pending was never confirmed.
    let from = stored(&state, ChannelState::None);
    let data = json!({"channel": channel, "by": origin.source, "state": to, "from": from.as_str()});
    let kind = if granting { kind::CONSENT_GRANTED } else { kind::CONSENT_REVOKED };
    records::event(id, kind, data, now).insert(txn).await?;
    records::trigger(id, trigger::CHANGED, "", json!({}), now).insert(txn).await?;
    Ok(true)
}

/// Whether a channel other than `channel` may still reach them (subscribed, or pending).
fn another_is_live(current: &subscriber::Model, channel: Channel) -> bool {
    Channel::ALL.iter().filter(|c| **c != channel).any(|c| {
        matches!(stored(current.state_of(*c), ChannelState::None), ChannelState::Subscribed | ChannelState::Pending)
    })
}

/// Counts a withdrawn channel for `/metrics`, by the page and source of the subscriber's first
/// touch (the page from the landing page's address).
pub(super) fn count_unsubscribe(current: &subscriber::Model, channel: Channel, via: ConsentMethod) {
    let source = crate::rollups::funnel::source_label(current.source.as_deref());
    let page = crate::rollups::funnel::first_touch_page(current.landing_page.as_deref()).unwrap_or_default();
    let labels = [("channel", channel.as_str()), ("via", via.as_str()), ("page", page.as_str()), ("source", source)];
    crate::core::metrics::inc("ownlist_unsubscribes_total", &labels);
}

/// What a bounce report says of an email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounce {
    /// The address does not exist: mark it bounced.
    Hard,
    /// A temporary problem (mailbox full): noted in the timeline only.
    Soft,
    /// The person marked a message as spam: withdraw email consent at once.
    Complaint,
}

/// Temporary failures (soft bounces) within [`SOFT_BOUNCE_DAYS`] that make an address bounced.
pub const SOFT_BOUNCES_TO_BOUNCE: u64 = 5;
pub const SOFT_BOUNCE_DAYS: i64 = 30;

/// Applies a bounce or complaint reported for a subscriber's email address. Applying the same
/// hard bounce or complaint twice changes nothing more; a soft bounce is noted each time, and
/// the [`SOFT_BOUNCES_TO_BOUNCE`]th within [`SOFT_BOUNCE_DAYS`] makes the address bounced.
pub async fn apply_bounce(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    id: Uuid,
    bounce: Bounce,
    reason: &str,
) -> Result<()> {
    match bounce {
        Bounce::Hard => {
            if mark_bounced(txn, id, Channel::Email, reason, now).await? {
                crate::rollups::steps::bounced(txn, id, Channel::Email, now.date_naive()).await?;
            }
        }
        Bounce::Soft => {
            let data = json!({"channel": Channel::Email, "reason": reason});
            records::event(id, kind::SOFT_BOUNCE, data, now).insert(txn).await?;
            // Temporary failures that keep coming mean the address does not work: enough of
            // them in a while make it bounced, as a hard bounce would.
            let since = now - chrono::Duration::days(SOFT_BOUNCE_DAYS);
            let recent = crate::store::entities::event::Entity::find()
                .filter(crate::store::entities::event::Column::SubscriberId.eq(id))
                .filter(crate::store::entities::event::Column::Kind.eq(kind::SOFT_BOUNCE))
                .filter(crate::store::entities::event::Column::CreatedAt.gte(since))
                .count(txn)
                .await?;
            if recent >= SOFT_BOUNCES_TO_BOUNCE {
                let why = format!("{recent} temporary failures in {SOFT_BOUNCE_DAYS} days, the last: {reason}");
                if mark_bounced(txn, id, Channel::Email, &why, now).await? {
                    crate::rollups::steps::bounced(txn, id, Channel::Email, now.date_naive()).await?;
                }
            }
        }
        Bounce::Complaint => {
            let source = if reason.is_empty() { "complaint".to_owned() } else { format!("complaint: {reason}") };
            let origin =
                ConsentOrigin { method: ConsentMethod::Complaint, source: Some(source), ip: None, user_agent: None };
            if let Some(current) = subscriber::Entity::find_by_id(id).one(txn).await? {
                change_channel(txn, now, current, Channel::Email, ChannelState::Complained, &origin).await?;
            }
        }
    }
    Ok(())
}
