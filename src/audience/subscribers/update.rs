//! A patch applied in one transaction: fields, tags, lists and channels, each change recorded.

use super::*;
use crate::audience::Actor;
use crate::audience::lists;
use crate::audience::records::{self, ConsentOrigin, ConsentWording, kind, trigger};
use crate::core::error::{Error, FieldError, Result};
use crate::core::values::{
    Channel, ChannelState, ConsentMethod, EmailAddress, MembershipStatus, PhoneNumber, SubscriberStatus, stored,
};
use crate::store::entities::{consent, event, list, membership, subscriber_tag};
use crate::store::{Db, is_unique_violation};
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

pub async fn update(
    db: &Db,
    now: DateTime<Utc>,
    actor: &Actor,
    id: Uuid,
    patch: SubscriberPatch,
) -> Result<SubscriberView> {
    let mut c = Checker::default();
    let email = patch.email.as_ref().map(|e| c.email("email", e.as_deref()));
    let phone = patch.phone.as_ref().map(|p| c.phone("phone", p.as_deref()));
    let first_name = patch.first_name.as_ref().map(|v| c.text("first_name", v.as_deref(), 200));
    let last_name = patch.last_name.as_ref().map(|v| c.text("last_name", v.as_deref(), 200));
    let timezone = patch.timezone.as_ref().map(|v| c.timezone("timezone", v.as_deref()));
    let locale = patch.locale.as_ref().map(|v| c.locale("locale", v.as_deref()));
    let tags = patch.tags.as_ref().map(|t| c.tags("tags", t));
    let list_slugs = patch.lists.as_ref().map(|l| c.slugs("lists", l));
    if let Some(attributes) = &patch.attributes {
        c.attributes("attributes", attributes);
    }
    if let Some(status) = patch.status
        && status != SubscriberStatus::Unsubscribed
    {
        c.errors.push(FieldError::new(
            "status",
            "only 'unsubscribed' can be set; grant consent on a channel to reactivate",
        ));
    }
    let wording = ConsentWording {
        text: c.text("consent.text", patch.consent.as_ref().and_then(|p| p.text.as_deref()), 10_000),
        version: c.text("consent.version", patch.consent.as_ref().and_then(|p| p.version.as_deref()), 100),
        page: None,
    };
    c.finish()?;

    let txn = db.begin_write().await?;
    let current = find(&txn, id).await?;
    let mut model = current.clone().into_active_model();
    let mut changed: Vec<&str> = Vec::new();

    let new_email = email.clone().unwrap_or_else(|| current.email.as_deref().and_then(|e| EmailAddress::parse(e).ok()));
    let new_phone = phone.clone().unwrap_or_else(|| current.phone.as_deref().and_then(|p| PhoneNumber::parse(p).ok()));
    if email.is_some() || phone.is_some() {
        if new_email.is_none() && current.email.is_none() && new_phone.is_none() && current.phone.is_none()
            || email.as_ref().is_some_and(Option::is_none) && new_phone.is_none()
            || phone.as_ref().is_some_and(Option::is_none) && new_email.is_none()
        {
            return Err(Error::field("email", "a subscriber needs an email or a phone"));
        }
        let probe = Profile { email: email.clone().flatten(), phone: phone.clone().flatten(), ..Profile::default() };
        ensure_not_suppressed(&txn, &probe).await?;
        ensure_unique(&txn, probe.email.as_ref(), probe.phone.as_ref(), Some(id)).await?;
    }
    if let Some(email) = &email {
        let text = email.as_ref().map(|e| e.as_str().to_owned());
        if text != current.email {
            model.email = Set(text);
            model.email_key = Set(email.as_ref().map(|e| e.key().to_owned()));
            if email.is_none() {
                model.email_state = Set(ChannelState::None.as_str().to_owned());
            }
            changed.push("email");
        }
    }
    if let Some(phone) = &phone {
        let text = phone.as_ref().map(|p| p.as_str().to_owned());
        if text != current.phone {
            model.phone = Set(text);
            if phone.is_none() {
                model.sms_state = Set(ChannelState::None.as_str().to_owned());
                model.whatsapp_state = Set(ChannelState::None.as_str().to_owned());
            }
            changed.push("phone");
        }
    }
    for (name, value, old, slot) in [
        ("first_name", first_name, &current.first_name, &mut model.first_name),
        ("last_name", last_name, &current.last_name, &mut model.last_name),
        ("timezone", timezone, &current.timezone, &mut model.timezone),
        ("locale", locale, &current.locale, &mut model.locale),
    ] {
        if let Some(value) = value
            && value != *old
        {
            *slot = Set(value);
            changed.push(name);
        }
    }
    if let Some(patch_attributes) = &patch.attributes {
        let mut merged = current.attributes.as_object().cloned().unwrap_or_default();
        for (key, value) in patch_attributes {
            if value.is_null() {
                merged.remove(key);
            } else {
                merged.insert(key.clone(), value.clone());
            }
        }
        attributes_size_ok(&merged).map_err(|m| Error::field("attributes", m))?;
        if Value::Object(merged.clone()) != current.attributes {
            model.attributes = Set(Value::Object(merged));
            changed.push("attributes");
        }
    }

    let mut events = Vec::new();
    let mut consents = Vec::new();
    let origin = ConsentOrigin { method: ConsentMethod::Api, source: Some(actor.label()), ip: None, user_agent: None };
    let mut email_state = stored(&current.email_state, ChannelState::None);
    let mut sms_state = stored(&current.sms_state, ChannelState::None);
    let mut whatsapp_state = stored(&current.whatsapp_state, ChannelState::None);
    let mut status = stored(&current.status, SubscriberStatus::Active);
    // Channels withdrawn here, for the step statistics ("unsubscribed after this step").
    let mut withdrawn = Vec::new();
    if let Some(consent) = &patch.consent {
        let mut revoked = false;
        for (channel, wanted, has_address, state) in [
            (Channel::Email, consent.email, new_email.is_some(), &mut email_state),
            (Channel::Sms, consent.sms, new_phone.is_some(), &mut sms_state),
            (Channel::Whatsapp, consent.whatsapp, new_phone.is_some(), &mut whatsapp_state),
        ] {
            let Some(granted) = wanted else { continue };
            if granted && !has_address {
                return Err(Error::field(format!("consent.{channel}"), format!("{channel} consent needs an address")));
            }
            let next = if granted { ChannelState::Subscribed } else { ChannelState::Unsubscribed };
            let before = *state;
            if *state != next {
                if !granted && matches!(*state, ChannelState::Subscribed | ChannelState::Pending) {
                    count_unsubscribe(&current, channel, origin.method);
                    withdrawn.push(channel);
                }
                *state = next;
                revoked |= !granted;
                consents.push(records::consent(id, channel, granted, &origin, &wording, now));
                let kind = if granted { kind::CONSENT_GRANTED } else { kind::CONSENT_REVOKED };
                let data = json!({"channel": channel, "by": actor.label(), "state": next, "from": before.as_str()});
                events.push(records::event(id, kind, data, now));
            }
        }
        // Reachable on some channel means active; withdrawing the last channel means unsubscribed.
        let reachable = [email_state, sms_state, whatsapp_state]
            .iter()
            .any(|s| matches!(s, ChannelState::Subscribed | ChannelState::Pending));
        if reachable {
            status = SubscriberStatus::Active;
        } else if revoked {
            status = SubscriberStatus::Unsubscribed;
        }
    }
    let mut unsubscribe_all = false;
    if patch.status == Some(SubscriberStatus::Unsubscribed) && status != SubscriberStatus::Unsubscribed {
        unsubscribe_all = true;
        status = SubscriberStatus::Unsubscribed;
        for (channel, state) in [
            (Channel::Email, &mut email_state),
            (Channel::Sms, &mut sms_state),
            (Channel::Whatsapp, &mut whatsapp_state),
        ] {
            if matches!(state, ChannelState::Subscribed | ChannelState::Pending) {
                count_unsubscribe(&current, channel, origin.method);
                withdrawn.push(channel);
                *state = ChannelState::Unsubscribed;
                consents.push(records::consent(id, channel, false, &origin, &wording, now));
            }
        }
        events.push(records::event(id, kind::UNSUBSCRIBED, json!({"scope": "all", "by": actor.label()}), now));
    }
    if email_state.as_str() != current.email_state {
        model.email_state = Set(email_state.as_str().to_owned());
    }
    if sms_state.as_str() != current.sms_state {
        model.sms_state = Set(sms_state.as_str().to_owned());
    }
    if whatsapp_state.as_str() != current.whatsapp_state {
        model.whatsapp_state = Set(whatsapp_state.as_str().to_owned());
    }
    if status.as_str() != current.status {
        model.status = Set(status.as_str().to_owned());
    }

    if let Some(wanted) = &tags {
        apply_tags(&txn, id, wanted, actor, now, &mut events).await?;
    }
    if unsubscribe_all {
        leave_all_lists(&txn, id, now).await?;
    } else if let Some(slugs) = &list_slugs {
        apply_lists(&txn, id, slugs, actor, now, &mut events).await?;
    }
    if !changed.is_empty() {
        events.push(records::event(id, kind::UPDATED, json!({"fields": changed, "by": actor.label()}), now));
    }
    if !changed.is_empty() || !consents.is_empty() {
        records::trigger(id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
    }
    model.updated_at = Set(now);
    model.update(&txn).await.map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict {
                code: "subscriber_exists",
                detail: "another subscriber has this address".into(),
                existing_id: None,
                field: None,
            }
        } else {
            Error::Database(e)
        }
    })?;
    consent::Entity::insert_many(consents).exec_without_returning(&txn).await?;
    event::Entity::insert_many(events).exec_without_returning(&txn).await?;
    for channel in withdrawn {
        crate::rollups::steps::unsubscribed(&txn, id, channel, now.date_naive(), false).await?;
    }
    txn.commit().await?;
    get(db, id).await
}

