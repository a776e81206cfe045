//! Message steps: a message rendered for a subscriber and written to the outbox.

use super::*;
use crate::core::error::{Reason, Result, reason};
use crate::core::links::{Purpose, Signer};
use crate::core::timing::{window_opens_at, zone};
use crate::core::values::Channel;
use crate::outbox::compose::{self, Draft, NewMessage, Tracking};
use crate::rollups::steps::measure;
use crate::store::entities::subscriber;
use crate::workflow::model::{Action, Trigger};
use crate::workflow::program::Node;
use crate::workflow::templates::TemplateChecker;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::DatabaseTransaction;
use serde_json::{Value, json};
use uuid::Uuid;

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn message(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        node: &Node,
        facts: &mut Facts,
        channel: Channel,
        subject: Option<&String>,
        body: MessageBody<'_>,
    ) -> Result<Flow> {
        let step = &node.step;
        let now = run.now;
        let s = facts.subscriber(txn).await?;
        let address = match reachable(s, channel) {
            Ok(address) => address,
            Err(reason) => {
                run.note(decision::STEP_SKIPPED, json!({"step": step.id, "channel": channel, "reason": reason}));
                return Ok(Flow::Goto(node.next.clone()));
            }
        };
        if let Some(held) = held_by_window(run, step, s) {
            return Ok(held);
        }
        let workflow = &run.program.workflow;
        let context = self.render_context(workflow, s, now);
        let templates = self.templates();
        let rendered = render(&templates, &context, subject, &body).and_then(|rendered| match channel {
            Channel::Email => dress(&templates, &context, rendered),
            Channel::Sms | Channel::Whatsapp => Ok(rendered),
        });
        let rendered = match rendered {
            Ok(rendered) => rendered,
            Err(problem) => {
                run.note(
                    decision::STEP_SKIPPED,
                    json!({"step": step.id, "reason": format!("the message could not be rendered: {problem}")}),
                );
                return Ok(Flow::Goto(node.next.clone()));
            }
        };
        let list_slug = match &workflow.trigger {
            Trigger::Subscribed { list } => Some(list.clone()),
            _ => None,
        };
        let step_tracking = match &step.action {
            Action::Email { tracking, .. } => *tracking,
            _ => None,
        };
        let tracked = self.tracking.as_ref().filter(|_| step_tracking.unwrap_or(workflow.tracking));
        let draft = Draft {
            channel: channel.into(),
            recipient: address,
            subject: rendered.subject,
            html: rendered.html,
            text: rendered.text,
            list_slug,
        };
        self.enqueue(txn, run, step, s.id, draft, tracked).await?;
        run.note(decision::STEP_DONE, json!({"step": step.id, "channel": channel}));
        Ok(Flow::Goto(node.next.clone()))
    }

    /// Stores a step's message in the outbox, once per enrollment and step.
    pub(super) async fn enqueue(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        step: &crate::workflow::model::Step,
        subscriber_id: Uuid,
        draft: Draft,
        tracked: Option<&Tracking>,
    ) -> Result<()> {
        let channel = draft.channel;
        let message = NewMessage::new(format!("{}:{}", run.row.id, step.id), subscriber_id, draft).tracked(tracked);
        let id = message.id();
        let (mut row, body) = message.rows(run.now);
        row.enrollment_id = Set(Some(run.row.id));
        row.workflow_id = Set(Some(run.row.workflow_id.clone()));
        row.step_id = Set(Some(step.id.clone()));
        if !compose::insert(txn, vec![(row, body)]).await?.is_empty() {
            run.note(decision::MESSAGE_QUEUED, json!({"step": step.id, "channel": channel, "message": id}));
            run.count(&step.id, measure::SENT, String::new());
        }
        Ok(())
    }

    pub(super) fn render_context(
        &self,
        workflow: &crate::workflow::model::Workflow,
        s: &subscriber::Model,
        now: DateTime<Utc>,
    ) -> Value {
        let about = ("workflow", json!({"id": workflow.id, "name": workflow.name}));
        message_context(&self.stationery, subscriber_json(s), s.id, about, now)
    }
}

