//! Growing the second channel: the signed page every message may link (`{{ add_channel_url }}`)
//! asks a subscriber reached on email only for a mobile number (text messages, WhatsApp), or one
//! reached by phone only for an email address, with its consent words and the usual
//! confirmation: the channel stays `pending` until a YES reply (SMS, WhatsApp) or a click on the
//! emailed link confirms it, recorded with the words the page showed.
//!
//! The page answers the same whether or not the address given belongs to someone else (it is
//! then left with its owner, and nothing is sent): no one learns whose number or address it is.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::audience::records;
use crate::core::error::Result;
use crate::core::values::{Channel, ChannelState, EmailAddress, PhoneNumber};
use crate::outbox::compose::{self, NewMessage};
use crate::store::Db;
use crate::store::entities::{signup_confirmation, subscriber, suppression};
use crate::workflow::templates::TemplateChecker;

use super::signup::{About, Settings, asked_lately, confirmation_message};

/// The confirmations of channels added here carry this in place of a landing page's slug (and
/// no list).
pub const PAGE: &str = crate::audience::reach::grow::ADD_CHANNEL_PAGE;
/// The timeline entry of a channel asked for on the page (pending its confirmation).
pub const CHANNEL_REQUESTED: &str = "channel_requested";

pub use crate::audience::reach::grow::{Ask, ask};

/// What the person typed and ticked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The number or address typed.
    pub address: String,
    /// The channels ticked: `sms` and/or `whatsapp` for a number, `email` for an address.
    pub channels: BTreeSet<Channel>,
    /// The consent words the page showed.
    pub consent_text: String,
    /// The page's language (the confirmation speaks it).
    pub lang: String,
}

/// Why a request was refused (shown on the page, nothing written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The number or address does not parse: the reason.
    Address(String),
    /// No box ticked.
    NoChannel,
}

/// What a request did: the channels now waiting for their confirmation (the same answer when
/// the address was someone else's and nothing was done).
pub async fn request(
    db: &Db,
    settings: &Settings,
    templates: &TemplateChecker,
    id: Uuid,
    input: &Request,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Vec<Channel>, Refused>> {
    let txn = db.begin_write().await?;
    let Some(person) = subscriber::Entity::find_by_id(id).one(&txn).await? else { return Ok(Ok(Vec::new())) };
    let Some(ask) = ask(&person) else { return Ok(Ok(Vec::new())) };
    let allowed: &[Channel] = match ask {
        Ask::Phone => &[Channel::Sms, Channel::Whatsapp],
        Ask::Email => &[Channel::Email],
    };
    let channels: Vec<Channel> = input.channels.iter().copied().filter(|c| allowed.contains(c)).collect();
    if channels.is_empty() {
        return Ok(Err(Refused::NoChannel));
    }
    let mut model = person.clone().into_active_model();
    let taken = match ask {
        Ask::Phone => {
            let phone = match PhoneNumber::parse(&input.address) {
                Ok(phone) => phone,
                Err(reason) => return Ok(Err(Refused::Address(reason.to_string()))),
            };
            let owner =
                subscriber::Entity::find().filter(subscriber::Column::Phone.eq(phone.as_str())).one(&txn).await?;
            model.phone = Set(Some(phone.as_str().to_owned()));
            owner.is_some_and(|o| o.id != id) || suppressed(&txn, Channel::Sms, phone.as_str()).await?
        }
        Ask::Email => {
            let email = match EmailAddress::parse(&input.address) {
                Ok(email) => email,
                Err(reason) => return Ok(Err(Refused::Address(reason.to_string()))),
            };
            let owner =
                subscriber::Entity::find().filter(subscriber::Column::EmailKey.eq(email.key())).one(&txn).await?;
            model.email = Set(Some(email.as_str().to_owned()));
            model.email_key = Set(Some(email.key().to_owned()));
            owner.is_some_and(|o| o.id != id) || suppressed(&txn, Channel::Email, email.key()).await?
        }
    };
    if taken {
        // Someone else's (or erased): left as it is, and the same answer.
        return Ok(Ok(channels));
    }
    for channel in &channels {
        model.set_state(*channel, ChannelState::Pending);
    }
    model.updated_at = Set(now);
    let person = model.update(&txn).await?;
    for channel in &channels {
        let throttled = asked_lately(&txn, id, *channel, now - settings.confirm_every).await?;
        let data = json!({"channel": channel, "via": PAGE, "throttled": throttled});
        records::event(id, CHANNEL_REQUESTED, data, now).insert(&txn).await?;
        if throttled {
            continue;
        }
        let confirmation = signup_confirmation::Model {
            id: Uuid::now_v7(),
            subscriber_id: id,
            list_id: Uuid::nil(),
            page: PAGE.to_owned(),
            page_version: "1".to_owned(),
            channel: channel.as_str().to_owned(),
            consent_text: Some(input.consent_text.clone()),
            created_at: now,
            expires_at: now + settings.confirm_ttl,
            confirmed_at: None,
        };
        let title = settings.business.name.clone();
        let about = About { slug: PAGE, title: &title, list: None };
        let draft = confirmation_message(settings, templates, &about, &person, &confirmation, &input.lang, now)?;
        let row = NewMessage::new(format!("confirm:{}", confirmation.id), id, draft).rows(now);
        confirmation.into_active_model().insert(&txn).await?;
        compose::insert(&txn, vec![row]).await?;
    }
    txn.commit().await?;
    Ok(Ok(channels))
}

/// Whether an address was erased (its hash kept so it is never written again).
async fn suppressed(txn: &sea_orm::DatabaseTransaction, channel: Channel, key: &str) -> Result<bool> {
    let hash = crate::core::values::suppression_hash(channel, key);
    Ok(suppression::Entity::find_by_id(hash).one(txn).await?.is_some())
}