pub(super) async fn apply_tags(
    txn: &DatabaseTransaction,
    id: Uuid,
    wanted: &BTreeSet<String>,
    actor: &Actor,
    now: DateTime<Utc>,
    events: &mut Vec<event::ActiveModel>,
) -> Result<()> {
    let existing: BTreeSet<String> = subscriber_tag::Entity::find()
        .filter(subscriber_tag::Column::SubscriberId.eq(id))
        .all(txn)
        .await?
        .into_iter()
        .map(|t| t.tag)
        .collect();
    let removed: Vec<String> = existing.difference(wanted).cloned().collect();
    let added: Vec<&String> = wanted.difference(&existing).collect();
    if !removed.is_empty() {
        subscriber_tag::Entity::delete_many()
            .filter(subscriber_tag::Column::SubscriberId.eq(id))
            .filter(subscriber_tag::Column::Tag.is_in(removed.clone()))
            .exec(txn)
            .await?;
    }
    subscriber_tag::Entity::insert_many(added.iter().map(|t| tag_row(id, t, now))).exec_without_returning(txn).await?;
    for tag in added {
        events.push(records::event(id, kind::TAG_ADDED, json!({"tag": tag, "by": actor.label()}), now));
        records::trigger(id, trigger::TAG_ADDED, tag, json!({}), now).insert(txn).await?;
    }
    for tag in removed {
        events.push(records::event(id, kind::TAG_REMOVED, json!({"tag": tag, "by": actor.label()}), now));
    }
    Ok(())
}

