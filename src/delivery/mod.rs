//! Delivery: draining the outbox. Every message was rendered and stored before any attempt to
//! send it; a worker per channel claims due messages, sends them, and records the answer on the
//! message and in the subscriber's timeline (`{channel}_sent`, `_retrying`, `_failed`).
//!
//! Retries: temporary failures are tried again with exponential backoff (1 min doubling to 1 h,
//! each wait up to a quarter longer, spread by message) until the message is older than the
//! retry age (48 hours by default); a permanent failure fails the message at once.

pub mod compose;
pub mod email;
pub mod mime;
pub mod sms;
pub mod smtp;
pub mod tracking;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};

use crate::audience::records;
use crate::audience::subscribers::mark_bounced;
use crate::audience::values::Channel;
use crate::clock::SharedClock;
use crate::error::Result;
use crate::store::Db;
use crate::store::entities::{outbox, outbox_body, outbox_dictionary};

/// How long a message that keeps failing for a temporary reason is retried (`retry_max_age`).
pub const DEFAULT_MAX_AGE_HOURS: i64 = 48;
const BATCH: u64 = 200;
/// Messages of one channel being sent at once (per process): the connections a relay sees.
/// (Measured on the delivery benchmark: 8 gave 2,300 messages/s, 16 gave 3,000, 32 gave 3,300.)
pub const CONCURRENCY: usize = 16;
/// Messages of one channel sent (or being sent) whose answers are not yet written, at most (per
/// process): the most that a crash can send twice. Answers are written several to a
/// transaction while the next messages go out, so a send does not wait for the write of the
/// one before it; this bounds how far the sending may run ahead of the writing.
pub const IN_FLIGHT: usize = 256;
/// How long answers are gathered, at most, before they are written (while sends are under way
/// and fewer than half of IN_FLIGHT have come): on the delivery benchmark, transactions of about
/// a hundred answers instead of thirty took 7% less CPU per message.
const GATHER: Duration = Duration::from_millis(10);

/// The wait after the `attempts`-th failed attempt: 1 minute doubling to 1 hour, plus up to a
/// quarter more. The extra is drawn from the message id and the attempt, so messages that failed
/// together (a relay outage) come back spread out, and the same message always waits the same.
pub fn backoff(id: uuid::Uuid, attempts: i32) -> chrono::Duration {
    let base = chrono::Duration::minutes(1 << (attempts - 1).clamp(0, 6)).min(chrono::Duration::hours(1));
    let mixed =
        ((id.as_u128() as u64) ^ (id.as_u128() >> 64) as u64 ^ attempts as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let fraction = (mixed >> 32) as i64; // 0 ..= 2^32 - 1
    base + chrono::Duration::milliseconds((base.num_milliseconds() / 4 * fraction) >> 32)
}

/// The circuit breaker of a relay or provider: closed (in use) until it fails, then open
/// (skipped) until its cool-down has passed; the next attempt after that decides (success closes
/// it, failure opens it for another cool-down). Kept per process, in memory.
#[derive(Debug)]
pub struct Breaker {
    cooldown: chrono::Duration,
    state: std::sync::Mutex<BreakerState>,
    /// Whether its state has been shown in the metrics yet (then only changes are).
    shown: std::sync::atomic::AtomicBool,
    /// How many times it has closed again after being open.
    recoveries: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct BreakerState {
    /// Open (skipped) until then; `None`: closed.
    open_until: Option<DateTime<Utc>>,
    /// When the one attempt let through after the cool-down (the probe) started.
    probing_since: Option<DateTime<Utc>>,
}

impl BreakerState {
    /// When an attempt may go through, if not now: after the cool-down, or while a probe is
    /// under way, a moment later.
    fn closed_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.open_until, self.probing_since) {
            (None, _) => None,
            (Some(until), _) if now < until => Some(until),
            (Some(_), Some(since)) if now - since < PROBE_AT_MOST => Some(now + WHILE_PROBING),
            (Some(_), _) => None,
        }
    }
}

/// Whether a relay or provider may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Try it (it is closed, or this attempt is the probe after its cool-down).
    Go,
    /// Skip it; it may be tried again from then.
    Skip(DateTime<Utc>),
}

/// When the first of these breakers lets an attempt through, if none does now (`None` also when
/// there are none: a message then fails as having nowhere to go).
pub fn all_closed_until<'a>(breakers: impl Iterator<Item = &'a Breaker>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut earliest: Option<DateTime<Utc>> = None;
    for breaker in breakers {
        let until = breaker.closed_until(now)?;
        earliest = Some(earliest.map_or(until, |e| e.min(until)));
    }
    earliest
}

/// The relays or providers skipped for one message, and the earliest any of them reopens.
#[derive(Debug, Default)]
pub struct Skipped(Option<DateTime<Utc>>);

impl Skipped {
    pub fn until(&mut self, until: DateTime<Utc>) {
        self.0 = Some(self.0.map_or(until, |earliest| earliest.min(until)));
    }

