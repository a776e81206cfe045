//! Planning a batch: which rows create, update or skip whom, merged as the options say.

use super::*;
use crate::audience::subscribers::{Profile, membership_row, tag_row};
use crate::core::error::{Reason, Result};
use crate::core::values::{Channel, ChannelState, MembershipStatus, SubscriberStatus, suppression_hash};
use crate::store::entities::{subscriber, suppression};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

/// Decides, row by row, whether each row creates, updates or is refused.
pub(super) async fn plan_batch(
    conn: &impl ConnectionTrait,
    rows: &[Row],
    context: &Context,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let suppressed = suppressed_hashes(conn, rows).await?;
    let existing = existing_subscribers(conn, rows).await?;
    let mut plan = Plan::default();
    for s in existing {
        plan.index(Target::Existing(s.id), s.email_key.as_deref(), s.phone.as_deref(), Some(s.id));
        plan.existing.insert(s.id, (s, false, Vec::new()));
    }
    let default_list = context.default_list.as_ref();
    for row in rows {
        if row_hashes(row).iter().any(|h| suppressed.contains(h)) {
            plan.suppressed += 1;
            continue;
        }
        match plan.resolve(row) {
            Err(reason) => plan.rejected.push((row.line, reason.into())),
            Ok(Some(Target::Existing(id))) => {
                plan.merge_existing(id, row);
                plan.add_links(id, row, default_list, &context.list_ids, now);
                plan.updated += 1;
            }
            Ok(Some(Target::Pending(index))) => {
                plan.merge_pending(index, row);
                let id = plan.new[index].id;
                plan.add_links(id, row, default_list, &context.list_ids, now);
                plan.updated += 1;
            }
            Ok(None) => {
                let id = row.id.unwrap_or_else(Uuid::now_v7);
                let index = plan.new.len();
                plan.new.push(NewSubscriber {
                    id,
                    profile: row.profile.clone(),
                    status: row.status.unwrap_or(SubscriberStatus::Active),
                    email_state: row.email_state.unwrap_or(default_state(row.profile.email.is_some())),
                    sms_state: row.sms_state.unwrap_or(default_state(row.profile.phone.is_some())),
                    whatsapp_state: row
                        .whatsapp_state
                        .filter(|_| row.profile.phone.is_some())
                        .unwrap_or(ChannelState::None),
                    created_at: row.created_at,
                });
                plan.index(
                    Target::Pending(index),
                    row.profile.email.as_ref().map(|e| e.key()),
                    row.profile.phone.as_ref().map(|p| p.as_str()),
                    Some(id),
                );
                plan.add_links(id, row, default_list, &context.list_ids, now);
                plan.imported += 1;
            }
        }
    }
    Ok(plan)
}

pub(super) fn channel_state_field(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email_state",
        Channel::Sms => "sms_state",
        Channel::Whatsapp => "whatsapp_state",
    }
}

/// An imported address is taken as consented: whoever imports attests it (documented).
pub(super) fn default_state(has_address: bool) -> ChannelState {
    if has_address { ChannelState::Subscribed } else { ChannelState::None }
}

pub(super) fn row_hashes(row: &Row) -> Vec<String> {
    let mut hashes = Vec::with_capacity(2);
    if let Some(email) = &row.profile.email {
        hashes.push(suppression_hash(Channel::Email, email.key()));
    }
    if let Some(phone) = &row.profile.phone {
        hashes.push(suppression_hash(Channel::Sms, phone.as_str()));
    }
    hashes
}

