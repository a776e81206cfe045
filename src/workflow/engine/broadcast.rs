//! Broadcasts: a one-off message to everyone on a list who consented, through the same outbox
//! as workflow messages.
//!
//! Creating a broadcast checks it fully (list, channels, templates rendered once for a sample
//! subscriber) and stores it; nothing else. The engine's broadcast loop (beside its workflow
//! tick) then fans it out in batches of subscribers in id order: each batch's messages are
//! rendered and written to the outbox in one transaction with the broadcast's cursor, so a crash
//! resumes after the last whole batch and a message is never written twice (its idempotency key
//! is broadcast, subscriber and channel). The next batch is read and rendered while one is
//! written. Delivery workers start sending the first batch while the rest is still being written.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::broadcast_render::{
    broadcast_context, render_batch, render_broadcast, sample_dictionary, sample_subscriber,
};
use super::{Engine, Facts, reachable, subscriber_json};
use crate::audience::lists;
use crate::core::error::{Error, FieldError, Result};
use crate::core::values::{Channel, MembershipStatus, OutboxChannel, OutboxStatus, normalize_tag};
use crate::outbox::compose::{self, Draft, NewMessage};
use crate::store::entities::{broadcast, event, membership, outbox, outbox_dictionary, subscriber, subscriber_tag};
use crate::workflow::model::Condition;

/// Subscribers turned into messages per transaction. Larger batches write a broadcast faster
/// but hold the write lock longer, holding up the recording of what was sent; with a batch's
/// INSERTs sent to SQLite in one call, 250 holds the lock for a few milliseconds and gave the
/// best end-to-end rate on the delivery benchmark (`benches/delivery.sh`).
const FAN_OUT_BATCH: u64 = 250;

/// A broadcast to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBroadcast {
    /// The list's slug: its confirmed members who consented to a channel get the message there.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length = 64)]
    pub list: String,
    /// Only members with this tag.
    #[schema(
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F,;]*[^\\s\\u0000-\\u001F\\u007F-\\u009F,;][^\\u0000-\\u001F\\u007F-\\u009F,;]*$",
        max_length = 64
    )]
    pub tag: Option<String>,
    /// Only members for whom this holds: a condition as in a workflow's `if:` (JSON), such as
    /// `{"attribute": {"name": "plan", "test": {"equals": "pro"}}}` or `{"all": [...]}`.
    /// `opened`/`clicked` belong to workflows and are refused here.
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Condition>,
    /// `email`, `sms`, `whatsapp`, in order (the order `reach: first` tries them); default
    /// `["email"]`. WhatsApp is never the only channel that matters: list an owned one too.
    #[schema(schema_with = crate::core::values::schema::channels_or_null)]
    pub channels: Option<Vec<String>>,
    /// The email subject (a tera template); required for email.
    pub subject: Option<String>,
    /// An email template file under `templates/` (its `.txt` sibling, if any, is the plain part).
    pub template: Option<String>,
    /// Inline HTML (a tera template, autoescaped) instead of `template`.
    pub html: Option<String>,
    /// The plain-text part for inline HTML; derived from the HTML when absent.
    pub text: Option<String>,
    /// The SMS text (a tera template); required for sms and whatsapp (WhatsApp messages carry
    /// the same text).
    pub sms_text: Option<String>,
    /// WhatsApp: the approved message template the provider needs for a message that opens a
    /// conversation (Twilio's Content SID, `HX…`); the text goes as its variable `{{1}}`.
    /// Without it the text goes as is (inside a conversation the person opened).
    pub whatsapp_template: Option<String>,
    /// `all` (default): a message on every channel listed that reaches the person. `first`:
    /// one message each, on the first channel listed that reaches them (an address, consent,
    /// not bounced); should it fail for good (a hard bounce, an unreachable number, a permanent
    /// refusal, or still failing after `fallback_after`), the next channel that reaches them.
    pub reach: Option<String>,
    /// When to send; default now.
    pub send_at: Option<DateTime<Utc>>,
    /// Open and click tracking (default: the global `tracking` setting).
    pub tracking: Option<bool>,
}

/// Who a broadcast would reach: the members it would consider, and per channel those it can
/// reach there now.
#[derive(Debug, Default, Serialize)]
pub struct Audience {
    pub members: u64,
    pub reachable: BTreeMap<String, u64>,
}

