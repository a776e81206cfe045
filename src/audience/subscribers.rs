//! Subscribers: creating, reading, changing and erasing one person, with their timeline.
//!
//! Every change is one transaction that also appends what happened to the timeline, so a
//! subscriber is never half-written and every state has a recorded reason.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Actor;
use super::lists;
use super::records::{self, ConsentOrigin, ConsentWording, kind, trigger};
use super::values::{
    Channel, ChannelState, ConsentMethod, EmailAddress, MAX_ATTRIBUTES_BYTES, MembershipStatus, PhoneNumber,
    SubscriberStatus, normalize_tag, normalize_text, stored, suppression_hash, validate_attribute_key, validate_locale,
    validate_timezone,
};
use crate::error::{Error, FieldError, Result};
use crate::store::entities::{
    consent, event, list, membership, outbox, pending_trigger, subscriber, subscriber_tag, suppression,
};
use crate::store::{Db, is_unique_violation};

/// Deserializes a field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
pub fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// First-touch attribution: where this person came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attribution {
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub source: Option<String>,
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub medium: Option<String>,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub campaign: Option<String>,
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub referrer: Option<String>,
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub landing_page: Option<String>,
    /// utm_content.
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub content: Option<String>,
    /// utm_term.
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub term: Option<String>,
    /// The click id a network added to the link, as `fbclid=…` (also fbclid, igshid, ttclid, gclid).
    #[serde(default)]
    #[schema(max_length = 600, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub click_id: Option<String>,
}

/// Consent given with a new subscriber, per channel, with the words shown.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    #[serde(default)]
    pub email: bool,
    #[serde(default)]
    pub sms: bool,
    /// The exact consent text the person agreed to (stored verbatim with its hash).
    pub text: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    /// An email or a phone (or both) is required.
    #[schema(schema_with = super::values::schema::email)]
    pub email: Option<String>,
    /// E.164, e.g. +14155550123.
    #[schema(pattern = "^(\\+[1-9][0-9]{6,14})?$")]
    pub phone: Option<String>,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub first_name: Option<String>,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub last_name: Option<String>,
    /// IANA time zone, e.g. Europe/Rome.
    #[schema(max_length = 64)]
    pub timezone: Option<String>,
    /// A language tag such as `it` or `pt-BR`.
    #[schema(pattern = "^([A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*)?$")]
    pub locale: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Slugs of lists to join (as confirmed members).
    #[serde(default)]
    #[schema(schema_with = super::values::schema::slugs)]
    pub lists: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = super::values::schema::tags)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub consent: ConsentInput,
    #[serde(default)]
    pub attribution: Attribution,
}

/// Changes to a subscriber. Absent fields stay; `null` clears a field.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::values::schema::email)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^(\\+[1-9][0-9]{6,14})?$")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 64)]
    pub timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^([A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*)?$")]
    pub locale: Option<Option<String>>,
    /// Merged into the stored attributes; a `null` value removes that attribute.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// The complete set of tags: missing ones are removed, new ones added.
    #[schema(schema_with = super::values::schema::tags_or_null)]
    pub tags: Option<Vec<String>>,
    /// The complete set of lists: new ones are joined (confirmed), missing ones left.
    #[schema(schema_with = super::values::schema::slugs_or_null)]
    pub lists: Option<Vec<String>>,
    /// Only `unsubscribed` may be set here: it withdraws every channel and list at once.
    pub status: Option<SubscriberStatus>,
    pub consent: Option<ConsentPatch>,
}

