//! Inbound SMS: what a subscriber's text does.
//!
//! The whole message (ignoring case, spaces and trailing punctuation) is read as a keyword:
//! - STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT withdraw SMS consent at once,
//!   cancel the marketing SMS still waiting for them, and send one confirmation;
//! - so does any message that asks to stop in words (consent may be revoked "by any reasonable
//!   means", FCC 2024 order, in force since April 2025): a stop word anywhere in it ("please
//!   stop texting me", "STOP!!"), or a phrase in one of the languages ownlist ships ("basta",
//!   "non scrivermi più", "stopp", "abmelden", "arrêtez", "darme de baja"). The confirmation
//!   speaks the language the request was made in, else the subscriber's;
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
use crate::core::values::{Channel, ChannelState, ConsentMethod, stored};
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
            _ => stop_language(body).map(|_| Self::Stop),
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

/// Words that, anywhere in a message, ask to stop, by language. Matched against the message's
/// words (lower case, accents dropped, punctuation and hyphens as spaces); a phrase matches as
/// consecutive words. English first: its words are also used in other languages' texts.
const STOP_PHRASES: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "stop",
            "stopall",
            "unsubscribe",
            "cancel",
            "end",
            "quit",
            "revoke",
            "optout",
            "opt out",
            "remove me",
            "take me off",
            "leave me alone",
            "no more texts",
            "no more messages",
            "dont text",
            "don't text",
            "do not text",
            "dont message",
            "don't message",
            "do not message",
            "do not contact",
            "don't contact",
            "dont contact",
        ],
    ),
    (
        "it",
        &[
            "basta",
            "disiscrivimi",
            "disiscrivere",
            "cancellami",
            "cancellatemi",
            "rimuovimi",
            "rimuovetemi",
            "non scrivermi",
            "non scrivetemi",
            "non mandatemi",
            "non inviatemi",
            "non voglio piu",
            "annulla iscrizione",
        ],
    ),
    (
        "de",
        &[
            "stopp",
            "abmelden",
            "abbestellen",
            "austragen",
            "abmeldung",
            "keine sms",
            "keine nachrichten",
            "nicht mehr schreiben",
            "aufhoren",
            "hort auf",
            "lasst mich in ruhe",
        ],
    ),
    (
        "fr",
        &[
            "arret",
            "arrete",
            "arretez",
            "desabonner",
            "desabonnez",
            "desinscrire",
            "desinscrivez",
            "desabonnement",
            "desinscription",
            "plus recevoir",
            "plus de sms",
            "laissez moi",
        ],
    ),
    (
        "es",
        &[
            "baja",
            "darme de baja",
            "dame de baja",
            "parar",
            "para ya",
            "no mas",
            "no me escriban",
            "no me envien",
            "cancelar",
            "eliminame",
            "borrame",
        ],
    ),
];

/// The language of the request to stop that `body` makes in words, if it makes one.
pub fn stop_language(body: &str) -> Option<&'static str> {
    // Lower case, accents dropped (é → e, ü → u, ß → ss), apostrophes kept inside words.
    let plain: String = body
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ä' | 'ã' => 'a',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'ö' | 'õ' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            '’' | '‘' => '\'',
            c if c.is_alphanumeric() || c == '\'' => c,
            _ => ' ',
        })
        .collect::<String>()
        .replace('ß', "ss");
    let words: Vec<&str> = plain.split_whitespace().map(|w| w.trim_matches('\'')).collect();
    let text = format!(" {} ", words.join(" "));
    STOP_PHRASES
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|phrase| text.contains(&format!(" {phrase} "))))
        .map(|(lang, _)| *lang)
}

/// What replies say: the answer to HELP, and the confirmations' words in every language.
pub struct Replies<'a> {
    pub help: &'a str,
    pub translations: &'a crate::core::i18n::Translations,
}

/// A text message a subscriber sent, by SMS or on WhatsApp.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The provider's id for it (Twilio's `MessageSid`).
    pub id: String,
    /// The sender's number, E.164.
    pub from: String,
    pub body: String,
    /// `Sms`, or `Whatsapp` (a `whatsapp:` sender): what its keywords act on and where the reply goes.
    pub channel: Channel,
}

/// What came of an inbound message.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    pub subscriber: Option<Uuid>,
    pub keyword: Option<Keyword>,
    /// The reply queued, if any.
    pub reply: Option<String>,
}

/// The keys of the confirmations' words (`templates/locales/*.toml`), after the channel's name
/// (`sms_stopped`, `whatsapp_stopped`).
pub const STOPPED: &str = "stopped";
pub const STARTED: &str = "started";
pub const CONFIRMED: &str = "confirmed";

/// The timeline entry of a WhatsApp message a subscriber sent.
pub const WHATSAPP_RECEIVED: &str = "whatsapp_received";

