//! A landing-page signup: checked whole (nothing is written for an invalid submission), then
//! written in one transaction with its consent records, its timeline entry and, for a double
//! opt-in, the confirmation message in the outbox. Confirming (the email's link, or YES to the
//! text) is another transaction that confirms the membership and starts the list's workflows.
//!
//! What a visitor sees never depends on what was stored before: a new address, a pending one and
//! a subscribed one get the same answer (no enumeration), and a repeat of a confirmed signup
//! writes and sends nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::audience::lists;
use crate::audience::records::{self, ConsentOrigin, ConsentWording, trigger};
use crate::audience::subscribers::{Attribution, Profile, membership_row, new_subscriber_row};
use crate::core::error::Result;
use crate::core::links::{Purpose, Signer};
use crate::core::values::{
    Channel, ChannelState, ConsentMethod, EmailAddress, MembershipStatus, OutboxChannel, PhoneNumber, SubscriberStatus,
    normalize_text, stored,
};
use crate::outbox::compose::{self, Draft, NewMessage};
use crate::store::Db;
use crate::store::entities::{membership, page_count, signup_confirmation, subscriber};
use crate::workflow::page::{Field, Page};
use crate::workflow::templates::TemplateChecker;

/// Timeline entries of signups.
pub const SIGNED_UP: &str = "signed_up";
pub const SIGNUP_CONFIRMED: &str = "signup_confirmed";

/// The confirmation email's template (with an optional `.txt` sibling) and the text's.
pub const CONFIRM_EMAIL: &str = "confirm/email.html";
pub const CONFIRM_SMS: &str = "confirm/sms.txt";

/// A submission as posted: every field's text, the ticked consent boxes, where it came from.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub values: BTreeMap<String, String>,
    pub consents: BTreeSet<Channel>,
    pub attribution: Attribution,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The language the page was shown in: the new subscriber's, and the confirmation's.
    pub lang: String,
    /// The consent words the page showed (recorded as what the person agreed to).
    pub consent_text: String,
}

/// A submission that passed every check.
#[derive(Debug, Clone)]
pub struct Valid {
    profile: Profile,
    consents: BTreeSet<Channel>,
    ip: Option<String>,
    user_agent: Option<String>,
    lang: String,
    consent_text: String,
}

/// Why a form field (or `consent`, the boxes) was refused; [`Invalid::message`] says it in the
/// page's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    Required,
    /// Longer than this many characters.
    TooLong(usize),
    Email,
    /// Not a mobile number; `country_known`: the page has a default country, so the number may
    /// be typed without its country code.
    Phone {
        country_known: bool,
    },
    /// Characters that cannot be stored (control characters).
    Text,
    /// No box ticked.
    Consent,
    /// The email box ticked without an address.
    NeedEmail,
    /// The SMS box ticked without a number.
    NeedPhone,
    /// Neither an address nor a number.
    NeedAddress,
}

impl Invalid {
    /// What the form says next to the field (`label`: the field's label) in `words`' language.
    pub fn message(&self, label: &str, words: &BTreeMap<String, String>) -> String {
        let word = |key: &str| words.get(key).cloned().unwrap_or_else(|| key.to_owned());
        match self {
            Invalid::Required => word("error_required").replace("{field}", label),
            Invalid::TooLong(max) => {
                word("error_too_long").replace("{field}", label).replace("{max}", &max.to_string())
            }
            Invalid::Email => word("error_email"),
            Invalid::Phone { country_known: true } => word("error_phone"),
            Invalid::Phone { country_known: false } => word("error_phone_country"),
            Invalid::Text => word("error_text").replace("{field}", label),
            Invalid::Consent => word("error_consent"),
            Invalid::NeedEmail => word("error_need_email"),
            Invalid::NeedPhone => word("error_need_phone"),
            Invalid::NeedAddress => word("error_need_address"),
        }
    }
}