/// Grants (`true`) or withdraws (`false`) consent per channel.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentPatch {
    pub email: Option<bool>,
    pub sms: Option<bool>,
    pub text: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelStates {
    pub email: ChannelState,
    pub sms: ChannelState,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MembershipView {
    pub list: String,
    pub status: MembershipStatus,
    pub joined_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriberView {
    pub id: Uuid,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub status: SubscriberStatus,
    pub channels: ChannelStates,
    pub attribution: Attribution,
    pub lists: Vec<MembershipView>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    pub id: Uuid,
    pub channel: Channel,
    pub granted: bool,
    pub method: ConsentMethod,
    pub text: Option<String>,
    pub text_hash: Option<String>,
    pub text_version: Option<String>,
    pub source: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The landing page the consent was given on, and that page's version.
    pub page: Option<String>,
    pub page_version: Option<String>,
    pub at: DateTime<Utc>,
}

/// Everything stored about one person: the answer to a data-access request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PersonalData {
    pub subscriber: SubscriberView,
    pub consents: Vec<ConsentView>,
    pub events: Vec<EventView>,
    pub exported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for listing subscribers.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubscriberFilter {
    /// Members of this list (pending or confirmed).
    #[param(pattern = "^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$", max_length = 64)]
    pub list: Option<String>,
    pub tag: Option<String>,
    pub status: Option<SubscriberStatus>,
    /// Case-insensitive substring of email, phone or name.
    pub q: Option<String>,
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Pass the `next_cursor` of the page before.
    #[param(pattern = "^([A-Za-z0-9_-]{21}[AQgw])?$")]
    pub cursor: Option<String>,
}

/// Paging through a timeline.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Pass the `next_cursor` of the page before.
    #[param(pattern = "^([A-Za-z0-9_-]{21}[AQgw])?$")]
    pub cursor: Option<String>,
}

/// A subscriber's profile fields after validation.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub email: Option<EmailAddress>,
    pub phone: Option<PhoneNumber>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub attributes: Map<String, Value>,
    pub attribution: Attribution,
}

/// Collects field errors while validating one input.
#[derive(Debug, Default)]
pub struct Checker {
    pub errors: Vec<FieldError>,
}

impl Checker {
    pub fn check<T>(&mut self, field: &str, result: std::result::Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.errors.push(FieldError::new(field, message));
                None
            }
        }
    }

    pub fn text(&mut self, field: &str, value: Option<&str>, max: usize) -> Option<String> {
        value.and_then(|v| self.check(field, normalize_text(v, max)).flatten())
    }

    pub fn email(&mut self, field: &str, value: Option<&str>) -> Option<EmailAddress> {
        value.filter(|v| !v.trim().is_empty()).and_then(|v| self.check(field, EmailAddress::parse(v)))
    }

    pub fn phone(&mut self, field: &str, value: Option<&str>) -> Option<PhoneNumber> {
        value.filter(|v| !v.trim().is_empty()).and_then(|v| self.check(field, PhoneNumber::parse(v)))
    }

    pub fn timezone(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        value.filter(|v| !v.trim().is_empty()).and_then(|v| self.check(field, validate_timezone(v)))
    }

    pub fn locale(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        value.filter(|v| !v.trim().is_empty()).and_then(|v| self.check(field, validate_locale(v)))
    }

    pub fn tags(&mut self, field: &str, tags: &[String]) -> BTreeSet<String> {
        tags.iter().filter_map(|t| self.check(field, normalize_tag(t))).collect()
    }

    pub fn slugs(&mut self, field: &str, slugs: &[String]) -> Vec<String> {
        let mut seen = BTreeSet::new();
        slugs
            .iter()
            .filter_map(|s| self.check(field, super::values::validate_slug(s).map(|()| s.clone())))
            .filter(|s| seen.insert(s.clone()))
            .collect()
    }

    pub fn attributes(&mut self, field: &str, attributes: &Map<String, Value>) {
        for key in attributes.keys() {
            self.check(field, validate_attribute_key(key));
        }
    }

    pub fn attribution(&mut self, input: &Attribution) -> Attribution {
        Attribution {
            source: self.text("attribution.source", input.source.as_deref(), 100),
            medium: self.text("attribution.medium", input.medium.as_deref(), 100),
            campaign: self.text("attribution.campaign", input.campaign.as_deref(), 200),
            referrer: self.text("attribution.referrer", input.referrer.as_deref(), 2000),
            landing_page: self.text("attribution.landing_page", input.landing_page.as_deref(), 2000),
            content: self.text("attribution.content", input.content.as_deref(), 200),
            term: self.text("attribution.term", input.term.as_deref(), 200),
            click_id: self.text("attribution.click_id", input.click_id.as_deref(), 600),
        }
    }

    pub fn finish(self) -> Result<()> {
        if self.errors.is_empty() { Ok(()) } else { Err(Error::Invalid(self.errors)) }
    }
}

