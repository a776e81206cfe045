//! Builders for the append-only records: timeline events and consent records.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use serde_json::Value;
use uuid::Uuid;

use crate::core::values::{Channel, ConsentMethod, sha256_hex};
use crate::store::entities::{consent, event, pending_trigger};

/// What can happen to a subscriber, as written in the timeline.
pub mod kind {
    pub const SUBSCRIBED: &str = "subscribed";
    pub const IMPORTED: &str = "imported";
    pub const UPDATED: &str = "updated";
    pub const TAG_ADDED: &str = "tag_added";
    pub const TAG_REMOVED: &str = "tag_removed";
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    pub const BOUNCED: &str = "bounced";
    pub const SOFT_BOUNCE: &str = "soft_bounce";
    /// An email's open pixel loaded (or a link in it followed first): once per message.
    pub const EMAIL_OPENED: &str = "email_opened";
    /// A tracked link in an email followed: every time.
    pub const EMAIL_CLICKED: &str = "email_clicked";
    /// A text from the subscriber (a keyword or anything else).
    pub const SMS_RECEIVED: &str = "sms_received";
    /// The SMS provider reported a message delivered to the handset.
    pub const SMS_DELIVERED: &str = "sms_delivered";
    /// The first goal the subscriber reached (a workflow's `exit_when`, or their landing page's
    /// goal event): once in their life, as the funnel's last stage counts it.
    pub const GOAL_REACHED: &str = "goal_reached";
    pub const CONSENT_GRANTED: &str = "consent_granted";
    pub const CONSENT_REVOKED: &str = "consent_revoked";
    pub const ERASED: &str = "erased";
}

pub fn event(subscriber_id: Uuid, kind: &str, data: Value, at: DateTime<Utc>) -> event::ActiveModel {
    event::ActiveModel {
        id: Set(Uuid::now_v7()),
        subscriber_id: Set(subscriber_id),
        kind: Set(kind.to_owned()),
        data: Set(data),
        created_at: Set(at),
    }
}

/// The words shown to the person when they consented, with a version, as recorded proof.
#[derive(Debug, Clone, Default)]
pub struct ConsentWording {
    pub text: Option<String>,
    pub version: Option<String>,
    /// The landing page (slug and version) the words were shown on.
    pub page: Option<(String, String)>,
}

/// Where a consent came from: how, through what, and the request's fingerprint when known.
#[derive(Debug, Clone)]
pub struct ConsentOrigin {
    pub method: ConsentMethod,
    pub source: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub fn consent(
    subscriber_id: Uuid,
    channel: Channel,
    granted: bool,
    origin: &ConsentOrigin,
    wording: &ConsentWording,
    at: DateTime<Utc>,
) -> consent::ActiveModel {
    consent::ActiveModel {
        id: Set(Uuid::now_v7()),
        subscriber_id: Set(subscriber_id),
        channel: Set(channel.as_str().to_owned()),
        granted: Set(granted),
        method: Set(origin.method.as_str().to_owned()),
        text_hash: Set(wording.text.as_deref().map(sha256_hex)),
        consent_text: Set(wording.text.clone()),
        text_version: Set(wording.version.clone()),
        source: Set(origin.source.clone()),
        ip: Set(origin.ip.clone()),
        user_agent: Set(origin.user_agent.clone()),
        page: Set(wording.page.as_ref().map(|(slug, _)| slug.clone())),
        page_version: Set(wording.page.as_ref().map(|(_, version)| version.clone())),
        created_at: Set(at),
    }
}

/// What can start a workflow, as queued for the engine.
pub mod trigger {
    pub const SUBSCRIBED: &str = "subscribed";
    pub const TAG_ADDED: &str = "tag_added";
    pub const EVENT: &str = "event";
    /// Profile, attributes or consent changed: only re-checks workflow goals.
    pub const CHANGED: &str = "changed";
    /// The sunset rule reached them: the engine asks once whether they still want email.
    pub const SUNSET: &str = "sunset";
}

/// Queues something that may start workflows; written in the same transaction as what happened,
/// so the engine sees every trigger exactly once.
pub fn trigger(
    subscriber_id: Uuid,
    kind: &str,
    name: &str,
    data: Value,
    at: DateTime<Utc>,
) -> pending_trigger::ActiveModel {
    pending_trigger::ActiveModel {
        id: Set(Uuid::now_v7()),
        subscriber_id: Set(subscriber_id),
        kind: Set(kind.to_owned()),
        name: Set(name.to_owned()),
        data: Set(data),
        created_at: Set(at),
    }
}
