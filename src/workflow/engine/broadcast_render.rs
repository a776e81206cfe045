//! A broadcast's messages rendered for a batch of subscribers (CPU work, run on the blocking
//! pool): each person's message on every channel that reaches them, or with `reach: first` the
//! first queued and the others kept back behind it; and the shared dictionary their email
//! bodies are compressed against.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use serde_json::{Value, json};
use uuid::Uuid;

use super::reach_step::chain;
use super::{MessageBody, reachable, render, subscriber_json};
use crate::audience::reach::fallback;
use crate::audience::records;
use crate::core::error::Reason;
use crate::core::values::{Channel, OutboxChannel};
use crate::outbox::compose::{self, Draft, NewMessage};
use crate::store::entities::{broadcast, event, outbox, outbox_body, outbox_dictionary, subscriber};
use crate::workflow::templates::TemplateChecker;

/// The subscriber a broadcast is rendered for when it is checked and for its dictionary: no one's
/// data.
pub(super) fn sample_subscriber() -> Value {
    json!({
        "id": Uuid::nil(), "email": "sample@example.com", "phone": "+15555550100",
        "first_name": "Sample", "last_name": "Subscriber", "timezone": null, "locale": null, "attributes": {},
    })
}

/// The dictionary a broadcast's email bodies are stored against (see
/// [`outbox_body::Dictionary`]): its HTML rendered for the sample subscriber, links tracked as
/// in its messages. It has the broadcast's id, and holds no subscriber's data. `None` when the
/// broadcast sends no HTML email.
pub(super) fn sample_dictionary(
    templates: &TemplateChecker,
    links: &super::message::Stationery,
    b: &broadcast::Model,
    channels: &[Channel],
    now: DateTime<Utc>,
) -> Option<outbox_dictionary::Model> {
    if !channels.contains(&Channel::Email) {
        return None;
    }
    let context = broadcast_context(links, b, sample_subscriber(), Uuid::nil(), now);
    let rendered = render_broadcast(templates, b, Channel::Email, &context).ok()?;
    let tracking =
        b.track.then(|| compose::Tracking { signer: links.signer.clone(), base_url: links.base_url.clone() });
    let draft = Draft {
        channel: OutboxChannel::Email,
        recipient: String::new(),
        subject: rendered.subject,
        html: rendered.html,
        text: rendered.text,
        list_slug: None,
    };
    compose::dictionary(b.id, &draft, tracking.as_ref(), now)
}

/// What a broadcast's templates see for one subscriber.
pub(super) fn broadcast_context(
    links: &super::message::Stationery,
    b: &broadcast::Model,
    subscriber: Value,
    id: Uuid,
    now: DateTime<Utc>,
) -> Value {
    let about = ("broadcast", json!({"id": b.id, "list": b.list_slug}));
    super::message_context(links, subscriber, id, about, now)
}

/// The subject, HTML and text of a broadcast on one channel, for one context.
pub(super) fn render_broadcast(
    templates: &TemplateChecker,
    b: &broadcast::Model,
    channel: Channel,
    context: &Value,
) -> std::result::Result<super::Rendered, Reason> {
    match channel {
        Channel::Sms => {
            let text = b.sms_text.as_deref().unwrap_or_default();
            render(templates, context, None, &MessageBody::Inline(text))
        }
        // The same text; an approved template, when named, goes as the message's subject (the
        // WhatsApp worker sends it with the text as its variable).
        Channel::Whatsapp => {
            let text = b.sms_text.as_deref().unwrap_or_default();
            let mut rendered = render(templates, context, None, &MessageBody::Inline(text))?;
            rendered.subject = b.whatsapp_template.clone();
            Ok(rendered)
        }
        Channel::Email => match (&b.template, &b.html) {
            (Some(name), _) => render(templates, context, b.subject.as_ref(), &MessageBody::Template(name))
                .and_then(|rendered| super::message::dress(templates, context, rendered)),
            (None, html) => {
                let tera_context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
                let mut rendered = render(
                    templates,
                    context,
                    b.subject.as_ref(),
                    &MessageBody::Inline(b.text.as_deref().unwrap_or_default()),
                )?;
                let html = templates
                    .tera()
                    .render_str(html.as_deref().unwrap_or_default(), &tera_context, true)
                    .map_err(|e| super::first_line(&e))?;
                if b.text.is_none() {
                    // Derived from the HTML when sent (as for a template without a text part).
                    rendered.text = String::new();
                }
                rendered.html = Some(html);
                super::message::dress(templates, context, rendered)
            }
        },
    }
}

/// The outbox rows of a batch of a broadcast (rendering is CPU work: run on the blocking pool), on
/// `channels` in order (with `reach: first`, those down put last, `tried_last` saying why), and how
/// many member and channel pairs were skipped (no consent or address, unrenderable).
pub(super) fn render_batch(
    templates: &TemplateChecker,
    links: &super::message::Stationery,
    b: &broadcast::Model,
    people: &[subscriber::Model],
    (channels, tried_last): (&[Channel], &[Value]),
    dictionary: Option<&outbox_dictionary::Model>,
    now: DateTime<Utc>,
) -> (Vec<(outbox::ActiveModel, outbox_body::ActiveModel)>, Vec<event::ActiveModel>, i64) {
    let tracking =
        b.track.then(|| compose::Tracking { signer: links.signer.clone(), base_url: links.base_url.clone() });
    let first = b.reach == "first";
    let (mut rows, mut events, mut skipped) = (Vec::new(), Vec::new(), 0i64);
    for s in people {
        let context = broadcast_context(links, b, subscriber_json(s), s.id, now);
        let mut mine: Vec<(outbox::ActiveModel, outbox_body::ActiveModel)> = Vec::new();
        let mut passed_over = Vec::new();
        for channel in channels {
            let rendered = reachable(s, *channel)
                .and_then(|address| render_broadcast(templates, b, *channel, &context).map(|r| (address, r)));
            let (address, rendered) = match rendered {
                Ok(found) => found,
                Err(why) => {
                    if first {
                        passed_over.push(json!({"channel": channel, "reason": why.to_string()}));
                    } else {
                        skipped += 1;
                    }
                    continue;
                }
            };
            let draft = Draft {
                channel: (*channel).into(),
                recipient: address,
                subject: rendered.subject,
                html: rendered.html,
                text: rendered.text,
                list_slug: Some(b.list_slug.clone()),
            };
            let key = format!("broadcast:{}:{}:{channel}", b.id, s.id);
            let message = NewMessage::new(key, s.id, draft).tracked(tracking.as_ref()).compressed_with(dictionary);
            let (mut row, body) = message.rows(now);
            row.broadcast_id = Set(Some(b.id));
            mine.push((row, body));
        }
        if first {
            match mine.first() {
                Some((chosen, _)) => {
                    let chosen = chosen.channel.clone().take();
                    let then: Vec<_> = mine.iter().skip(1).filter_map(|(m, _)| m.channel.clone().take()).collect();
                    let data = json!({"broadcast": b.id, "channel": chosen, "passed_over": passed_over,
                                      "then": then, "tried_last": tried_last});
                    events.push(records::event(s.id, fallback::REACH_CHOSEN, data, now));
                }
                None => skipped += 1,
            }
            chain(&mut mine);
        }
        rows.extend(mine);
    }
    (rows, events, skipped)
}
