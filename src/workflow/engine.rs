//! The engine: turns pending triggers into enrollments and advances due enrollments, step by
//! step, with every effect written in the same transaction as the enrollment's new position.
//!
//! A crash between two transactions loses nothing (the trigger or the enrollment is still there
//! and due) and repeats nothing (what committed moved the enrollment on; an outbox message is
//! also unique by enrollment and step). Every decision goes into the subscriber's timeline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::model::{Action, AttributeTest, Condition, Reentry, SmsBody, Trigger, WaitUntil};
use super::program::{Needs, Node, Program};
use super::registry::{Registry, Status};
use super::templates::TemplateChecker;
use super::timing::{next_cron_tick, next_local_time, window_opens_at, zone};
use crate::audience::events::kind_of;
use crate::audience::records::{self, kind, trigger};
use crate::audience::subscribers::{membership_row, memberships_of, tag_row, tags_of};
use crate::audience::values::{Channel, ChannelState, MembershipStatus, SubscriberStatus, stored};
use crate::clock::SharedClock;
use crate::delivery::compose::{self, Draft, NewMessage, Tracking};

mod broadcast;
use crate::error::Result;
use crate::links::{Purpose, Signer};
use crate::stats::steps::{Tally, measure};
use crate::store::Db;
use crate::store::entities::{
    enrollment, event, list, membership, pending_trigger, schedule_run, subscriber, subscriber_tag,
};
pub use broadcast::{BroadcastView, ChannelProgress, NewBroadcast};

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
    templates: std::sync::RwLock<Arc<TemplateChecker>>,
    signer: Signer,
    base_url: url::Url,
    /// When the previous batch of due enrollments was claimed (by this process).
    last_claim: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Where the pass through a big backlog has got to (the last enrollment id taken); `None`
    /// starts a pass. Kept in memory only: a restart begins a new pass, which repeats nothing.
    backlog_cursor: std::sync::Mutex<Option<Uuid>>,
    /// Open and click tracking for email, when on (globally; a workflow may turn it off).
    tracking: Option<Tracking>,
    /// Rung when a tick wrote messages to the outbox.
    bell: crate::delivery::Doorbell,
    /// The landing pages declared in the workflow files, replaced with them on a reload.
    pages: crate::pages::Pages,
    /// The problems the last load of the workflow folder found (none: every file is valid).
    problems: std::sync::RwLock<Vec<super::loader::FileProblem>>,
    /// Several instances on one database (PostgreSQL): this process's id, under which it holds
    /// the `engine` lease while it runs the engine (one instance at a time does).
    leadership: Option<(String, chrono::Duration)>,
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

impl Facts {
    fn unloaded(id: Uuid) -> Self {
        Self { id, subscriber: None, tags: None, lists: None }
    }

    async fn subscriber(&mut self, conn: &impl ConnectionTrait) -> Result<&subscriber::Model> {
        if self.subscriber.is_none() {
            self.subscriber = subscriber::Entity::find_by_id(self.id).one(conn).await?;
        }
        self.subscriber.as_ref().ok_or(crate::error::Error::NotFound { what: "subscriber" })
    }

    async fn tags(&mut self, conn: &impl ConnectionTrait) -> Result<&mut HashSet<String>> {
        if self.tags.is_none() {
            let mut found = tags_of(conn, &[self.id]).await?;
            self.tags = Some(found.remove(&self.id).unwrap_or_default().into_iter().collect());
        }
        Ok(self.tags.get_or_insert_default())
    }

    async fn lists(&mut self, conn: &impl ConnectionTrait) -> Result<&mut HashSet<String>> {
        if self.lists.is_none() {
            let mut found = memberships_of(conn, &[self.id]).await?;
            self.lists = Some(current_lists(found.remove(&self.id).unwrap_or_default()));
        }
        Ok(self.lists.get_or_insert_default())
    }
}

/// A stored attribution value equals `expected`, ignoring case.
fn matches_text(stored: Option<&str>, expected: &str) -> bool {
    stored.is_some_and(|x| x.eq_ignore_ascii_case(expected))
}

