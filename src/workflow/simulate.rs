//! `ownlist workflows simulate`: runs one workflow for one imaginary subscriber on a virtual
//! clock and prints the timeline it would produce.
//!
//! The simulation runs the real engine against a throwaway SQLite database in a temporary
//! folder, so what it shows is what production would do; the real database is never touched.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use super::engine::Engine;
use super::model::{Action, Condition, Trigger, Workflow};
use super::registry::Registry;
use super::templates::TemplateChecker;
use super::{Context, Diagnostic, check};
use crate::audience::events::{NewEvent, record};
use crate::audience::lists::{NewList, create as create_list};
use crate::audience::subscribers::{self, NewSubscriber};
use crate::audience::{Actor, records};
use crate::core::clock::{Clock, ManualClock, SharedClock};
use crate::core::error::Reason;
use crate::core::links::Signer;
use crate::core::timing::{Span, next_cron_tick, zone};
use crate::store::Db;
use crate::store::entities::{enrollment, event, outbox};

/// What the imaginary subscriber does.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Events and when, counted from the start: `purchased@2d`.
    pub events: Vec<(String, Span)>,
    /// Email steps whose message they open (as soon as it is sent).
    pub opens: Vec<String>,
    /// Email steps whose message they click.
    pub clicks: Vec<String>,
}

impl Script {
    /// Parses `NAME@DURATION`.
    pub fn parse_event(text: &str) -> Result<(String, Span), Reason> {
        let (name, at) =
            text.split_once('@').ok_or_else(|| format!("'{text}' is not NAME@DURATION, e.g. purchased@2d"))?;
        crate::audience::events::validate_name(name)?;
        Ok((name.to_owned(), Span::parse(at, false)?))
    }
}

pub enum Outcome {
    Invalid(Vec<Diagnostic>),
    Timeline(String),
}

