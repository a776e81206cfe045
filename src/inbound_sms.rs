//! Inbound SMS: what a subscriber's text does.
//!
//! The whole message (ignoring case, spaces and trailing punctuation) is read as a keyword:
//! - STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT withdraw SMS consent at once,
//!   cancel the marketing SMS still waiting for them, and send one confirmation;
//! - START, UNSTOP restore SMS consent withdrawn that way;
//! - HELP answers with the configured contact text;
//! - YES confirms a pending SMS opt-in.
//!
//! Anything else is kept in the timeline (`sms_received`). Replies go through the outbox like
//! every message; they are not marketing, so the SMS sending hours do not hold them. A provider
//! that delivers the same inbound message twice gets one reply: the reply's idempotency key is
//! the inbound message's id.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::audience::records::{self, ConsentOrigin, kind};
use crate::audience::subscribers::change_channel;
use crate::core::error::Result;
use crate::core::values::{Channel, ChannelState, ConsentMethod};
use crate::core::values::{OutboxChannel, OutboxStatus};
use crate::outbox::compose::{self, Draft, NewMessage};
use crate::store::Db;
use crate::store::entities::{outbox, subscriber};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Stop,
    Start,
    Help,
    Yes,
}

impl Keyword {
    /// The keyword a message is, if it is one.
    pub fn of(body: &str) -> Option<Self> {
        let word = body.trim().trim_end_matches(['.', '!', '?']).trim().to_ascii_uppercase();
        match word.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE" | "OPTOUT" => Some(Self::Stop),
            "START" | "UNSTOP" => Some(Self::Start),
            "HELP" => Some(Self::Help),
            "YES" => Some(Self::Yes),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Help => "help",
            Self::Yes => "yes",
        }
    }
}

/// An SMS a subscriber sent.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The provider's id for it (Twilio's `MessageSid`).
    pub id: String,
    /// The sender's number, E.164.
    pub from: String,
    pub body: String,
}

/// What came of an inbound message.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    pub subscriber: Option<Uuid>,
    pub keyword: Option<Keyword>,
    /// The reply queued, if any.
    pub reply: Option<String>,
}

pub const STOPPED: &str = "You are unsubscribed and will get no more texts from us. Reply START to resubscribe.";
pub const STARTED: &str = "You are subscribed again. Reply STOP to unsubscribe, HELP for help.";
pub const CONFIRMED: &str = "Thanks, you are subscribed. Reply STOP to unsubscribe, HELP for help.";

/// Applies an inbound SMS; `help` is the answer to HELP.
pub async fn receive(db: &Db, now: DateTime<Utc>, inbound: &Inbound, help: &str) -> Result<Received> {
    let keyword = Keyword::of(&inbound.body);
    let txn = db.begin_write().await?;
    let found = subscriber::Entity::find().filter(subscriber::Column::Phone.eq(inbound.from.trim())).one(&txn).await?;
    let Some(person) = found else {
        return Ok(Received { subscriber: None, keyword, reply: None });
    };
    let id = person.id;
    let key = format!("sms-reply:{}", inbound.id);
    if outbox::Entity::find().filter(outbox::Column::IdempotencyKey.eq(&key)).one(&txn).await?.is_some() {
        return Ok(Received { subscriber: Some(id), keyword, reply: None }); // Delivered twice: done already.
    }
    let data = json!({"body": inbound.body, "keyword": keyword.map(Keyword::as_str), "provider_ref": inbound.id});
    records::event(id, kind::SMS_RECEIVED, data, now).insert(&txn).await?;
    let origin = ConsentOrigin {
        method: ConsentMethod::SmsKeyword,
        source: Some(format!("sms: {}", inbound.body.trim())),
        ip: None,
        user_agent: None,
    };
    let phone = person.phone.clone().unwrap_or_default();
    let reply = match keyword {
        Some(Keyword::Stop) => {
            let changed = change_channel(&txn, now, person, Channel::Sms, ChannelState::Unsubscribed, &origin).await?;
            // No marketing after STOP, not even what was already waiting.
            outbox::Entity::update_many()
                .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Cancelled))
                .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                .filter(outbox::Column::SubscriberId.eq(id))
                .filter(outbox::Column::Channel.eq(OutboxChannel::Sms))
                .filter(outbox::Column::Status.eq(OutboxStatus::Queued))
                .filter(
                    sea_orm::Condition::any()
                        .add(outbox::Column::WorkflowId.is_not_null())
                        .add(outbox::Column::BroadcastId.is_not_null()),
                )
                .exec(&txn)
                .await?;
            changed.then_some(STOPPED)
        }
        Some(Keyword::Start) => {
            let unsubscribed = person.sms_state == ChannelState::Unsubscribed.as_str();
            let changed = unsubscribed
                && change_channel(&txn, now, person, Channel::Sms, ChannelState::Subscribed, &origin).await?;
            changed.then_some(STARTED)
        }
        Some(Keyword::Yes) => {
            let pending = person.sms_state == ChannelState::Pending.as_str();
            // A landing page's SMS double opt-in: confirms its list too (and starts its workflows).
            let changed = pending
                && (crate::pages::signup::confirm_by_sms(&txn, now, id, &origin).await?
                    || change_channel(&txn, now, person, Channel::Sms, ChannelState::Subscribed, &origin).await?);
            changed.then_some(CONFIRMED)
        }
        Some(Keyword::Help) => Some(help),
        None => None,
    };
    if let Some(text) = reply {
        let draft = Draft {
            channel: OutboxChannel::Sms,
            recipient: phone,
            subject: None,
            html: None,
            text: text.to_owned(),
            list_slug: None,
        };
        let row = NewMessage::new(key, id, draft).rows(now);
        compose::insert(&txn, vec![row]).await?;
    }
    txn.commit().await?;
    Ok(Received { subscriber: Some(id), keyword, reply: reply.map(str::to_owned) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_messages_in_any_case() {
        for stop in ["STOP", "stop", " Stop. ", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "REVOKE", "optout!"]
        {
            assert_eq!(Keyword::of(stop), Some(Keyword::Stop), "{stop}");
        }
        assert_eq!(Keyword::of("start"), Some(Keyword::Start));
        assert_eq!(Keyword::of("UNSTOP"), Some(Keyword::Start));
        assert_eq!(Keyword::of("help?"), Some(Keyword::Help));
        assert_eq!(Keyword::of("Yes"), Some(Keyword::Yes));
        assert_eq!(Keyword::of("please stop texting"), None, "only the whole message is a keyword");
        assert_eq!(Keyword::of("yes please"), None);
    }
}