/// The slugs of the lists a subscriber is on (not those they left).
fn current_lists(memberships: Vec<crate::audience::subscribers::MembershipView>) -> HashSet<String> {
    memberships.into_iter().filter(|m| m.status != MembershipStatus::Unsubscribed).map(|m| m.list).collect()
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
            templates: std::sync::RwLock::new(templates),
            tracking: Some(Tracking { signer: signer.clone(), base_url: base_url.clone() }),
            signer,
            base_url,
            last_claim: std::sync::Mutex::new(None),
            backlog_cursor: std::sync::Mutex::new(None),
            bell: crate::delivery::Doorbell::new(),
            pages: crate::pages::Pages::default(),
            problems: std::sync::RwLock::new(Vec::new()),
            leadership: None,
        }
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
    pub fn with_bell(mut self, bell: crate::delivery::Doorbell) -> Self {
        self.bell = bell;
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

    /// Uses these templates from now on (after a reload).
    pub fn set_templates(&self, templates: Arc<TemplateChecker>) {
        *self.templates.write().unwrap_or_else(std::sync::PoisonError::into_inner) = templates;
    }

    /// Tells the delivery workers that messages were written (outside a tick).
    pub fn ring(&self) {
        self.bell.ring();
    }

    /// Serves these landing pages from now on (at start and after a reload).
    pub fn set_pages(&self, pages: Vec<crate::pages::Page>) {
        self.pages.set(pages);
    }

    /// The landing pages in force.
    pub fn pages(&self) -> &crate::pages::Pages {
        &self.pages
    }

    /// Takes what a load of the workflow folder produced: its templates, pages and problems.
    pub fn take_load(&self, load: super::loader::Load) -> super::loader::Reloaded {
        self.set_templates(load.templates);
        self.set_pages(load.pages);
        *self.problems.write().unwrap_or_else(std::sync::PoisonError::into_inner) = load.reloaded.problems.clone();
        load.reloaded
    }

    /// The problems the last load of the workflow folder found.
    pub fn problems(&self) -> Vec<super::loader::FileProblem> {
        self.problems.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The signer of public links and the base URL they start with.
    pub fn links(&self) -> (&Signer, &url::Url) {
        (&self.signer, &self.base_url)
    }

    pub fn templates(&self) -> Arc<TemplateChecker> {
        self.templates.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Runs until `stop` says so: workflows ticking twice a second (so a step runs well within a
    /// second or two of its time), and beside them the writing of due broadcasts, looked for
    /// twice a second too; errors are logged and retried. A big broadcast is written by its own
    /// loop, so drips keep moving while it is written.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        tokio::join!(self.run_workflows(stop.clone()), self.run_broadcasts(stop));
    }

    async fn run_workflows(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.every_half_second(stop, || async {
            // With several instances, the workflows in force are those stored last by any of
            // them (a reload on one is run by whichever leads).
            if self.leadership.is_some()
                && let Err(e) = self.registry.refresh().await
            {
                tracing::error!(error = %e, "cannot read the stored workflows; retrying");
            }
            match self.tick_workflows().await {
                Ok(report) if report.advanced > 0 || report.triggers > 0 => {
                    tracing::debug!(?report, "workflow engine tick");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "workflow engine tick failed; retrying"),
            }
        })
        .await;
    }

    async fn run_broadcasts(&self, stop: tokio::sync::watch::Receiver<bool>) {
        let watching = stop.clone();
        self.every_half_second(stop, || async {
            if let Err(e) = self.fan_out(|| !*watching.borrow()).await {
                tracing::error!(error = %e, "writing a broadcast failed; retrying");
            }
        })
        .await;
    }

    /// Runs `work` now and then half a second after each run ends, until `stop` says so.
    async fn every_half_second<F: std::future::Future<Output = ()>>(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        work: impl Fn() -> F,
    ) {
        loop {
            work().await;
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Does all the work that is due now: triggers first, then enrollments, until none is left;
    /// then writes the due broadcasts.
    pub async fn tick(&self) -> Result<TickReport> {
        let mut report = self.tick_workflows().await?;
        report.broadcast_to = self.fan_out(|| true).await?;
        Ok(report)
    }

    /// The workflows' part of [`Self::tick`]: triggers, then enrollments, until none is left.
    async fn tick_workflows(&self) -> Result<TickReport> {
        let mut report = TickReport::default();
        loop {
            // Each round renews the lease, so a long tick keeps it, and a process that lost it
            // stops within a round.
            if !self.leading().await? {
                return Ok(report);
            }
            let (scheduled, more) = self.run_schedules().await?;
            let (dated, more_dates) = self.run_dates().await?;
            let scheduled = scheduled + dated;
            let more = more || more_dates;
            let (triggers, enrolled) = self.process_triggers().await?;
            let advanced = self.run_due().await?;
            report.triggers += triggers;
            report.enrolled += enrolled + scheduled;
            report.advanced += advanced;
            if advanced > 0 {
                self.bell.ring();
            }
            if triggers == 0 && advanced == 0 && !more {
                return Ok(report);
            }
        }
    }

    /// Enrolls a subscriber in a workflow now, as its trigger would (used by simulations).
    pub async fn enroll_directly(&self, id: &str, subscriber_id: Uuid) -> Result<bool> {
        let Some(current) = self.registry.current().get(id).cloned() else { return Ok(false) };
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let enrolled = self.enroll(&txn, id, &current.program, subscriber_id, now).await?;
        txn.commit().await?;
        Ok(enrolled)
    }

    /// Fires due cron ticks of `schedule` workflows: every current member of the list is
    /// enrolled, a batch per transaction, with progress stored alongside. A tick missed while
    /// ownlist was down fires once, late; older missed ticks are not replayed.
    async fn run_schedules(&self) -> Result<(u64, bool)> {
        let now = self.clock.now();
        let mut enrolled = 0;
        let mut more = false;
        for (id, current) in self.registry.current() {
            let Trigger::Schedule { cron, timezone, list: slug } = &current.program.workflow.trigger else { continue };
            if current.status == Status::Removed {
                continue;
            }
            let tz = zone(timezone.as_deref(), current.program.workflow.timezone.as_deref());
            let txn = self.db.begin_write().await?;
            let Some(state) = armed_state(&txn, &id, now).await? else {
                txn.commit().await?;
                continue;
            };
            let firing = match state.firing_tick {
                Some(tick) => tick,
                None => {
                    let mut latest = None;
                    let mut cursor = state.last_tick;
                    while let Some(tick) = next_cron_tick(cursor, tz, cron).filter(|t| *t <= now) {
                        latest = Some(tick);
                        cursor = tick;
                    }
                    match latest {
                        Some(tick) => tick,
                        None => continue,
                    }
                }
            };
            let Some(target) = list::Entity::find().filter(list::Column::Slug.eq(slug.clone())).one(&txn).await? else {
                continue;
            };
            let mut members = membership::Entity::find()
                .filter(membership::Column::ListId.eq(target.id))
                .filter(membership::Column::Status.ne(MembershipStatus::Unsubscribed.as_str()))
                .order_by_asc(membership::Column::SubscriberId)
                .limit(BATCH);
            if let Some(after) = state.after_subscriber {
                members = members.filter(membership::Column::SubscriberId.gt(after));
            }
            let batch = members.all(&txn).await?;
            let mut here = 0;
            for m in &batch {
                if self.enroll(&txn, &id, &current.program, m.subscriber_id, now).await? {
                    here += 1;
                }
            }
            count_enrolled(&txn, &id, here, now).await?;
            enrolled += here;
            more |= save_progress(txn, state, firing, batch.len(), batch.last().map(|m| m.subscriber_id), now).await?;
        }
        Ok((enrolled, more))
    }

    /// Date triggers: once per window (up to the next UTC midnight), every subscriber whose
    /// yearly date (attribute + offset, at the given local time in their zone) falls inside the
    /// window is enrolled, with the first step due at that moment. Windows follow each other
    /// without gaps or overlaps, so each anniversary enrolls once; progress is stored like a
    /// schedule's, so a crash mid-scan neither skips nor repeats anyone.
    async fn run_dates(&self) -> Result<(u64, bool)> {
        let now = self.clock.now();
        let mut enrolled = 0;
        let mut more = false;
        for (id, current) in self.registry.current() {
            let Trigger::Date { attribute, offset, at } = &current.program.workflow.trigger else { continue };
            if current.status == Status::Removed {
                continue;
            }
            let txn = self.db.begin_write().await?;
            let Some(state) = armed_state(&txn, &id, now).await? else {
                txn.commit().await?;
                continue;
            };
            let window_start = state.last_tick;
            let window_end = match state.firing_tick {
                Some(end) => end,
                None => {
                    let next_midnight =
                        (now.date_naive() + chrono::Duration::days(1)).and_time(chrono::NaiveTime::MIN).and_utc();
                    if next_midnight <= window_start {
                        continue;
                    }
                    next_midnight
                }
            };
            let mut query = subscriber::Entity::find().order_by_asc(subscriber::Column::Id).limit(BATCH);
            if let Some(after) = state.after_subscriber {
                query = query.filter(subscriber::Column::Id.gt(after));
            }
            let batch = query.all(&txn).await?;
            let workflow = &current.program.workflow;
            let mut here = 0;
            for s in &batch {
                let Some(anniversary) = s.attributes.get(attribute).and_then(Value::as_str).and_then(month_day) else {
                    continue;
                };
                let tz = zone(s.timezone.as_deref(), workflow.timezone.as_deref());
                if let Some(moment) = occurrence_in(anniversary, *offset, *at, tz, window_start, window_end)
                    && self.enroll_at(&txn, &id, &current.program, s.id, now, moment).await?
                {
                    here += 1;
                }
            }
            count_enrolled(&txn, &id, here, now).await?;
            enrolled += here;
            more |= save_progress(txn, state, window_end, batch.len(), batch.last().map(|s| s.id), now).await?;
        }
        Ok((enrolled, more))
    }

    /// Takes a batch of pending triggers: enrolls, and wakes enrollments waiting for an event.
    async fn process_triggers(&self) -> Result<(u64, u64)> {
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let batch =
            pending_trigger::Entity::find().order_by_asc(pending_trigger::Column::Id).limit(BATCH).all(&txn).await?;
        if batch.is_empty() {
            return Ok((0, 0));
        }
        let workflows = self.registry.current();
        let mut enrolled = 0;
        let mut tally = Tally::default();
        let touched: Vec<Uuid> = batch.iter().map(|t| t.subscriber_id).collect::<HashSet<_>>().into_iter().collect();
        self.check_goals(&txn, touched, now, &mut tally).await?;
        for t in &batch {
            if t.kind == trigger::EVENT {
                self.wake(&txn, t, now).await?;
                self.page_goal(&txn, t, now).await?;
            }
            for (id, current) in &workflows {
                if current.status == Status::Removed || !matches_trigger(&current.program.workflow.trigger, t) {
                    continue;
                }
                if self.enroll(&txn, id, &current.program, t.subscriber_id, now).await? {
                    tally.add(now.date_naive(), id, "", measure::ENROLLED, "");
                    enrolled += 1;
                }
            }
        }
        tally.flush(&txn).await?;
        let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
        pending_trigger::Entity::delete_many().filter(pending_trigger::Column::Id.is_in(ids)).exec(&txn).await?;
        txn.commit().await?;
        Ok((batch.len() as u64, enrolled))
    }

    /// Something changed for this subscriber: any live enrollment whose `exit_when` now holds
    /// ends at once, not at its next step.
    async fn check_goals(
        &self,
        txn: &DatabaseTransaction,
        subscribers: Vec<Uuid>,
        now: DateTime<Utc>,
        tally: &mut Tally,
    ) -> Result<()> {
        let mut live = Vec::new();
        for chunk in subscribers.chunks(1000) {
            let found = enrollment::Entity::find()
                .filter(enrollment::Column::SubscriberId.is_in(chunk.iter().copied()))
                .filter(enrollment::Column::EndedAt.is_null())
                .all(txn)
                .await?;
            live.extend(found);
        }
        // Only enrollments whose workflow has a goal need the subscriber's facts.
        let mut with_goals = Vec::new();
        for e in live {
            if let Some(program) = self.registry.program(&e.workflow_id, e.version).await?
                && program.workflow.exit_when.is_some()
            {
                with_goals.push((e, program));
            }
        }
        if with_goals.is_empty() {
            return Ok(());
        }
        let ids = with_goals.iter().map(|(e, _)| e.subscriber_id).collect();
        let needs = with_goals.iter().map(|(_, p)| p.needs()).fold(Needs::default(), Needs::union);
        let mut facts = load_facts_batch(txn, ids, needs).await?;
        for (e, program) in with_goals {
            let Some(goal) = &program.workflow.exit_when else { continue };
            let Some(facts) = facts.get_mut(&e.subscriber_id) else { continue };
            if !self.holds(txn, goal, facts, &e.workflow_id, now).await? {
                continue;
            }
            let subscriber_id = e.subscriber_id;
            let day = now.date_naive();
            if let Some(step) = &e.step_id {
                if e.wait_started_at.is_none() {
                    tally.add(day, &e.workflow_id, step, measure::ENTERED, "");
                }
                tally.add(day, &e.workflow_id, step, measure::EXITED, "");
            }
            tally.add(day, &e.workflow_id, "", measure::EXITED, "");
            let how = json!({"workflow": e.workflow_id, "goal": describe(goal)});
            crate::stats::goal_reached(txn, subscriber_id, how, now).await?;
            let reason = format!("goal reached: {}", describe(goal));
            let data = json!({"workflow": e.workflow_id, "version": e.version, "step": e.step_id, "reason": reason});
            let mut active = e.into_active_model();
            active.status = Set("exited".into());
            active.step_id = Set(None);
            active.next_run_at = Set(None);
            active.wait_started_at = Set(None);
            active.waiting_for = Set(None);
            active.ended_at = Set(Some(now));
            active.end_reason = Set(Some(reason));
            active.updated_at = Set(now);
            active.update(txn).await?;
            records::event(subscriber_id, decision::EXITED, data, now).insert(txn).await?;
        }
        Ok(())
    }

    /// An event named as the `goal` of the landing page the subscriber first came through: they
    /// reached their goal.
    async fn page_goal(&self, txn: &DatabaseTransaction, t: &pending_trigger::Model, now: DateTime<Utc>) -> Result<()> {
        if !self.pages.all().iter().any(|p| p.goal.as_deref() == Some(t.name.as_str())) {
            return Ok(());
        }
        let Some(person) = subscriber::Entity::find_by_id(t.subscriber_id).one(txn).await? else { return Ok(()) };
        let Some(slug) = crate::stats::first_touch_page(person.landing_page.as_deref()) else { return Ok(()) };
        if self.pages.get(&slug).is_some_and(|p| p.goal.as_deref() == Some(t.name.as_str())) {
            crate::stats::goal_reached(txn, t.subscriber_id, json!({"page": slug, "event": t.name}), now).await?;
        }
        Ok(())
    }

    async fn wake(&self, txn: &DatabaseTransaction, t: &pending_trigger::Model, now: DateTime<Utc>) -> Result<()> {
        let waiting = enrollment::Entity::find()
            .filter(enrollment::Column::SubscriberId.eq(t.subscriber_id))
            .filter(enrollment::Column::WaitingFor.eq(t.name.clone()))
            .filter(enrollment::Column::EndedAt.is_null())
            .all(txn)
            .await?;
        for e in waiting {
            let data = json!({"workflow": e.workflow_id, "step": e.step_id, "event": t.name});
            let mut active = e.into_active_model();
            active.waiting_for = Set(None);
            active.next_run_at = Set(Some(now));
            active.updated_at = Set(now);
            let saved = active.update(txn).await?;
            records::event(saved.subscriber_id, decision::EVENT_RECEIVED, data, now).insert(txn).await?;
        }
        Ok(())
    }

    /// Enrolls a subscriber if the filter and the re-entry rule allow; records why not otherwise.
    async fn enroll(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        program: &Program,
        subscriber_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.enroll_at(txn, id, program, subscriber_id, now, now).await
    }

    /// Enrolls with the first step due at `start` (later than `now` for date triggers).
    async fn enroll_at(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        program: &Program,
        subscriber_id: Uuid,
        now: DateTime<Utc>,
        start: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(mut facts) = load_facts(txn, subscriber_id).await? else { return Ok(false) };
        let workflow = &program.workflow;
        let not_entered = |reason: String| {
            records::event(subscriber_id, decision::NOT_ENTERED, json!({"workflow": id, "reason": reason}), now)
        };
        if let Some(filter) = &workflow.filter
            && !self.holds(txn, filter, &mut facts, id, now).await?
        {
            not_entered(format!("the trigger's filter does not hold: {}", describe(filter))).insert(txn).await?;
            return Ok(false);
        }
        let past = enrollment::Entity::find()
            .filter(enrollment::Column::WorkflowId.eq(id))
            .filter(enrollment::Column::SubscriberId.eq(subscriber_id))
            .order_by_desc(enrollment::Column::CreatedAt)
            .all(txn)
            .await?;
        if let Some(live) = past.iter().find(|e| e.ended_at.is_none()) {
            let at = live.step_id.clone().unwrap_or_default();
            not_entered(format!("already in this workflow (at step '{at}')")).insert(txn).await?;
            return Ok(false);
        }
        if let Some(last) = past.first() {
            let refused = match workflow.reentry {
                Reentry::Never => Some("re-entry is `never` and they went through it before".to_owned()),
                Reentry::Always => None,
                Reentry::After(span) if last.created_at + span.as_chrono() > now => {
                    Some(format!("re-entry is allowed {span} after the last entry"))
                }
                Reentry::After(_) => None,
            };
            if let Some(reason) = refused {
                not_entered(reason).insert(txn).await?;
                return Ok(false);
            }
        }
        let current = self.registry.current();
        let version = current.get(id).map_or(program.version, |c| c.version);
        enrollment::ActiveModel {
            id: Set(Uuid::now_v7()),
            workflow_id: Set(id.to_owned()),
            version: Set(version),
            subscriber_id: Set(subscriber_id),
            status: Set("active".into()),
            step_id: Set(program.first().map(str::to_owned)),
            next_run_at: Set(Some(start)),
            wait_started_at: Set(None),
            waiting_for: Set(None),
            end_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ended_at: Set(None),
        }
        .insert(txn)
        .await?;
        records::event(subscriber_id, decision::ENTERED, json!({"workflow": id, "version": version}), now)
            .insert(txn)
            .await?;
        Ok(true)
    }

    /// Advances one batch of due enrollments in one transaction. Steps that have only just come
    /// due go first, then the oldest of the rest: a backlog (a broadcast, a restart after
    /// downtime) drains oldest first with whatever capacity is left, while a step coming due
    /// meanwhile still runs on time instead of queueing behind it.
    ///
    /// Everything is read inside the write transaction, on the one connection that writes: its
    /// page cache stays warm, where another connection's would be dropped after every write.
    pub async fn run_due(&self) -> Result<u64> {
        let now = self.clock.now();
        let paused: Vec<String> =
            self.registry.current().into_iter().filter(|(_, c)| c.status == Status::Paused).map(|(id, _)| id).collect();
        let txn = self.db.begin_write().await?;
        // A step that came due while the previous batch ran is still just due, however long that
        // batch took: it must not fall behind a backlog because a batch was slow.
        let previous = self.last_claim.lock().map_or(None, |mut last| last.replace(now));
        let since = |ms| now - chrono::Duration::milliseconds(ms);
        let fresh_since = previous.map_or(since(ON_TIME_MS), |p| p.clamp(since(ON_TIME_MAX_MS), since(ON_TIME_MS)));
        let due = |just_due: bool| {
            let mut query = enrollment::Entity::find()
                .filter(enrollment::Column::Status.eq("active"))
                .filter(enrollment::Column::NextRunAt.lte(now));
            query = if just_due {
                query.filter(enrollment::Column::NextRunAt.gt(fresh_since))
            } else {
                query.filter(enrollment::Column::NextRunAt.lte(fresh_since))
            };
            if !paused.is_empty() {
                query = query.filter(enrollment::Column::WorkflowId.is_not_in(paused.clone()));
            }
            query
        };
        let mut batch = due(true).order_by_asc(enrollment::Column::NextRunAt).limit(BATCH).all(&txn).await?;
        let room = BATCH - batch.len() as u64;
        if room > 0 {
            // Is more overdue than this batch has room for? (A look `room` entries deep into the due
            // index, reading only what it holds.)
            let big = due(false)
                .select_only()
                .column(enrollment::Column::NextRunAt)
                .offset(room - 1)
                .limit(1)
                .into_tuple::<Option<DateTime<Utc>>>()
                .one(&txn)
                .await?
                .is_some();
            let mut taken: HashSet<Uuid> = batch.iter().map(|row| row.id).collect();
            if big {
                let backlog = self.backlog_in_storage_order(&txn, room, fresh_since, &paused, &taken).await?;
                taken.extend(backlog.iter().map(|row| row.id));
                batch.extend(backlog);
            }
            let room = BATCH - batch.len() as u64;
            if room > 0 {
                let mut oldest = due(false).order_by_asc(enrollment::Column::NextRunAt);
                if big {
                    oldest = oldest.filter(enrollment::Column::Id.is_not_in(taken.iter().copied()));
                }
                batch.extend(oldest.limit(room).all(&txn).await?);
            }
        }
        let due = batch;
        let count = due.len() as u64;
        // Each workflow version's program once, and only the facts these programs may read, for
        // all the batch's subscribers at once.
        let mut programs: HashMap<(String, i32), Option<Arc<Program>>> = HashMap::new();
        let mut wanted: HashMap<Uuid, Needs> = HashMap::new();
        for row in &due {
            let key = (row.workflow_id.clone(), row.version);
            if !programs.contains_key(&key) {
                let program = self.registry.program(&row.workflow_id, row.version).await?;
                programs.insert(key.clone(), program);
            }
            if let Some(Some(program)) = programs.get(&key) {
                let needs = wanted.entry(row.subscriber_id).or_default();
                *needs = needs.union(program.needs());
            }
        }
        let mut facts = load_facts_for(&txn, &wanted).await?;
        let mut writes = Writes::default();
        let listeners = Listeners::of(&self.registry);
        for row in due {
            // The enrollment is read in this write transaction, so its subscriber exists (erasing
            // one deletes their enrollments through the foreign key).
            let f = facts.entry(row.subscriber_id).or_insert_with(|| Facts::unloaded(row.subscriber_id));
            let program = programs.get(&(row.workflow_id.clone(), row.version)).cloned().flatten();
            self.advance(&txn, row, program, f, now, &mut writes, &listeners).await?;
        }
        writes.flush(&txn, self.db.backend(), now).await?;
        txn.commit().await?;
        Ok(count)
    }

    /// Up to `room` overdue enrollments, taken in storage (id) order from where the previous batch
    /// stopped: neighbouring rows share pages, so a batch writes a few hundred pages instead of a
    /// few thousand scattered ones. Reads at most `WINDOWS` windows of `room` enrollments; a pass
    /// wraps around at the end, so no overdue enrollment waits longer than one pass.
    async fn backlog_in_storage_order(
        &self,
        txn: &DatabaseTransaction,
        room: u64,
        overdue_since: DateTime<Utc>,
        paused: &[String],
        taken: &HashSet<Uuid>,
    ) -> Result<Vec<enrollment::Model>> {
        let mut cursor = self.backlog_cursor.lock().map_or(None, |cursor| *cursor);
        let mut rows = Vec::new();
        for _ in 0..WINDOWS {
            // Ended enrollments are skipped inside the database (SQLite still walks the id index).
            let mut window = enrollment::Entity::find()
                .filter(enrollment::Column::EndedAt.is_null())
                .order_by_asc(enrollment::Column::Id)
                .limit(room);
            if let Some(cursor) = cursor {
                window = window.filter(enrollment::Column::Id.gt(cursor));
            }
            let window = window.all(txn).await?;
            let full = window.len() as u64 == room;
            cursor = window.last().map(|row| row.id);
            for row in window {
                let overdue = row.next_run_at.is_some_and(|due| due <= overdue_since);
                if row.status == "active" && overdue && !paused.contains(&row.workflow_id) && !taken.contains(&row.id) {
                    let id = row.id;
                    rows.push(row);
                    if rows.len() as u64 == room {
                        cursor = Some(id);
                        break;
                    }
                }
            }
            if rows.len() as u64 == room {
                break;
            }
            if !full {
                cursor = None; // the end, all read: the next pass starts over
                break;
            }
        }
        if let Ok(mut stored) = self.backlog_cursor.lock() {
            *stored = cursor;
        }
        Ok(rows)
    }

    #[allow(clippy::too_many_arguments)]
    async fn advance(
        &self,
        txn: &DatabaseTransaction,
        row: enrollment::Model,
        program: Option<Arc<Program>>,
        facts: &mut Facts,
        now: DateTime<Utc>,
        writes: &mut Writes,
        listeners: &Listeners,
    ) -> Result<()> {
        let Some(program) = program else {
            let mut active = row.into_active_model();
            active.status = Set("failed".into());
            active.ended_at = Set(Some(now));
            active.end_reason = Set(Some("its workflow version is missing".into()));
            active.update(txn).await?;
            return Ok(());
        };
        let logical = row.next_run_at.filter(|due| *due <= now).unwrap_or(now);
        let mut run = Run {
            row,
            program: &program,
            events: Vec::new(),
            triggers: Vec::new(),
            tags: Vec::new(),
            listeners,
            now,
            logical,
            tally: Vec::new(),
            skipped: None,
        };
        let mut flow = Flow::Goto(run.row.step_id.clone());
        for _ in 0..MAX_STEPS_PER_RUN {
            // A step is entered when first reached: a wait (or a held message) that resumes has
            // its start recorded and is not entered again.
            let arriving = run.row.step_id.clone().filter(|_| run.row.wait_started_at.is_none());
            if let Some(step) = &arriving {
                run.count(step, measure::ENTERED, String::new());
            }
            if let Some(goal) = &program.workflow.exit_when
                && self.holds(txn, goal, facts, &run.row.workflow_id, now).await?
            {
                if let Some(step) = run.row.step_id.clone() {
                    run.count(&step, measure::EXITED, String::new());
                }
                writes
                    .goals
                    .push((run.row.subscriber_id, json!({"workflow": run.row.workflow_id, "goal": describe(goal)})));
                flow = Flow::End { status: "exited", reason: format!("goal reached: {}", describe(goal)) };
                break;
            }
            let Some(node) = run.row.step_id.clone().and_then(|id| program.node(&id).cloned()) else {
                flow = Flow::End { status: "completed", reason: "all steps done".into() };
                break;
            };
            flow = self.step(txn, &mut run, &node, facts).await?;
            match &flow {
                Flow::Goto(next) => {
                    match run.skipped.take() {
                        Some(reason) => run.count(&node.step.id, measure::SKIPPED, reason),
                        None => run.count(&node.step.id, measure::COMPLETED, String::new()),
                    }
                    run.row.step_id.clone_from(next);
                    run.row.wait_started_at = None;
                    run.row.waiting_for = None;
                }
                Flow::End { .. } => {
                    run.count(&node.step.id, measure::COMPLETED, String::new());
                    break;
                }
                Flow::WaitUntil(_) => break,
            }
        }
        let mut row = run.row.clone();
        match flow {
            Flow::WaitUntil(at) => row.next_run_at = Some(at),
            Flow::End { status, reason } => {
                let kind = if status == "completed" { decision::COMPLETED } else { decision::EXITED };
                run.count("", if status == "completed" { measure::COMPLETED } else { measure::EXITED }, String::new());
                run.note(kind, json!({"reason": reason}));
                row.status = status.to_owned();
                row.step_id = None;
                row.next_run_at = None;
                row.wait_started_at = None;
                row.waiting_for = None;
                row.ended_at = Some(now);
                row.end_reason = Some(reason);
            }
            Flow::Goto(_) => row.next_run_at = Some(now),
        }
        row.updated_at = now;
        writes.enrollments.push(row.into_active_model().reset_all());
        writes.events.append(&mut run.events);
        writes.triggers.append(&mut run.triggers);
        writes.tags.append(&mut run.tags);
        for (step, what, detail) in &run.tally {
            writes.steps.add(now.date_naive(), &run.row.workflow_id, step, what, detail);
        }
        Ok(())
    }

    async fn step(&self, txn: &DatabaseTransaction, run: &mut Run<'_>, node: &Node, facts: &mut Facts) -> Result<Flow> {
        let step = &node.step;
        let now = run.now;
        let workflow = &run.program.workflow;
        let done = |run: &mut Run<'_>, detail: Value| {
            run.note(decision::STEP_DONE, json!({"step": step.id, "detail": detail}));
            Flow::Goto(node.next.clone())
        };
        Ok(match &step.action {
            Action::Wait(length) => match run.row.wait_started_at {
                None => {
                    let until = run.logical + length.as_chrono();
                    run.row.wait_started_at = Some(run.logical);
                    run.note(decision::WAITING, json!({"step": step.id, "until": until, "for": length.to_string()}));
                    Flow::WaitUntil(until)
                }
                Some(started) if started + length.as_chrono() > now => Flow::WaitUntil(started + length.as_chrono()),
                Some(started) => {
                    run.logical = started + length.as_chrono();
                    done(run, json!("waited"))
                }
            },
            Action::WaitUntil(until) => match (run.row.wait_started_at, run.row.next_run_at) {
                (Some(_), Some(target)) if target <= now => {
                    run.logical = target;
                    done(run, json!("the time came"))
                }
                (Some(_), Some(target)) => Flow::WaitUntil(target),
                _ => {
                    let tz = zone(facts.subscriber(txn).await?.timezone.as_deref(), workflow.timezone.as_deref());
                    let target = match until {
                        WaitUntil::Time { weekday, time } => next_local_time(run.logical, tz, *weekday, *time),
                        WaitUntil::Cron(expression) => next_cron_tick(run.logical, tz, expression)
                            .unwrap_or(run.logical + chrono::Duration::days(1)),
                    };
                    run.row.wait_started_at = Some(run.logical);
                    run.note(decision::WAITING, json!({"step": step.id, "until": target, "timezone": tz.name()}));
                    Flow::WaitUntil(target)
                }
            },
            Action::WaitFor { event, timeout, .. } => match run.row.wait_started_at {
                None => {
                    let until = run.logical + timeout.as_chrono();
                    run.row.wait_started_at = Some(run.logical);
                    run.row.waiting_for = Some(event.clone());
                    run.note(decision::WAITING, json!({"step": step.id, "for_event": event, "until": until}));
                    Flow::WaitUntil(until)
                }
                Some(_) if run.row.waiting_for.is_none() => done(run, json!({"event": event})),
                Some(started) if started + timeout.as_chrono() > now => Flow::WaitUntil(started + timeout.as_chrono()),
                Some(started) => {
                    run.logical = started + timeout.as_chrono();
                    run.note(decision::TIMED_OUT, json!({"step": step.id, "event": event}));
                    Flow::Goto(node.timeout_first.clone())
                }
            },
            Action::If { condition, .. } => {
                let holds = self.holds(txn, condition, facts, &run.row.workflow_id, now).await?;
                let branch = if holds { "then" } else { "else" };
                run.note(decision::BRANCH, json!({"step": step.id, "branch": branch, "because": format!("{} is {holds}", describe(condition))}));
                Flow::Goto(if holds { node.then_first.clone() } else { node.else_first.clone() })
            }
            Action::Email { subject, template, .. } => {
                self.message(txn, run, node, facts, Channel::Email, Some(subject), MessageBody::Template(template))
                    .await?
            }
            Action::Sms { body } => {
                let body = match body {
                    SmsBody::Template(t) => MessageBody::Template(t),
                    SmsBody::Text(t) => MessageBody::Inline(t),
                };
                self.message(txn, run, node, facts, Channel::Sms, None, body).await?
            }
            Action::Tag(tag) => {
                // The batch holds the write lock and every change to these facts, so a tag not in
                // them is new; it is written with the rest of the batch.
                if facts.tags(txn).await?.insert(tag.clone()) {
                    run.tags.push(tag_row(facts.id, tag, now));
                    // `tag_added` names the step: it is this step's "done" entry too.
                    run.note(kind::TAG_ADDED, json!({"tag": tag, "step": step.id}));
                    if run.listeners.want_tag(tag) {
                        run.triggers.push(records::trigger(facts.id, trigger::TAG_ADDED, tag, json!({}), now));
                    }
                    Flow::Goto(node.next.clone())
                } else {
                    done(run, json!({"tag": tag, "already": true}))
                }
            }
            Action::Untag(tag) => {
                let removed = subscriber_tag::Entity::delete_many()
                    .filter(subscriber_tag::Column::SubscriberId.eq(facts.id))
                    .filter(subscriber_tag::Column::Tag.eq(tag.clone()))
                    .exec(txn)
                    .await?;
                if removed.rows_affected > 0 {
                    facts.tags(txn).await?.remove(tag);
                    run.note(kind::TAG_REMOVED, json!({"tag": tag, "step": step.id}));
                }
                done(run, json!({"untag": tag}))
            }
            Action::Set(values) => {
                let current = facts.subscriber(txn).await?.clone();
                let mut attributes = current.attributes.as_object().cloned().unwrap_or_default();
                for (key, value) in values {
                    attributes.insert(key.clone(), value.clone());
                }
                let mut active = current.into_active_model();
                active.attributes = Set(Value::Object(attributes));
                active.updated_at = Set(now);
                facts.subscriber = Some(active.update(txn).await?);
                run.note(kind::UPDATED, json!({"fields": ["attributes"], "step": step.id}));
                done(run, json!({"set": values.keys().collect::<Vec<_>>()}))
            }
            Action::Join(slug) | Action::Leave(slug) => {
                let joining = matches!(step.action, Action::Join(_));
                self.membership(txn, run, facts, slug, joining).await?;
                done(run, json!({if joining { "join" } else { "leave" }: slug}))
            }
            Action::Webhook { url, secret_env, body } => {
                let payload = json!({
                    "workflow": {"id": workflow.id, "name": workflow.name, "version": run.program.version},
                    "step": step.id,
                    "subscriber": subscriber_json(facts.subscriber(txn).await?),
                    "body": body,
                    "secret_env": secret_env,
                });
                let draft = Draft {
                    channel: "webhook",
                    recipient: url.clone(),
                    subject: None,
                    html: None,
                    text: payload.to_string(),
                    list_slug: None,
                };
                self.enqueue(txn, run, step, facts.id, draft, None).await?;
                done(run, json!({"webhook": url}))
            }
            Action::Exit(reason) => {
                Flow::End { status: "exited", reason: format!("exit step '{}': {reason}", step.id) }
            }
        })
    }

    async fn membership(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        facts: &mut Facts,
        slug: &str,
        joining: bool,
    ) -> Result<()> {
        let now = run.now;
        let Some(target) = list::Entity::find().filter(list::Column::Slug.eq(slug)).one(txn).await? else {
            run.note(decision::STEP_SKIPPED, json!({"reason": format!("list '{slug}' does not exist")}));
            return Ok(());
        };
        let existing = membership::Entity::find_by_id((facts.id, target.id)).one(txn).await?;
        match (joining, existing) {
            (true, None) => {
                membership_row(facts.id, target.id, MembershipStatus::Confirmed, now).insert(txn).await?;
                facts.lists(txn).await?.insert(slug.to_owned());
                run.note(kind::SUBSCRIBED, json!({"lists": [slug]}));
                run.triggers.push(records::trigger(facts.id, trigger::SUBSCRIBED, slug, json!({}), now));
            }
            (true, Some(m)) if m.status == MembershipStatus::Unsubscribed.as_str() => {
                run.note(
                    decision::STEP_SKIPPED,
                    json!({"reason": format!("they left '{slug}' and are not re-added by a workflow")}),
                );
            }
            (false, Some(m)) if m.status != MembershipStatus::Unsubscribed.as_str() => {
                let mut active = m.into_active_model();
                active.status = Set(MembershipStatus::Unsubscribed.as_str().to_owned());
                active.unsubscribed_at = Set(Some(now));
                active.updated_at = Set(now);
                active.update(txn).await?;
                facts.lists(txn).await?.remove(slug);
                run.note(kind::UNSUBSCRIBED, json!({"list": slug}));
            }
            _ => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn message(
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
        let workflow = &run.program.workflow;
        if let Some(window) = &workflow.send_window {
            let tz = zone(s.timezone.as_deref(), workflow.timezone.as_deref());
            if let Some(opens) = window_opens_at(now, tz, &window.days, window.start, window.end) {
                // Held, not left: when the window opens the step goes on (it is not entered again).
                run.row.wait_started_at.get_or_insert(run.logical);
                run.note(
                    decision::WAITING,
                    json!({"step": step.id, "until": opens, "reason": "outside the send window"}),
                );
                return Ok(Flow::WaitUntil(opens));
            }
        }
        let context = self.render_context(workflow, s, now);
        let templates = self.templates();
        let rendered = match render(&templates, &context, subject, &body) {
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
            channel: channel.as_str(),
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
    async fn enqueue(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        step: &super::model::Step,
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

    fn render_context(&self, workflow: &super::model::Workflow, s: &subscriber::Model, now: DateTime<Utc>) -> Value {
        let about = ("workflow", json!({"id": workflow.id, "name": workflow.name}));
        message_context(&self.signer, &self.base_url, subscriber_json(s), s.id, about, now)
    }

    /// Whether a condition holds for a subscriber now.
    fn holds<'a>(
        &'a self,
        conn: &'a DatabaseTransaction,
        condition: &'a Condition,
        facts: &'a mut Facts,
        workflow_id: &'a str,
        now: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>> {
        Box::pin(async move {
            let id = facts.id;
            Ok(match condition {
                Condition::Tag(tag) => facts.tags(conn).await?.contains(tag),
                Condition::List(slug) => facts.lists(conn).await?.contains(slug),
                Condition::Has(Channel::Email) => facts.subscriber(conn).await?.email.is_some(),
                Condition::Has(Channel::Sms) => facts.subscriber(conn).await?.phone.is_some(),
                Condition::Source(v) => matches_text(facts.subscriber(conn).await?.source.as_deref(), v),
                Condition::Medium(v) => matches_text(facts.subscriber(conn).await?.medium.as_deref(), v),
                Condition::Campaign(v) => matches_text(facts.subscriber(conn).await?.campaign.as_deref(), v),
                Condition::Attribute { name, test } => {
                    let value = facts.subscriber(conn).await?.attributes.get(name);
                    match test {
                        AttributeTest::Exists(exists) => value.is_some_and(|v| !v.is_null()) == *exists,
                        AttributeTest::Equals(expected) => value.is_some_and(|v| loosely_equal(v, expected)),
                        AttributeTest::In(options) => {
                            value.is_some_and(|v| options.iter().any(|o| loosely_equal(v, o)))
                        }
                    }
                }
                Condition::Event { name, within } => {
                    let mut query = event::Entity::find()
                        .filter(event::Column::SubscriberId.eq(id))
                        .filter(event::Column::Kind.eq(kind_of(name)));
                    if let Some(span) = within {
                        query = query.filter(event::Column::CreatedAt.gte(now - span.as_chrono()));
                    }
                    query.one(conn).await?.is_some()
                }
                Condition::Opened(step) | Condition::Clicked(step) => {
                    let wanted =
                        if matches!(condition, Condition::Opened(_)) { "email_opened" } else { "email_clicked" };
                    let found = event::Entity::find()
                        .filter(event::Column::SubscriberId.eq(id))
                        .filter(event::Column::Kind.eq(wanted))
                        .all(conn)
                        .await?;
                    found.iter().any(|e| {
                        e.data.get("step").and_then(Value::as_str) == Some(step)
                            && e.data.get("workflow").and_then(Value::as_str) == Some(workflow_id)
                    })
                }
                Condition::All(items) => {
                    for item in items {
                        if !self.holds(conn, item, &mut *facts, workflow_id, now).await? {
                            return Ok(false);
                        }
                    }
                    true
                }
                Condition::Any(items) => {
                    for item in items {
                        if self.holds(conn, item, &mut *facts, workflow_id, now).await? {
                            return Ok(true);
                        }
                    }
                    false
                }
                Condition::Not(inner) => !self.holds(conn, inner, facts, workflow_id, now).await?,
            })
        })
    }
}

/// Who would act on a tag added by a workflow step: a `tag_added` trigger for it, or any goal
/// (`exit_when`) that must be re-checked at once. When nobody would, no trigger is queued.
struct Listeners {
    tags: HashSet<String>,
    goals: bool,
}

impl Listeners {
    fn of(registry: &Registry) -> Self {
        let current = registry.current();
        let tags = current
            .values()
            .filter_map(|c| match &c.program.workflow.trigger {
                Trigger::TagAdded { tag } => Some(tag.clone()),
                _ => None,
            })
            .collect();
        let goals = current.values().any(|c| c.program.workflow.exit_when.is_some());
        Self { tags, goals }
    }

    fn want_tag(&self, tag: &str) -> bool {
        self.goals || self.tags.contains(tag)
    }
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

impl Writes {
    async fn flush(self, txn: &DatabaseTransaction, backend: sea_orm::DbBackend, now: DateTime<Utc>) -> Result<()> {
        use crate::store::bulk::{OnDuplicate, insert_statement, update_statement};
        let mut seen = HashSet::new();
        for (subscriber, how) in self.goals {
            if seen.insert(subscriber) {
                crate::stats::goal_reached(txn, subscriber, how, now).await?;
            }
        }
        self.steps.flush(txn).await?;
        let mut statements = Vec::new();
        for part in self.tags.chunks(2000) {
            statements.extend(insert_statement(backend, part.to_vec(), OnDuplicate::Ignore));
        }
        // Only the columns a run changes are written: the indexes on who is enrolled where stay
        // untouched, and the one on live enrollments only for those that ended.
        use enrollment::Column as E;
        let moving = [E::Status, E::StepId, E::NextRunAt, E::WaitStartedAt, E::WaitingFor, E::UpdatedAt];
        let ending = [&moving[..], &[E::EndReason, E::EndedAt]].concat();
        let (ended, live): (Vec<_>, Vec<_>) =
            self.enrollments.into_iter().partition(|e| matches!(&e.ended_at, Set(Some(_))));
        for part in live.chunks(1000) {
            statements.extend(update_statement(backend, part.to_vec(), &moving));
        }
        for part in ended.chunks(1000) {
            statements.extend(update_statement(backend, part.to_vec(), &ending));
        }
        // Fresh ids never collide; Ignore only spares SQLite a statement journal.
        for part in self.events.chunks(2000) {
            statements.extend(insert_statement(backend, part.to_vec(), OnDuplicate::Ignore));
        }
        for part in self.triggers.chunks(2000) {
            statements.extend(insert_statement(backend, part.to_vec(), OnDuplicate::Fail));
        }
        for statement in statements {
            crate::store::bulk::execute(txn, statement).await?;
        }
        Ok(())
    }
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

fn render(
    templates: &TemplateChecker,
    context: &Value,
    subject: Option<&String>,
    body: &MessageBody<'_>,
) -> std::result::Result<Rendered, String> {
    let context = tera::Context::from_serialize(context).map_err(|e| e.to_string())?;
    let tera = templates.tera();
    let subject = match subject {
        Some(s) => Some(tera.render_str(s, &context, false).map_err(|e| first_line(&e))?.trim().to_owned()),
        None => None,
    };
    let (html, text) = match body {
        MessageBody::Inline(text) => (None, tera.render_str(text, &context, false).map_err(|e| first_line(&e))?),
        MessageBody::Template(name) => {
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

fn first_line(error: &tera::Error) -> String {
    error.to_string().lines().next().unwrap_or("template error").to_owned()
}

/// A plain-text rendering of simple HTML email: links as `text (url)`, paragraphs as lines.
/// Tags are dropped, the common entities decoded, runs of white space made one space, and blank
/// lines kept single. One pass over the HTML and one over the text (the plain part of every
/// email without a text template is derived this way when it is sent).
pub fn html_to_text(html: &str) -> String {
    html_to_text_with(html, |_| None)
}

/// [`html_to_text`] with each link's URL as `original` gives it (the URL a tracking link stands
/// for), or as written when it gives none.
pub fn html_to_text_with<'a>(html: &str, original: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = PlainText::with_capacity(html.len());
    let mut rest = html;
    let mut pending_href: Option<&str> = None;
    while let Some(start) = memchr::memchr(b'<', rest.as_bytes()) {
        push_decoded(&mut out, &rest[..start]);
        let Some(end) = memchr::memchr(b'>', &rest.as_bytes()[start..]) else {
            rest = "";
            break;
        };
        let tag = &rest[start + 1..start + end];
        let closing = tag.starts_with('/');
        let name = tag.trim_start_matches('/').split(|c: char| c.is_whitespace()).next().unwrap_or("");
        let name = name.strip_suffix('/').unwrap_or(name);
        let is = |candidates: &[&str]| candidates.iter().any(|c| name.eq_ignore_ascii_case(c));
        if closing
            && is(&["a"])
            && let Some(href) = pending_href.take()
        {
            out.push_str(" (");
            match original(href) {
                Some(url) => out.push_str(url),
                None => push_decoded(&mut out, href),
            }
            out.push_str(")");
        }
        if !closing && is(&["a"]) {
            pending_href = tag.split("href=\"").nth(1).and_then(|h| h.split('"').next());
        }
        // A block's start and end break the line; so do <br> and <hr>.
        if is(&["p", "h1", "h2", "h3", "h4", "div", "li", "tr", "table", "br", "hr"]) {
            out.push_str("\n");
        }
        rest = &rest[start + end + 1..];
    }
    push_decoded(&mut out, rest);
    out.finish()
}

/// Text written as readable lines as it comes: each line's words one space apart, lines with
/// no words kept as one blank line between others, no white space at the end (what splitting
/// into lines and words and joining them again gives, in one pass).
struct PlainText {
    text: String,
    /// The current line has a word.
    words: bool,
    /// White space followed the current line's last word.
    space: bool,
    /// The last line ended was blank.
    blank: bool,
}

impl PlainText {
    fn with_capacity(capacity: usize) -> Self {
        Self { text: String::with_capacity(capacity), words: false, space: false, blank: false }
    }

    fn push_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            // A run of ASCII word bytes goes in as it is.
            let run = bytes[at..].iter().take_while(|&&b| b > b' ' && b < 0x80).count();
            if run > 0 {
                if self.space {
                    self.text.push(' ');
                    self.space = false;
                }
                self.text.push_str(&s[at..at + run]);
                self.words = true;
                at += run;
                continue;
            }
            let Some(c) = s[at..].chars().next() else { break };
            at += c.len_utf8();
            if c == '\n' {
                self.end_line();
            } else if c.is_whitespace() {
                self.space = self.words;
            } else {
                if self.space {
                    self.text.push(' ');
                    self.space = false;
                }
                self.text.push(c);
                self.words = true;
            }
        }
    }

    fn end_line(&mut self) {
        if self.words {
            self.text.push('\n');
            self.blank = false;
        } else {
            if !self.blank && !self.text.is_empty() {
                self.text.push('\n');
            }
            self.blank = true;
        }
        (self.words, self.space) = (false, false);
    }

    fn finish(mut self) -> String {
        self.end_line();
        let kept = self.text.trim_end().len();
        self.text.truncate(kept);
        self.text
    }
}

/// Appends `text` with the entities HTML email commonly holds decoded (`&nbsp;` as a space);
/// any other `&` is kept as it is.
fn push_decoded(out: &mut PlainText, text: &str) {
    const ENTITIES: [(&str, &str); 6] =
        [("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#39;", "'"), ("&amp;", "&")];
    let mut rest = text;
    while let Some(at) = memchr::memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match ENTITIES.iter().find(|(entity, _)| tail.starts_with(entity)) {
            Some((entity, decoded)) => {
                out.push_str(decoded);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push_str("&");
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
}

/// The address to send a subscriber on `channel`, or why nothing may be sent there.
fn reachable(s: &subscriber::Model, channel: Channel) -> std::result::Result<String, String> {
    let (address, state) = match channel {
        Channel::Email => (s.email.clone(), stored(&s.email_state, ChannelState::None)),
        Channel::Sms => (s.phone.clone(), stored(&s.sms_state, ChannelState::None)),
    };
    let status = stored(&s.status, SubscriberStatus::Active);
    match (address, state, status) {
        (None, _, _) => {
            Err(format!("they have no {}", if channel == Channel::Email { "email address" } else { "phone number" }))
        }
        (_, _, SubscriberStatus::Unsubscribed | SubscriberStatus::Bounced | SubscriberStatus::Complained) => {
            Err(format!("they are {status}"))
        }
        (Some(address), ChannelState::Subscribed, _) => Ok(address),
        (_, other, _) => Err(format!("{channel} is {other}, not subscribed")),
    }
}

/// What a message's templates see: the subscriber, what the message belongs to (`workflow` or
/// `broadcast`), and the subscriber's signed unsubscribe and preferences links (a year).
fn message_context(
    signer: &Signer,
    base_url: &url::Url,
    subscriber: Value,
    id: Uuid,
    about: (&str, Value),
    now: DateTime<Utc>,
) -> Value {
    let expires = now + chrono::Duration::days(365);
    let link = |path: &str, purpose: Purpose| signer.url(base_url, path, purpose, id, expires);
    json!({
        "subscriber": subscriber,
        about.0: about.1,
        "unsubscribe_url": link("u", Purpose::Unsubscribe),
        "preferences_url": link("preferences", Purpose::Preferences),
    })
}

fn subscriber_json(s: &subscriber::Model) -> Value {
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

fn loosely_equal(actual: &Value, expected: &Value) -> bool {
    actual == expected
        || match (actual, expected) {
            (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => a == &b.to_string(),
            (Value::String(a), Value::Bool(b)) | (Value::Bool(b), Value::String(a)) => a == &b.to_string(),
            _ => false,
        }
}

/// The progress row of a schedule or date trigger; `None` when it was just created ("armed"
/// from now: nothing fires retroactively).
async fn armed_state(txn: &DatabaseTransaction, id: &str, now: DateTime<Utc>) -> Result<Option<schedule_run::Model>> {
    if let Some(state) = schedule_run::Entity::find_by_id(id.to_owned()).one(txn).await? {
        return Ok(Some(state));
    }
    schedule_run::ActiveModel {
        workflow_id: Set(id.to_owned()),
        last_tick: Set(now),
        firing_tick: Set(None),
        after_subscriber: Set(None),
        updated_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(None)
}

/// Counts enrollments a transaction made in a workflow, in its step statistics.
async fn count_enrolled(txn: &DatabaseTransaction, workflow: &str, n: u64, now: DateTime<Utc>) -> Result<()> {
    let mut tally = Tally::default();
    if n > 0 {
        tally.add_n(now.date_naive(), workflow, "", measure::ENROLLED, "", i64::try_from(n).unwrap_or(i64::MAX));
    }
    tally.flush(txn).await
}

/// Ends one batch of a schedule's or date trigger's pass: a full batch stores the last subscriber
/// reached, a short one marks the tick done; then commits. Returns whether the pass goes on.
async fn save_progress(
    txn: DatabaseTransaction,
    state: schedule_run::Model,
    firing: DateTime<Utc>,
    batch_len: usize,
    last: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut active = state.into_active_model();
    let more = match last {
        Some(last) if batch_len as u64 >= BATCH => {
            active.firing_tick = Set(Some(firing));
            active.after_subscriber = Set(Some(last));
            true
        }
        _ => {
            active.last_tick = Set(firing);
            active.firing_tick = Set(None);
            active.after_subscriber = Set(None);
            false
        }
    };
    active.updated_at = Set(now);
    active.update(&txn).await?;
    txn.commit().await?;
    Ok(more)
}

/// The month and day of a yearly date written `YYYY-MM-DD`, `MM-DD` or `--MM-DD`.
pub(crate) fn month_day(text: &str) -> Option<(u32, u32)> {
    let text = text.trim().trim_start_matches("--");
    let parts: Vec<&str> = text.split('-').collect();
    let (month, day) = match parts.as_slice() {
        [_, m, d] | [m, d] => (m.parse().ok()?, d.parse().ok()?),
        _ => return None,
    };
    // Validate against a leap year so that 29 February is a date.
    chrono::NaiveDate::from_ymd_opt(2024, month, day).map(|_| (month, day))
}

/// When a yearly date (plus offset, at a local time) happens inside [start, end), if it does.
/// 29 February is celebrated on 28 February in other years.
pub(crate) fn occurrence_in(
    (month, day): (u32, u32),
    offset: super::timing::Span,
    at: chrono::NaiveTime,
    tz: chrono_tz::Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    for year in start.year() - 1..=end.year() + 1 {
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day)
            .or_else(|| chrono::NaiveDate::from_ymd_opt(year, month, day - 1))?;
        let local = date.and_time(at) + offset.as_chrono();
        let moment = super::timing::local_to_utc(tz, local);
        if moment >= start && moment < end {
            return Some(moment);
        }
    }
    None
}

fn matches_trigger(trigger: &Trigger, pending: &pending_trigger::Model) -> bool {
    match trigger {
        Trigger::Subscribed { list } => pending.kind == trigger::SUBSCRIBED && &pending.name == list,
        Trigger::TagAdded { tag } => pending.kind == trigger::TAG_ADDED && &pending.name == tag,
        Trigger::Event { name } => pending.kind == trigger::EVENT && &pending.name == name,
        Trigger::Date { .. } | Trigger::Schedule { .. } => false,
    }
}

/// A condition in words, for the timeline.
pub fn describe(condition: &Condition) -> String {
    match condition {
        Condition::Opened(s) => format!("opened '{s}'"),
        Condition::Clicked(s) => format!("clicked in '{s}'"),
        Condition::Tag(t) => format!("tag '{t}'"),
        Condition::List(l) => format!("member of '{l}'"),
        Condition::Has(Channel::Email) => "has an email address".into(),
        Condition::Has(Channel::Sms) => "has a phone number".into(),
        Condition::Attribute { name, test } => match test {
            AttributeTest::Equals(v) => format!("attribute {name} = {v}"),
            AttributeTest::In(vs) => format!("attribute {name} in {}", Value::Array(vs.clone())),
            AttributeTest::Exists(true) => format!("attribute {name} exists"),
            AttributeTest::Exists(false) => format!("attribute {name} is absent"),
        },
        Condition::Event { name, within: Some(w) } => format!("event '{name}' within {w}"),
        Condition::Event { name, within: None } => format!("event '{name}'"),
        Condition::Source(v) => format!("source {v}"),
        Condition::Medium(v) => format!("medium {v}"),
        Condition::Campaign(v) => format!("campaign {v}"),
        Condition::All(items) => format!("all of ({})", items.iter().map(describe).collect::<Vec<_>>().join(", ")),
        Condition::Any(items) => format!("any of ({})", items.iter().map(describe).collect::<Vec<_>>().join(", ")),
        Condition::Not(inner) => format!("not {}", describe(inner)),
    }
}

async fn load_facts(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Facts>> {
    let everything = Needs { subscriber: true, tags: true, lists: true };
    Ok(load_facts_batch(conn, vec![id], everything).await?.remove(&id).filter(|f| f.subscriber.is_some()))
}

/// The `needs` part of many subscribers' facts in a query or two per part; the rest loads on use.
async fn load_facts_batch(conn: &impl ConnectionTrait, ids: Vec<Uuid>, needs: Needs) -> Result<HashMap<Uuid, Facts>> {
    let wanted = ids.into_iter().map(|id| (id, needs)).collect();
    load_facts_for(conn, &wanted).await
}

/// Each subscriber's facts with the parts their own `Needs` name loaded.
async fn load_facts_for(conn: &impl ConnectionTrait, wanted: &HashMap<Uuid, Needs>) -> Result<HashMap<Uuid, Facts>> {
    let mut facts: HashMap<Uuid, Facts> = wanted.keys().map(|id| (*id, Facts::unloaded(*id))).collect();
    let ids = |part: fn(&Needs) -> bool| -> Vec<Uuid> {
        wanted.iter().filter(|(_, needs)| part(needs)).map(|(id, _)| *id).collect()
    };
    let rows = ids(|n| n.subscriber);
    if !rows.is_empty() {
        for s in subscriber::Entity::find().filter(subscriber::Column::Id.is_in(rows)).all(conn).await? {
            if let Some(f) = facts.get_mut(&s.id) {
                f.subscriber = Some(s);
            }
        }
    }
    let tagged = ids(|n| n.tags);
    let mut tags = tags_of(conn, &tagged).await?;
    for id in tagged {
        if let Some(f) = facts.get_mut(&id) {
            f.tags = Some(tags.remove(&id).unwrap_or_default().into_iter().collect());
        }
    }
    let listed = ids(|n| n.lists);
    let mut memberships = memberships_of(conn, &listed).await?;
    for id in listed {
        if let Some(f) = facts.get_mut(&id) {
            f.lists = Some(current_lists(memberships.remove(&id).unwrap_or_default()));
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yearly_dates_fall_in_one_window_each() {
        use chrono::TimeZone;
        let rome: chrono_tz::Tz = "Europe/Rome".parse().unwrap();
        let nine = chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        let day_before = super::super::timing::Span::parse("-1d", true).unwrap();
        assert_eq!(month_day("1990-03-10"), Some((3, 10)));
        assert_eq!(month_day("--02-29"), Some((2, 29)));
        assert_eq!(month_day("13-01"), None);
        assert_eq!(month_day("soon"), None);
        // A birthday on 10 March, the day before at 09:00 in Rome: 9 March 08:00 UTC.
        let start = Utc.with_ymd_and_hms(2026, 3, 9, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
        assert_eq!(
            occurrence_in((3, 10), day_before, nine, rome, start, end),
            Some(Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap())
        );
        assert_eq!(occurrence_in((3, 11), day_before, nine, rome, start, end), None);
        // 29 February in a common year: the 28th.
        let feb = Utc.with_ymd_and_hms(2027, 2, 28, 0, 0, 0).unwrap();
        let zero = super::super::timing::Span::parse("0s", false).unwrap();
        assert!(occurrence_in((2, 29), zero, nine, chrono_tz::Tz::UTC, feb, feb + chrono::Duration::days(1)).is_some());
    }

    #[test]
    fn html_becomes_readable_text() {
        let html = "<p>Hi Ada,</p>\n<h1>Here is your guide</h1>\n<p>Download it <a href=\"https://x.test/g.pdf\">here</a>.</p><hr><p>Tom &amp; Jerry</p>";
        assert_eq!(
            html_to_text(html),
            "Hi Ada,\n\nHere is your guide\n\nDownload it here (https://x.test/g.pdf).\n\nTom & Jerry"
        );
        let html = "<DIV>  a&nbsp;&nbsp;b \r\n c</DIV><BR/>&amp;lt; is &lt;, &quot;q&quot; &#39;s&#39; &x; &\n\n\n\
                    <A HREF=\"no\">x</A> <a class=\"k\" href=\"https://x.test/?a=1&amp;b=2\">go</a><p>cut <b";
        assert_eq!(html_to_text(html), "a b\nc\n\n&lt; is <, \"q\" 's' &x; &\n\nx go (https://x.test/?a=1&b=2)\ncut");
    }

    /// Lines and words joined again, as the plain text is meant to read (the reference the
    /// one-pass writer is held to).
    fn joined_lines(raw: &str) -> String {
        let mut text = String::new();
        let mut blank = false;
        for line in raw.split('\n') {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                if !blank && !text.is_empty() {
                    text.push('\n');
                }
                blank = true;
            } else {
                text.push_str(&words.join(" "));
                text.push('\n');
                blank = false;
            }
        }
        text.trim_end().to_owned()
    }

    #[test]
    fn plain_text_reads_as_its_lines_and_words_joined_again() {
        let pieces = ["a", "word", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "é", "\u{2028}", "\n\n\n", "😀", "."];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut raw = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                raw.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let mut written = PlainText::with_capacity(0);
            for part in raw.split_inclusive(' ') {
                written.push_str(part);
            }
            assert_eq!(written.finish(), joined_lines(&raw), "{raw:?}");
        }
    }
}
