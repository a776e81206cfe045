//! A subscriber's timeline in people's words: what each entry means, naming messages by their
//! subject and where they came from (a broadcast, a workflow's step) instead of by their ids.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use crate::audience::subscribers::EventView;
use crate::core::error::Result;
use crate::store::Db;
use crate::store::entities::{broadcast, outbox};

/// What the timeline knows of a message: its subject, channel, and what produced it.
#[derive(Debug, Clone)]
pub struct Message {
    subject: Option<String>,
    sms: bool,
    origin: String,
}

/// The messages and broadcasts the entries name, read at once.
#[derive(Debug, Default)]
pub struct Names {
    messages: HashMap<Uuid, Message>,
    broadcasts: HashMap<Uuid, String>,
}

/// A message as read for the timeline: id, subject, channel, broadcast, workflow, step.
type MessageRow = (Uuid, Option<String>, String, Option<Uuid>, Option<String>, Option<String>);

fn uuid_at(data: &Value, key: &str) -> Option<Uuid> {
    data.get(key).and_then(Value::as_str).and_then(|s| s.parse().ok())
}

impl Names {
    pub async fn of(db: &Db, events: &[EventView]) -> Result<Names> {
        let mut ids: Vec<Uuid> = events.iter().filter_map(|e| uuid_at(&e.data, "message")).collect();
        ids.sort();
        ids.dedup();
        let mut names = Names::default();
        let mut rows = Vec::new();
        for chunk in ids.chunks(500) {
            let found: Vec<MessageRow> = outbox::Entity::find()
                .select_only()
                .column(outbox::Column::Id)
                .column(outbox::Column::Subject)
                .column(outbox::Column::Channel)
                .column(outbox::Column::BroadcastId)
                .column(outbox::Column::WorkflowId)
                .column(outbox::Column::StepId)
                .filter(outbox::Column::Id.is_in(chunk.to_vec()))
                .into_tuple()
                .all(db.conn())
                .await?;
            rows.extend(found);
        }
        let mut wanted: Vec<Uuid> = rows.iter().filter_map(|r| r.3).collect();
        wanted.extend(events.iter().filter_map(|e| uuid_at(&e.data, "broadcast")));
        wanted.sort();
        wanted.dedup();
        for chunk in wanted.chunks(500) {
            let found: Vec<(Uuid, Option<String>)> = broadcast::Entity::find()
                .select_only()
                .column(broadcast::Column::Id)
                .column(broadcast::Column::Subject)
                .filter(broadcast::Column::Id.is_in(chunk.to_vec()))
                .into_tuple()
                .all(db.conn())
                .await?;
            for (id, subject) in found {
                names.broadcasts.insert(id, subject.unwrap_or_else(|| "a text message".into()));
            }
        }
        for (id, subject, channel, broadcast, workflow, step) in rows {
            let origin = match (broadcast, workflow, step) {
                (Some(b), _, _) => match names.broadcasts.get(&b) {
                    Some(subject) => format!("the broadcast “{subject}”"),
                    None => "a broadcast".to_owned(),
                },
                (None, Some(w), Some(s)) => format!("step “{s}” of workflow “{w}”"),
                _ => "the confirmation request".to_owned(),
            };
            names.messages.insert(id, Message { subject, sms: channel == "sms", origin });
        }
        Ok(names)
    }

    /// The message an entry is about, in words: `the email “Subject” (from …)`.
    fn message(&self, data: &Value, channel: &str) -> String {
        let what = if channel == "sms" { "the text message" } else { "the email" };
        match uuid_at(data, "message").and_then(|id| self.messages.get(&id)) {
            Some(m) => {
                let what = if m.sms { "the text message" } else { what };
                match &m.subject {
                    Some(subject) => format!("{what} “{subject}” (from {})", m.origin),
                    None => format!("{what} from {}", m.origin),
                }
            }
            None => match uuid_at(data, "broadcast").and_then(|b| self.broadcasts.get(&b)) {
                Some(subject) => format!("{what} of the broadcast “{subject}”"),
                None => what.to_owned(),
            },
        }
    }

