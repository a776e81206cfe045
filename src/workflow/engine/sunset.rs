//! The sunset rule's one question: a subscriber who has not opened or clicked marketing email in
//! `sunset_after` is asked, once, whether they still want it. The delivery worker cancels the
//! marketing message that found them unengaged and queues a `sunset` trigger; this writes the
//! question, in their language and the email layout, with one tracked link ("Yes, keep them
//! coming") to the `/kept` page. Following it is a person's click (machines' are judged so), which
//! counts as engagement: their marketing email resumes.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseTransaction, EntityTrait};
use serde_json::json;
use uuid::Uuid;

use super::Engine;
use super::message::{dress, message_context, reachable, subscriber_json};
use crate::core::error::Result;
use crate::core::values::{Channel, OutboxChannel};
use crate::outbox::compose::{self, Draft, NewMessage};
use crate::store::entities::subscriber;

/// The question's body, from the words of the subscriber's language.
const QUESTION: &str = "<p>{{ t.still_text }}</p>\n<p><a href=\"{{ kept_url }}\" style=\"display:inline-block;padding:12px 20px;border-radius:6px;background:{{ business.accent_color }};color:{{ accent_ink }};text-decoration:none;font-weight:600\">{{ t.still_button }}</a></p>\n<p>{{ t.still_otherwise }}</p>";

impl Engine {
    /// Writes the question for one subscriber (at most once a day, by its idempotency key).
    pub(super) async fn ask_still_interested(
        &self,
        txn: &DatabaseTransaction,
        subscriber_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(person) = subscriber::Entity::find_by_id(subscriber_id).one(txn).await? else { return Ok(()) };
        let Ok(address) = reachable(&person, Channel::Email) else { return Ok(()) };
        let templates = self.templates();
        let translations = templates.translations();
        let lang = translations.choose(&[person.locale.as_deref()], None);
        let words = translations.words(&lang);
        let mut context =
            message_context(&self.stationery, subscriber_json(&person), person.id, ("sunset", json!({})), now);
        context["kept_url"] = json!(format!("{}kept", self.stationery.base_url));
        context["t"] = json!(&*words);
        let accent = context["business"]["accent_color"].as_str().unwrap_or(crate::core::brand::DEFAULT_ACCENT);
        context["accent_ink"] = json!(crate::core::brand::ink_on(accent));
        let tera_context =
            tera::Context::from_serialize(&context).map_err(|e| anyhow::anyhow!("sunset question: {e}"))?;
        let html = tera::Tera::new()
            .render_str(QUESTION, &tera_context, true)
            .map_err(|e| anyhow::anyhow!("sunset question: {e}"))?;
        let subject = words.get("still_subject").cloned().unwrap_or_default();
        let rendered = super::Rendered { subject: Some(subject.clone()), html: Some(html), text: String::new() };
        let rendered = dress(&templates, &context, rendered).map_err(|e| anyhow::anyhow!("sunset question: {e}"))?;
        let draft = Draft {
            channel: OutboxChannel::Email,
            recipient: address,
            subject: Some(subject),
            html: rendered.html,
            text: rendered.text,
            list_slug: None,
        };
        let key = format!("sunset-ask:{}:{}", person.id, now.date_naive());
        let message = NewMessage::new(key, person.id, draft).tracked(self.tracking.as_ref());
        compose::insert(txn, vec![message.rows(now)]).await?;
        Ok(())
    }
}