fn attributes_size_ok(attributes: &Map<String, Value>) -> std::result::Result<(), String> {
    let size = serde_json::to_vec(attributes).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_ATTRIBUTES_BYTES {
        Err(format!("take {size} bytes as JSON; the limit is {MAX_ATTRIBUTES_BYTES}"))
    } else {
        Ok(())
    }
}

struct ValidNew {
    profile: Profile,
    lists: Vec<String>,
    tags: BTreeSet<String>,
    consent: ConsentInput,
    wording: ConsentWording,
}

fn validate_new(input: NewSubscriber) -> Result<ValidNew> {
    let mut c = Checker::default();
    let email = c.email("email", input.email.as_deref());
    let phone = c.phone("phone", input.phone.as_deref());
    let no_address = input.email.as_deref().is_none_or(|e| e.trim().is_empty())
        && input.phone.as_deref().is_none_or(|p| p.trim().is_empty());
    if no_address {
        c.errors.push(FieldError::new("email", "an email or a phone is required"));
    }
    if input.consent.email && input.email.is_none() {
        c.errors.push(FieldError::new("consent.email", "email consent needs an email address"));
    }
    if input.consent.sms && input.phone.is_none() {
        c.errors.push(FieldError::new("consent.sms", "SMS consent needs a phone number"));
    }
    c.attributes("attributes", &input.attributes);
    c.check("attributes", attributes_size_ok(&input.attributes));
    let profile = Profile {
        email,
        phone,
        first_name: c.text("first_name", input.first_name.as_deref(), 200),
        last_name: c.text("last_name", input.last_name.as_deref(), 200),
        timezone: c.timezone("timezone", input.timezone.as_deref()),
        locale: c.locale("locale", input.locale.as_deref()),
        attributes: input.attributes,
        attribution: c.attribution(&input.attribution),
    };
    let lists = c.slugs("lists", &input.lists);
    let tags = c.tags("tags", &input.tags);
    let wording = ConsentWording {
        text: c.text("consent.text", input.consent.text.as_deref(), 10_000),
        version: c.text("consent.version", input.consent.version.as_deref(), 100),
        page: None,
    };
    c.finish()?;
    Ok(ValidNew { profile, lists, tags, consent: input.consent, wording })
}

/// Refuses an address that was erased on request.
pub async fn ensure_not_suppressed(conn: &impl ConnectionTrait, profile: &Profile) -> Result<()> {
    let mut checks = Vec::new();
    if let Some(email) = &profile.email {
        checks.push(("email", suppression_hash(Channel::Email, email.key())));
    }
    if let Some(phone) = &profile.phone {
        checks.push(("phone", suppression_hash(Channel::Sms, phone.as_str())));
    }
    for (field, hash) in checks {
        if suppression::Entity::find_by_id(hash).one(conn).await?.is_some() {
            return Err(Error::Conflict {
                code: "address_suppressed",
                detail: format!(
                    "this {field} was erased on the owner's request and may not be added again by an admin"
                ),
                existing_id: None,
                field: Some(field),
            });
        }
    }
    Ok(())
}

/// Refuses an address another subscriber already has, naming that subscriber.
async fn ensure_unique(
    conn: &impl ConnectionTrait,
    email: Option<&EmailAddress>,
    phone: Option<&PhoneNumber>,
    except: Option<Uuid>,
) -> Result<()> {
    if let Some(email) = email {
        let mut query = subscriber::Entity::find().filter(subscriber::Column::EmailKey.eq(email.key()));
        if let Some(id) = except {
            query = query.filter(subscriber::Column::Id.ne(id));
        }
        if let Some(existing) = query.one(conn).await? {
            return Err(duplicate("email", existing.id));
        }
    }
    if let Some(phone) = phone {
        let mut query = subscriber::Entity::find().filter(subscriber::Column::Phone.eq(phone.as_str()));
        if let Some(id) = except {
            query = query.filter(subscriber::Column::Id.ne(id));
        }
        if let Some(existing) = query.one(conn).await? {
            return Err(duplicate("phone", existing.id));
        }
    }
    Ok(())
}