/// A broadcast as one subscriber would get it on one channel.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub channel: Channel,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: String,
}

/// Messages of one channel by outcome.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ChannelProgress {
    /// Waiting in the outbox (including retries).
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// `reach: first`: kept back, to go only if the message on the channel before fails for good
    /// (left out when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub standby: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A broadcast and how far it has got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BroadcastView {
    pub id: Uuid,
    pub list: String,
    pub tag: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Value>,
    pub channels: Vec<String>,
    /// `all`, or `first` (one message per person, on the first channel that works).
    pub reach: String,
    pub subject: Option<String>,
    pub template: Option<String>,
    pub tracking: bool,
    /// `scheduled` (before send_at), `queueing` (messages being written), `sending` (all written,
    /// some not yet sent), `done`, or `cancelled`.
    pub status: String,
    pub send_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When the last message was written to the outbox.
    pub queued_at: Option<DateTime<Utc>>,
    /// Messages written to the outbox so far.
    pub messages: i64,
    /// Member and channel pairs not sent to (no consent, no address, filtered out, unrenderable).
    pub skipped: i64,
    /// Per channel: queued, sent, failed, cancelled.
    pub progress: BTreeMap<String, ChannelProgress>,
}

impl Engine {
    /// Checks and stores a broadcast; its messages are written by the engine's tick from `send_at`.
    pub async fn create_broadcast(&self, input: NewBroadcast) -> Result<BroadcastView> {
        let (row, _) = self.checked(input).await?;
        let stored = row.into_active_model().insert(self.db.conn()).await?;
        self.broadcast_view(stored).await
    }