/// Checks a submission against its page; the errors are by form field (`consent` for the boxes).
pub fn validate(page: &Page, input: Submission) -> std::result::Result<Valid, BTreeMap<String, Invalid>> {
    let mut errors = BTreeMap::new();
    let mut profile =
        Profile { attribution: input.attribution, locale: Some(input.lang.clone()), ..Profile::default() };
    let mut attributes = Map::new();
    for field in &page.fields {
        let name = field.name();
        let raw = input.values.get(&name).map(|v| v.trim()).unwrap_or_default();
        if raw.is_empty() {
            if page.required.contains(field) {
                errors.insert(name, Invalid::Required);
            }
            continue;
        }
        if raw.chars().count() > field.max_chars() {
            errors.insert(name, Invalid::TooLong(field.max_chars()));
            continue;
        }
        match field {
            Field::Email => match EmailAddress::parse(raw) {
                Ok(email) => profile.email = Some(email),
                Err(_) => {
                    errors.insert(name, Invalid::Email);
                }
            },
            Field::Phone => match PhoneNumber::parse_in(raw, page.default_country.as_deref()) {
                Ok(phone) => profile.phone = Some(phone),
                Err(_) => {
                    errors.insert(name, Invalid::Phone { country_known: page.default_country.is_some() });
                }
            },
            Field::FirstName | Field::LastName | Field::Attribute(_) => match normalize_text(raw, field.max_chars()) {
                Ok(value) => match field {
                    Field::FirstName => profile.first_name = value,
                    Field::LastName => profile.last_name = value,
                    Field::Attribute(key) => {
                        if let Some(value) = value {
                            attributes.insert(key.clone(), Value::String(value));
                        }
                    }
                    _ => {}
                },
                Err(_) => {
                    errors.insert(name, Invalid::Text);
                }
            },
        }
    }
    profile.attributes = attributes;
    let consents: BTreeSet<Channel> = input.consents.into_iter().filter(|c| page.channels.contains(c)).collect();
    if page.channels.is_empty() {
        // A page without boxes subscribes to what its fields give an address for.
    } else if consents.is_empty() && !errors.contains_key("email") && !errors.contains_key("phone") {
        errors.insert("consent".into(), Invalid::Consent);
    }
    if consents.contains(&Channel::Email) && profile.email.is_none() && !errors.contains_key("email") {
        errors.insert("email".into(), Invalid::NeedEmail);
    }
    if (consents.contains(&Channel::Sms) || consents.contains(&Channel::Whatsapp))
        && profile.phone.is_none()
        && !errors.contains_key("phone")
    {
        errors.insert("phone".into(), Invalid::NeedPhone);
    }
    if profile.email.is_none() && profile.phone.is_none() && errors.is_empty() {
        let field = if page.asks(&Field::Email) { "email" } else { "phone" };
        errors.insert(field.into(), Invalid::NeedAddress);
    }
    let consents = if page.channels.is_empty() {
        let mut implied = BTreeSet::new();
        if profile.email.is_some() {
            implied.insert(Channel::Email);
        }
        if profile.phone.is_some() {
            implied.insert(Channel::Sms);
        }
        implied
    } else {
        consents
    };
    if errors.is_empty() {
        Ok(Valid {
            profile,
            consents,
            ip: input.ip,
            user_agent: input.user_agent,
            lang: input.lang,
            consent_text: input.consent_text,
        })
    } else {
        Err(errors)
    }
}

/// What a signup and its confirmation need besides the database.
#[derive(Clone)]
pub struct Settings {
    pub signer: Signer,
    pub base_url: url::Url,
    /// The business the confirmation names (`business` in its templates).
    pub business: crate::core::brand::Business,
    /// How long a confirmation link works.
    pub confirm_ttl: Duration,
    /// At most one confirmation message per address in this long.
    pub confirm_every: Duration,
}

/// What a signup did (the visitor is told the same in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written: subscribed (single opt-in) or pending with a confirmation queued.
    Written { confirmations: usize },
    /// Pending, but a confirmation went to this address within `confirm_every`: none sent.
    Throttled,
    /// The person was already subscribed to all of it: nothing written, nothing sent.
    Unchanged,
}

