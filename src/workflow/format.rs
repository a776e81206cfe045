//! The YAML file as written, before any meaning is checked: every value keeps its position so
//! that a problem found later is still reported as `file:line:column`.
//!
//! Unknown keys are refused here (`deny_unknown_fields`), so a misspelt key is never silently
//! ignored. See `docs/workflows.md` for what each key means.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Every top-level key, for "did you mean" hints.
pub const FILE_KEYS: &[&str] = &[
    "name",
    "description",
    "trigger",
    "exit_when",
    "reentry",
    "timezone",
    "send_window",
    "tracking",
    "steps",
    "pages",
    "lists",
];

/// A workflow file: a workflow (`name`, `trigger`, `steps`, …), landing pages (`pages:`), the
/// lists they use (`lists:`), or any of these together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    pub trigger: Option<Spanned<Trigger>>,
    pub exit_when: Option<Spanned<Condition>>,
    pub reentry: Option<Spanned<Reentry>>,
    pub timezone: Option<Spanned<String>>,
    pub send_window: Option<Spanned<SendWindow>>,
    /// Open and click tracking for this workflow's email (default on).
    pub tracking: Option<bool>,
    #[serde(default)]
    pub steps: Option<Spanned<Vec<Spanned<Step>>>>,
    #[serde(default)]
    pub pages: Option<Vec<Spanned<Page>>>,
    #[serde(default)]
    pub lists: Option<Vec<Spanned<List>>>,
}

/// Only the `lists:` of a file (everything else is ignored): read from every file first, so
/// that a list declared in one file may be used in another.
#[derive(Debug, Deserialize)]
pub struct Declarations {
    #[serde(default)]
    pub lists: Option<Vec<Spanned<List>>>,
}

pub const LIST_KEYS: &[&str] = &["slug", "name", "description", "double_opt_in"];

/// A list declared in a file: created when missing, its name, description and double opt-in
/// kept as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    pub slug: Spanned<String>,
    pub name: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub double_opt_in: Option<bool>,
}

pub const PAGE_KEYS: &[&str] = &[
    "slug",
    "title",
    "description",
    "image",
    "image_alt",
    "bullets",
    "cta",
    "locale",
    "template",
    "list",
    "fields",
    "required",
    "channels",
    "double_opt_in",
    "consent_text",
    "thank_you",
    "default_country",
    "cors",
    "goal",
];

/// A landing page as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub slug: Spanned<String>,
    pub title: Spanned<String>,
    pub description: Option<String>,
    pub image: Option<Spanned<String>>,
    pub image_alt: Option<Spanned<String>>,
    pub bullets: Option<Vec<Spanned<String>>>,
    pub cta: Option<Spanned<String>>,
    pub locale: Option<Spanned<String>>,
    pub template: Option<Spanned<String>>,
    pub list: Spanned<String>,
    pub fields: Option<Spanned<Vec<Spanned<String>>>>,
    pub required: Option<Vec<Spanned<String>>>,
    pub channels: Option<Vec<Spanned<String>>>,
    pub double_opt_in: Option<bool>,
    pub consent_text: Option<Spanned<String>>,
    pub thank_you: Option<Spanned<ThankYou>>,
    pub default_country: Option<Spanned<String>>,
    pub cors: Option<Vec<Spanned<String>>>,
    pub goal: Option<Spanned<String>>,
}

/// `thank_you: pages/thanks.html` or `thank_you: { redirect: https://… }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ThankYou {
    Template(String),
    Redirect { redirect: String },
}

pub const TRIGGER_KEYS: &[&str] = &["subscribed", "tag_added", "event", "date", "schedule", "filter"];

/// What enrolls a subscriber: exactly one of the kinds, plus an optional `filter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub subscribed: Option<Spanned<String>>,
    pub tag_added: Option<Spanned<String>>,
    pub event: Option<Spanned<String>>,
    pub date: Option<Spanned<DateTrigger>>,
    pub schedule: Option<Spanned<ScheduleTrigger>>,
    pub filter: Option<Spanned<Condition>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateTrigger {
    pub attribute: Spanned<String>,
    pub offset: Option<Spanned<String>>,
    pub at: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    pub cron: Spanned<String>,
    pub timezone: Option<Spanned<String>>,
    pub list: Spanned<String>,
}