pub(super) fn render(
    templates: &TemplateChecker,
    context: &Value,
    subject: Option<&String>,
    body: &MessageBody<'_>,
) -> std::result::Result<Rendered, Reason> {
    let locale =
        context["subscriber"]["locale"].as_str().and_then(|l| templates.translations().find(l).map(str::to_owned));
    let context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
    let tera = templates.tera();
    let subject = match subject {
        Some(s) => Some(tera.render_str(s, &context, false).map_err(|e| first_line(&e))?.trim().to_owned()),
        None => None,
    };
    let (html, text) = match body {
        MessageBody::Inline(text) => (None, tera.render_str(text, &context, false).map_err(|e| first_line(&e))?),
        MessageBody::Template(name) => {
            // The template's version in the subscriber's language, when there is one.
            let name = match &locale {
                Some(lang) => templates.in_language(name, lang),
                None => std::borrow::Cow::Borrowed(*name),
            };
            let name = name.as_ref();
            let rendered = tera.render(name, &context).map_err(|e| first_line(&e))?;
            if name.ends_with(".html") || name.ends_with(".htm") {
                let text_name = format!("{}.txt", name.trim_end_matches(".html").trim_end_matches(".htm"));
                // Without a text template the plain part is left empty here and derived from
                // the stored HTML when the message is sent (see `email::Letterhead::build`):
                // the same text, not stored twice.
                let text = if tera.contains_template(&text_name) {
                    tera.render(&text_name, &context).map_err(|e| first_line(&e))?
                } else {
                    String::new()
                };
                (Some(rendered), text)
            } else {
                (None, rendered)
            }
        }
    };
    Ok(Rendered { subject, html, text: text.trim().to_owned() })
}

/// The shipped email layout, for a templates folder without one of its own (or with a broken one).
static LAYOUT: std::sync::LazyLock<Option<tera::Tera>> = std::sync::LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    let added = tera.add_raw_templates([
        (LAYOUT_HTML, include_str!("../../../templates/emails/_layout.html")),
        (LAYOUT_TEXT, include_str!("../../../templates/emails/_layout.txt")),
    ]);
    added.map(|()| tera).map_err(|e| tracing::error!(error = %e, "the built-in email layout does not parse")).ok()
});

/// The layout every email's HTML goes into, and its plain-text twin.
pub const LAYOUT_HTML: &str = "emails/_layout.html";
pub const LAYOUT_TEXT: &str = "emails/_layout.txt";

/// Whether an email's HTML is a whole document of its own (`<html>`): sent as written.
pub(super) fn is_document(html: &str) -> bool {
    let head = &html.as_bytes()[..html.len().min(2048)];
    head.windows(5).any(|w| w.eq_ignore_ascii_case(b"<html"))
}