/// Simulates the workflow in `file` for `subscriber` (JSON like the API's POST /subscribers body).
pub async fn simulate(
    file: &Path,
    templates_dir: &Path,
    subscriber: Option<Value>,
    script: &Script,
    start: DateTime<Utc>,
    horizon: Duration,
) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let templates = Arc::new(TemplateChecker::load(templates_dir));
    let workflow = match check(file, &text, &Context { templates: &templates, lists: None, sms_max_segments: u32::MAX })
    {
        Ok(w) => w,
        Err(diagnostics) => return Ok(Outcome::Invalid(diagnostics)),
    };
    let scratch = tempfile::tempdir()?;
    let db = Db::connect(&format!("sqlite://{}?mode=rwc", scratch.path().join("simulation.db").display())).await?;
    db.migrate().await?;
    let clock = Arc::new(ManualClock::new(start));
    let shared: SharedClock = clock.clone();
    for slug in lists_named(&workflow) {
        let input = NewList { slug: slug.clone(), name: slug, description: None, double_opt_in: Some(false) };
        create_list(&db, start, input).await?;
    }
    let registry = Arc::new(Registry::open(db.clone()).await?);
    registry.sync(start, std::slice::from_ref(&workflow)).await?;
    let base = url::Url::parse("https://example.invalid/")?;
    let engine =
        Engine::new(db.clone(), shared, registry, templates, Signer::new("simulation-secret-simulation-secret"), base);

    let actor = Actor::Cli;
    let mut input: NewSubscriber = match subscriber {
        Some(value) => serde_json::from_value(value).map_err(|e| anyhow::anyhow!("--subscriber: {e}"))?,
        None => NewSubscriber {
            email: Some("ada@example.com".into()),
            first_name: Some("Ada".into()),
            ..NewSubscriber::default()
        },
    };
    input.consent.email |= input.email.is_some();
    input.consent.sms |= input.phone.is_some();
    let mut schedule_tick = None;
    match &workflow.trigger {
        Trigger::Subscribed { list } => input.lists.push(list.clone()),
        Trigger::TagAdded { tag } => input.tags.push(tag.clone()),
        _ => {}
    }
    let created = subscribers::create(&db, start, &actor, input).await?;
    match &workflow.trigger {
        Trigger::Event { name } => {
            let event = NewEvent {
                subscriber_id: Some(created.id),
                email: None,
                phone: None,
                name: name.clone(),
                properties: Default::default(),
            };
            record(&db, start, &actor, event).await?;
        }
        Trigger::Schedule { cron, timezone, .. } => {
            let tz = zone(timezone.as_deref(), workflow.timezone.as_deref());
            schedule_tick = next_cron_tick(start, tz, cron);
        }
        Trigger::Date { attribute, offset, at } => {
            let anniversary = created
                .attributes
                .get(attribute)
                .and_then(Value::as_str)
                .and_then(crate::core::timing::month_day)
                .ok_or_else(|| {
                    anyhow::anyhow!("--subscriber needs the attribute '{attribute}' as YYYY-MM-DD or MM-DD")
                })?;
            let tz = zone(created.timezone.as_deref(), workflow.timezone.as_deref());
            schedule_tick =
                crate::core::timing::occurrence_in(anniversary, *offset, *at, tz, start, start + Duration::days(367));
        }
        _ => {}
    }
    let subscriber_id = created.id;
    if let Some(tick) = schedule_tick {
        clock.set(tick);
    }

    let mut pending_events: Vec<(String, DateTime<Utc>)> =
        script.events.iter().map(|(name, at)| (name.clone(), start + at.as_chrono())).collect();
    pending_events.sort_by_key(|(_, at)| *at);
    let mut opened: BTreeSet<String> = BTreeSet::new();
    let end = start + horizon;
    if schedule_tick.is_some() {
        engine.enroll_directly(&workflow.id, subscriber_id).await?;
    }
    loop {
        engine.tick().await?;
        for (kind, steps) in [("email_opened", &script.opens), ("email_clicked", &script.clicks)] {
            let sent =
                outbox::Entity::find().filter(outbox::Column::SubscriberId.eq(subscriber_id)).all(db.conn()).await?;
            for message in sent {
                let step = message.step_id.clone().unwrap_or_default();
                let key = format!("{kind}:{step}");
                if steps.contains(&step) && opened.insert(key) {
                    let data = json!({"workflow": workflow.id, "step": step, "message": message.id});
                    let at = clock.now();
                    sea_orm::ActiveModelTrait::insert(records::event(subscriber_id, kind, data, at), db.conn()).await?;
                    let changed = records::trigger(subscriber_id, records::trigger::CHANGED, "", json!({}), at);
                    sea_orm::ActiveModelTrait::insert(changed, db.conn()).await?;
                }
            }
        }
        engine.tick().await?;
        let live = enrollment::Entity::find()
            .filter(enrollment::Column::SubscriberId.eq(subscriber_id))
            .filter(enrollment::Column::EndedAt.is_null())
            .order_by_asc(enrollment::Column::NextRunAt)
            .one(db.conn())
            .await?;
        let next_wake = live.as_ref().and_then(|e| e.next_run_at);
        let next_event = pending_events.first().map(|(_, at)| *at);
        let next = match (next_wake, next_event) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) if live.is_some() => b,
            _ => break,
        };
        if next > end {
            break;
        }
        if next > clock.now() {
            clock.set(next);
        }
        while pending_events.first().is_some_and(|(_, at)| *at <= clock.now()) {
            let (name, _) = pending_events.remove(0);
            let event = NewEvent {
                subscriber_id: Some(subscriber_id),
                email: None,
                phone: None,
                name,
                properties: Default::default(),
            };
            record(&db, clock.now(), &actor, event).await?;
        }
    }
    let timeline = render_timeline(&db, subscriber_id, start, &workflow, created.timezone.as_deref()).await?;
    db.close().await?;
    Ok(Outcome::Timeline(timeline))
}

fn lists_named(workflow: &Workflow) -> BTreeSet<String> {
    fn in_condition(c: &Condition, out: &mut BTreeSet<String>) {
        match c {
            Condition::List(l) => {
                out.insert(l.clone());
            }
            Condition::All(items) | Condition::Any(items) => items.iter().for_each(|i| in_condition(i, out)),
            Condition::Not(inner) => in_condition(inner, out),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    match &workflow.trigger {
        Trigger::Subscribed { list } | Trigger::Schedule { list, .. } => {
            out.insert(list.clone());
        }
        _ => {}
    }
    for c in [&workflow.filter, &workflow.exit_when].into_iter().flatten() {
        in_condition(c, &mut out);
    }
    for step in workflow.all_steps() {
        match &step.action {
            Action::Join(l) | Action::Leave(l) => {
                out.insert(l.clone());
            }
            Action::If { condition, .. } => in_condition(condition, &mut out),
            _ => {}
        }
    }
    out
}

async fn render_timeline(
    db: &Db,
    subscriber: uuid::Uuid,
    start: DateTime<Utc>,
    workflow: &Workflow,
    tz: Option<&str>,
) -> anyhow::Result<String> {
    let tz = zone(tz, workflow.timezone.as_deref());
    let events = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(subscriber))
        .order_by_asc(event::Column::Id)
        .all(db.conn())
        .await?;
    let messages = outbox::Entity::find().filter(outbox::Column::SubscriberId.eq(subscriber)).all(db.conn()).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Simulating '{}' ({}) from {} in {}",
        workflow.name,
        workflow.id,
        start.with_timezone(&tz).format("%a %Y-%m-%d %H:%M"),
        tz.name()
    );
    for e in events {
        let at = e.created_at.with_timezone(&tz);
        let elapsed = e.created_at - start;
        let line = describe_event(&e.kind, &e.data, &messages, tz);
        let Some(line) = line else { continue };
        let _ = writeln!(out, "{}  {:>9}  {line}", at.format("%a %Y-%m-%d %H:%M"), format_elapsed(elapsed));
    }
    Ok(out)
}