pub(super) async fn apply_lists(
    txn: &DatabaseTransaction,
    id: Uuid,
    slugs: &[String],
    actor: &Actor,
    now: DateTime<Utc>,
    events: &mut Vec<event::ActiveModel>,
) -> Result<()> {
    let wanted = lists::resolve(txn, slugs, "lists").await?;
    let current = membership::Entity::find().filter(membership::Column::SubscriberId.eq(id)).all(txn).await?;
    let all_lists: HashMap<Uuid, String> =
        list::Entity::find().all(txn).await?.into_iter().map(|l| (l.id, l.slug)).collect();
    let wanted_ids: BTreeSet<Uuid> = wanted.iter().map(|l| l.id).collect();
    let mut joined = Vec::new();
    for l in &wanted {
        match current.iter().find(|m| m.list_id == l.id) {
            Some(m) if m.status != MembershipStatus::Unsubscribed.as_str() => {}
            Some(m) => {
                let mut active = m.clone().into_active_model();
                active.status = Set(MembershipStatus::Confirmed.as_str().to_owned());
                active.confirmed_at = Set(Some(now));
                active.unsubscribed_at = Set(None);
                active.updated_at = Set(now);
                active.update(txn).await?;
                joined.push(l.slug.clone());
            }
            None => {
                membership_row(id, l.id, MembershipStatus::Confirmed, now).insert(txn).await?;
                joined.push(l.slug.clone());
            }
        }
    }
    if !joined.is_empty() {
        for slug in &joined {
            records::trigger(id, trigger::SUBSCRIBED, slug, json!({}), now).insert(txn).await?;
        }
        events.push(records::event(id, kind::SUBSCRIBED, json!({"lists": joined, "by": actor.label()}), now));
    }
    for m in current {
        if wanted_ids.contains(&m.list_id) || m.status == MembershipStatus::Unsubscribed.as_str() {
            continue;
        }
        let slug = all_lists.get(&m.list_id).cloned().unwrap_or_default();
        let mut active = m.into_active_model();
        active.status = Set(MembershipStatus::Unsubscribed.as_str().to_owned());
        active.unsubscribed_at = Set(Some(now));
        active.updated_at = Set(now);
        active.update(txn).await?;
        events.push(records::event(id, kind::UNSUBSCRIBED, json!({"list": slug, "by": actor.label()}), now));
    }
    Ok(())
}

pub(super) async fn leave_all_lists(txn: &DatabaseTransaction, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    membership::Entity::update_many()
        .col_expr(membership::Column::Status, Expr::value(MembershipStatus::Unsubscribed.as_str()))
        .col_expr(membership::Column::UnsubscribedAt, Expr::value(now))
        .col_expr(membership::Column::UpdatedAt, Expr::value(now))
        .filter(membership::Column::SubscriberId.eq(id))
        .filter(membership::Column::Status.ne(MembershipStatus::Unsubscribed.as_str()))
        .exec(txn)
        .await?;
    Ok(())
}