    /// The answer once every relay was tried or skipped: if none was tried (all cooling down),
    /// the message waits for the first to reopen, which is no attempt (no backoff, no timeline
    /// entry); otherwise it is retried later.
    pub fn answer(self, failures: Vec<String>, none_configured: &str) -> Answer {
        match (failures.is_empty(), self.0) {
            (true, Some(until)) => Answer::Hold(until),
            (true, None) => Answer::Retry(none_configured.to_owned()),
            (false, _) => Answer::Retry(failures.join("; ")),
        }
    }
}

/// How long a probe may take before another attempt may probe instead (longer than any one
/// attempt's timeouts).
const PROBE_AT_MOST: chrono::Duration = chrono::Duration::seconds(60);
/// How long others wait while a probe is under way.
const WHILE_PROBING: chrono::Duration = chrono::Duration::seconds(1);

impl Breaker {
    pub fn new(cooldown: chrono::Duration) -> Self {
        Self {
            cooldown,
            state: std::sync::Mutex::new(BreakerState::default()),
            shown: std::sync::atomic::AtomicBool::new(false),
            recoveries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether to try it now. After a cool-down one attempt (the probe) goes through and decides
    /// for the others, which are skipped meanwhile: a relay that still fails, or that never
    /// answers, costs one attempt per cool-down, not a whole window of them.
    pub fn admit(&self, now: DateTime<Utc>) -> Admit {
        let mut state = self.lock();
        match state.closed_until(now) {
            Some(until) => Admit::Skip(until),
            None => {
                // Open, its cool-down over: this attempt is the probe.
                if state.open_until.is_some() {
                    state.probing_since = Some(now);
                }
                Admit::Go
            }
        }
    }

    /// How many times it has worked again after failing.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When it may be tried again, if not now (without starting a probe).
    pub fn closed_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.lock().closed_until(now)
    }

    pub fn failed(&self, name: &str, now: DateTime<Utc>) {
        let mut state = self.lock();
        if state.open_until.is_none() || !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::metrics::set("ownlist_circuit_open", &[("relay", name)], 1.0);
        }
        if state.open_until.is_none_or(|until| now >= until) {
            tracing::warn!(%name, cooldown_s = self.cooldown.num_seconds(), "failing: skipped for its cool-down");
        }
        state.open_until = Some(now + self.cooldown);
        state.probing_since = None;
    }

    pub fn worked(&self, name: &str) {
        // The gauge is written when the state changes (and once at first use), not per message.
        let was_open = {
            let mut state = self.lock();
            state.probing_since = None;
            state.open_until.take().is_some()
        };
        if was_open || !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::metrics::set("ownlist_circuit_open", &[("relay", name)], 0.0);
        }
        if was_open {
            self.recoveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%name, "works again");
        }
    }
}

/// Writes a message as `{id}.{extension}` in `dir`: next to its final name first, then renamed,
/// so a reader never sees half a file and a retry replaces rather than duplicates it.
async fn write_file(
    dir: &std::path::Path,
    id: uuid::Uuid,
    extension: &str,
    bytes: &[u8],
) -> std::io::Result<std::path::PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{id}.{extension}"));
    let partial = dir.join(format!(".{id}.{extension}.partial"));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(path)
}

pub use crate::stats::delivery::{Outcome, Try};

/// Notes an attempt at a relay or provider: in this process's metrics at once, and as a [`Try`]
/// for the delivery statistics, written with the message's answer.
fn tried(channel: &str, relay: &str, outcome: Outcome, took: Duration) -> Try {
    let labels = [("channel", channel), ("relay", relay)];
    crate::metrics::observe("ownlist_delivery_duration_seconds", &labels, took.as_secs_f64());
    let name = match outcome {
        Outcome::Sent => "sent",
        Outcome::Failed => "refused",
        Outcome::Retried => "failed",
    };
    crate::metrics::inc("ownlist_deliveries_total", &[labels[0], labels[1], ("outcome", name)]);
    Try::new(relay, outcome, took)
}

/// The `file` transport: writes the message (see [`write_file`]) and notes the try as relay `file`.
async fn to_file(dir: &std::path::Path, id: uuid::Uuid, extension: &str, bytes: &[u8], tries: &mut Vec<Try>) -> Answer {
    let started = std::time::Instant::now();
    let (answer, outcome) = match write_file(dir, id, extension, bytes).await {
        Ok(path) => {
            (Answer::Delivered(json!({"transport": "file", "path": path.display().to_string()})), Outcome::Sent)
        }
        Err(e) => (Answer::Retry(format!("cannot write the message file: {e}")), Outcome::Retried),
    };
    tries.push(Try::new("file", outcome, started.elapsed()));
    answer
}

/// A message, what its attempt came to, and the relays or providers tried.
type Attempted = (outbox::Model, Answer, Vec<Try>);

/// What one attempt came to.
#[derive(Debug)]
pub enum Answer {
    /// Accepted; the detail (a status, a provider's reply) goes into the timeline. A
    /// `provider_ref` string in it (the provider's id for the message) is kept on the message,
    /// for status callbacks.
    Delivered(Value),
    /// Not now: it may not be sent before this time (an SMS outside the hours it may arrive).
    /// Not an attempt: nothing is counted or written to the timeline.
    Hold(DateTime<Utc>),
    /// A temporary failure: try again later.
    Retry(String),
    /// A permanent failure: give up.
    Fail(String),
    /// A permanent failure because the address does not exist (a hard bounce): give up, and
    /// mark the subscriber's channel bounced so nothing more is sent to it.
    Bounce(String),
}

