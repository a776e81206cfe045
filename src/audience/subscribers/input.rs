//! A new subscriber checked before anything is written: fields, attributes, suppression, uniqueness.

use super::*;
use crate::audience::records::ConsentWording;
use crate::core::error::{Error, FieldError, Reason, Result, reason};
use crate::core::values::{
    Channel, ChannelState, EmailAddress, MAX_ATTRIBUTES_BYTES, PhoneNumber, normalize_tag, normalize_text,
    suppression_hash, validate_attribute_key, validate_locale, validate_timezone,
};
use crate::store::entities::{subscriber, suppression};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Map, Value};
use uuid::Uuid;

impl Checker {
    pub fn check<T>(&mut self, field: &str, result: std::result::Result<T, impl Into<Reason>>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.errors.push(FieldError::new(field, reason.into()));
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
            .filter_map(|s| self.check(field, crate::core::values::validate_slug(s).map(|()| s.clone())))
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

pub(super) fn attributes_size_ok(attributes: &Map<String, Value>) -> std::result::Result<(), Reason> {
    let size = serde_json::to_vec(attributes).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_ATTRIBUTES_BYTES {
        Err(reason!("take {size} bytes as JSON; the limit is {MAX_ATTRIBUTES_BYTES}"))
    } else {
        Ok(())
    }
}

pub(super) fn validate_new(input: NewSubscriber) -> Result<ValidNew> {
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
    if input.consent.whatsapp && input.phone.is_none() {
        c.errors.push(FieldError::new("consent.whatsapp", "WhatsApp consent needs a phone number"));
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
pub(super) async fn ensure_unique(
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

pub(super) fn duplicate(field: &'static str, id: Uuid) -> Error {
    Error::Conflict {
        code: "subscriber_exists",
        detail: format!("a subscriber with this {field} already exists: {id}"),
        existing_id: Some(id),
        field: Some(field),
    }
}

/// The initial state of a channel: subscribed with consent, `none` without (or without address).
pub(super) fn initial_state(has_address: bool, consented: bool) -> ChannelState {
    match (has_address, consented) {
        (true, true) => ChannelState::Subscribed,
        _ => ChannelState::None,
    }
}