    /// One entry in words.
    pub fn describe(&self, kind: &str, data: &Value) -> String {
        let s = |key: &str| match data.get(key) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let by = |text: String| {
            let who = s("by");
            if who.is_empty() { text } else { format!("{text} (by {who})") }
        };
        let lists = || match data.get("lists") {
            Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
            _ => String::new(),
        };
        let step_of = || {
            let (step, workflow) = (s("step"), s("workflow"));
            match (step.is_empty(), workflow.is_empty()) {
                (false, false) => format!("step “{step}” of workflow “{workflow}”"),
                (false, true) => format!("step “{step}”"),
                _ => format!("workflow “{workflow}”"),
            }
        };
        match kind {
            "subscribed" if !lists().is_empty() => by(format!("Joined {}", lists())),
            "subscribed" => by("Subscribed".to_owned()),
            "imported" => by(format!(
                "Imported{}",
                if s("list").is_empty() { String::new() } else { format!(" into {}", s("list")) }
            )),
            "updated" => by(format!("Details changed: {}", s("fields").trim_matches(['[', ']']).replace('"', ""))),
            "tag_added" => format!("Tagged “{}”", s("tag")),
            "tag_removed" => format!("Tag “{}” removed", s("tag")),
            "unsubscribed" if !s("list").is_empty() => by(format!("Left the list {}", s("list"))),
            "unsubscribed" => by("Unsubscribed from everything".to_owned()),
            "bounced" => format!("The {} address bounced: {}", channel_name(&s("channel")), s("reason")),
            "soft_bounce" => format!("A temporary email problem: {}", s("reason")),
            "complained" => "Marked an email as spam".to_owned(),
            "consent_granted" => by(format!("Gave consent for {}", channel_name(&s("channel")))),
            "consent_revoked" => by(format!("Withdrew consent for {}", channel_name(&s("channel")))),
            "erased" => by("Personal data erased".to_owned()),
            "email_opened" | "email_clicked" if s("verdict") == "machine" => {
                let what = self.message(data, "email");
                let done = match (kind, data.get("trap") == Some(&Value::Bool(true))) {
                    ("email_opened", _) => format!("loaded the open pixel of {what}"),
                    (_, true) => format!("followed the hidden link of {what}"),
                    _ => format!("followed {} in {what}", s("url")),
                };
                format!("A machine, not a person, {done}: {}", s("reason"))
            }
            "email_opened" => format!("Opened {}", self.message(data, "email")),
            "email_clicked" => format!("Clicked {} in {}", s("url"), self.message(data, "email")),
            "email_sent" | "sms_sent" => format!("Sent {}", self.message(data, &kind[..kind.len() - 5])),
            "email_failed" | "sms_failed" => {
                let error = data.get("detail").and_then(|d| d.get("error")).and_then(Value::as_str).unwrap_or("");
                let what = self.message(data, if kind.starts_with("sms") { "sms" } else { "email" });
                format!("Could not send {what}: {error}")
            }
            "email_retrying" | "sms_retrying" => {
                let error = data.get("detail").and_then(|d| d.get("error")).and_then(Value::as_str).unwrap_or("");
                let what = self.message(data, if kind.starts_with("sms") { "sms" } else { "email" });
                format!("Will try {what} again: {error}")
            }
            "sms_delivered" => format!("Received {}", self.message(data, "sms")),
            "email_cancelled" | "sms_cancelled" => {
                let what = self.message(data, if kind.starts_with("sms") { "sms" } else { "email" });
                format!("Did not send {what}: {}", s("reason"))
            }
            "email_held" | "sms_held" => {
                let what = self.message(data, if kind.starts_with("sms") { "sms" } else { "email" });
                format!("Holds {what}: {}", s("reason"))
            }
            "reach_chosen" => {
                let list = |key: &str| match data.get(key) {
                    Some(Value::Array(all)) => all
                        .iter()
                        .map(|c| match (c.get("channel").and_then(Value::as_str), c.get("reason")) {
                            (Some(channel), Some(Value::String(why))) => format!("{} ({why})", channel_name(channel)),
                            _ => channel_name(c.as_str().unwrap_or_default()).to_owned(),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => String::new(),
                };
                let mut text = format!("To be reached once, first by {}", channel_name(&s("channel")));
                if !list("passed_over").is_empty() {
                    text.push_str(&format!("; passed over: {}", list("passed_over")));
                }
                if !list("then").is_empty() {
                    text.push_str(&format!("; should it fail for good: {}", list("then")));
                }
                text
            }
            "reach_fallback" => format!(
                "Sent by {} instead, since the {} failed for good: {}",
                channel_name(&s("to")),
                channel_name(&s("from")),
                s("reason")
            ),
            "sms_received" => format!("Replied by text message: “{}”", s("body")),
            "goal_reached" if !s("page").is_empty() => {
                format!("Reached the goal of page “{}”: did “{}”", s("page"), s("event"))
            }
            "goal_reached" => format!("Reached the goal of workflow “{}”: {}", s("workflow"), s("goal")),
            "signed_up" => {
                let from = data.get("attribution").and_then(|a| a.get("source")).and_then(Value::as_str);
                let from = from.map(|f| format!(", coming from {f}")).unwrap_or_default();
                let how = if data.get("double_opt_in") == Some(&Value::Bool(true)) { ", to confirm" } else { "" };
                let channels = match data.get("channels") {
                    Some(Value::Array(all)) => {
                        all.iter().filter_map(Value::as_str).map(channel_name).collect::<Vec<_>>().join(" and ")
                    }
                    _ => String::new(),
                };
                format!("Signed up on page “{}” for {channels}{how}{from}", s("page"))
            }
            "signup_confirmed" => {
                format!("Confirmed the signup of page “{}” ({})", s("page"), channel_name(&s("channel")))
            }
            "workflow_entered" => format!("Entered workflow “{}”", s("workflow")),
            "workflow_not_entered" => format!("Did not enter workflow “{}”: {}", s("workflow"), s("reason")),
            "workflow_updated" => format!("Moved to the new version of workflow “{}”", s("workflow")),
            "workflow_exited" => format!("Left workflow “{}”: {}", s("workflow"), s("reason")),
            "workflow_completed" => format!("Finished workflow “{}”", s("workflow")),
            "message_queued" => format!("Queued {}", self.message(data, &s("channel"))),
            "step_done" => format!("Done: {}", step_of()),
            "step_skipped" => format!("Skipped {}: {}", step_of(), s("reason")),
            "branch_taken" => format!("At {}: the {} branch, because {}", step_of(), s("branch"), s("because")),
            "waiting" if !s("for_event").is_empty() => {
                format!("Waits at {} for “{}” until {}", step_of(), s("for_event"), when(&s("until")))
            }
            "waiting" => format!("Waits at {} until {}", step_of(), when(&s("until"))),
            "event_received" => format!("“{}” happened", s("event")),
            "wait_timed_out" => format!("At {}: no “{}” in time", step_of(), s("event")),
            other if other.starts_with("event:") => format!("Did “{}”", &other[6..]),
            other => format!("{other}: {}", super::summary(data)),
        }
    }
}

fn channel_name(channel: &str) -> &str {
    match channel {
        "sms" => "text messages",
        "email" => "email",
        other => other,
    }
}

/// A stored time as the dashboard writes times (UTC, to the minute).
fn when(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| text.to_owned())
}