/// A claimed message's bodies, readable: the stored row and the dictionary it was compressed
/// against, if any (see [`outbox_body::Model`]).
#[derive(Debug, Clone)]
pub struct Body {
    pub stored: outbox_body::Model,
    pub dictionary: Option<Arc<outbox_dictionary::Model>>,
}

impl Body {
    /// Bodies stored alone, without a dictionary.
    pub fn alone(stored: outbox_body::Model) -> Self {
        Self { stored, dictionary: None }
    }

    /// The HTML part, if the message has one.
    pub fn html(&self) -> std::result::Result<Option<std::borrow::Cow<'_, str>>, outbox_body::Damaged> {
        self.stored.html(self.dictionary.as_deref())
    }

    /// Whether the message has an HTML part.
    pub fn has_html(&self) -> bool {
        self.stored.has_html()
    }

    /// Where the message's click-tracking links lead, in order.
    pub fn links(&self) -> std::result::Result<Vec<&str>, outbox_body::Damaged> {
        let links = self.stored.links(self.dictionary.as_deref())?;
        Ok(links.and_then(Value::as_array).map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default())
    }

    /// The plain-text part as stored (empty for HTML email without a text template: it is
    /// derived from the HTML when sent).
    pub fn text(&self) -> &str {
        &self.stored.text
    }
}

/// The dictionaries of claimed messages' bodies, kept once read: they never change. At most
/// [`Dictionaries::KEPT`] are kept (a sending process works through a few broadcasts at a time).
#[derive(Debug, Default)]
struct Dictionaries(std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<outbox_dictionary::Model>>>);

impl Dictionaries {
    const KEPT: usize = 64;

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<uuid::Uuid, Arc<outbox_dictionary::Model>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The claimed messages with their bodies made readable: the dictionaries they need, read
    /// (those not kept yet, in one query). A body whose dictionary is gone is left without it,
    /// and fails as damaged when read.
    async fn attach(&self, db: &Db, claimed: Vec<Claimed>) -> Result<Vec<Ready>> {
        let missing: Vec<uuid::Uuid> = {
            let kept = self.lock();
            let mut missing: Vec<uuid::Uuid> = claimed
                .iter()
                .filter_map(|(_, body)| body.as_ref()?.dictionary_id)
                .filter(|id| !kept.contains_key(id))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if !missing.is_empty() {
            let found = outbox_dictionary::Entity::find()
                .filter(outbox_dictionary::Column::Id.is_in(missing))
                .all(db.conn())
                .await?;
            let mut kept = self.lock();
            if kept.len() + found.len() > Self::KEPT {
                kept.clear();
            }
            kept.extend(found.into_iter().map(|d| (d.id, Arc::new(d))));
        }
        let kept = self.lock();
        Ok(claimed
            .into_iter()
            .map(|(message, body)| {
                let body = body.map(|stored| {
                    let dictionary = stored.dictionary_id.and_then(|id| kept.get(&id).cloned());
                    Body { stored, dictionary }
                });
                (message, body)
            })
            .collect())
    }
}

/// One channel's way of sending an outbox message.
pub trait Carrier: Sync + std::marker::Send {
    /// The outbox `channel` this sender drains, also the prefix of its timeline entries.
    const CHANNEL: &'static str;
    /// Sends one message, noting each relay or provider tried (for the delivery statistics).
    fn attempt(
        &self,
        message: &outbox::Model,
        body: &Body,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> impl Future<Output = Answer> + std::marker::Send;

    /// When at least one relay or provider may be tried again, if none may now: the worker
    /// claims nothing until then.
    fn paused_until(&self, _now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }

    /// How many times, in all, a relay or provider has worked again after failing.
    fn recoveries(&self) -> u64 {
        0
    }
}

/// Drains one channel of the outbox with its sender.
pub struct Worker<S> {
    db: Db,
    clock: SharedClock,
    sender: S,
    bell: Doorbell,
    /// A message still failing for a temporary reason once this old is given up.
    max_age: chrono::Duration,
    /// Several instances (PostgreSQL): this process's id and how long its claims last.
    leases: Option<(String, chrono::Duration)>,
    dictionaries: Dictionaries,
    /// Answers of messages sent whose writing failed (a full disk, a lost database): kept until
    /// they are written, and nothing is claimed meanwhile, since those messages are still queued
    /// in the database and would be sent again. At most IN_FLIGHT: the first failure starts no
    /// more sends, and only those under way then come in after it.
    unrecorded: std::sync::Mutex<Vec<Attempted>>,
    /// The sender's recoveries already acted on.
    recoveries_seen: std::sync::atomic::AtomicU64,
}

/// How long a claimed message stays reserved for the process that claimed it, by default.
pub const DEFAULT_CLAIM_LEASE_SECONDS: i64 = 300;

/// Rung when messages are written to the outbox, so idle workers look at once instead of at
/// their next one-second poll. (Every process polls anyway: another process's writes ring no
/// bell here.)
#[derive(Debug, Clone)]
pub struct Doorbell(Arc<tokio::sync::watch::Sender<()>>);

impl Doorbell {
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(()).0))
    }

    pub fn ring(&self) {
        self.0.send_replace(());
    }

    fn listen(&self) -> tokio::sync::watch::Receiver<()> {
        self.0.subscribe()
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox worker")
    }
}

