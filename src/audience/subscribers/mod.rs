//! Subscribers: creating, reading, changing and erasing one person, with their timeline.
//!
//! Every change is one transaction that also appends what happened to the timeline, so a
//! subscriber is never half-written and every state has a recorded reason.

mod channels;
mod create;
mod erase;
mod input;
mod query;
mod update;

pub use channels::*;
pub use create::*;
pub use erase::*;
pub use input::*;
pub use query::*;
pub use update::*;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::records::ConsentWording;
use crate::core::error::FieldError;
use crate::core::values::{
    Channel, ChannelState, ConsentMethod, EmailAddress, MembershipStatus, PhoneNumber, SubscriberStatus,
};

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
    /// WhatsApp messages to the phone number: a consent of its own, never implied by SMS.
    #[serde(default)]
    pub whatsapp: bool,
    /// The exact consent text the person agreed to (stored verbatim with its hash).
    pub text: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    /// An email or a phone (or both) is required.
    #[schema(schema_with = crate::core::values::schema::email)]
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
    #[schema(schema_with = crate::core::values::schema::slugs)]
    pub lists: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = crate::core::values::schema::tags)]
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
    #[schema(schema_with = crate::core::values::schema::email)]
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
    #[schema(schema_with = crate::core::values::schema::tags_or_null)]
    pub tags: Option<Vec<String>>,
    /// The complete set of lists: new ones are joined (confirmed), missing ones left.
    #[schema(schema_with = crate::core::values::schema::slugs_or_null)]
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
    pub whatsapp: Option<bool>,
    pub text: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelStates {
    pub email: ChannelState,
    pub sms: ChannelState,
    pub whatsapp: ChannelState,
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
    /// Whose email channel is in this state (`subscribed`, `pending`, `none`, …).
    pub email: Option<crate::core::values::ChannelState>,
    /// Whose SMS channel is in this state.
    pub sms: Option<crate::core::values::ChannelState>,
    /// Who came from this source (their first touch's `utm_source` or referrer), exactly.
    #[param(max_length = 100)]
    pub source: Option<String>,
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

struct ValidNew {
    profile: Profile,
    lists: Vec<String>,
    tags: BTreeSet<String>,
    consent: ConsentInput,
    wording: ConsentWording,
}