/// `never`, `always`, or `{ after: 30d }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reentry {
    Never,
    Always,
    After(Spanned<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendWindow {
    pub days: Option<Vec<Spanned<String>>>,
    pub between: Option<Spanned<Vec<String>>>,
}

pub const STEP_KEYS: &[&str] = &[
    "id",
    "email",
    "sms",
    "wait",
    "wait_until",
    "wait_for",
    "on_timeout",
    "if",
    "then",
    "else",
    "tag",
    "untag",
    "set",
    "join",
    "leave",
    "webhook",
    "exit",
    "ask_channel",
    "message",
];

/// One step: an `id` and exactly one action key (`then`/`else` go with `if`, `on_timeout` with
/// `wait_for`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: Spanned<String>,
    pub email: Option<Spanned<EmailStep>>,
    pub sms: Option<Spanned<SmsStep>>,
    pub wait: Option<Spanned<String>>,
    pub wait_until: Option<Spanned<WaitUntil>>,
    pub wait_for: Option<Spanned<WaitFor>>,
    pub on_timeout: Option<Vec<Spanned<Step>>>,
    #[serde(rename = "if")]
    pub condition: Option<Spanned<Condition>>,
    pub then: Option<Vec<Spanned<Step>>>,
    #[serde(rename = "else")]
    pub otherwise: Option<Vec<Spanned<Step>>>,
    pub tag: Option<Spanned<String>>,
    pub untag: Option<Spanned<String>>,
    pub set: Option<Spanned<BTreeMap<String, Spanned<serde_json::Value>>>>,
    pub join: Option<Spanned<String>>,
    pub leave: Option<Spanned<String>>,
    pub webhook: Option<Spanned<WebhookStep>>,
    pub exit: Option<Spanned<String>>,
    /// `sms` (or `phone`, `whatsapp`): ask those reached by email only for a mobile number;
    /// `email`: ask those reached by phone only for an email address.
    pub ask_channel: Option<Spanned<String>>,
    /// One message on several channels in order: `reach: first` (the default) sends it on the
    /// first that reaches the person, `all` on every one.
    pub message: Option<Spanned<MessageStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageStep {
    /// `email`, `sms`, `whatsapp`, in the order they are tried.
    pub channels: Spanned<Vec<Spanned<String>>>,
    /// `first` (the default) or `all`.
    pub reach: Option<Spanned<String>>,
    /// The email's subject and template (with email among the channels).
    pub subject: Option<Spanned<String>>,
    pub template: Option<Spanned<String>>,
    /// The text of the text message and the WhatsApp message.
    pub text: Option<Spanned<String>>,
    /// WhatsApp: an approved template's id (Twilio's Content SID), the text as its variable.
    pub whatsapp_template: Option<Spanned<String>>,
    pub tracking: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailStep {
    pub subject: Spanned<String>,
    pub template: Spanned<String>,
    /// Overrides the workflow's `tracking` for this message.
    pub tracking: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsStep {
    pub template: Option<Spanned<String>>,
    pub text: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    pub weekday: Option<Spanned<String>>,
    pub time: Option<Spanned<String>>,
    pub cron: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    pub event: Spanned<String>,
    pub timeout: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookStep {
    pub url: Spanned<String>,
    /// Name of the environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: Spanned<String>,
    /// Extra JSON fields sent with the subscriber and workflow.
    pub body: Option<BTreeMap<String, serde_json::Value>>,
}

pub const CONDITION_KEYS: &[&str] = &[
    "opened",
    "clicked",
    "tag",
    "list",
    "has",
    "attribute",
    "event",
    "source",
    "medium",
    "campaign",
    "all",
    "any",
    "not",
];

/// A test on a subscriber: a mapping with exactly one of the keys in [`CONDITION_KEYS`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Opened(Spanned<crate::workflow::model::Engaged>),
    Clicked(Spanned<crate::workflow::model::Engaged>),
    Tag(Spanned<String>),
    List(Spanned<String>),
    Has(Spanned<String>),
    Attribute(Spanned<AttributeTest>),
    Event(Spanned<EventTest>),
    Source(Spanned<String>),
    Medium(Spanned<String>),
    Campaign(Spanned<String>),
    All(Vec<Spanned<Condition>>),
    Any(Vec<Spanned<Condition>>),
    Not(Box<Spanned<Condition>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeTest {
    pub name: Spanned<String>,
    pub equals: Option<serde_json::Value>,
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    pub exists: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTest {
    pub name: Spanned<String>,
    pub within: Option<Spanned<String>>,
}