/// Writes a valid signup for `page`.
pub async fn submit(
    db: &Db,
    settings: &Settings,
    templates: &TemplateChecker,
    now: DateTime<Utc>,
    page: &Page,
    valid: Valid,
) -> Result<Outcome> {
    let version = page.version();
    let txn = db.begin_write().await?;
    let list = lists::find(&txn, &page.list).await?;
    let profile = &valid.profile;
    let mut existing = None;
    if let Some(email) = &profile.email {
        existing = subscriber::Entity::find().filter(subscriber::Column::EmailKey.eq(email.key())).one(&txn).await?;
    }
    if existing.is_none()
        && let Some(phone) = &profile.phone
    {
        existing = subscriber::Entity::find().filter(subscriber::Column::Phone.eq(phone.as_str())).one(&txn).await?;
    }
    // A phone that is someone else's stays theirs: this signup gets no texts.
    let mut consents = valid.consents.clone();
    let mut phone = profile.phone.clone();
    if let Some(p) = &phone {
        let owner = subscriber::Entity::find().filter(subscriber::Column::Phone.eq(p.as_str())).one(&txn).await?;
        if owner.is_some_and(|o| existing.as_ref().is_none_or(|e| e.id != o.id)) {
            phone = None;
            consents.remove(&Channel::Sms);
            consents.remove(&Channel::Whatsapp);
        }
    }
    let member = match &existing {
        Some(s) => membership::Entity::find_by_id((s.id, list.id)).one(&txn).await?,
        None => None,
    };
    let state_of = |s: &subscriber::Model, channel: Channel| stored(s.state_of(channel), ChannelState::None);
    let confirmed_member = member.as_ref().is_some_and(|m| m.status == MembershipStatus::Confirmed.as_str());
    if let Some(s) = &existing
        && confirmed_member
        && consents.iter().all(|c| state_of(s, *c) == ChannelState::Subscribed)
    {
        return Ok(Outcome::Unchanged);
    }
    let granted = if page.double_opt_in { ChannelState::Pending } else { ChannelState::Subscribed };
    let origin = ConsentOrigin {
        method: ConsentMethod::Form,
        source: Some(format!("page {}", page.slug)),
        ip: valid.ip.clone(),
        user_agent: valid.user_agent.clone(),
    };
    let wording = ConsentWording {
        text: Some(valid.consent_text.clone()),
        version: Some(version.clone()),
        page: Some((page.slug.clone(), version.clone())),
    };
    // The channels whose state this signup moves (a subscribed one stays as it is).
    let (id, changing): (Uuid, Vec<Channel>) = match existing.clone() {
        None => {
            let id = Uuid::now_v7();
            let state = |c: Channel| if consents.contains(&c) { granted } else { ChannelState::None };
            let mut profile = profile.clone();
            profile.phone = phone.clone();
            let row = new_subscriber_row(id, &profile, SubscriberStatus::Active, state, now, now);
            subscriber::Entity::insert(row).exec_without_returning(&txn).await?;
            (id, consents.iter().copied().collect())
        }
        Some(current) => {
            let changing: Vec<Channel> =
                consents.iter().copied().filter(|c| state_of(&current, *c) != ChannelState::Subscribed).collect();
            let id = current.id;
            let mut model = current.clone().into_active_model();
            // Only empty fields are filled: a public form never overwrites what is known.
            if current.first_name.is_none() && profile.first_name.is_some() {
                model.first_name = Set(profile.first_name.clone());
            }
            if current.last_name.is_none() && profile.last_name.is_some() {
                model.last_name = Set(profile.last_name.clone());
            }
            if current.email.is_none()
                && let Some(email) = &profile.email
            {
                model.email = Set(Some(email.as_str().to_owned()));
                model.email_key = Set(Some(email.key().to_owned()));
            }
            if current.phone.is_none()
                && let Some(p) = &phone
            {
                model.phone = Set(Some(p.as_str().to_owned()));
            }
            if !profile.attributes.is_empty() {
                let mut attributes = current.attributes.as_object().cloned().unwrap_or_default();
                for (key, value) in &profile.attributes {
                    attributes.entry(key.clone()).or_insert_with(|| value.clone());
                }
                model.attributes = Set(Value::Object(attributes));
            }
            if current.source.is_none() && current.referrer.is_none() && current.click_id.is_none() {
                let a = &profile.attribution;
                model.source = Set(a.source.clone());
                model.medium = Set(a.medium.clone());
                model.campaign = Set(a.campaign.clone());
                model.referrer = Set(a.referrer.clone());
                model.landing_page = Set(a.landing_page.clone());
                model.content = Set(a.content.clone());
                model.term = Set(a.term.clone());
                model.click_id = Set(a.click_id.clone());
            }
            for channel in &changing {
                model.set_state(*channel, granted);
            }
            if !page.double_opt_in && !changing.is_empty() {
                model.status = Set(SubscriberStatus::Active.as_str().to_owned());
            }
            model.updated_at = Set(now);
            model.update(&txn).await?;
            (id, changing)
        }
    };
    for channel in &changing {
        records::consent(id, *channel, true, &origin, &wording, now).insert(&txn).await?;
    }
    let joins = !confirmed_member;
    let membership_status = if page.double_opt_in { MembershipStatus::Pending } else { MembershipStatus::Confirmed };
    if joins {
        match member {
            None => {
                membership::Entity::insert(membership_row(id, list.id, membership_status, now))
                    .exec_without_returning(&txn)
                    .await?;
            }
            Some(m) => {
                let mut m = m.into_active_model();
                m.status = Set(membership_status.as_str().to_owned());
                m.updated_at = Set(now);
                m.unsubscribed_at = Set(None);
                if membership_status == MembershipStatus::Confirmed {
                    m.confirmed_at = Set(Some(now));
                }
                m.update(&txn).await?;
            }
        }
        if membership_status == MembershipStatus::Confirmed {
            records::trigger(id, trigger::SUBSCRIBED, &list.slug, json!({"page": page.slug}), now).insert(&txn).await?;
            // Single opt-in: confirmed at once.
            let a = &profile.attribution;
            let from =
                crate::rollups::funnel::Source::of(a.source.as_deref(), a.medium.as_deref(), a.campaign.as_deref());
            crate::rollups::funnel::bump(
                &txn,
                now.date_naive(),
                &page.slug,
                &from,
                crate::rollups::funnel::Count::Confirmed,
            )
            .await?;
        }
    }
    let data = json!({
        "page": page.slug, "page_version": version, "list": list.slug,
        "channels": consents, "double_opt_in": page.double_opt_in,
        "attribution": profile.attribution,
    });
    records::event(id, SIGNED_UP, data, now).insert(&txn).await?;
    if !changing.is_empty() || joins {
        records::trigger(id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
    }
    let mut outcome = Outcome::Written { confirmations: 0 };
    if page.double_opt_in {
        // Confirm each channel this signup left pending, the membership with the first.
        let person = subscriber::Entity::find_by_id(id).one(&txn).await?;
        let pending: Vec<Channel> = match &person {
            Some(p) => consents.iter().copied().filter(|c| state_of(p, *c) == ChannelState::Pending).collect(),
            None => Vec::new(),
        };
        let pending = if pending.is_empty() && joins { consents.iter().copied().take(1).collect() } else { pending };
        let mut sent = 0;
        let mut throttled = false;
        for channel in pending {
            if asked_lately(&txn, id, channel, now - settings.confirm_every).await? {
                throttled = true;
                continue;
            }
            let Some(person) = &person else { continue };
            let confirmation = signup_confirmation::Model {
                id: Uuid::now_v7(),
                subscriber_id: id,
                list_id: list.id,
                page: page.slug.clone(),
                page_version: version.clone(),
                channel: channel.as_str().to_owned(),
                consent_text: Some(valid.consent_text.clone()),
                created_at: now,
                expires_at: now + settings.confirm_ttl,
                confirmed_at: None,
            };
            let about = About { slug: &page.slug, title: &page.title, list: Some(&page.list) };
            let draft = confirmation_message(settings, templates, &about, person, &confirmation, &valid.lang, now)?;
            let key = format!("confirm:{}", confirmation.id);
            let row = NewMessage::new(key, id, draft).rows(now);
            confirmation.into_active_model().insert(&txn).await?;
            compose::insert(&txn, vec![row]).await?;
            sent += 1;
        }
        outcome = if sent == 0 && throttled { Outcome::Throttled } else { Outcome::Written { confirmations: sent } };
    }
    txn.commit().await?;
    Ok(outcome)
}

/// Whether a confirmation went to this subscriber on `channel` after `since` (`confirm_every`:
/// one confirmation per address and channel in that long, against subscription bombing).
pub(crate) async fn asked_lately(
    txn: &DatabaseTransaction,
    id: Uuid,
    channel: Channel,
    since: DateTime<Utc>,
) -> Result<bool> {
    let recent = signup_confirmation::Entity::find()
        .filter(signup_confirmation::Column::SubscriberId.eq(id))
        .filter(signup_confirmation::Column::Channel.eq(channel.as_str()))
        .filter(signup_confirmation::Column::CreatedAt.gt(since))
        .one(txn)
        .await?;
    Ok(recent.is_some())
}

/// The confirmation URL in the email: the token names the confirmation row (its expiry is checked
/// against the row, so an expired link can still say "already confirmed").
fn confirm_url(settings: &Settings, confirmation: Uuid, now: DateTime<Utc>) -> String {
    settings.signer.url(&settings.base_url, "c", Purpose::Confirm, confirmation, now + Duration::days(3650))
}

/// What a confirmation is about: a landing page's signup (its list), or a channel added.
pub(crate) struct About<'a> {
    pub slug: &'a str,
    pub title: &'a str,
    /// The list, for `List-Id`.
    pub list: Option<&'a str>,
}