pub(super) async fn suppressed_hashes(conn: &impl ConnectionTrait, rows: &[Row]) -> Result<HashSet<String>> {
    let hashes: Vec<String> = rows.iter().flat_map(row_hashes).collect();
    let mut found = HashSet::new();
    for chunk in hashes.chunks(1000) {
        let hits: Vec<String> = suppression::Entity::find()
            .select_only()
            .column(suppression::Column::Hash)
            .filter(suppression::Column::Hash.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(hits);
    }
    Ok(found)
}

pub(super) async fn existing_subscribers(conn: &impl ConnectionTrait, rows: &[Row]) -> Result<Vec<subscriber::Model>> {
    let emails: Vec<String> =
        rows.iter().filter_map(|r| r.profile.email.as_ref().map(|e| e.key().to_owned())).collect();
    let phones: Vec<String> =
        rows.iter().filter_map(|r| r.profile.phone.as_ref().map(|p| p.as_str().to_owned())).collect();
    let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.id).collect();
    let mut condition = Condition::any();
    if !emails.is_empty() {
        condition = condition.add(subscriber::Column::EmailKey.is_in(emails));
    }
    if !phones.is_empty() {
        condition = condition.add(subscriber::Column::Phone.is_in(phones));
    }
    if !ids.is_empty() {
        condition = condition.add(subscriber::Column::Id.is_in(ids));
    }
    Ok(subscriber::Entity::find().filter(condition).all(conn).await?)
}

impl Plan {
    pub(super) fn index(&mut self, target: Target, email_key: Option<&str>, phone: Option<&str>, id: Option<Uuid>) {
        if let Some(key) = email_key {
            self.by_email.insert(key.to_owned(), target);
        }
        if let Some(phone) = phone {
            self.by_phone.insert(phone.to_owned(), target);
        }
        if let Some(id) = id {
            self.by_id.insert(id, target);
        }
    }

    pub(super) fn target_email(&self, target: Target) -> Option<String> {
        match target {
            Target::Existing(id) => self.existing.get(&id).and_then(|(m, _, _)| m.email_key.clone()),
            Target::Pending(i) => self.new.get(i).and_then(|n| n.profile.email.as_ref().map(|e| e.key().to_owned())),
        }
    }

    /// Upsert matching: by email first; a phone or id match is accepted only when it does not
    /// belong to someone with another email address.
    pub(super) fn resolve(&self, row: &Row) -> std::result::Result<Option<Target>, Reason> {
        let by_email = row.profile.email.as_ref().and_then(|e| self.by_email.get(e.key()).copied());
        let by_phone = row.profile.phone.as_ref().and_then(|p| self.by_phone.get(p.as_str()).copied());
        let by_id = row.id.and_then(|id| self.by_id.get(&id).copied());
        if let (Some(a), Some(b)) = (by_email, by_phone)
            && a != b
        {
            return Err("the email and the phone belong to two different subscribers".into());
        }
        if let Some(target) = by_email {
            if by_id.is_some_and(|t| t != target) {
                return Err("the id belongs to another subscriber than the email".into());
            }
            return Ok(Some(target));
        }
        let Some(target) = by_phone.or(by_id) else {
            return Ok(None);
        };
        if let (Some(a), Some(b)) = (by_phone, by_id)
            && a != b
        {
            return Err("the id belongs to another subscriber than the phone".into());
        }
        match (&row.profile.email, self.target_email(target)) {
            (Some(email), Some(existing)) if email.key() != existing => {
                Err("the phone or id belongs to a subscriber with another email".into())
            }
            _ => Ok(Some(target)),
        }
    }

    pub(super) fn merge_pending(&mut self, index: usize, row: &Row) {
        let Some(pending) = self.new.get_mut(index) else {
            return;
        };
        merge_profile(&mut pending.profile, &row.profile);
        let (email, phone) = (pending.profile.email.clone(), pending.profile.phone.clone());
        if pending.email_state == ChannelState::None && email.is_some() {
            pending.email_state = row.email_state.unwrap_or(ChannelState::Subscribed);
        }
        if pending.sms_state == ChannelState::None && phone.is_some() {
            pending.sms_state = row.sms_state.unwrap_or(ChannelState::Subscribed);
        }
        if pending.whatsapp_state == ChannelState::None && phone.is_some() {
            pending.whatsapp_state = row.whatsapp_state.unwrap_or(ChannelState::None);
        }
        let id = pending.id;
        self.index(
            Target::Pending(index),
            email.as_ref().map(|e| e.key()),
            phone.as_ref().map(|p| p.as_str()),
            Some(id),
        );
    }

