//! A subscriber created in one transaction, with memberships, tags, consent records and events.

use super::*;
use crate::audience::Actor;
use crate::audience::lists;
use crate::audience::records::{self, ConsentOrigin, kind, trigger};
use crate::core::error::{Error, Result};
use crate::core::values::{Channel, ChannelState, ConsentMethod, MembershipStatus, SubscriberStatus};
use crate::store::entities::{consent, membership, pending_trigger, subscriber, subscriber_tag};
use crate::store::{Db, is_unique_violation};
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, EntityTrait};
use serde_json::{Value, json};
use uuid::Uuid;

pub fn new_subscriber_row(
    id: Uuid,
    profile: &Profile,
    status: SubscriberStatus,
    state: impl Fn(Channel) -> ChannelState,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> subscriber::ActiveModel {
    subscriber::ActiveModel {
        id: Set(id),
        email: Set(profile.email.as_ref().map(|e| e.as_str().to_owned())),
        email_key: Set(profile.email.as_ref().map(|e| e.key().to_owned())),
        phone: Set(profile.phone.as_ref().map(|p| p.as_str().to_owned())),
        first_name: Set(profile.first_name.clone()),
        last_name: Set(profile.last_name.clone()),
        timezone: Set(profile.timezone.clone()),
        locale: Set(profile.locale.clone()),
        attributes: Set(Value::Object(profile.attributes.clone())),
        status: Set(status.as_str().to_owned()),
        email_state: Set(state(Channel::Email).as_str().to_owned()),
        sms_state: Set(state(Channel::Sms).as_str().to_owned()),
        whatsapp_state: Set(state(Channel::Whatsapp).as_str().to_owned()),
        source: Set(profile.attribution.source.clone()),
        medium: Set(profile.attribution.medium.clone()),
        campaign: Set(profile.attribution.campaign.clone()),
        referrer: Set(profile.attribution.referrer.clone()),
        landing_page: Set(profile.attribution.landing_page.clone()),
        content: Set(profile.attribution.content.clone()),
        term: Set(profile.attribution.term.clone()),
        click_id: Set(profile.attribution.click_id.clone()),
        created_at: Set(created_at),
        updated_at: Set(now),
    }
}

/// Whether the profile has the address a channel needs.
pub fn profile_has(profile: &Profile, channel: Channel) -> bool {
    match channel {
        Channel::Email => profile.email.is_some(),
        Channel::Sms | Channel::Whatsapp => profile.phone.is_some(),
    }
}

pub fn membership_row(
    subscriber_id: Uuid,
    list_id: Uuid,
    status: MembershipStatus,
    now: DateTime<Utc>,
) -> membership::ActiveModel {
    membership::ActiveModel {
        subscriber_id: Set(subscriber_id),
        list_id: Set(list_id),
        status: Set(status.as_str().to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        confirmed_at: Set((status == MembershipStatus::Confirmed).then_some(now)),
        unsubscribed_at: Set((status == MembershipStatus::Unsubscribed).then_some(now)),
    }
}

pub fn tag_row(subscriber_id: Uuid, tag: &str, now: DateTime<Utc>) -> subscriber_tag::ActiveModel {
    subscriber_tag::ActiveModel { subscriber_id: Set(subscriber_id), tag: Set(tag.to_owned()), created_at: Set(now) }
}

/// Adds a subscriber, their lists, tags and consent, in one transaction.
pub async fn create(db: &Db, now: DateTime<Utc>, actor: &Actor, input: NewSubscriber) -> Result<SubscriberView> {
    let valid = validate_new(input)?;
    let txn = db.begin_write().await?;
    ensure_not_suppressed(&txn, &valid.profile).await?;
    ensure_unique(&txn, valid.profile.email.as_ref(), valid.profile.phone.as_ref(), None).await?;
    let joined = lists::resolve(&txn, &valid.lists, "lists").await?;
    let id = Uuid::now_v7();
    let profile = &valid.profile;
    let consented = |channel: Channel| match channel {
        Channel::Email => valid.consent.email,
        Channel::Sms => valid.consent.sms,
        Channel::Whatsapp => valid.consent.whatsapp,
    };
    let state = |channel: Channel| initial_state(profile_has(profile, channel), consented(channel));
    let row = new_subscriber_row(id, profile, SubscriberStatus::Active, state, now, now);
    if let Err(e) = subscriber::Entity::insert(row).exec_without_returning(&txn).await {
        drop(txn);
        if is_unique_violation(&e) {
            // A concurrent request added the same address first: report it like any duplicate.
            ensure_unique(db.conn(), profile.email.as_ref(), profile.phone.as_ref(), None).await?;
        }
        return Err(Error::Database(e));
    }
    let memberships = joined.iter().map(|l| membership_row(id, l.id, MembershipStatus::Confirmed, now));
    membership::Entity::insert_many(memberships).exec_without_returning(&txn).await?;
    subscriber_tag::Entity::insert_many(valid.tags.iter().map(|t| tag_row(id, t, now)))
        .exec_without_returning(&txn)
        .await?;
    let origin = ConsentOrigin { method: ConsentMethod::Api, source: Some(actor.label()), ip: None, user_agent: None };
    let consents: Vec<_> = Channel::ALL
        .iter()
        .filter(|c| state(**c) == ChannelState::Subscribed)
        .map(|c| records::consent(id, *c, true, &origin, &valid.wording, now))
        .collect();
    consent::Entity::insert_many(consents).exec_without_returning(&txn).await?;
    let data = json!({
        "by": actor.label(),
        "lists": valid.lists,
        "tags": valid.tags,
        "channels": Channel::ALL.iter().map(|c| (c.as_str(), state(*c))).collect::<std::collections::BTreeMap<_, _>>(),
    });
    records::event(id, kind::SUBSCRIBED, data, now).insert(&txn).await?;
    let triggers = joined
        .iter()
        .map(|l| records::trigger(id, trigger::SUBSCRIBED, &l.slug, json!({}), now))
        .chain(valid.tags.iter().map(|t| records::trigger(id, trigger::TAG_ADDED, t, json!({}), now)));
    pending_trigger::Entity::insert_many(triggers).exec_without_returning(&txn).await?;
    txn.commit().await?;
    get(db, id).await
}