fn duplicate(field: &'static str, id: Uuid) -> Error {
    Error::Conflict {
        code: "subscriber_exists",
        detail: format!("a subscriber with this {field} already exists: {id}"),
        existing_id: Some(id),
        field: Some(field),
    }
}

/// The initial state of a channel: subscribed with consent, `none` without (or without address).
fn initial_state(has_address: bool, consented: bool) -> ChannelState {
    match (has_address, consented) {
        (true, true) => ChannelState::Subscribed,
        _ => ChannelState::None,
    }
}

pub fn new_subscriber_row(
    id: Uuid,
    profile: &Profile,
    status: SubscriberStatus,
    email_state: ChannelState,
    sms_state: ChannelState,
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
        email_state: Set(email_state.as_str().to_owned()),
        sms_state: Set(sms_state.as_str().to_owned()),
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
    let email_state = initial_state(profile.email.is_some(), valid.consent.email);
    let sms_state = initial_state(profile.phone.is_some(), valid.consent.sms);
    let row = new_subscriber_row(id, profile, SubscriberStatus::Active, email_state, sms_state, now, now);
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
    let mut consents = Vec::new();
    if email_state == ChannelState::Subscribed {
        consents.push(records::consent(id, Channel::Email, true, &origin, &valid.wording, now));
    }
    if sms_state == ChannelState::Subscribed {
        consents.push(records::consent(id, Channel::Sms, true, &origin, &valid.wording, now));
    }
    consent::Entity::insert_many(consents).exec_without_returning(&txn).await?;
    let data = json!({
        "by": actor.label(),
        "lists": valid.lists,
        "tags": valid.tags,
        "channels": {"email": email_state, "sms": sms_state},
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

pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> Result<subscriber::Model> {
    subscriber::Entity::find_by_id(id).one(conn).await?.ok_or(Error::NotFound { what: "subscriber" })
}

pub async fn get(db: &Db, id: Uuid) -> Result<SubscriberView> {
    let model = find(db.conn(), id).await?;
    let mut views = views(db.conn(), vec![model]).await?;
    views.pop().ok_or(Error::NotFound { what: "subscriber" })
}

/// Builds the API shape for a page of subscribers with two extra queries (lists, tags).
pub async fn views(conn: &impl ConnectionTrait, models: Vec<subscriber::Model>) -> Result<Vec<SubscriberView>> {
    let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
    let (mut memberships, mut tags) = memberships_and_tags(conn, &ids).await?;
    Ok(models
        .into_iter()
        .map(|m| {
            let lists = memberships.remove(&m.id).unwrap_or_default();
            let tags = tags.remove(&m.id).unwrap_or_default();
            view(m, lists, tags)
        })
        .collect())
}

type MembershipsById = HashMap<Uuid, Vec<MembershipView>>;
type TagsById = HashMap<Uuid, Vec<String>>;

pub async fn memberships_and_tags(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<(MembershipsById, TagsById)> {
    Ok((memberships_of(conn, ids).await?, tags_of(conn, ids).await?))
}

/// The lists these subscribers are or were on, each subscriber's sorted by slug.
pub async fn memberships_of(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<MembershipsById> {
    let mut memberships: MembershipsById = HashMap::new();
    if ids.is_empty() {
        return Ok(memberships);
    }
    let rows = membership::Entity::find()
        .filter(membership::Column::SubscriberId.is_in(ids.iter().copied()))
        .all(conn)
        .await?;
    let list_ids: BTreeSet<Uuid> = rows.iter().map(|r| r.list_id).collect();
    let slugs: HashMap<Uuid, String> = list::Entity::find()
        .filter(list::Column::Id.is_in(list_ids))
        .all(conn)
        .await?
        .into_iter()
        .map(|l| (l.id, l.slug))
        .collect();
    for row in rows {
        let Some(slug) = slugs.get(&row.list_id) else {
            continue;
        };
        memberships.entry(row.subscriber_id).or_default().push(MembershipView {
            list: slug.clone(),
            status: stored(&row.status, MembershipStatus::Pending),
            joined_at: row.created_at,
            confirmed_at: row.confirmed_at,
            unsubscribed_at: row.unsubscribed_at,
        });
    }
    for entries in memberships.values_mut() {
        entries.sort_by(|a, b| a.list.cmp(&b.list));
    }
    Ok(memberships)
}

/// These subscribers' tags, each subscriber's sorted.
pub async fn tags_of(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<TagsById> {
    let mut tags: TagsById = HashMap::new();
    if ids.is_empty() {
        return Ok(tags);
    }
    let tag_rows = subscriber_tag::Entity::find()
        .filter(subscriber_tag::Column::SubscriberId.is_in(ids.iter().copied()))
        .order_by_asc(subscriber_tag::Column::Tag)
        .all(conn)
        .await?;
    for row in tag_rows {
        tags.entry(row.subscriber_id).or_default().push(row.tag);
    }
    Ok(tags)
}

fn view(m: subscriber::Model, lists: Vec<MembershipView>, tags: Vec<String>) -> SubscriberView {
    SubscriberView {
        id: m.id,
        email: m.email,
        phone: m.phone,
        first_name: m.first_name,
        last_name: m.last_name,
        timezone: m.timezone,
        locale: m.locale,
        attributes: m.attributes,
        status: stored(&m.status, SubscriberStatus::Active),
        channels: ChannelStates {
            email: stored(&m.email_state, ChannelState::None),
            sms: stored(&m.sms_state, ChannelState::None),
        },
        attribution: Attribution {
            source: m.source,
            medium: m.medium,
            campaign: m.campaign,
            referrer: m.referrer,
            landing_page: m.landing_page,
            content: m.content,
            term: m.term,
            click_id: m.click_id,
        },
        lists,
        tags,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// An opaque position in an id-ordered listing.
pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| Error::field("cursor", "is not a cursor returned by this API"))
}

pub fn page_limit(limit: Option<u64>) -> Result<u64> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(Error::field("limit", "must be between 1 and 1000")),
    }
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Lists subscribers in creation order (oldest first), so a cursor stays valid under inserts.
pub async fn list(db: &Db, filter: SubscriberFilter) -> Result<Page<SubscriberView>> {
    let limit = page_limit(filter.limit)?;
    let mut condition = Condition::all();
    if let Some(cursor) = filter.cursor.as_ref().filter(|c| !c.is_empty()) {
        condition = condition.add(subscriber::Column::Id.gt(decode_cursor(cursor)?));
    }
    if let Some(slug) = filter.list.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let found = lists::find(db.conn(), slug).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::field("list", format!("unknown list '{slug}'")),
            other => other,
        })?;
        let members = Query::select()
            .column(membership::Column::SubscriberId)
            .from(membership::Entity)
            .and_where(membership::Column::ListId.eq(found.id))
            .and_where(membership::Column::Status.ne(MembershipStatus::Unsubscribed.as_str()))
            .to_owned();
        condition = condition.add(subscriber::Column::Id.in_subquery(members));
    }
    if let Some(tag) = filter.tag.as_deref().filter(|t| !t.trim().is_empty()) {
        let tagged = Query::select()
            .column(subscriber_tag::Column::SubscriberId)
            .from(subscriber_tag::Entity)
            .and_where(subscriber_tag::Column::Tag.eq(tag.trim()))
            .to_owned();
        condition = condition.add(subscriber::Column::Id.in_subquery(tagged));
    }
    if let Some(status) = filter.status {
        condition = condition.add(subscriber::Column::Status.eq(status.as_str()));
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let pattern = escape_like(&q.to_lowercase());
        let like = || LikeExpr::new(pattern.clone()).escape('\\');
        let lower = |column: subscriber::Column| Expr::expr(Func::lower(Expr::col((subscriber::Entity, column))));
        condition = condition.add(
            Condition::any()
                .add(subscriber::Column::EmailKey.like(like()))
                .add(subscriber::Column::Phone.like(like()))
                .add(lower(subscriber::Column::FirstName).like(like()))
                .add(lower(subscriber::Column::LastName).like(like())),
        );
    }
    let mut models = subscriber::Entity::find()
        .filter(condition)
        .order_by_asc(subscriber::Column::Id)
        .limit(limit + 1)
        .all(db.conn())
        .await?;
    let next_cursor = next_cursor(&mut models, limit, |m| m.id);
    Ok(Page { data: views(db.conn(), models).await?, next_cursor })
}

/// Trims the one extra row fetched and returns the cursor to continue after the last kept row.
fn next_cursor<T>(rows: &mut Vec<T>, limit: u64, id: impl Fn(&T) -> Uuid) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| encode_cursor(id(r)))
    } else {
        None
    }
}