impl<S: Carrier + 'static> Worker<S> {
    pub fn with(db: Db, clock: SharedClock, sender: S) -> Self {
        Self {
            db,
            clock,
            sender,
            bell: Doorbell::new(),
            max_age: chrono::Duration::hours(DEFAULT_MAX_AGE_HOURS),
            leases: None,
            dictionaries: Dictionaries::default(),
            unrecorded: std::sync::Mutex::new(Vec::new()),
            recoveries_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Claims messages with leases (several instances on one PostgreSQL database): a batch is
    /// claimed with `FOR UPDATE SKIP LOCKED`, so instances never take the same message, and
    /// marked as this process's until `lease` from now; a message is attempted only while at
    /// least half its lease remains (longer than any attempt), so once a lease has ended the
    /// message is safe for another instance to take over (a crashed process's claims come back
    /// that way).
    pub fn with_leases(mut self, instance: String, lease: chrono::Duration) -> Self {
        self.leases = Some((instance, lease));
        self
    }

    /// Gives up on a message that still fails for a temporary reason once it is this old.
    pub fn with_max_age(mut self, max_age: chrono::Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Listens to this bell (the one the engine rings) rather than a bell of its own.
    pub fn with_bell(mut self, bell: Doorbell) -> Self {
        self.bell = bell;
        self
    }

    /// Attempts a batch of due messages of the channel; returns how many were attempted.
    pub async fn send_due(self: &Arc<Self>) -> Result<u64> {
        if !self.ready_to_claim().await? {
            return Ok(0);
        }
        let (_, never) = tokio::sync::watch::channel(false);
        let batch = self.claim(self.clock.now(), None).await?;
        let progress = Progress::default();
        progress.outstanding.store(batch.len(), std::sync::atomic::Ordering::Relaxed);
        self.send_all(futures_util::stream::iter([batch]), &never, &progress).await
    }

    /// The next due messages of the channel with their bodies, in (due time, id) order after
    /// `after`: a pass through a backlog claims each batch after the previous one, so the next
    /// batch can be read while the current one is being sent.
    async fn claim(&self, now: DateTime<Utc>, after: Option<(DateTime<Utc>, uuid::Uuid)>) -> Result<Vec<Ready>> {
        let claimed = match &self.leases {
            Some((instance, lease)) => self.claim_leased(now, instance, *lease).await?,
            None => self.claim_next(now, after).await?,
        };
        self.dictionaries.attach(&self.db, claimed).await
    }

    /// The next due messages after `after` (one instance: no leases).
    async fn claim_next(&self, now: DateTime<Utc>, after: Option<(DateTime<Utc>, uuid::Uuid)>) -> Result<Vec<Claimed>> {
        let mut query = outbox::with_bodies()
            .filter(channel_is(S::CHANNEL))
            .filter(crate::store::queued())
            .filter(outbox::Column::DueAt.lte(now));
        if let Some((due, id)) = after {
            query = query.filter(
                sea_orm::Condition::any()
                    .add(outbox::Column::DueAt.gt(due))
                    .add(sea_orm::Condition::all().add(outbox::Column::DueAt.eq(due)).add(outbox::Column::Id.gt(id))),
            );
        }
        let query = query.order_by_asc(outbox::Column::DueAt).order_by_asc(outbox::Column::Id).limit(BATCH);
        Ok(outbox::all_with_bodies(query, self.db.conn()).await?)
    }

    /// Claims the next due messages that no live lease holds (PostgreSQL).
    async fn claim_leased(&self, now: DateTime<Utc>, instance: &str, lease: chrono::Duration) -> Result<Vec<Claimed>> {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = "UPDATE outbox SET lease_until = $1, lease_owner = $2 WHERE id IN (\
                   SELECT id FROM outbox WHERE channel = $3 AND status = 'queued' AND due_at <= $4 \
                   AND (lease_until IS NULL OR lease_until < $4) ORDER BY due_at, id LIMIT $5 \
                   FOR UPDATE SKIP LOCKED) RETURNING id";
        let values: [sea_orm::Value; 5] =
            [(now + lease).into(), instance.into(), S::CHANNEL.into(), now.into(), (BATCH as i64).into()];
        let statement = Statement::from_sql_and_values(self.db.backend(), sql, values);
        let rows = self.db.conn().query_all_raw(statement).await?;
        let ids: Vec<uuid::Uuid> = rows.iter().filter_map(|r| r.try_get::<uuid::Uuid>("", "id").ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = outbox::with_bodies()
            .filter(outbox::Column::Id.is_in(ids))
            .order_by_asc(outbox::Column::DueAt)
            .order_by_asc(outbox::Column::Id);
        Ok(outbox::all_with_bodies(query, self.db.conn()).await?)
    }

    /// Gives back the leases of claimed messages not attempted (on stopping, or after a pass
    /// failed), so another instance can send them at once rather than when the leases end. The
    /// messages sent whose answers are not written yet keep theirs: they must not be sent again.
    async fn release_leases(&self) -> Result<()> {
        let Some((instance, _)) = &self.leases else { return Ok(()) };
        use sea_orm::sea_query::Expr;
        let sent: Vec<uuid::Uuid> = self.held().iter().map(|(message, _, _)| message.id).collect();
        outbox::Entity::update_many()
            .col_expr(outbox::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(outbox::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .filter(outbox::Column::LeaseOwner.eq(instance.as_str()))
            .filter(outbox::Column::Status.eq("queued"))
            .filter(outbox::Column::Id.is_not_in(sent))
            .exec(self.db.conn())
            .await?;
        Ok(())
    }

    /// What comes before claiming: the answers kept after a failure are written (until they
    /// are, nothing is claimed), nothing is claimed while every relay cools down, and retries
    /// are made due when a relay works again. `false`: claim nothing now.
    async fn ready_to_claim(&self) -> Result<bool> {
        self.write_unrecorded().await?;
        if let Some(until) = self.sender.paused_until(self.clock.now()) {
            tracing::debug!(channel = S::CHANNEL, %until, "every relay is cooling down: nothing claimed");
            return Ok(false);
        }
        self.retry_now_after_a_recovery().await?;
        Ok(true)
    }

    /// When a relay works again after failing, the messages waiting out a backoff are due at
    /// once: their tries failed because the relays did (or, for a few, for a reason of their
    /// own, which costs them one early try), and an outage should end when the relay is back,
    /// not when the longest backoff does.
    async fn retry_now_after_a_recovery(&self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let recoveries = self.sender.recoveries();
        if self.recoveries_seen.load(Relaxed) == recoveries {
            return Ok(());
        }
        use sea_orm::sea_query::Expr;
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let moved = outbox::Entity::update_many()
            .col_expr(outbox::Column::DueAt, Expr::value(now))
            .filter(channel_is(S::CHANNEL))
            .filter(crate::store::queued())
            .filter(outbox::Column::Attempts.gt(0))
            .filter(outbox::Column::DueAt.gt(now))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.recoveries_seen.store(recoveries, Relaxed);
        tracing::info!(
            channel = S::CHANNEL,
            messages = moved.rows_affected,
            "a relay works again: retries are due now"
        );
        Ok(())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Attempted>> {
        self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the answers kept after a failure, if any; until that works, nothing new is sent.
    async fn write_unrecorded(&self) -> Result<()> {
        let answers = std::mem::take(&mut *self.held());
        if answers.is_empty() {
            return Ok(());
        }
        match self.record_retrying(&answers).await {
            Ok(()) => {
                tracing::info!(channel = S::CHANNEL, answers = answers.len(), "kept answers written");
                Ok(())
            }
            Err(e) => {
                self.held().extend(answers);
                Err(e)
            }
        }
    }

    /// Attempts the messages of the batches as they come, CONCURRENCY at a time, starting none
    /// once `stop` says so (those under way finish and are recorded); returns how many were
    /// attempted.
    ///
    /// Each attempt is a task of its own, so the attempts (building a message is CPU work) run
    /// on every core of the runtime, not only on the one polling this function. A send's answer
    /// goes to the recorder, which writes every answer that has come in one transaction while
    /// the next messages are sent. A message holds one of IN_FLIGHT permits from before its
    /// attempt until its answer is written: at any instant at most IN_FLIGHT messages are sent
    /// (or being sent) but not recorded, and only those can be sent again after a crash. Every
    /// attempt started is recorded before this returns: the recorder reads until the last task
    /// has handed in its answer.
    async fn send_all(
        self: &Arc<Self>,
        batches: impl futures_util::Stream<Item = Vec<Ready>> + std::marker::Send,
        stop: &tokio::sync::watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<u64> {
        type Permit = tokio::sync::OwnedSemaphorePermit;
        use std::sync::atomic::Ordering::Relaxed;
        let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let sending = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Attempted, Permit)>();
        let failed = &progress.failed;
        let starting = async {
            let tx = tx;
            let mut messages = std::pin::pin!(batches.flat_map(futures_util::stream::iter));
            while let Some((message, body)) = messages.next().await {
                let (Ok(slot), Ok(permit)) =
                    (sending.clone().acquire_owned().await, window.clone().acquire_owned().await)
                else {
                    break;
                };
                // Stopping, or the answers cannot be written: start nothing more (a message may
                // have waited here for its place while that happened).
                if *stop.borrow() || failed.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // A lease about to end: leave the message for whoever claims it next.
                if let (Some(until), Some((_, lease))) = (message.lease_until, &self.leases)
                    && self.clock.now() + *lease / 2 > until
                {
                    progress.outstanding.fetch_sub(1, Relaxed);
                    continue;
                }
                let (worker, tx) = (self.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut tries = Vec::new();
                    let answer = match &body {
                        Some(body) => worker.sender.attempt(&message, body, worker.clock.now(), &mut tries).await,
                        None => Answer::Fail("the message's body is missing".into()),
                    };
                    drop(slot);
                    // The recorder reads until every task has dropped its sender: this cannot fail.
                    let _ = tx.send(((message, answer, tries), permit));
                });
            }
        };
        let recording = async {
            let (mut outcome, mut count) = (Ok(()), 0u64);
            let mut group = Vec::with_capacity(IN_FLIGHT);
            while rx.recv_many(&mut group, IN_FLIGHT).await > 0 {
                // While sends are under way, wait a little for more answers: each transaction
                // rewrites the pages it touches (the table's last pages, the indexes'), so a few
                // large ones write much less than many small ones.
                let deadline = tokio::time::Instant::now() + GATHER;
                while group.len() < IN_FLIGHT / 2 && sending.available_permits() < CONCURRENCY {
                    match tokio::time::timeout_at(deadline, rx.recv_many(&mut group, IN_FLIGHT)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                count += group.len() as u64;
                progress.outstanding.fetch_sub(group.len(), Relaxed);
                let (answers, permits): (Vec<_>, Vec<_>) = group.drain(..).unzip();
                if outcome.is_ok() {
                    outcome = self.record_retrying(&answers).await;
                }
                if outcome.is_err() {
                    // Kept, not dropped: without its answer a sent message would be sent again.
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.held().extend(answers);
                }
                drop(permits);
            }
            outcome.map(|()| count)
        };
        tokio::join!(starting, recording).1
    }

    /// [`Self::record_all`], tried again when the database gives up on the transaction for a
    /// reason of the moment (PostgreSQL breaking a deadlock, SQLite busy), so the answers of
    /// messages already sent are not dropped: without them the messages would be sent again.
    async fn record_retrying(&self, answers: &[Attempted]) -> Result<()> {
        let mut waited = 0;
        loop {
            match self.record_all(answers, self.clock.now()).await {
                Err(e) if waited < 5 && crate::store::is_transient(&e) => {
                    waited += 1;
                    tracing::warn!(error = %e, channel = S::CHANNEL, "recording answers: trying again");
                    tokio::time::sleep(Duration::from_millis(20 * waited)).await;
                }
                other => return other,
            }
        }
    }

    /// Records answers on their messages and in the timeline, in one transaction: one UPDATE
    /// for the messages and one INSERT for the timeline entries, and the day's delivery and step
    /// statistics.
    async fn record_all(&self, answers: &[Attempted], now: DateTime<Utc>) -> Result<()> {
        use crate::stats::steps::measure;
        use crate::store::bulk::{OnDuplicate, insert_bound_statement, joined, padded, update_bound_statement};
        use outbox::Column as C;
        let mut updates = Vec::with_capacity(answers.len());
        let mut events = Vec::with_capacity(answers.len());
        let mut bounces = Vec::new();
        let mut attempts = crate::stats::delivery::Attempts::default();
        let mut steps = crate::stats::steps::Tally::default();
        let day = now.date_naive();
        for (message, answer, tries) in answers {
            attempts.add(S::CHANNEL, tries);
            let produced_by = message.workflow_id.clone().zip(message.step_id.clone());
            let (message, event, bounce) = outcome::<S>(message, answer, now, self.max_age);
            let ended = match &message.status {
                sea_orm::ActiveValue::Set(status) if status == "sent" => Some(measure::DELIVERED),
                sea_orm::ActiveValue::Set(status) if status == "failed" => Some(measure::FAILED),
                _ => None,
            };
            if let (Some((workflow, step)), Some(what)) = (&produced_by, ended) {
                steps.add(day, workflow, step, what, "");
            }
            updates.push(message);
            events.extend(event);
            bounces.extend(bounce);
        }
        let backend = self.db.backend();
        let mut columns = vec![C::Status, C::Attempts, C::DueAt, C::SentAt, C::LastError, C::ProviderRef, C::UpdatedAt];
        if self.leases.is_some() {
            columns.extend([C::LeaseUntil, C::LeaseOwner]);
        }
        // On SQLite: the rows padded to a multiple of 32, so the statements come in eight shapes
        // each prepared once (a statement per count of answers was prepared anew nearly every
        // time), and sent as one with the day's figures (see `bulk::joined`).
        let sqlite = backend == sea_orm::DbBackend::Sqlite;
        let (updates, events) = if sqlite { (padded(updates, 32), padded(events, 32)) } else { (updates, events) };
        let statements: Vec<sea_orm::Statement> = update_bound_statement(backend, updates, &columns)
            .into_iter()
            .chain(insert_bound_statement(backend, events, OnDuplicate::Ignore))
            .chain(attempts.statement(backend, day))
            .collect();
        let statements = joined(backend, statements);
        let started = std::time::Instant::now();
        let txn = self.db.begin_write().await?;
        let locked = started.elapsed();
        for statement in statements {
            crate::store::bulk::execute(&txn, statement).await?;
        }
        if let Ok(channel) = S::CHANNEL.parse::<Channel>() {
            for (subscriber, reason) in bounces {
                mark_bounced(&txn, subscriber, channel, &reason, now).await?;
            }
        }
        steps.flush(&txn).await?;
        let wrote = started.elapsed();
        txn.commit().await?;
        tracing::debug!(channel = S::CHANNEL, answers = answers.len(), ?locked, ?wrote, took = ?started.elapsed(), "answers recorded");
        Ok(())
    }

    /// Sends due messages until `stop` says so: batch after batch while there is a backlog,
    /// otherwise looking again when the bell rings or after a second. On `stop` it starts no new attempt, finishes and
    /// records those under way, and returns.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut bell = self.bell.listen();
        let mut failures = 0u32;
        loop {
            bell.mark_unchanged();
            let mut pause = Duration::from_secs(1);
            match self.pass(&stop).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    // Each failure in a row waits twice as long (to half a minute), and what
                    // this process claimed but did not attempt goes back to the other instances.
                    failures = failures.saturating_add(1);
                    pause = Duration::from_millis(500 << failures.min(6));
                    tracing::error!(error = %e, channel = S::CHANNEL, ?pause, "delivery failed; trying again");
                    if let Err(e) = self.release_leases().await {
                        tracing::warn!(error = %e, channel = S::CHANNEL, "could not give back claimed messages");
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = bell.changed(), if failures == 0 => {}
                () = tokio::time::sleep(pause) => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.write_unrecorded().await {
            let lost = self.held().len();
            tracing::error!(error = %e, channel = S::CHANNEL, lost, "stopping with answers that cannot be written: those messages may be sent again");
        }
        if let Err(e) = self.release_leases().await {
            tracing::warn!(error = %e, channel = S::CHANNEL, "could not give back claimed messages");
        }
    }

    /// One pass through what is due: batch after batch until a batch comes back short, each
    /// claimed while the ones before it are being sent (at most two wait, so memory stays
    /// bounded), and the messages sent as one stream, so no batch waits for the last of the one
    /// before it.
    async fn pass(self: &Arc<Self>, stop: &tokio::sync::watch::Receiver<bool>) -> Result<()> {
        if !self.ready_to_claim().await? {
            return Ok(());
        }
        use std::sync::atomic::Ordering::Relaxed;
        let (batches, waiting) = tokio::sync::mpsc::channel::<Vec<Ready>>(1);
        let progress = &Progress::default();
        let claiming = async move {
            let mut after = None;
            let mut bell = self.bell.listen();
            while !*stop.borrow() && !progress.failed.load(Relaxed) {
                bell.mark_unchanged();
                let batch = self.claim(self.clock.now(), after).await?;
                let claimed = batch.len();
                if let Some(last) = batch.last().map(|(m, _)| (m.due_at, m.id)) {
                    after = Some(last);
                    progress.outstanding.fetch_add(claimed, Relaxed);
                    if batches.send(batch).await.is_err() {
                        break;
                    }
                }
                if claimed as u64 == BATCH {
                    continue;
                }
                // Nothing more is due now. While sends are still under way (a slow relay, a
                // probe waiting out its greeting), look again in a moment rather than when the
                // slowest of them ends: one slow message must not hold up the messages after it.
                if progress.outstanding.load(Relaxed) == 0 {
                    break;
                }
                tokio::select! {
                    _ = bell.changed() => {}
                    () = tokio::time::sleep(LOOK_AGAIN) => {}
                }
            }
            Ok::<_, crate::error::Error>(())
        };
        let waiting = futures_util::stream::unfold(waiting, |mut rx| async { rx.recv().await.map(|b| (b, rx)) });
        let (claimed, sent) = tokio::join!(claiming, self.send_all(waiting, stop, progress));
        sent?;
        claimed
    }
}

/// How often a pass looks for newly due messages while sends it started are still under way.
const LOOK_AGAIN: Duration = Duration::from_millis(200);

/// What a pass's claiming knows of its sending.
#[derive(Debug, Default)]
struct Progress {
    /// Messages claimed whose attempt has not ended (or that were not started).
    outstanding: std::sync::atomic::AtomicUsize,
    /// The answers could not be written: claim and start nothing more.
    failed: std::sync::atomic::AtomicBool,
}

/// A claimed message and its bodies as stored (`None` if they are missing, which fails it).
type Claimed = (outbox::Model, Option<outbox_body::Model>);

/// A claimed message and its bodies, readable (`None` if they are missing, which fails it).
type Ready = (outbox::Model, Option<Body>);

/// `channel = '…'` written as a literal, as [`crate::store::queued`] is: SQLite re-plans a
/// statement whose bound value a partial index's condition names (`outbox_sms_provider_ref`
/// is `WHERE channel = 'sms'`) every time it is bound again; a literal is planned once.
fn channel_is(channel: &'static str) -> sea_orm::sea_query::SimpleExpr {
    debug_assert!(channel.bytes().all(|b| b.is_ascii_lowercase()));
    sea_orm::sea_query::Expr::cust(format!("\"outbox\".\"channel\" = '{channel}'"))
}

/// What an answer does: the message's new state (its id and every column `record_all`
/// writes), its timeline entry, and the subscriber to mark bounced. A hold is no attempt: only
/// the time it is due moves, and nothing goes into the timeline.
#[allow(clippy::type_complexity)]
fn outcome<S: Carrier>(
    message: &outbox::Model,
    answer: &Answer,
    now: DateTime<Utc>,
    max_age: chrono::Duration,
) -> (outbox::ActiveModel, Option<crate::store::entities::event::ActiveModel>, Option<(uuid::Uuid, String)>) {
    let (subscriber, id) = (message.subscriber_id, message.id);
    let (step, workflow) = (message.step_id.clone(), message.workflow_id.clone());
    let attempts = message.attempts + 1;
    let age = now - message.created_at;
    let mut active = outbox::ActiveModel {
        id: Set(id),
        status: Set(message.status.clone()),
        attempts: Set(message.attempts),
        due_at: Set(message.due_at),
        sent_at: Set(message.sent_at),
        last_error: Set(message.last_error.clone()),
        provider_ref: Set(message.provider_ref.clone()),
        updated_at: Set(now),
        lease_until: Set(None),
        lease_owner: Set(None),
        ..Default::default()
    };
    let mut bounced = None;
    let (outcome, detail) = match answer {
        Answer::Hold(until) => {
            active.due_at = Set(*until);
            return (active, None, None);
        }
        Answer::Delivered(detail) => {
            if let Some(reference) = detail.get("provider_ref").and_then(Value::as_str) {
                active.provider_ref = Set(Some(reference.to_owned()));
            }
            active.status = Set("sent".into());
            active.sent_at = Set(Some(now));
            active.last_error = Set(None);
            ("sent", detail.clone())
        }
        Answer::Retry(error) if age < max_age => {
            let wait = backoff(id, attempts);
            active.due_at = Set(now + wait);
            active.last_error = Set(Some(error.clone()));
            ("retrying", json!({"error": error, "next_attempt": now + wait}))
        }
        Answer::Retry(error) => {
            let error = format!("still failing after {} hours and {attempts} attempts: {error}", age.num_hours());
            active.status = Set("failed".into());
            active.last_error = Set(Some(error.clone()));
            ("failed", json!({"error": error, "gave_up": true}))
        }
        Answer::Fail(error) => {
            active.status = Set("failed".into());
            active.last_error = Set(Some(error.clone()));
            ("failed", json!({"error": error}))
        }
        Answer::Bounce(error) => {
            active.status = Set("failed".into());
            active.last_error = Set(Some(error.clone()));
            bounced = Some((subscriber, error.clone()));
            ("failed", json!({"error": error, "bounce": "hard"}))
        }
    };
    active.attempts = Set(attempts);
    let data = json!({"message": id, "workflow": workflow, "step": step, "attempt": attempts, "detail": detail});
    let event = records::event(subscriber, &format!("{}_{outcome}", S::CHANNEL), data, now);
    (active, Some(event), bounced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_cool_down_one_probe_decides_for_the_others() {
        let t0 = Utc::now();
        let breaker = Breaker::new(chrono::Duration::seconds(20));
        assert_eq!(breaker.admit(t0), Admit::Go);
        breaker.failed("relay", t0);
        let reopens = t0 + chrono::Duration::seconds(20);
        assert_eq!(breaker.admit(t0), Admit::Skip(reopens));
        assert_eq!(breaker.closed_until(t0), Some(reopens));
        // The cool-down is over: the first attempt probes, the others wait a moment for it.
        assert_eq!(breaker.closed_until(reopens), None, "asking does not start a probe");
        assert_eq!(breaker.admit(reopens), Admit::Go);
        assert_eq!(breaker.admit(reopens), Admit::Skip(reopens + chrono::Duration::seconds(1)));
        // A probe that fails opens it for another cool-down.
        breaker.failed("relay", reopens);
        assert_eq!(breaker.admit(reopens), Admit::Skip(reopens + chrono::Duration::seconds(20)));
        // A probe that never ends is given up after a minute: another may probe.
        let later = reopens + chrono::Duration::seconds(20);
        assert_eq!(breaker.admit(later), Admit::Go);
        assert!(matches!(breaker.admit(later + chrono::Duration::seconds(59)), Admit::Skip(_)));
        assert_eq!(breaker.admit(later + chrono::Duration::seconds(60)), Admit::Go);
        // A probe that works closes it for everyone.
        let recoveries = breaker.recoveries();
        breaker.worked("relay");
        assert_eq!(breaker.admit(later), Admit::Go);
        assert_eq!(breaker.admit(later), Admit::Go);
        assert_eq!(breaker.recoveries(), recoveries + 1);
    }

    #[test]
    fn backoff_doubles_to_an_hour_with_up_to_a_quarter_more_spread_by_message() {
        let ids: Vec<uuid::Uuid> = (0..200).map(|_| uuid::Uuid::now_v7()).collect();
        for (attempts, minutes) in [(1, 1), (2, 2), (3, 4), (7, 60), (9, 60)] {
            let base = chrono::Duration::minutes(minutes);
            let waits: Vec<_> = ids.iter().map(|id| backoff(*id, attempts)).collect();
            assert!(waits.iter().all(|w| *w >= base && *w <= base + base / 4), "{attempts}: {waits:?}");
            let spread = *waits.iter().max().unwrap() - *waits.iter().min().unwrap();
            assert!(spread > base / 8, "retries are spread out: {spread:?} at attempt {attempts}");
            assert_eq!(backoff(ids[0], attempts), waits[0], "the same message waits the same");
        }
    }
}