fn format_elapsed(d: Duration) -> String {
    let minutes = d.num_minutes();
    if minutes == 0 {
        return "+0".into();
    }
    let (days, hours, mins) = (minutes / 1440, (minutes % 1440) / 60, minutes % 60);
    let mut s = String::from("+");
    if days > 0 {
        let _ = write!(s, "{days}d");
    }
    if hours > 0 {
        let _ = write!(s, "{hours}h");
    }
    if mins > 0 {
        let _ = write!(s, "{mins}m");
    }
    s
}

fn describe_event(kind: &str, data: &Value, messages: &[outbox::Model], tz: chrono_tz::Tz) -> Option<String> {
    let s = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let local = |key: &str| {
        let text = s(key);
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M").to_string())
            .unwrap_or(text)
    };
    Some(match kind {
        "workflow_entered" => format!("entered (version {})", data["version"]),
        "workflow_not_entered" => format!(
            "not entered: {} (describe the subscriber with --subscriber, e.g. \
             '{{\"email\":\"ada@example.com\",\"attribution\":{{\"source\":\"instagram\"}}}}')",
            s("reason")
        ),
        "message_queued" => {
            let subject = messages
                .iter()
                .find(|m| Some(m.id.to_string()) == data.get("message").and_then(Value::as_str).map(str::to_owned))
                .and_then(|m| m.subject.clone().map(|subj| format!(" \"{subj}\"")))
                .unwrap_or_default();
            format!("{} {}{subject}", s("channel"), s("step"))
        }
        "step_skipped" => format!("skipped {}: {}", s("step"), s("reason")),
        "reach_chosen" => {
            let passed: Vec<String> = data["passed_over"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|p| {
                            format!("{} ({})", p["channel"].as_str().unwrap_or(""), p["reason"].as_str().unwrap_or(""))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let then: Vec<&str> =
                data["then"].as_array().map(|all| all.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let mut text = format!("{}: reached first on {}", s("step"), s("channel"));
            if !passed.is_empty() {
                text.push_str(&format!(", passing over {}", passed.join(", ")));
            }
            if !then.is_empty() {
                text.push_str(&format!("; should it fail for good: {}", then.join(", ")));
            }
            text
        }
        "branch_taken" => format!("{}: {} branch, because {}", s("step"), s("branch"), s("because")),
        "waiting" => {
            let why = data.get("reason").and_then(Value::as_str).map(|r| format!(" ({r})")).unwrap_or_default();
            let what = data.get("for_event").and_then(Value::as_str).map(|e| format!(" for '{e}'")).unwrap_or_default();
            format!("{} waits{what} until {}{why}", s("step"), local("until"))
        }
        "event_received" => format!("event '{}' arrived", s("event")),
        "wait_timed_out" => format!("{}: no '{}' in time", s("step"), s("event")),
        "workflow_exited" => format!("exited: {}", s("reason")),
        "workflow_completed" => format!("completed: {}", s("reason")),
        "tag_added" => format!("tag '{}' added", s("tag")),
        "tag_removed" => format!("tag '{}' removed", s("tag")),
        "email_opened" => format!("opens {}", s("step")),
        "email_clicked" => format!("clicks in {}", s("step")),
        k if k.starts_with("event:") => format!("does '{}'", &k[6..]),
        "updated" => "attributes set".into(),
        "subscribed" if data.get("lists").and_then(Value::as_array).is_some_and(|l| !l.is_empty()) => {
            format!("joins {}", data["lists"])
        }
        "unsubscribed" => format!("leaves {}", s("list")),
        _ => return None,
    })
}
