//! The engine: turns pending triggers into enrollments and advances due enrollments, step by
//! step, with every effect written in the same transaction as the enrollment's new position.
//!
//! A crash between two transactions loses nothing (the trigger or the enrollment is still there
//! and due) and repeats nothing (what committed moved the enrollment on; an outbox message is
//! also unique by enrollment and step). Every decision goes into the subscriber's timeline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::catalog::Catalog;
use super::program::Program;
use super::registry::Registry;
use super::templates::TemplateChecker;
use crate::audience::records::{self};
use crate::core::clock::SharedClock;
use crate::outbox::compose::Tracking;

mod advance;
mod ask;
mod broadcast;
mod broadcast_render;
mod dates;
mod facts;
mod loops;
mod message;
mod reach_step;
mod schedules;
mod step;
mod sunset;
mod triggers;

use crate::core::error::Result;
use crate::core::links::Signer;
use crate::rollups::steps::Tally;
use crate::store::Db;
use crate::store::entities::{enrollment, event, pending_trigger, subscriber, subscriber_tag};
use advance::*;
pub use broadcast::{Audience, BroadcastView, ChannelProgress, NewBroadcast, Preview};
use facts::*;
use message::*;
use schedules::*;
use triggers::*;

/// How many triggers or enrollments one transaction takes on.
const BATCH: u64 = 2000;
/// Steps one enrollment may take in one run (a workflow has no loops; this is a safety net).
const MAX_STEPS_PER_RUN: usize = 500;
/// Steps due within this many milliseconds, or since the previous batch was claimed if that is
/// longer ago (up to `ON_TIME_MAX_MS`), count as just due and are taken before older ones.
const ON_TIME_MS: i64 = 1000;
const ON_TIME_MAX_MS: i64 = 10_000;
/// A batch reads at most this many windows (of the room it has left) of a backlog bigger than
/// itself, in storage order.
const WINDOWS: usize = 4;

/// Timeline kinds written by the engine.
pub mod decision {
    pub const ENTERED: &str = "workflow_entered";
    pub const NOT_ENTERED: &str = "workflow_not_entered";
    pub const STEP_DONE: &str = "step_done";
    pub const STEP_SKIPPED: &str = "step_skipped";
    pub const BRANCH: &str = "branch_taken";
    pub const WAITING: &str = "waiting";
    pub const EVENT_RECEIVED: &str = "event_received";
    pub const TIMED_OUT: &str = "wait_timed_out";
    pub const EXITED: &str = "workflow_exited";
    pub const COMPLETED: &str = "workflow_completed";
    pub const MESSAGE_QUEUED: &str = "message_queued";
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TickReport {
    pub triggers: u64,
    pub enrolled: u64,
    pub advanced: u64,
    /// Subscribers whose broadcast messages were written to the outbox.
    pub broadcast_to: u64,
}

#[derive(Debug)]
pub struct Engine {
    db: Db,
    clock: SharedClock,
    registry: Arc<Registry>,
    /// The templates and landing pages in force (shared with the public pages).
    catalog: Arc<Catalog>,
    /// The signer and base URL of every message's links, and the business it names.
    stationery: Stationery,
    /// When the previous batch of due enrollments was claimed (by this process).
    last_claim: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Where the pass through a big backlog has got to (the last enrollment id taken); `None`
    /// starts a pass. Kept in memory only: a restart begins a new pass, which repeats nothing.
    backlog_cursor: std::sync::Mutex<Option<Uuid>>,
    /// Open and click tracking for email, when on (globally; a workflow may turn it off).
    tracking: Option<Tracking>,
    /// Rung when a tick wrote messages to the outbox.
    bell: crate::outbox::Doorbell,
    /// Several instances on one database (PostgreSQL): this process's id, under which it holds
    /// the `engine` lease while it runs the engine (one instance at a time does).
    leadership: Option<(String, chrono::Duration)>,
    /// What the delivery workers of this process know of each channel, and how long one may
    /// have been failing before `reach: first` tries it last (`fallback_after`).
    health: (crate::core::health::SharedHealth, chrono::Duration),
}

/// `reach: first`: the channels in the order to try them, those down (`down`, with why) last,
/// and those put last with why.
pub(super) fn order_for_reach(
    channels: &[crate::core::values::Channel],
    down: &[(crate::core::values::Channel, String)],
) -> (Vec<crate::core::values::Channel>, Vec<Value>) {
    let is_down = |c: &crate::core::values::Channel| down.iter().any(|(d, _)| d == c);
    let ordered =
        channels.iter().filter(|c| !is_down(c)).chain(channels.iter().filter(|c| is_down(c))).copied().collect();
    let last = down
        .iter()
        .filter(|(c, _)| channels.contains(c))
        .map(|(c, why)| json!({"channel": c, "reason": why}))
        .collect();
    (ordered, last)
}

/// How long the engine lease lasts unless renewed (every round of a tick renews it), at most.
pub const ENGINE_LEASE_SECONDS: i64 = 30;

/// What a subscriber is, as conditions and messages see it. A batch loads the parts its
/// workflows may read (`Program::needs`) for all its subscribers at once; any other part is
/// loaded on first use.
struct Facts {
    id: Uuid,
    subscriber: Option<subscriber::Model>,
    tags: Option<HashSet<String>>,
    lists: Option<HashSet<String>>,
}

/// What happens after a step.
enum Flow {
    Goto(Option<String>),
    WaitUntil(DateTime<Utc>),
    End { status: &'static str, reason: String },
}

/// An enrollment being advanced, with the timeline entries it produces.
struct Run<'a> {
    row: enrollment::Model,
    program: &'a Program,
    events: Vec<event::ActiveModel>,
    triggers: Vec<pending_trigger::ActiveModel>,
    tags: Vec<subscriber_tag::ActiveModel>,
    listeners: &'a Listeners,
    now: DateTime<Utc>,
    /// When the enrollment's current step was due. Waits count from here, not from when the
    /// engine got to it, so a backlog or a restart does not stretch a drip.
    logical: DateTime<Utc>,
    /// Step statistics of this run: (step, measure, detail).
    tally: Vec<(String, &'static str, String)>,
    /// The reason the current step was skipped, if it was.
    skipped: Option<String>,
}

impl Run<'_> {
    fn note(&mut self, kind: &str, mut data: Value) {
        if let Value::Object(map) = &mut data {
            map.insert("workflow".into(), json!(self.row.workflow_id));
            map.insert("version".into(), json!(self.row.version));
            if kind == decision::STEP_SKIPPED {
                let reason = map.get("reason").and_then(Value::as_str).unwrap_or("skipped");
                self.skipped = Some(reason.to_owned());
            }
        }
        self.events.push(records::event(self.row.subscriber_id, kind, data, self.now));
    }