/// The confirmation email (a link) or text (reply YES), rendered from `templates/confirm/`.
pub(crate) fn confirmation_message(
    settings: &Settings,
    templates: &TemplateChecker,
    page: &About<'_>,
    person: &subscriber::Model,
    confirmation: &signup_confirmation::Model,
    lang: &str,
    now: DateTime<Utc>,
) -> Result<Draft> {
    let words = templates.translations().words(lang);
    let context = json!({
        "subscriber": {"first_name": person.first_name, "last_name": person.last_name, "email": person.email},
        "page": {"slug": page.slug, "title": page.title},
        "confirm_url": confirm_url(settings, confirmation.id, now),
        "expires_at": confirmation.expires_at,
        "business": settings.business,
        "lang": lang,
        "t": &*words,
    });
    let context = tera::Context::from_serialize(&context).map_err(|e| anyhow::anyhow!("confirmation context: {e}"))?;
    let tera = templates.tera();
    let render = |name: &str| tera.render(name, &context).map_err(|e| anyhow::anyhow!("template {name}: {e}"));
    let channel = stored(&confirmation.channel, Channel::Email);
    Ok(match channel {
        Channel::Email => {
            let html = render(CONFIRM_EMAIL)?;
            let text_name = CONFIRM_EMAIL.replace(".html", ".txt");
            let text = if tera.contains_template(&text_name) {
                render(&text_name)?
            } else {
                crate::core::text::html_to_text(&html)
            };
            Draft {
                channel: OutboxChannel::Email,
                recipient: person.email.clone().unwrap_or_default(),
                subject: Some(
                    words
                        .get("confirm_subject")
                        .map_or_else(|| page.title.to_owned(), |w| w.replace("{title}", page.title)),
                ),
                html: Some(html),
                text: text.trim().to_owned(),
                // A confirmation is about the page's list: mail clients and filters see which.
                list_slug: page.list.map(str::to_owned),
            }
        }
        // A text message, or the same words on WhatsApp.
        Channel::Sms | Channel::Whatsapp => Draft {
            channel: channel.into(),
            recipient: person.phone.clone().unwrap_or_default(),
            subject: None,
            html: None,
            text: render(CONFIRM_SMS)?.trim().to_owned(),
            list_slug: None,
        },
    })
}

