//! Importing subscribers from CSV: streamed, validated row by row, upserted in batches.
//!
//! Columns: `email`, `phone`, `first_name`, `last_name`, `tags` (separated by `;` or `,`), and
//! the export's own columns (`id`, `timezone`, `locale`, `status`, `email_state`, `sms_state`,
//! `whatsapp_state` (a phone number alone is no consent to WhatsApp),
//! `lists`, `attributes`, attribution, `created_at`); any other column becomes an attribute.
//!
//! Guarantees: a bad row is reported (line and column) and never stops the good ones; a row is
//! written whole or not at all; an erased (suppressed) address is skipped and counted; an import
//! never re-subscribes a channel or list someone left.

mod plan;
mod rows;
mod write;

use plan::*;
use rows::*;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use csv_async::{AsyncReaderBuilder, ByteRecord};
use sea_orm::Statement;

use serde::Serialize;
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::Actor;
use super::subscribers::Profile;
use crate::core::clock::SharedClock;
use crate::core::error::{Error, Result};
use crate::core::values::{ChannelState, MembershipStatus, SubscriberStatus};
use crate::store::Db;
use crate::store::entities::{membership, subscriber, subscriber_tag};

/// Rows written per transaction.
const BATCH: usize = 1000;
/// Row errors listed in the report (all are counted).
const MAX_LISTED_ERRORS: usize = 1000;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Every imported subscriber joins this list (confirmed).
    pub list: Option<String>,
    pub actor: Actor,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// New subscribers.
    pub imported: u64,
    /// Existing subscribers (matched by email, then phone) that were updated.
    pub updated: u64,
    /// Rows not written: invalid rows plus suppressed addresses.
    pub skipped: u64,
    /// Of the skipped rows, those whose address was erased on request.
    pub suppressed: u64,
    /// Why rows were rejected, at most 1000 (see `errors_total`).
    pub errors: Vec<RowError>,
    pub errors_total: u64,
    /// Lists named in a `lists` column that did not exist and were created.
    pub lists_created: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// Line in the file (the header is line 1).
    pub row: u64,
    pub column: Option<String>,
    pub message: String,
}

impl ImportReport {
    fn reject(&mut self, row: u64, column: Option<String>, message: String) {
        self.errors_total += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(RowError { row, column, message });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Known {
    Id,
    Email,
    Phone,
    FirstName,
    LastName,
    Timezone,
    Locale,
    Status,
    EmailState,
    SmsState,
    WhatsappState,
    Lists,
    Tags,
    Attributes,
    Source,
    Medium,
    Campaign,
    Referrer,
    LandingPage,
    Content,
    Term,
    ClickId,
    CreatedAt,
    UpdatedAt,
}

#[derive(Debug, Clone)]
enum ColumnKind {
    Known(Known),
    Attribute(String),
}

#[derive(Debug)]
struct Header {
    columns: Vec<(String, ColumnKind)>,
}

/// One valid row, ready to write.
#[derive(Debug, Clone)]
struct Row {
    line: u64,
    id: Option<Uuid>,
    profile: Profile,
    status: Option<SubscriberStatus>,
    email_state: Option<ChannelState>,
    sms_state: Option<ChannelState>,
    /// Only from the column: a phone number is no consent to WhatsApp.
    whatsapp_state: Option<ChannelState>,
    lists: Vec<(String, MembershipStatus)>,
    tags: BTreeSet<String>,
    created_at: Option<DateTime<Utc>>,
}

/// Imports a CSV stream. Fails as a whole only when the header is unusable, the default list is
/// unknown, or the database fails; everything else is a row error in the report.
///
/// Reading and validating run on one task while the previous batch is written on another, so
/// both cores work during a large import.
pub async fn import_csv<R>(db: &Db, clock: SharedClock, input: R, options: ImportOptions) -> Result<ImportReport>
where
    R: AsyncRead + Unpin + Send,
{
    let default_list = match &options.list {
        Some(slug) => Some(super::lists::find(db.conn(), slug).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::field("list", format!("unknown list '{slug}'")),
            other => other,
        })?),
        None => None,
    };
    let mut reader = AsyncReaderBuilder::new().has_headers(false).flexible(false).create_reader(input);
    let mut record = ByteRecord::new();
    let header = match reader.read_byte_record(&mut record).await {
        Ok(true) => read_header(&record)?,
        Ok(false) => {
            return Err(Error::Malformed { code: "invalid_csv_header", detail: "the CSV is empty".into() });
        }
        Err(e) => return Err(csv_failure(&e)),
    };
    let context = Context {
        actor: options.actor.clone(),
        default_list: default_list.map(|l| (l.slug, l.id)),
        list_ids: HashMap::new(),
    };
    let mut planner =
        Planner { db: db.clone(), clock: clock.clone(), context: Arc::new(context), lists_created: Vec::new() };
    let mut executor = Executor { db: db.clone(), clock, report: ImportReport::default() };
    let (batches, mut to_plan) = tokio::sync::mpsc::channel::<Vec<Row>>(2);
    let (planned, mut to_write) = tokio::sync::mpsc::channel::<Prepared>(1);
    let planning = tokio::spawn(async move {
        let mut busy = std::time::Duration::ZERO;
        while let Some(batch) = to_plan.recv().await {
            let t = std::time::Instant::now();
            let prepared = planner.prepare(batch).await?;
            busy += t.elapsed();
            if planned.send(prepared).await.is_err() {
                break;
            }
        }
        tracing::debug!(?busy, "import planning finished");
        Ok::<Vec<String>, Error>(planner.lists_created)
    });
    // A batch that cannot be written stops the import; what was committed before it is reported
    // with the error, so no row is acknowledged that is not stored.
    let writing = tokio::spawn(async move {
        let mut busy = std::time::Duration::ZERO;
        while let Some(prepared) = to_write.recv().await {
            let t = std::time::Instant::now();
            if let Err(e) = executor.execute(prepared).await {
                return (executor.report, Some(e));
            }
            busy += t.elapsed();
        }
        tracing::debug!(?busy, "import writing finished");
        (executor.report, None)
    });
    let mut rejected = ImportReport::default();
    let read = read_rows(&mut reader, &mut record, &header, &mut rejected, &batches).await;
    drop(batches);
    let stopped = |e: tokio::task::JoinError| Error::Other(anyhow::anyhow!("import stage stopped: {e}"));
    let lists_created = planning.await.map_err(stopped)?;
    let (mut report, written) = writing.await.map_err(stopped)?;
    // The first failure of the three stages, if any (the others stopped because of it).
    let failure = match (written, lists_created, read) {
        (Some(e), lists, _) => {
            report.lists_created = lists.unwrap_or_default();
            Some(e)
        }
        (None, Err(e), _) => Some(e),
        (None, Ok(lists), read) => {
            report.lists_created = lists;
            read.err()
        }
    };
    if let Some(cause) = failure {
        let stored = report.imported + report.updated + report.suppressed > 0 || !report.lists_created.is_empty();
        if !stored {
            return Err(cause);
        }
        let done = serde_json::to_value(&report).unwrap_or_default();
        return Err(Error::Interrupted { done, cause: Box::new(cause) });
    }
    report.skipped += rejected.skipped;
    report.errors_total += rejected.errors_total;
    report.errors.extend(rejected.errors);
    report.errors.sort_by_key(|e| e.row);
    report.errors.truncate(MAX_LISTED_ERRORS);
    Ok(report)
}