/// The subscriber's timeline, newest first.
pub async fn timeline(db: &Db, id: Uuid, page: PageRequest) -> Result<Page<EventView>> {
    find(db.conn(), id).await?;
    let limit = page_limit(page.limit)?;
    let mut query = event::Entity::find().filter(event::Column::SubscriberId.eq(id));
    if let Some(cursor) = page.cursor.as_ref().filter(|c| !c.is_empty()) {
        query = query.filter(event::Column::Id.lt(decode_cursor(cursor)?));
    }
    let mut rows = query.order_by_desc(event::Column::Id).limit(limit + 1).all(db.conn()).await?;
    let next_cursor = next_cursor(&mut rows, limit, |e| e.id);
    Ok(Page { data: rows.into_iter().map(event_view).collect(), next_cursor })
}

fn event_view(e: event::Model) -> EventView {
    EventView { id: e.id, kind: e.kind, data: e.data, at: e.created_at }
}

/// Everything stored about one subscriber.
pub async fn personal_data(db: &Db, now: DateTime<Utc>, id: Uuid) -> Result<PersonalData> {
    let subscriber = get(db, id).await?;
    let consents = consent::Entity::find()
        .filter(consent::Column::SubscriberId.eq(id))
        .order_by_asc(consent::Column::Id)
        .all(db.conn())
        .await?
        .into_iter()
        .map(|c| ConsentView {
            id: c.id,
            channel: stored(&c.channel, Channel::Email),
            granted: c.granted,
            method: stored(&c.method, ConsentMethod::Api),
            text: c.consent_text,
            text_hash: c.text_hash,
            text_version: c.text_version,
            source: c.source,
            ip: c.ip,
            user_agent: c.user_agent,
            page: c.page,
            page_version: c.page_version,
            at: c.created_at,
        })
        .collect();
    let events = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(id))
        .order_by_asc(event::Column::Id)
        .all(db.conn())
        .await?
        .into_iter()
        .map(event_view)
        .collect();
    Ok(PersonalData { subscriber, consents, events, exported_at: now })
}

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