/// What following a confirmation link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Confirmed now; the page's slug.
    Now(String),
    /// Confirmed before (a second click); the page's slug.
    Already(String),
    /// Not confirmed in time: sign up again.
    Expired(String),
    /// Not a link of ours.
    Invalid,
}

/// Follows a confirmation link.
pub async fn confirm_link(
    db: &Db,
    signer: &Signer,
    now: DateTime<Utc>,
    token: &str,
    ip: Option<String>,
    user_agent: Option<String>,
) -> Result<Confirmed> {
    let Ok(id) = signer.verify(Purpose::Confirm, token, now) else { return Ok(Confirmed::Invalid) };
    let txn = db.begin_write().await?;
    let Some(row) = signup_confirmation::Entity::find_by_id(id).one(&txn).await? else {
        return Ok(Confirmed::Invalid);
    };
    if row.confirmed_at.is_some() {
        return Ok(Confirmed::Already(row.page));
    }
    if now > row.expires_at {
        return Ok(Confirmed::Expired(row.page));
    }
    let origin = ConsentOrigin {
        method: ConsentMethod::DoubleOptIn,
        source: Some(format!("confirmation link ({})", row.page)),
        ip,
        user_agent,
    };
    let page = row.page.clone();
    confirm(&txn, now, vec![row], &origin).await?;
    txn.commit().await?;
    Ok(Confirmed::Now(page))
}

/// Confirms the pending signups on `channel` (SMS or WhatsApp) of a subscriber who replied YES
/// there; returns whether there was one (otherwise YES only confirms a pending consent of that
/// channel, as before pages existed).
pub async fn confirm_by_reply(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    subscriber_id: Uuid,
    channel: Channel,
    origin: &ConsentOrigin,
) -> Result<bool> {
    let rows = signup_confirmation::Entity::find()
        .filter(signup_confirmation::Column::SubscriberId.eq(subscriber_id))
        .filter(signup_confirmation::Column::Channel.eq(channel.as_str()))
        .filter(signup_confirmation::Column::ConfirmedAt.is_null())
        .filter(signup_confirmation::Column::ExpiresAt.gt(now))
        .all(txn)
        .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    confirm(txn, now, rows, origin).await?;
    Ok(true)
}

