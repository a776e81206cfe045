//! Email: an outbox message becomes a MIME message (lettre) and goes out through a transport.
//!
//! Every message carries `Message-ID` (from the outbox id, so a retry is recognisably the same
//! message), `Date`, `List-Unsubscribe` (a signed one-click HTTPS link) and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`; with an HTML body it is
//! multipart/alternative with the plain-text part rendered beside it.
//!
//! Transports: `file` writes each message as `{outbox id}.eml` under `{data_dir}/mail/` (the
//! default: a first run sends nothing to the internet, and every message can be read). A retry
//! after a crash rewrites the same file, so a message is never there twice.

use std::path::PathBuf;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use serde_json::json;
use uuid::Uuid;

use super::{Answer, Carrier, Worker};
use crate::clock::SharedClock;
use crate::links::{Purpose, Signer};
use crate::store::Db;
use crate::store::entities::outbox;

/// How long an unsubscribe link in a message stays valid.
const UNSUBSCRIBE_VALID_DAYS: i64 = 365;

/// What every message shares: the sender, and how to build its unsubscribe link.
#[derive(Debug, Clone)]
pub struct Letterhead {
    pub from: Mailbox,
    pub base_url: url::Url,
    pub signer: Signer,
}

impl Letterhead {
    /// The one-click unsubscribe URL for a subscriber.
    pub fn unsubscribe_url(&self, subscriber: Uuid, now: DateTime<Utc>) -> String {
        let token =
            self.signer.sign(Purpose::Unsubscribe, subscriber, now + chrono::Duration::days(UNSUBSCRIBE_VALID_DAYS));
        self.base_url.join(&format!("u/{token}")).map(|u| u.to_string()).unwrap_or_default()
    }

    /// The MIME message for an outbox row, or why it cannot be one (a permanent failure).
    pub fn build(&self, message: &outbox::Model, now: DateTime<Utc>) -> Result<Message, String> {
        let to: Mailbox = message.recipient.parse().map_err(|e| format!("bad recipient address: {e}"))?;
        let domain = self.from.email.domain();
        let list_unsubscribe = format!("<{}>", self.unsubscribe_url(message.subscriber_id, now));
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone().unwrap_or_default())
            .message_id(Some(format!("<{}@{domain}>", message.id)))
            .date(SystemTime::from(now))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), list_unsubscribe))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
        let built = match &message.body_html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(message.body_text.clone(), html.clone())),
            None => builder.singlepart(SinglePart::plain(message.body_text.clone())),
        };
        built.map_err(|e| format!("cannot build the message: {e}"))
    }
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Transport {
    /// One `.eml` file per message in this folder.
    File(PathBuf),
}

/// Sends email messages from the outbox.
#[derive(Debug)]
pub struct Mailer {
    letterhead: Letterhead,
    transport: Transport,
}

/// The email worker.
pub type EmailSender = Worker<Mailer>;

impl EmailSender {
    pub fn new(db: Db, clock: SharedClock, letterhead: Letterhead, transport: Transport) -> Self {
        Worker::with(db, clock, Mailer { letterhead, transport })
    }
}

impl Carrier for Mailer {
    const CHANNEL: &'static str = "email";

    async fn attempt(&self, message: &outbox::Model, now: DateTime<Utc>) -> Answer {
        let built = match self.letterhead.build(message, now) {
            Ok(built) => built,
            Err(problem) => return Answer::Fail(problem),
        };
        match &self.transport {
            Transport::File(dir) => match write_file(dir, message.id, &built.formatted()).await {
                Ok(path) => Answer::Delivered(json!({"transport": "file", "path": path.display().to_string()})),
                Err(e) => Answer::Retry(format!("cannot write the message file: {e}")),
            },
        }
    }
}

/// Writes the message next to its final name, then renames it: a reader never sees half a file.
async fn write_file(dir: &std::path::Path, id: Uuid, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{id}.eml"));
    let partial = dir.join(format!(".{id}.eml.partial"));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(path)
}