/// Applies a patch in one transaction, recording each kind of change in the timeline.
/// Marks a channel of a subscriber bounced (the address does not exist), in the caller's
/// transaction; the subscriber becomes `bounced` when no other channel can reach them. Nothing
/// more is sent on that channel until the address changes or consent is given again.
pub async fn mark_bounced(
    txn: &DatabaseTransaction,
    id: Uuid,
    channel: Channel,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(current) = subscriber::Entity::find_by_id(id).one(txn).await? else { return Ok(()) };
    let (state, other) = match channel {
        Channel::Email => (&current.email_state, &current.sms_state),
        Channel::Sms => (&current.sms_state, &current.email_state),
    };
    if stored(state, ChannelState::None) == ChannelState::Bounced {
        return Ok(());
    }
    let other_reaches = matches!(stored(other, ChannelState::None), ChannelState::Subscribed | ChannelState::Pending);
    let mut model = current.into_active_model();
    let bounced = Set(ChannelState::Bounced.as_str().to_owned());
    match channel {
        Channel::Email => model.email_state = bounced,
        Channel::Sms => model.sms_state = bounced,
    }
    if !other_reaches {
        model.status = Set(SubscriberStatus::Bounced.as_str().to_owned());
    }
    model.updated_at = Set(now);
    model.update(txn).await?;
    records::event(id, kind::BOUNCED, json!({"channel": channel, "reason": reason}), now).insert(txn).await?;
    Ok(())
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
    let (state, other) = match channel {
        Channel::Email => (current.email_state.clone(), current.sms_state.clone()),
        Channel::Sms => (current.sms_state.clone(), current.email_state.clone()),
    };
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
    match channel {
        Channel::Email => model.email_state = Set(to.as_str().to_owned()),
        Channel::Sms => model.sms_state = Set(to.as_str().to_owned()),
    }
    if granting && status == SubscriberStatus::Unsubscribed {
        model.status = Set(SubscriberStatus::Active.as_str().to_owned());
    } else if !granting && !live(&other) {
        let status =
            if to == ChannelState::Complained { SubscriberStatus::Complained } else { SubscriberStatus::Unsubscribed };
        model.status = Set(status.as_str().to_owned());
    }
    model.updated_at = Set(now);
    model.update(txn).await?;
    records::consent(id, channel, granting, origin, wording, now).insert(txn).await?;
    if !granting {
        crate::stats::steps::unsubscribed(txn, id, channel.as_str(), now.date_naive()).await?;
    }
    // `from`: what the channel was; a channel withdrawn while only pending was never confirmed.
    let from = stored(&state, ChannelState::None);
    let data = json!({"channel": channel, "by": origin.source, "state": to, "from": from.as_str()});
    let kind = if granting { kind::CONSENT_GRANTED } else { kind::CONSENT_REVOKED };
    records::event(id, kind, data, now).insert(txn).await?;
    records::trigger(id, trigger::CHANGED, "", json!({}), now).insert(txn).await?;
    Ok(true)
}