/// Confirms signups: the rows (and any other open ones for the same list and channel), the
/// channel (pending → subscribed, with a consent record of the page's words), the membership
/// (→ confirmed, starting the list's workflows).
async fn confirm(
    txn: &DatabaseTransaction,
    now: DateTime<Utc>,
    rows: Vec<signup_confirmation::Model>,
    origin: &ConsentOrigin,
) -> Result<()> {
    for row in rows {
        let channel = stored(&row.channel, Channel::Email);
        signup_confirmation::Entity::update_many()
            .col_expr(signup_confirmation::Column::ConfirmedAt, sea_orm::sea_query::Expr::value(now))
            .filter(signup_confirmation::Column::SubscriberId.eq(row.subscriber_id))
            .filter(signup_confirmation::Column::ListId.eq(row.list_id))
            .filter(signup_confirmation::Column::Channel.eq(row.channel.as_str()))
            .filter(signup_confirmation::Column::ConfirmedAt.is_null())
            .exec(txn)
            .await?;
        let Some(person) = subscriber::Entity::find_by_id(row.subscriber_id).one(txn).await? else { continue };
        let source = crate::rollups::funnel::source_label(person.source.as_deref());
        let from = crate::rollups::funnel::Source::of(
            person.source.as_deref(),
            person.medium.as_deref(),
            person.campaign.as_deref(),
        );
        let state = stored(person.state_of(channel), ChannelState::None);
        // On exactly one other channel: confirming this one makes them multi-channel.
        let others = Channel::ALL
            .iter()
            .filter(|c| **c != channel && stored(person.state_of(**c), ChannelState::None) == ChannelState::Subscribed)
            .count();
        let first_page = crate::rollups::funnel::first_touch_page(person.landing_page.as_deref());
        if state == ChannelState::Pending {
            if let (1, Some(first_page)) = (others, &first_page) {
                let second = crate::rollups::funnel::Count::SecondChannel;
                crate::rollups::funnel::bump(txn, now.date_naive(), first_page, &from, second).await?;
            }
            let wording = ConsentWording {
                text: row.consent_text.clone(),
                version: Some(row.page_version.clone()),
                page: Some((row.page.clone(), row.page_version.clone())),
            };
            crate::audience::subscribers::change_channel_with(
                txn,
                now,
                person,
                channel,
                ChannelState::Subscribed,
                origin,
                &wording,
            )
            .await?;
        }
        let member = membership::Entity::find_by_id((row.subscriber_id, row.list_id)).one(txn).await?;
        let list = crate::store::entities::list::Entity::find_by_id(row.list_id).one(txn).await?;
        if let (Some(m), Some(list)) = (member, list)
            && m.status != MembershipStatus::Confirmed.as_str()
        {
            let mut m = m.into_active_model();
            m.status = Set(MembershipStatus::Confirmed.as_str().to_owned());
            m.confirmed_at = Set(Some(now));
            m.unsubscribed_at = Set(None);
            m.updated_at = Set(now);
            m.update(txn).await?;
            records::trigger(row.subscriber_id, trigger::SUBSCRIBED, &list.slug, json!({"page": row.page}), now)
                .insert(txn)
                .await?;
            // The funnel's "confirmed": the signup's list joined, once however many channels.
            crate::core::metrics::inc("ownlist_signup_confirmations_total", &[("page", &row.page), ("source", source)]);
            crate::rollups::funnel::bump(
                txn,
                now.date_naive(),
                &row.page,
                &from,
                crate::rollups::funnel::Count::Confirmed,
            )
            .await?;
        }
        let data =
            json!({"page": row.page, "page_version": row.page_version, "channel": row.channel, "by": origin.source});
        records::event(row.subscriber_id, SIGNUP_CONFIRMED, data, now).insert(txn).await?;
    }
    Ok(())
}

/// Counts something that happened on a page today (a rejected bot, say).
pub async fn count(db: &Db, page: &str, what: &str, now: DateTime<Utc>) -> Result<()> {
    use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
    let row = page_count::ActiveModel {
        page: Set(page.to_owned()),
        day: Set(now.format("%Y-%m-%d").to_string()),
        kind: Set(what.to_owned()),
        n: Set(1),
    };
    let txn = db.begin_write().await?;
    page_count::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([page_count::Column::Page, page_count::Column::Day, page_count::Column::Kind])
                .value(page_count::Column::N, Expr::col((page_count::Entity, page_count::Column::N)).add(Expr::val(1)))
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}
