//! Delivery: draining the outbox. Every message was rendered and stored before any attempt to
//! send it; a worker per channel claims due messages, sends them, and records the answer on the
//! message and in the subscriber's timeline (`{channel}_sent`, `_retrying`, `_failed`).
//!
//! Retries: temporary failures are tried again with exponential backoff (1 min doubling to 1 h,
//! each wait up to a quarter longer, spread by message) until the message is older than the
//! retry age (48 hours by default); a permanent failure fails the message at once.

pub mod bounce_smtp;
mod breaker;
mod claim;
mod record;
mod run;

use breaker::*;
use record::*;

use crate::core::values::OutboxChannel;

pub mod email;
pub mod mime;
pub mod policy;
pub mod sms;
pub mod smtp;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::core::clock::SharedClock;
use crate::core::error::Result;
use crate::outbox::Doorbell;
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

/// Whether a relay or provider may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Try it (it is closed, or this attempt is the probe after its cool-down).
    Go,
    /// Skip it; it may be tried again from then.
    Skip(DateTime<Utc>),
}

/// The relays or providers skipped for one message, and the earliest any of them reopens.
#[derive(Debug, Default)]
pub struct Skipped(Option<DateTime<Utc>>);

/// How long a probe may take before another attempt may probe instead (longer than any one
/// attempt's timeouts).
const PROBE_AT_MOST: chrono::Duration = chrono::Duration::seconds(60);
/// How long others wait while a probe is under way.
const WHILE_PROBING: chrono::Duration = chrono::Duration::seconds(1);

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

pub use crate::rollups::delivery::{Outcome, Try};

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
    /// Held by the send policy until this time, for this reason: not an attempt, but the
    /// timeline says why (`{channel}_held`).
    Held(DateTime<Utc>, String),
    /// Not to be sent, by the send policy (the sunset rule): cancelled, and the timeline says
    /// why (`{channel}_cancelled`).
    Stopped(String),
    /// Not to be sent, and the subscriber is to be asked once whether they still want email
    /// (the sunset rule's `ask`): cancelled, `sunset_asked` in the timeline, and a `sunset`
    /// trigger for the engine, which writes the question.
    Asked(String),
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
    const CHANNEL: OutboxChannel;
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
    /// `reach: first`: a message failing for now is tried again once after this long; failing
    /// then, its fallback goes instead.
    fallback_after: chrono::Duration,
    /// Where this worker says whether its channel works (read by the engine for `reach: first`).
    health: Option<crate::core::health::SharedHealth>,
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
    /// What holds marketing messages back (frequency caps, the sending calendar).
    policy: policy::SendPolicy,
}

/// How long a claimed message stays reserved for the process that claimed it, by default.
pub const DEFAULT_CLAIM_LEASE_SECONDS: i64 = 300;

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox worker")
    }
}

impl<S: Carrier + 'static> Worker<S> {}

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
fn channel_is(channel: OutboxChannel) -> sea_orm::sea_query::SimpleExpr {
    sea_orm::sea_query::Expr::cust(format!("\"outbox\".\"channel\" = '{}'", channel.as_str()))
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