/// Counts a withdrawn channel for `/metrics`, by the page and source of the subscriber's first
/// touch (the page from the landing page's address).
fn count_unsubscribe(current: &subscriber::Model, channel: Channel, via: ConsentMethod) {
    let source = crate::pages::attribution::source_label(current.source.as_deref());
    let page = crate::stats::first_touch_page(current.landing_page.as_deref()).unwrap_or_default();
    let labels = [("channel", channel.as_str()), ("via", via.as_str()), ("page", page.as_str()), ("source", source)];
    crate::metrics::inc("ownlist_unsubscribes_total", &labels);
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

/// Applies a bounce or complaint reported for a subscriber's email address. Applying the same
/// report twice changes nothing more (a soft bounce is noted again).
pub async fn apply_bounce(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    id: Uuid,
    bounce: Bounce,
    reason: &str,
) -> Result<()> {
    match bounce {
        Bounce::Hard => mark_bounced(txn, id, Channel::Email, reason, now).await?,
        Bounce::Soft => {
            let data = json!({"channel": Channel::Email, "reason": reason});
            records::event(id, kind::SOFT_BOUNCE, data, now).insert(txn).await?;
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

/// The subscriber with this email address (compared case-insensitively), if any.
pub async fn id_by_email(conn: &impl ConnectionTrait, email: &EmailAddress) -> Result<Option<Uuid>> {
    let found = subscriber::Entity::find()
        .filter(subscriber::Column::EmailKey.eq(email.key()))
        .select_only()
        .column(subscriber::Column::Id)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(found)
}

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
    let mut status = stored(&current.status, SubscriberStatus::Active);
    // Channels withdrawn here, for the step statistics ("unsubscribed after this step").
    let mut withdrawn = Vec::new();
    if let Some(consent) = &patch.consent {
        let mut revoked = false;
        for (channel, wanted, has_address, state) in [
            (Channel::Email, consent.email, new_email.is_some(), &mut email_state),
            (Channel::Sms, consent.sms, new_phone.is_some(), &mut sms_state),
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
        let reachable =
            [email_state, sms_state].iter().any(|s| matches!(s, ChannelState::Subscribed | ChannelState::Pending));
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
        for (channel, state) in [(Channel::Email, &mut email_state), (Channel::Sms, &mut sms_state)] {
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
        crate::stats::steps::unsubscribed(&txn, id, channel.as_str(), now.date_naive()).await?;
    }
    txn.commit().await?;
    get(db, id).await
}

async fn apply_tags(
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

async fn apply_lists(
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

async fn leave_all_lists(txn: &DatabaseTransaction, id: Uuid, now: DateTime<Utc>) -> Result<()> {
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