/// Applies an inbound SMS.
pub async fn receive(db: &Db, now: DateTime<Utc>, inbound: &Inbound, replies: &Replies<'_>) -> Result<Received> {
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
    let channel = inbound.channel;
    let data = json!({"body": inbound.body, "keyword": keyword.map(Keyword::as_str), "provider_ref": inbound.id});
    let received = if channel == Channel::Whatsapp { WHATSAPP_RECEIVED } else { kind::SMS_RECEIVED };
    records::event(id, received, data, now).insert(&txn).await?;
    let origin = ConsentOrigin {
        method: ConsentMethod::SmsKeyword,
        source: Some(format!("{channel}: {}", inbound.body.trim())),
        ip: None,
        user_agent: None,
    };
    let phone = person.phone.clone().unwrap_or_default();
    // The language of a request made in words other than English, else the subscriber's.
    let asked_in = stop_language(&inbound.body).filter(|lang| *lang != "en" && keyword == Some(Keyword::Stop));
    let lang = replies.translations.choose(&[asked_in, person.locale.as_deref()], None);
    let word = |key: &str| replies.translations.word(&lang, &format!("{channel}_{key}"));
    let state = stored(person.state_of(channel), ChannelState::None);
    let reply = match keyword {
        Some(Keyword::Stop) => {
            let changed = change_channel(&txn, now, person, channel, ChannelState::Unsubscribed, &origin).await?;
            // No marketing after STOP, not even what was already waiting.
            outbox::Entity::update_many()
                .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Cancelled))
                .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                .filter(outbox::Column::SubscriberId.eq(id))
                .filter(outbox::Column::Channel.eq(OutboxChannel::from(channel)))
                .filter(outbox::Column::Status.is_in([OutboxStatus::Queued, OutboxStatus::Standby]))
                .filter(
                    sea_orm::Condition::any()
                        .add(outbox::Column::WorkflowId.is_not_null())
                        .add(outbox::Column::BroadcastId.is_not_null()),
                )
                .exec(&txn)
                .await?;
            changed.then(|| word(STOPPED))
        }
        Some(Keyword::Start) => {
            let changed = state == ChannelState::Unsubscribed
                && change_channel(&txn, now, person, channel, ChannelState::Subscribed, &origin).await?;
            changed.then(|| word(STARTED))
        }
        Some(Keyword::Yes) => {
            // A landing page's double opt-in by text or WhatsApp: confirms its list too (and
            // starts its workflows).
            let changed = state == ChannelState::Pending
                && (crate::pages::signup::confirm_by_reply(&txn, now, id, channel, &origin).await?
                    || change_channel(&txn, now, person, channel, ChannelState::Subscribed, &origin).await?);
            changed.then(|| word(CONFIRMED))
        }
        Some(Keyword::Help) => Some(replies.help.to_owned()),
        None => None,
    };
    if let Some(text) = &reply {
        let draft = Draft {
            channel: channel.into(),
            recipient: phone,
            subject: None,
            html: None,
            text: text.clone(),
            list_slug: None,
        };
        let row = NewMessage::new(key, id, draft).rows(now);
        compose::insert(&txn, vec![row]).await?;
    }
    txn.commit().await?;
    Ok(Received { subscriber: Some(id), keyword, reply })
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
        assert_eq!(Keyword::of("yes please"), None);
        assert_eq!(Keyword::of("help me choose a size"), None, "HELP and YES are whole messages only");
    }

    #[test]
    fn a_request_to_stop_in_words_is_a_stop_in_the_language_it_was_made_in() {
        for (message, lang) in [
            ("please stop texting me", "en"),
            ("STOP!!!", "en"),
            ("Can you remove me from this list?", "en"),
            ("Don't text me again", "en"),
            ("Don’t message me anymore", "en"),
            ("opt-out", "en"),
            ("Basta!", "it"),
            ("basta messaggi per favore", "it"),
            ("Non scrivermi più", "it"),
            ("cancellami", "it"),
            ("Stopp", "de"),
            ("Bitte abmelden", "de"),
            ("Keine SMS mehr!", "de"),
            ("Hört auf", "de"),
            ("ARRÊT", "fr"),
            ("Désinscrivez-moi svp", "fr"),
            ("je ne veux plus recevoir vos messages", "fr"),
            ("Baja", "es"),
            ("Quiero darme de baja", "es"),
            ("no más mensajes", "es"),
        ] {
            assert_eq!(stop_language(message), Some(lang), "{message}");
            assert_eq!(Keyword::of(message), Some(Keyword::Stop), "{message}");
        }
        for message in [
            "what time do you open?",
            "see you at the weekend",
            "is the blue one still available",
            "Thanks! Unstoppable deals",
            "Grazie, a presto",
            "Wann habt ihr geöffnet?",
            "",
        ] {
            assert_eq!(Keyword::of(message), None, "{message}");
        }
    }
}