    fn count(&mut self, step: &str, what: &'static str, detail: String) {
        self.tally.push((step.to_owned(), what, detail));
    }
}

impl Engine {
    pub fn new(
        db: Db,
        clock: SharedClock,
        registry: Arc<Registry>,
        templates: Arc<TemplateChecker>,
        signer: Signer,
        base_url: url::Url,
    ) -> Self {
        Self {
            db,
            clock,
            registry,
            catalog: Arc::new(Catalog::new(templates)),
            tracking: Some(Tracking { signer: signer.clone(), base_url: base_url.clone() }),
            stationery: Stationery { signer, base_url, business: crate::core::brand::Business::default().context() },
            last_claim: std::sync::Mutex::new(None),
            backlog_cursor: std::sync::Mutex::new(None),
            bell: crate::outbox::Doorbell::new(),
            leadership: None,
            health: (
                Default::default(),
                chrono::Duration::minutes(crate::audience::reach::fallback::DEFAULT_FALLBACK_AFTER_MINUTES),
            ),
        }
    }

    /// Reads the channels' health from the delivery workers that share `health`: with
    /// `reach: first`, a channel failing for longer than `fallback_after` is tried last.
    pub fn with_health(mut self, health: crate::core::health::SharedHealth, fallback_after: chrono::Duration) -> Self {
        self.health = (health, fallback_after);
        self
    }

    /// The channels failing for longer than `fallback_after` now, each with why: tried last.
    pub(super) fn channels_down(&self, now: DateTime<Utc>) -> Vec<(crate::core::values::Channel, String)> {
        use crate::core::values::{Channel, OutboxChannel};
        let (health, after) = &self.health;
        Channel::ALL
            .iter()
            .filter_map(|c| {
                let down = health.down_for(OutboxChannel::from(*c).as_str(), now).filter(|d| d > after)?;
                Some((*c, format!("its relays or providers have been failing for {} min", down.num_minutes())))
            })
            .collect()
    }

    /// Runs the engine only while this process holds the `engine` lease (several instances on
    /// one PostgreSQL database): one instance at a time advances workflows, fires schedules and
    /// writes broadcasts; another takes over within 30 s of it stopping.
    pub fn with_leadership(mut self, instance: String, ttl: chrono::Duration) -> Self {
        self.leadership = Some((instance, ttl));
        self
    }

    /// Whether this process may run the engine now (always, without leadership).
    async fn leading(&self) -> Result<bool> {
        let Some((instance, ttl)) = &self.leadership else { return Ok(true) };
        Ok(crate::store::hold_lease(&self.db, "engine", instance, self.clock.now(), *ttl).await?)
    }

    /// The bell to ring when messages are written (the delivery workers listen to it).
    pub fn with_bell(mut self, bell: crate::outbox::Doorbell) -> Self {
        self.bell = bell;
        self
    }

    /// Names this business in every message (`business` in templates).
    pub fn with_business(mut self, business: &crate::core::brand::Business) -> Self {
        self.stationery.business = business.context();
        self
    }

    /// Turns open and click tracking off for every workflow (it is on by default).
    pub fn without_tracking(mut self) -> Self {
        self.tracking = None;
        self
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// What the loaded workflow folder says: templates, landing pages, problems.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Tells the delivery workers that messages were written (outside a tick).
    pub fn ring(&self) {
        self.bell.ring();
    }

    /// The signer of public links and the base URL they start with.
    pub fn links(&self) -> (&Signer, &url::Url) {
        (&self.stationery.signer, &self.stationery.base_url)
    }

    fn templates(&self) -> Arc<TemplateChecker> {
        self.catalog.templates()
    }
}

/// Who would act on a tag added by a workflow step: a `tag_added` trigger for it, or any goal
/// (`exit_when`) that must be re-checked at once. When nobody would, no trigger is queued.
struct Listeners {
    tags: HashSet<String>,
    goals: bool,
}

/// What a batch of enrollments writes, flushed as multi-row statements before the commit.
#[derive(Default)]
struct Writes {
    enrollments: Vec<enrollment::ActiveModel>,
    events: Vec<event::ActiveModel>,
    triggers: Vec<pending_trigger::ActiveModel>,
    tags: Vec<subscriber_tag::ActiveModel>,
    steps: Tally,
    /// Subscribers whose workflow's goal held, and which goal.
    goals: Vec<(Uuid, Value)>,
}

enum MessageBody<'a> {
    Template(&'a str),
    Inline(&'a str),
}

struct Rendered {
    subject: Option<String>,
    html: Option<String>,
    text: String,
}