    /// A broadcast checked whole, as it would be stored (not stored), with its channels: an
    /// unknown list, a missing part, a template that does not render for a sample subscriber
    /// are refused, each naming its field.
    async fn checked(&self, input: NewBroadcast) -> Result<(broadcast::Model, Vec<Channel>)> {
        let now = self.clock.now();
        let mut errors = Vec::new();
        let list = match lists::find(self.db.conn(), input.list.trim()).await {
            Ok(list) => Some(list),
            Err(Error::NotFound { .. }) => {
                errors.push(FieldError::new("list", format!("unknown list '{}'", input.list.trim())));
                None
            }
            Err(other) => return Err(other),
        };
        let tag = match input.tag.as_deref().map(normalize_tag) {
            None => None,
            Some(Ok(tag)) => Some(tag),
            Some(Err(problem)) => {
                errors.push(FieldError::new("tag", problem));
                None
            }
        };
        if let Some(condition) = &input.condition
            && let Some(problem) = workflow_only(condition)
        {
            errors.push(FieldError::new("condition", problem));
        }
        let mut channels = Vec::new();
        for (i, name) in input.channels.clone().unwrap_or_else(|| vec!["email".into()]).iter().enumerate() {
            match name.parse::<Channel>() {
                Ok(channel) if !channels.contains(&channel) => channels.push(channel),
                Ok(_) => errors.push(FieldError::new(format!("channels[{i}]"), format!("'{name}' is listed twice"))),
                Err(_) => errors
                    .push(FieldError::new(format!("channels[{i}]"), format!("'{name}' is not email, sms or whatsapp"))),
            }
        }
        let reach = match input.reach.as_deref().map(str::trim) {
            None | Some("" | "all") => "all",
            Some("first") => "first",
            Some(other) => {
                errors.push(FieldError::new("reach", format!("'{other}' is not all or first")));
                "all"
            }
        };
        if channels.is_empty() && input.channels.is_some() {
            errors.push(FieldError::new("channels", "name at least one of email, sms, whatsapp"));
        }
        let email = channels.contains(&Channel::Email);
        // The text of a text message and of a WhatsApp message alike.
        let sms = channels.contains(&Channel::Sms) || channels.contains(&Channel::Whatsapp);
        let whatsapp = channels.contains(&Channel::Whatsapp);
        if email {
            match (&input.subject, &input.template, &input.html) {
                (None, _, _) => errors.push(FieldError::new("subject", "is required for email")),
                (Some(s), _, _) if s.trim().is_empty() => errors.push(FieldError::new("subject", "is empty")),
                _ => {}
            }
            match (&input.template, &input.html) {
                (None, None) => errors.push(FieldError::new("template", "email needs a template or html")),
                (Some(_), Some(_)) => errors.push(FieldError::new("html", "give template or html, not both")),
                _ => {}
            }
        } else {
            for (field, given) in [
                ("subject", input.subject.is_some()),
                ("template", input.template.is_some()),
                ("html", input.html.is_some()),
                ("text", input.text.is_some()),
            ] {
                if given {
                    errors.push(FieldError::new(field, "is for email, which is not among the channels"));
                }
            }
        }
        match (&input.sms_text, sms) {
            (None, true) => errors.push(FieldError::new("sms_text", "is required for sms and whatsapp")),
            (Some(_), false) => errors
                .push(FieldError::new("sms_text", "is for sms and whatsapp, neither of which is among the channels")),
            _ => {}
        }
        let whatsapp_template = input.whatsapp_template.as_deref().map(str::trim).filter(|t| !t.is_empty());
        match (whatsapp_template, whatsapp) {
            (Some(_), false) => {
                errors.push(FieldError::new("whatsapp_template", "is for whatsapp, which is not among the channels"))
            }
            (Some(t), true) if t.len() > 200 || t.chars().any(|c| c.is_control() || c.is_whitespace()) => {
                errors.push(FieldError::new("whatsapp_template", "is a template's name or id, such as HX0123abcd…"))
            }
            _ => {}
        }
        let templates = self.templates();
        if let Some(name) = &input.template
            && let Err(problems) = templates.check_file(name)
        {
            for problem in problems {
                let message = match problem {
                    crate::workflow::templates::Problem::At { file, line, column, message } => {
                        format!("{}:{line}:{column}: {message}", file.display())
                    }
                    crate::workflow::templates::Problem::Here(message) => message,
                };
                errors.push(FieldError::new("template", message));
            }
        }
        let row = broadcast::Model {
            id: Uuid::now_v7(),
            list_id: list.as_ref().map(|l| l.id).unwrap_or_default(),
            list_slug: list.as_ref().map(|l| l.slug.clone()).unwrap_or_default(),
            tag,
            condition: input.condition.as_ref().map(|c| json!(c)),
            channels: json!(channels.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
            subject: input.subject.map(|s| s.trim().to_owned()),
            template: input.template,
            html: input.html,
            text: input.text,
            sms_text: input.sms_text,
            whatsapp_template: whatsapp_template.map(str::to_owned),
            track: input.tracking.unwrap_or(self.tracking.is_some()),
            status: "scheduled".into(),
            cursor: None,
            queued: 0,
            skipped: 0,
            send_at: input.send_at.unwrap_or(now),
            queued_at: None,
            created_at: now,
            updated_at: now,
            reach: reach.to_owned(),
        };
        if errors.is_empty() {
            // A trial render for a sample subscriber: a template that cannot render (an unknown
            // variable, a syntax error) is refused now rather than skipped for everyone later.
            let links = &self.stationery;
            let context = broadcast_context(links, &row, sample_subscriber(), Uuid::nil(), now);
            for channel in &channels {
                let field = match (channel, &row.template) {
                    (Channel::Sms | Channel::Whatsapp, _) => "sms_text",
                    (Channel::Email, Some(_)) => "template",
                    (Channel::Email, None) => "html",
                };
                match render_broadcast(&templates, &row, *channel, &context) {
                    Err(problem) => errors.push(FieldError::new(field, format!("cannot be rendered: {problem}"))),
                    // A whole HTML document of its own is sent as written, so it must offer the
                    // way out itself.
                    Ok(rendered)
                        if rendered.html.as_deref().is_some_and(|html| {
                            let token = context["unsubscribe_url"].as_str().and_then(|u| u.rsplit('/').next());
                            super::message::is_document(html) && !token.is_some_and(|t| html.contains(t))
                        }) =>
                    {
                        errors.push(FieldError::new(
                            field,
                            "is a whole HTML document (it has <html>), which is sent as written: link {{ unsubscribe_url }} in it, or leave out <html> to have the layout add the footer",
                        ));
                    }
                    Ok(_) => {}
                }
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        Ok((row, channels))
    }

    /// Who a broadcast would reach now, without storing it: the list's confirmed members (with
    /// the tag, for whom the condition holds), and per channel those it can reach there.
    pub async fn broadcast_audience(&self, input: NewBroadcast) -> Result<Audience> {
        let (b, channels) = self.checked(input).await?;
        let now = self.clock.now();
        let conn = self.db.conn();
        let condition = b.condition.clone().and_then(|c| serde_json::from_value::<Condition>(c).ok());
        let mut audience =
            Audience { members: 0, reachable: channels.iter().map(|c| (c.as_str().to_owned(), 0)).collect() };
        let mut cursor: Option<Uuid> = None;
        loop {
            let ids = member_ids(conn, &b, cursor, 1000).await?;
            let Some(last) = ids.last().copied() else { break };
            cursor = Some(last);
            let people = subscriber::Entity::find().filter(subscriber::Column::Id.is_in(ids)).all(conn).await?;
            let txn = conn.begin().await?;
            for s in people {
                if let Some(condition) = &condition {
                    let mut facts = Facts { id: s.id, subscriber: Some(s.clone()), tags: None, lists: None };
                    if !self.holds(&txn, condition, &mut facts, "", now).await? {
                        continue;
                    }
                }
                audience.members += 1;
                for channel in &channels {
                    if reachable(&s, *channel).is_ok() {
                        *audience.reachable.entry(channel.as_str().to_owned()).or_default() += 1;
                    }
                }
            }
            txn.rollback().await?;
        }
        Ok(audience)
    }

    /// A broadcast rendered, without storing it, for subscriber `for_subscriber` (their data; an
    /// unknown or erased one is a 404) or the sample subscriber: per channel, what they would get.
    /// Its links are not tracked, and its unsubscribe and preference links lead nowhere.
    pub async fn preview_broadcast(&self, input: NewBroadcast, for_subscriber: Option<Uuid>) -> Result<Vec<Preview>> {
        let (b, channels) = self.checked(input).await?;
        let data = match for_subscriber {
            Some(id) => {
                let found = subscriber::Entity::find_by_id(id).one(self.db.conn()).await?;
                subscriber_json(&found.ok_or(Error::NotFound { what: "subscriber" })?)
            }
            None => sample_subscriber(),
        };
        let context = broadcast_context(&self.stationery, &b, data, Uuid::nil(), self.clock.now());
        let templates = self.templates();
        let mut previews = Vec::new();
        for channel in channels {
            let rendered = render_broadcast(&templates, &b, channel, &context)
                .map_err(|problem| Error::field("preview", format!("cannot be rendered: {problem}")))?;
            let text = if rendered.text.is_empty() {
                rendered.html.as_deref().map(crate::core::text::html_to_text).unwrap_or_default()
            } else {
                rendered.text
            };
            previews.push(Preview { channel, subject: rendered.subject, html: rendered.html, text });
        }
        Ok(previews)
    }

    /// Sends a broadcast's email, rendered as [`Self::preview_broadcast`] renders it, to `to`
    /// alone, now, through the outbox (its subject marked as a test): it counts in no report and
    /// no timeline. Returns the message's id.
    pub async fn test_broadcast(&self, input: NewBroadcast, for_subscriber: Option<Uuid>, to: &str) -> Result<Uuid> {
        let address = crate::core::values::EmailAddress::parse(to)
            .map_err(|reason| Error::field("test_to", format!("is not an email address: {reason}")))?;
        let previews = self.preview_broadcast(input, for_subscriber).await?;
        let email = previews
            .into_iter()
            .find(|p| p.channel == Channel::Email)
            .ok_or_else(|| Error::field("test_to", "a test is sent by email, which is not among the channels"))?;
        let now = self.clock.now();
        let draft = Draft {
            channel: OutboxChannel::Email,
            recipient: address.as_str().to_owned(),
            subject: Some(format!("[Test] {}", email.subject.unwrap_or_default())),
            html: email.html,
            text: email.text,
            list_slug: None,
        };
        let message = NewMessage::new(format!("test:{}", Uuid::now_v7()), Uuid::nil(), draft);
        let id = message.id();
        let prepared = compose::prepare(self.db.backend(), vec![message.rows(now)]);
        let txn = self.db.begin_write().await?;
        compose::write(&txn, prepared).await?;
        txn.commit().await?;
        self.bell.ring();
        Ok(id)
    }

    /// One broadcast with its progress.
    pub async fn broadcast(&self, id: Uuid) -> Result<BroadcastView> {
        let found = broadcast::Entity::find_by_id(id).one(self.db.conn()).await?;
        self.broadcast_view(found.ok_or(Error::NotFound { what: "broadcast" })?).await
    }

    /// The latest broadcasts first (at most `limit`).
    pub async fn broadcasts(&self, limit: u64) -> Result<Vec<BroadcastView>> {
        let rows =
            broadcast::Entity::find().order_by_desc(broadcast::Column::Id).limit(limit).all(self.db.conn()).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.broadcast_view(row).await?);
        }
        Ok(views)
    }

    /// Stops a broadcast: no more of its messages are written, and those not yet sent are
    /// cancelled (one being sent at this instant may still go out).
    pub async fn cancel_broadcast(&self, id: Uuid) -> Result<BroadcastView> {
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let found = broadcast::Entity::find_by_id(id).one(&txn).await?.ok_or(Error::NotFound { what: "broadcast" })?;
        if found.status != "cancelled" {
            let mut active = found.into_active_model();
            active.status = Set("cancelled".into());
            active.updated_at = Set(now);
            active.update(&txn).await?;
            outbox::Entity::update_many()
                .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Cancelled))
                .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                .filter(outbox::Column::BroadcastId.eq(id))
                .filter(outbox::Column::Status.is_in([OutboxStatus::Queued, OutboxStatus::Standby]))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        self.broadcast(id).await
    }

