//! A workflow after checking: every name resolved, every duration parsed. The engine runs this,
//! never the raw YAML. It serialises to JSON so that each loaded version can be stored.

use std::collections::BTreeMap;

use chrono::{NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use crate::core::timing::Span;
use crate::core::values::Channel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// The file name without `.yaml`: the workflow's stable identifier.
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub trigger: Trigger,
    pub filter: Option<Condition>,
    pub exit_when: Option<Condition>,
    pub reentry: Reentry,
    /// IANA name, used when the subscriber has no time zone.
    pub timezone: Option<String>,
    pub send_window: Option<SendWindow>,
    pub tracking: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Subscribed { list: String },
    TagAdded { tag: String },
    Event { name: String },
    Date { attribute: String, offset: Span, at: NaiveTime },
    Schedule { cron: String, timezone: Option<String>, list: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reentry {
    Never,
    Always,
    After(Span),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWindow {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Email {
        subject: String,
        template: String,
        tracking: Option<bool>,
    },
    Sms {
        body: SmsBody,
    },
    Wait(Span),
    WaitUntil(WaitUntil),
    WaitFor {
        event: String,
        timeout: Span,
        on_timeout: Vec<Step>,
    },
    If {
        condition: Condition,
        then: Vec<Step>,
        otherwise: Vec<Step>,
    },
    Tag(String),
    Untag(String),
    Set(BTreeMap<String, serde_json::Value>),
    Join(String),
    Leave(String),
    Webhook {
        url: String,
        secret_env: String,
        body: BTreeMap<String, serde_json::Value>,
    },
    Exit(String),
    /// Asks for the channel named (`Sms`: a mobile number, `Email`: an email address) those who
    /// lack it, by a message on the channel they have, linking the add-channel page.
    AskChannel(Channel),
    /// One message on several channels in order (`message:`).
    Message(MessageAction),
}

/// A `message:` step: the same message on several channels, in order; with `reach_first` each
/// person gets it once, on the first channel that reaches them (the next only if it fails for
/// good), else on every one that does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageAction {
    pub channels: Vec<Channel>,
    pub reach_first: bool,
    pub subject: Option<String>,
    pub template: Option<String>,
    pub text: Option<String>,
    pub whatsapp_template: Option<String>,
    pub tracking: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsBody {
    Template(String),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitUntil {
    /// The next `time` (on `weekday`, when given) in the subscriber's time zone.
    Time { weekday: Option<Weekday>, time: NaiveTime },
    /// The next tick of a five-field cron expression in the subscriber's time zone.
    Cron(String),
}

/// `opened:`/`clicked:`: an email step of the workflow, and whether machines' opens and clicks
/// (privacy proxies, link scanners) count too. Written as the step's id alone, or as
/// `{ step: ID, include_machine: true }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EngagedForm")]
pub struct Engaged {
    pub step: String,
    pub include_machine: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EngagedForm {
    Step(String),
    #[serde(rename_all = "snake_case")]
    Full {
        step: String,
        #[serde(default)]
        include_machine: bool,
    },
}

impl From<EngagedForm> for Engaged {
    fn from(form: EngagedForm) -> Self {
        match form {
            EngagedForm::Step(step) => Self { step, include_machine: false },
            EngagedForm::Full { step, include_machine } => Self { step, include_machine },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Opened(Engaged),
    Clicked(Engaged),
    Tag(String),
    List(String),
    Has(Channel),
    Attribute { name: String, test: AttributeTest },
    Event { name: String, within: Option<Span> },
    Source(String),
    Medium(String),
    Campaign(String),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeTest {
    Equals(serde_json::Value),
    In(Vec<serde_json::Value>),
    Exists(bool),
}

impl Condition {
    /// The lists this condition names, added to `out`.
    fn lists(&self, out: &mut std::collections::BTreeSet<String>) {
        match self {
            Condition::List(slug) => {
                out.insert(slug.clone());
            }
            Condition::All(all) | Condition::Any(all) => all.iter().for_each(|c| c.lists(out)),
            Condition::Not(inner) => inner.lists(out),
            _ => {}
        }
    }
}

impl Workflow {
    /// Every list the workflow names: its trigger, filter, goal, conditions and join/leave steps.
    pub fn lists(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        match &self.trigger {
            Trigger::Subscribed { list } | Trigger::Schedule { list, .. } => {
                out.insert(list.clone());
            }
            _ => {}
        }
        for condition in self.filter.iter().chain(&self.exit_when) {
            condition.lists(&mut out);
        }
        for step in self.all_steps() {
            match &step.action {
                Action::Join(slug) | Action::Leave(slug) => {
                    out.insert(slug.clone());
                }
                Action::If { condition, .. } => condition.lists(&mut out),
                _ => {}
            }
        }
        out
    }

    /// Every step, depth first, in document order.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for step in steps {
                out.push(step);
                match &step.action {
                    Action::If { then, otherwise, .. } => {
                        walk(then, out);
                        walk(otherwise, out);
                    }
                    Action::WaitFor { on_timeout, .. } => walk(on_timeout, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        out
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text, true).map_err(serde::de::Error::custom)
    }
}