/// Puts an email's rendered parts into the layout (`emails/_layout.html` and `.txt`): the
/// business's name or logo above, and below, a footer with its name, postal address, the
/// preference link and the unsubscribe link (unless the message links it itself), in the
/// subscriber's language. A message whose HTML is a whole document is left as written.
pub(super) fn dress(
    templates: &TemplateChecker,
    context: &Value,
    mut rendered: Rendered,
) -> std::result::Result<Rendered, Reason> {
    if rendered.html.as_deref().is_some_and(is_document) {
        return Ok(rendered);
    }
    // The unsubscribe link's token (no character of it is ever escaped): found in the message,
    // the message links it already.
    let token = context["unsubscribe_url"].as_str().and_then(|u| u.rsplit('/').next()).unwrap_or_default();
    let links = |text: &str| !token.is_empty() && text.contains(token);
    let translations = templates.translations();
    let lang = translations.choose(&[context["subscriber"]["locale"].as_str()], None);
    let mut layout = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
    layout.insert("lang", &lang);
    layout.insert_value("t", templates.words_value(&lang));
    layout.insert("subject", rendered.subject.as_deref().unwrap_or_default());
    let accent = context["business"]["accent_color"].as_str().unwrap_or(crate::core::brand::DEFAULT_ACCENT);
    layout.insert("accent_ink", crate::core::brand::ink_on(accent));
    let render = |name: &str, layout: &tera::Context| -> std::result::Result<String, Reason> {
        let own = templates.tera();
        if own.contains_template(name) {
            match own.render(name, layout) {
                Ok(text) => return Ok(text),
                Err(e) => {
                    tracing::error!(template = name, error = %e, "the email layout failed; the built-in one is used")
                }
            }
        }
        match LAYOUT.as_ref() {
            Some(built_in) => built_in.render(name, layout).map_err(|e| Reason::from(first_line(&e))),
            None => Err(reason!("the email layout cannot be rendered")),
        }
    };
    if let Some(html) = rendered.html.take() {
        layout.insert("has_unsubscribe", &links(&html));
        layout.insert("body", &html);
        rendered.html = Some(render(LAYOUT_HTML, &layout)?);
    }
    if !rendered.text.is_empty() {
        layout.insert("has_unsubscribe", &links(&rendered.text));
        layout.insert("body", &rendered.text);
        rendered.text = render(LAYOUT_TEXT, &layout)?.trim().to_owned();
    }
    Ok(rendered)
}

/// Holds a message step outside the workflow's send window, in the subscriber's zone: held, not
/// left, so when the window opens the step goes on (it is not entered again).
pub(super) fn held_by_window(
    run: &mut Run<'_>,
    step: &crate::workflow::model::Step,
    s: &subscriber::Model,
) -> Option<Flow> {
    let workflow = &run.program.workflow;
    let window = workflow.send_window.as_ref()?;
    let tz = zone(s.timezone.as_deref(), workflow.timezone.as_deref());
    let opens = window_opens_at(run.now, tz, &window.days, window.start, window.end)?;
    run.row.wait_started_at.get_or_insert(run.logical);
    run.note(decision::WAITING, json!({"step": step.id, "until": opens, "reason": "outside the send window"}));
    Some(Flow::WaitUntil(opens))
}

pub(super) fn first_line(error: &tera::Error) -> String {
    error.to_string().lines().next().unwrap_or("template error").to_owned()
}

pub(super) use crate::audience::reach::fallback::reachable;

/// What a message's templates see: the subscriber, what the message belongs to (`workflow` or
/// `broadcast`), and the subscriber's signed unsubscribe, preferences and add-a-channel links
/// (a year).
pub(super) fn message_context(
    stationery: &Stationery,
    subscriber: Value,
    id: Uuid,
    about: (&str, Value),
    now: DateTime<Utc>,
) -> Value {
    let expires = now + chrono::Duration::days(365);
    let link = |path: &str, purpose: Purpose| stationery.signer.url(&stationery.base_url, path, purpose, id, expires);
    json!({
        "subscriber": subscriber,
        about.0: about.1,
        "business": stationery.business,
        "unsubscribe_url": link("u", Purpose::Unsubscribe),
        "preferences_url": link("preferences", Purpose::Preferences),
        "add_channel_url": link("add", Purpose::AddChannel),
    })
}

/// What every message's template context has besides its subscriber: the signer and base URL
/// of its links, and the business (`business` in templates).
#[derive(Debug, Clone)]
pub(super) struct Stationery {
    pub(super) signer: Signer,
    pub(super) base_url: url::Url,
    pub(super) business: Value,
}

pub(super) fn subscriber_json(s: &subscriber::Model) -> Value {
    json!({
        "id": s.id,
        "email": s.email,
        "phone": s.phone,
        "first_name": s.first_name,
        "last_name": s.last_name,
        "timezone": s.timezone,
        "locale": s.locale,
        "attributes": s.attributes,
    })
}