    async fn broadcast_view(&self, row: broadcast::Model) -> Result<BroadcastView> {
        let counts: Vec<(OutboxChannel, OutboxStatus, i64)> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Channel)
            .column(outbox::Column::Status)
            .column_as(Expr::cust("COUNT(*)"), "n")
            .filter(outbox::Column::BroadcastId.eq(row.id))
            .group_by(outbox::Column::Channel)
            .group_by(outbox::Column::Status)
            .into_tuple()
            .all(self.db.conn())
            .await?;
        let channels: Vec<String> = serde_json::from_value(row.channels.clone()).unwrap_or_default();
        let mut progress: BTreeMap<String, ChannelProgress> =
            channels.iter().map(|c| (c.clone(), ChannelProgress::default())).collect();
        for (channel, status, n) in counts {
            let entry = progress.entry(channel.as_str().to_owned()).or_default();
            let n = n.max(0) as u64;
            match status {
                OutboxStatus::Queued => entry.queued += n,
                OutboxStatus::Sent => entry.sent += n,
                OutboxStatus::Failed => entry.failed += n,
                OutboxStatus::Cancelled => entry.cancelled += n,
                OutboxStatus::Standby => entry.standby += n,
            }
        }
        let waiting = progress.values().any(|p| p.queued > 0);
        let status = match row.status.as_str() {
            "queued" if waiting => "sending",
            "queued" => "done",
            other => other,
        };
        Ok(BroadcastView {
            id: row.id,
            list: row.list_slug,
            tag: row.tag,
            condition: row.condition,
            channels,
            reach: row.reach,
            subject: row.subject,
            template: row.template,
            tracking: row.track,
            status: status.to_owned(),
            send_at: row.send_at,
            created_at: row.created_at,
            queued_at: row.queued_at,
            messages: row.queued,
            skipped: row.skipped,
            progress,
        })
    }

    /// Writes the messages of every broadcast that is due, one broadcast after another, until
    /// none is left, `keep_going` says to stop, or this process no longer leads the engine (both
    /// checked before each batch); returns how many subscribers were processed.
    ///
    /// A broadcast is written in batches of subscribers, each batch in one transaction with the
    /// broadcast's cursor. The next batch is read and rendered while the one before it is being
    /// written, so the writing (SQLite's one writer) never waits for reading or rendering.
    pub(super) async fn fan_out(&self, keep_going: impl Fn() -> bool) -> Result<u64> {
        if !self.leading().await? {
            return Ok(0);
        }
        let now = self.clock.now();
        let due = broadcast::Entity::find()
            .filter(broadcast::Column::Status.is_in(["scheduled", "queueing"]))
            .filter(broadcast::Column::SendAt.lte(now))
            .order_by_asc(broadcast::Column::SendAt)
            .all(self.db.conn())
            .await?;
        let mut processed = 0;
        for b in due {
            processed += self.fan_out_broadcast(b, &keep_going).await?;
        }
        Ok(processed)
    }

    /// Writes one broadcast's messages from its cursor on (see [`Self::fan_out`]).
    async fn fan_out_broadcast(&self, b: broadcast::Model, keep_going: &impl Fn() -> bool) -> Result<u64> {
        let mut processed = 0;
        // The dictionary its bodies are compressed against: written with its first batch.
        let dictionary = outbox_dictionary::Entity::find_by_id(b.id).one(self.db.conn()).await?.map(Arc::new);
        let mut next = if keep_going() { Some(self.prepare_batch(&b, b.cursor, dictionary).await?) } else { None };
        while let Some(batch) = next.take() {
            if !self.leading().await? {
                break;
            }
            let (cursor, finished, count) = (batch.cursor_after, batch.finished, batch.members);
            let dictionary = batch.dictionary.clone();
            let written = self.write_batch(&b, batch);
            let following = async {
                if finished || !keep_going() {
                    Ok(None)
                } else {
                    self.prepare_batch(&b, cursor, dictionary).await.map(Some)
                }
            };
            let (written, following) = tokio::join!(written, following);
            if !written? {
                break;
            }
            processed += count;
            self.bell.ring();
            next = following?;
        }
        Ok(processed)
    }

    /// The next batch of a broadcast after `cursor`, read (no lock held), filtered and rendered
    /// (on the blocking pool), not yet written; its bodies compressed against `dictionary`, or
    /// against one made now (see [`sample_dictionary`]) and written with the batch.
    async fn prepare_batch(
        &self,
        b: &broadcast::Model,
        cursor: Option<Uuid>,
        dictionary: Option<Arc<outbox_dictionary::Model>>,
    ) -> Result<Batch> {
        let now = self.clock.now();
        let conn = self.db.conn();
        let ids = member_ids(conn, b, cursor, FAN_OUT_BATCH).await?;
        let mut people = subscriber::Entity::find().filter(subscriber::Column::Id.is_in(ids.clone())).all(conn).await?;
        let channels: Vec<Channel> = serde_json::from_value::<Vec<String>>(b.channels.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let mut skipped = 0i64;
        if let Some(condition) = b.condition.clone().and_then(|c| serde_json::from_value::<Condition>(c).ok()) {
            let txn = self.db.conn().begin().await?;
            let mut kept = Vec::with_capacity(people.len());
            for s in people {
                let mut facts = Facts { id: s.id, subscriber: Some(s.clone()), tags: None, lists: None };
                if self.holds(&txn, &condition, &mut facts, "", now).await? {
                    kept.push(s);
                } else {
                    skipped += channels.len() as i64;
                }
            }
            txn.rollback().await?;
            people = kept;
        }
        let (templates, links, batch) = (self.templates(), self.stationery.clone(), b.clone());
        // `reach: first`: a channel failing for longer than `fallback_after` is tried last.
        let (ordered, tried_last) = if b.reach == "first" {
            super::order_for_reach(&channels, &self.channels_down(now))
        } else {
            (channels.clone(), Vec::new())
        };
        let backend = self.db.backend();
        let rendered = tokio::task::spawn_blocking(move || {
            let (dictionary, made) = match dictionary {
                Some(dictionary) => (Some(dictionary), false),
                None => {
                    let made = sample_dictionary(&templates, &links, &batch, &channels, now).map(Arc::new);
                    let is_new = made.is_some();
                    (made, is_new)
                }
            };
            let (rows, events, unrenderable) =
                render_batch(&templates, &links, &batch, &people, (&ordered, &tried_last), dictionary.as_deref(), now);
            (compose::prepare(backend, rows), events, unrenderable, dictionary, made)
        })
        .await
        .map_err(|e| crate::core::error::Error::Other(anyhow::anyhow!("rendering a broadcast batch failed: {e}")))?;
        let (rows, events, unrenderable, dictionary, made) = rendered;
        Ok(Batch {
            dictionary,
            new_dictionary: made,
            cursor_before: cursor,
            cursor_after: ids.last().copied().or(cursor),
            finished: (ids.len() as u64) < FAN_OUT_BATCH,
            members: ids.len() as u64,
            rows,
            events,
            skipped: skipped + unrenderable,
            now,
        })
    }

    /// Writes a prepared batch and moves the broadcast's cursor past it, in one short
    /// transaction, unless the broadcast moved on meanwhile (cancelled, or this batch written by
    /// another instance): then nothing is written (never anything twice) and it answers false.
    async fn write_batch(&self, b: &broadcast::Model, batch: Batch) -> Result<bool> {
        let started = std::time::Instant::now();
        let txn = self.db.begin_write().await?;
        let locked = started.elapsed();
        let Some(current) = broadcast::Entity::find_by_id(b.id).one(&txn).await? else { return Ok(false) };
        if !matches!(current.status.as_str(), "scheduled" | "queueing") || current.cursor != batch.cursor_before {
            return Ok(false);
        }
        if let (true, Some(dictionary)) = (batch.new_dictionary, &batch.dictionary) {
            // A plain INSERT: were there one already (written meanwhile by another instance),
            // this batch's bodies would not match it, and the transaction must fail.
            outbox_dictionary::Model::clone(dictionary).into_active_model().insert(&txn).await?;
        }
        let written = compose::write(&txn, batch.rows).await?.len() as i64;
        if !batch.events.is_empty() {
            event::Entity::insert_many(batch.events).exec(&txn).await?;
        }
        let mut active = current.clone().into_active_model();
        active.cursor = Set(batch.cursor_after);
        active.queued = Set(current.queued + written);
        active.skipped = Set(current.skipped + batch.skipped);
        active.status = Set(if batch.finished { "queued" } else { "queueing" }.into());
        if batch.finished {
            active.queued_at = Set(Some(batch.now));
        }
        active.updated_at = Set(batch.now);
        active.update(&txn).await?;
        let wrote = started.elapsed();
        txn.commit().await?;
        tracing::debug!(broadcast = %b.id, written, ?locked, ?wrote, took = ?started.elapsed(), "broadcast batch written");
        Ok(true)
    }
}