/// Where a row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Existing(Uuid),
    Pending(usize),
}

/// The subscribers a batch touches, keyed the ways rows find them.
#[derive(Default)]
struct Plan {
    existing: HashMap<Uuid, (subscriber::Model, bool, Vec<&'static str>)>,
    new: Vec<NewSubscriber>,
    by_email: HashMap<String, Target>,
    by_phone: HashMap<String, Target>,
    by_id: HashMap<Uuid, Target>,
    memberships: Vec<membership::ActiveModel>,
    tags: Vec<subscriber_tag::ActiveModel>,
    imported: u64,
    updated: u64,
    suppressed: u64,
    rejected: Vec<(u64, String)>,
}

struct NewSubscriber {
    id: Uuid,
    profile: Profile,
    status: SubscriberStatus,
    email_state: ChannelState,
    sms_state: ChannelState,
    whatsapp_state: ChannelState,
    created_at: Option<DateTime<Utc>>,
}

/// What the whole import shares: who imports, the default list, the lists known so far.
#[derive(Debug, Clone)]
struct Context {
    actor: Actor,
    default_list: Option<(String, Uuid)>,
    list_ids: HashMap<String, Uuid>,
}

/// A batch's writes, rendered as statements ready to run in one transaction.
#[derive(Default)]
struct Writes {
    updates: Vec<subscriber::ActiveModel>,
    statements: Vec<Statement>,
}

/// A batch planned against the database as it was when planning began.
struct Prepared {
    rows: Vec<Row>,
    plan: Plan,
    writes: Writes,
    context: Arc<Context>,
}

/// First stage: creates missing lists, looks rows up and renders their writes, outside any
/// write transaction, so that it overlaps with the previous batch being written.
struct Planner {
    db: Db,
    clock: SharedClock,
    context: Arc<Context>,
    lists_created: Vec<String>,
}

/// Second stage: runs a prepared batch in one write transaction. When the database refuses it
/// (a row written since planning, such as the same address in the previous batch), the batch is
/// planned again inside the transaction; if that fails too, row by row, so that only the
/// failing rows are rejected.
struct Executor {
    db: Db,
    clock: SharedClock,
    report: ImportReport,
}