    /// Fills in what the stored subscriber lacks and overwrites what the row states; never
    /// touches a channel that was left, bounced or complained.
    pub(super) fn merge_existing(&mut self, id: Uuid, row: &Row) {
        let Some((model, dirty, fields)) = self.existing.get_mut(&id) else {
            return;
        };
        let mut set = |field: &'static str, slot: &mut Option<String>, value: Option<String>| {
            if value.is_some() && *slot != value {
                *slot = value;
                *dirty = true;
                if !fields.contains(&field) {
                    fields.push(field);
                }
            }
        };
        let p = &row.profile;
        if model.email.is_none() && p.email.is_some() {
            set("email", &mut model.email, p.email.as_ref().map(|e| e.as_str().to_owned()));
            model.email_key = p.email.as_ref().map(|e| e.key().to_owned());
        }
        if model.phone.is_none() && p.phone.is_some() {
            set("phone", &mut model.phone, p.phone.as_ref().map(|v| v.as_str().to_owned()));
        }
        set("first_name", &mut model.first_name, p.first_name.clone());
        set("last_name", &mut model.last_name, p.last_name.clone());
        set("timezone", &mut model.timezone, p.timezone.clone());
        set("locale", &mut model.locale, p.locale.clone());
        if model.source.is_none() && model.medium.is_none() && model.campaign.is_none() {
            set("source", &mut model.source, p.attribution.source.clone());
            set("medium", &mut model.medium, p.attribution.medium.clone());
            set("campaign", &mut model.campaign, p.attribution.campaign.clone());
            set("referrer", &mut model.referrer, p.attribution.referrer.clone());
            set("landing_page", &mut model.landing_page, p.attribution.landing_page.clone());
            set("content", &mut model.content, p.attribution.content.clone());
            set("term", &mut model.term, p.attribution.term.clone());
            set("click_id", &mut model.click_id, p.attribution.click_id.clone());
        }
        if !p.attributes.is_empty() {
            let mut merged = model.attributes.as_object().cloned().unwrap_or_default();
            merged.extend(p.attributes.clone());
            let merged = Value::Object(merged);
            if merged != model.attributes {
                model.attributes = merged;
                *dirty = true;
                fields.push("attributes");
            }
        }
        // An address is taken as consented to email and SMS; WhatsApp only when its column says so.
        for (field, has_address, state, wanted, default) in [
            ("email_state", model.email.is_some(), &mut model.email_state, row.email_state, ChannelState::Subscribed),
            ("sms_state", model.phone.is_some(), &mut model.sms_state, row.sms_state, ChannelState::Subscribed),
            (
                "whatsapp_state",
                model.phone.is_some(),
                &mut model.whatsapp_state,
                row.whatsapp_state,
                ChannelState::None,
            ),
        ] {
            if has_address && *state == ChannelState::None.as_str() {
                let next = wanted.unwrap_or(default);
                if next != ChannelState::None {
                    *state = next.as_str().to_owned();
                    *dirty = true;
                    fields.push(field);
                }
            }
        }
        let email = model.email_key.clone();
        let phone = model.phone.clone();
        self.index(Target::Existing(id), email.as_deref(), phone.as_deref(), Some(id));
    }

    pub(super) fn add_links(
        &mut self,
        id: Uuid,
        row: &Row,
        default_list: Option<&(String, Uuid)>,
        list_ids: &HashMap<String, Uuid>,
        now: DateTime<Utc>,
    ) {
        if let Some((_, list_id)) = default_list {
            self.memberships.push(membership_row(id, *list_id, MembershipStatus::Confirmed, now));
        }
        for (slug, status) in &row.lists {
            if let Some(list_id) = list_ids.get(slug)
                && default_list.is_none_or(|(_, d)| d != list_id)
            {
                self.memberships.push(membership_row(id, *list_id, *status, now));
            }
        }
        for tag in &row.tags {
            self.tags.push(tag_row(id, tag, now));
        }
    }
}

pub(super) fn merge_profile(into: &mut Profile, from: &Profile) {
    fn take<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
        if value.is_some() {
            slot.clone_from(value);
        }
    }
    take(&mut into.email, &from.email);
    take(&mut into.phone, &from.phone);
    take(&mut into.first_name, &from.first_name);
    take(&mut into.last_name, &from.last_name);
    take(&mut into.timezone, &from.timezone);
    take(&mut into.locale, &from.locale);
    into.attributes.extend(from.attributes.clone());
}