/// A batch of a broadcast, read and rendered, waiting to be written.
struct Batch {
    /// The broadcast's cursor this batch follows (it is written only if the cursor is still there).
    cursor_before: Option<Uuid>,
    /// The last member of the batch: the cursor once it is written.
    cursor_after: Option<Uuid>,
    /// Whether it is the broadcast's last batch.
    finished: bool,
    /// Members read (before the condition filter).
    members: u64,
    /// Its messages, as the statements that write them.
    rows: compose::Prepared,
    /// `reach: first`: the channel chosen for each person, and why, for their timelines.
    events: Vec<event::ActiveModel>,
    /// Member and channel pairs not sent to.
    skipped: i64,
    /// When it was rendered: its messages' creation time.
    now: DateTime<Utc>,
    /// The dictionary its email bodies are compressed against, if any.
    dictionary: Option<Arc<outbox_dictionary::Model>>,
    /// Whether the dictionary was made for this batch (and is written with it).
    new_dictionary: bool,
}

/// The next `limit` members of a broadcast's audience after `cursor`, in id order: the list's
/// confirmed members, with the broadcast's tag when it has one.
async fn member_ids(
    conn: &impl sea_orm::ConnectionTrait,
    b: &broadcast::Model,
    cursor: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Uuid>> {
    let mut members = membership::Entity::find()
        .select_only()
        .column(membership::Column::SubscriberId)
        .filter(membership::Column::ListId.eq(b.list_id))
        .filter(membership::Column::Status.eq(MembershipStatus::Confirmed.as_str()))
        .order_by_asc(membership::Column::SubscriberId)
        .limit(limit);
    if let Some(cursor) = cursor {
        members = members.filter(membership::Column::SubscriberId.gt(cursor));
    }
    if let Some(tag) = &b.tag {
        let tagged = Query::select()
            .column(subscriber_tag::Column::SubscriberId)
            .from(subscriber_tag::Entity)
            .and_where(subscriber_tag::Column::Tag.eq(tag.as_str()))
            .to_owned();
        members = members.filter(membership::Column::SubscriberId.in_subquery(tagged));
    }
    Ok(members.into_tuple().all(conn).await?)
}

/// Why a condition cannot filter a broadcast, if it cannot.
fn workflow_only(condition: &Condition) -> Option<String> {
    match condition {
        Condition::Opened(_) | Condition::Clicked(_) => {
            Some("opened/clicked name a workflow's email step; a broadcast cannot use them".into())
        }
        Condition::All(items) | Condition::Any(items) => items.iter().find_map(workflow_only),
        Condition::Not(inner) => workflow_only(inner),
        _ => None,
    }
}
