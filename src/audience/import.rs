//! Importing subscribers from CSV: streamed, validated row by row, upserted in batches.
//!
//! Columns: `email`, `phone`, `first_name`, `last_name`, `tags` (separated by `;` or `,`), and
//! the export's own columns (`id`, `timezone`, `locale`, `status`, `email_state`, `sms_state`,
//! `lists`, `attributes`, attribution, `created_at`); any other column becomes an attribute.
//!
//! Guarantees: a bad row is reported (line and column) and never stops the good ones; a row is
//! written whole or not at all; an erased (suppressed) address is skipped and counted; an import
//! never re-subscribes a channel or list someone left.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use csv_async::{AsyncReaderBuilder, ByteRecord};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};
use sea_orm::{DatabaseTransaction, DbBackend, Statement};

use crate::store::bulk::{OnDuplicate, insert_statement};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::Actor;
use super::records::{self, ConsentOrigin, ConsentWording, kind};
use super::subscribers::{Attribution, Checker, Profile, membership_row, new_subscriber_row, tag_row};
use super::values::{
    Channel, ChannelState, ConsentMethod, MembershipStatus, SubscriberStatus, suppression_hash, validate_attribute_key,
    validate_slug,
};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::store::Db;
use crate::store::entities::{list, membership, subscriber, subscriber_tag, suppression};

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

impl Known {
    fn from_header(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "id" => Self::Id,
            "email" => Self::Email,
            "phone" => Self::Phone,
            "first_name" => Self::FirstName,
            "last_name" => Self::LastName,
            "timezone" => Self::Timezone,
            "locale" => Self::Locale,
            "status" => Self::Status,
            "email_state" => Self::EmailState,
            "sms_state" => Self::SmsState,
            "lists" => Self::Lists,
            "tags" => Self::Tags,
            "attributes" => Self::Attributes,
            "source" => Self::Source,
            "medium" => Self::Medium,
            "campaign" => Self::Campaign,
            "referrer" => Self::Referrer,
            "landing_page" => Self::LandingPage,
            "content" | "utm_content" => Self::Content,
            "term" | "utm_term" => Self::Term,
            "click_id" => Self::ClickId,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            _ => return None,
        })
    }
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

fn read_header(record: &ByteRecord) -> Result<Header> {
    let malformed = |detail: String| Error::Malformed { code: "invalid_csv_header", detail };
    let mut columns = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw) in record.iter().enumerate() {
        let raw = if index == 0 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        let name = std::str::from_utf8(raw)
            .map_err(|_| malformed(format!("header column {} is not UTF-8 text", index + 1)))?
            .trim()
            .to_owned();
        if name.is_empty() {
            return Err(malformed(format!("header column {} has no name", index + 1)));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(malformed(format!("column '{name}' appears twice in the header")));
        }
        let kind = match Known::from_header(&name) {
            Some(known) => ColumnKind::Known(known),
            None => {
                validate_attribute_key(&name).map_err(malformed)?;
                ColumnKind::Attribute(name.clone())
            }
        };
        columns.push((name, kind));
    }
    let has_address = columns.iter().any(|(_, k)| matches!(k, ColumnKind::Known(Known::Email | Known::Phone)));
    if !has_address {
        return Err(malformed("the CSV needs an 'email' or a 'phone' column".into()));
    }
    Ok(Header { columns })
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
    lists: Vec<(String, MembershipStatus)>,
    tags: BTreeSet<String>,
    created_at: Option<DateTime<Utc>>,
}

fn parse_row(header: &Header, record: &ByteRecord, line: u64) -> std::result::Result<Row, Vec<(String, String)>> {
    let mut c = Checker::default();
    let mut cells: HashMap<Known, &str> = HashMap::new();
    let mut attribute_cells = Map::new();
    for ((name, kind), raw) in header.columns.iter().zip(record.iter()) {
        let Ok(text) = std::str::from_utf8(raw) else {
            c.errors.push(crate::error::FieldError::new(name.clone(), "is not UTF-8 text"));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match kind {
            ColumnKind::Known(known) => {
                cells.insert(*known, text);
            }
            ColumnKind::Attribute(key) => {
                attribute_cells.insert(key.clone(), Value::String(text.trim().to_owned()));
            }
        }
    }
    let cell = |k: Known| cells.get(&k).copied();
    let email = c.email("email", cell(Known::Email));
    let phone = c.phone("phone", cell(Known::Phone));
    if cell(Known::Email).is_none() && cell(Known::Phone).is_none() {
        c.errors.push(crate::error::FieldError::new("email", "an email or a phone is required"));
    }
    let mut attributes = match cell(Known::Attributes) {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                c.errors.push(crate::error::FieldError::new("attributes", "must be a JSON object"));
                Map::new()
            }
        },
    };
    attributes.extend(attribute_cells);
    c.attributes("attributes", &attributes);
    let profile = Profile {
        email,
        phone,
        first_name: c.text("first_name", cell(Known::FirstName), 200),
        last_name: c.text("last_name", cell(Known::LastName), 200),
        timezone: c.timezone("timezone", cell(Known::Timezone)),
        locale: c.locale("locale", cell(Known::Locale)),
        attributes,
        attribution: c.attribution(&Attribution {
            source: cell(Known::Source).map(str::to_owned),
            medium: cell(Known::Medium).map(str::to_owned),
            campaign: cell(Known::Campaign).map(str::to_owned),
            referrer: cell(Known::Referrer).map(str::to_owned),
            landing_page: cell(Known::LandingPage).map(str::to_owned),
            content: cell(Known::Content).map(str::to_owned),
            term: cell(Known::Term).map(str::to_owned),
            click_id: cell(Known::ClickId).map(str::to_owned),
        }),
    };
    let id = cell(Known::Id)
        .and_then(|t| c.check("id", Uuid::parse_str(t.trim()).map_err(|_| format!("'{t}' is not a UUID"))));
    let status = cell(Known::Status).and_then(|t| c.check("status", t.parse()));
    let email_state = cell(Known::EmailState).and_then(|t| c.check("email_state", t.parse()));
    let sms_state = cell(Known::SmsState).and_then(|t| c.check("sms_state", t.parse()));
    let created_at = cell(Known::CreatedAt).and_then(|t| {
        c.check(
            "created_at",
            DateTime::parse_from_rfc3339(t.trim())
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| format!("'{t}' is not an RFC 3339 time such as 2026-01-31T09:00:00Z")),
        )
    });
    let tags: Vec<String> = cell(Known::Tags)
        .map(|t| t.split([';', ',']).filter(|s| !s.trim().is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let tags = c.tags("tags", &tags);
    let mut lists = Vec::new();
    for entry in cell(Known::Lists).into_iter().flat_map(|t| t.split(';')).map(str::trim).filter(|e| !e.is_empty()) {
        let (slug, status) = entry.split_once(':').unwrap_or((entry, "confirmed"));
        let slug = slug.trim();
        let status = c.check("lists", status.parse::<MembershipStatus>());
        if c.check("lists", validate_slug(slug)).is_some()
            && let Some(status) = status
        {
            lists.push((slug.to_owned(), status));
        }
    }
    if !c.errors.is_empty() {
        return Err(c.errors.into_iter().map(|e| (e.field, e.message)).collect());
    }
    Ok(Row { line, id, profile, status, email_state, sms_state, lists, tags, created_at })
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

/// Reads, parses and validates rows, sending valid ones on in batches.
async fn read_rows<R>(
    reader: &mut csv_async::AsyncReader<R>,
    record: &mut ByteRecord,
    header: &Header,
    rejected: &mut ImportReport,
    batches: &tokio::sync::mpsc::Sender<Vec<Row>>,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send,
{
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match reader.read_byte_record(record).await {
            Ok(true) => {
                let line = record.position().map_or(0, csv_async::Position::line);
                if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    continue;
                }
                match parse_row(header, record, line) {
                    Ok(row) => batch.push(row),
                    Err(problems) => {
                        rejected.skipped += 1;
                        for (column, message) in problems {
                            rejected.reject(line, Some(column), message);
                        }
                    }
                }
                if batch.len() >= BATCH && batches.send(std::mem::take(&mut batch)).await.is_err() {
                    // The writer stopped on an error; it is reported from there.
                    return Ok(());
                }
            }
            Ok(false) => break,
            Err(e) => match e.kind() {
                csv_async::ErrorKind::Io(_) => return Err(csv_failure(&e)),
                _ => {
                    let line = e.position().map_or(0, csv_async::Position::line);
                    rejected.skipped += 1;
                    rejected.reject(line, None, csv_row_message(&e));
                }
            },
        }
    }
    if !batch.is_empty() {
        let _ = batches.send(batch).await;
    }
    Ok(())
}

fn csv_failure(e: &csv_async::Error) -> Error {
    match e.kind() {
        csv_async::ErrorKind::Io(io) => {
            Error::Malformed { code: "import_read_failed", detail: format!("reading the CSV failed: {io}") }
        }
        _ => Error::Malformed { code: "invalid_csv", detail: csv_row_message(e) },
    }
}

fn csv_row_message(e: &csv_async::Error) -> String {
    match e.kind() {
        csv_async::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields where the header has {expected_len}")
        }
        csv_async::ErrorKind::Utf8 { .. } => "is not UTF-8 text".into(),
        _ => format!("cannot be read as CSV: {e}"),
    }
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

impl Planner {
    async fn prepare(&mut self, rows: Vec<Row>) -> Result<Prepared> {
        self.ensure_lists(&rows).await?;
        let now = self.clock.now();
        let mut plan = plan_batch(self.db.conn(), &rows, &self.context, now).await?;
        let writes = render_writes(&mut plan, &self.context, self.db.backend(), now);
        Ok(Prepared { rows, plan, writes, context: self.context.clone() })
    }

    /// Creates the lists a `lists` column names that do not exist yet.
    async fn ensure_lists(&mut self, rows: &[Row]) -> Result<()> {
        let wanted: BTreeSet<&str> = rows
            .iter()
            .flat_map(|r| r.lists.iter().map(|(slug, _)| slug.as_str()))
            .filter(|slug| !self.context.list_ids.contains_key(*slug))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found =
            list::Entity::find().filter(list::Column::Slug.is_in(wanted.iter().copied())).all(self.db.conn()).await?;
        let context = Arc::make_mut(&mut self.context);
        for l in found {
            context.list_ids.insert(l.slug, l.id);
        }
        let now = self.clock.now();
        let missing: Vec<String> =
            wanted.into_iter().filter(|s| !context.list_ids.contains_key(*s)).map(str::to_owned).collect();
        for slug in missing {
            let model = list::ActiveModel {
                id: Set(Uuid::now_v7()),
                slug: Set(slug.clone()),
                name: Set(slug),
                description: Set(None),
                double_opt_in: Set(true),
                created_at: Set(now),
                updated_at: Set(now),
            };
            let created = model.insert(self.db.conn()).await?;
            self.lists_created.push(created.slug.clone());
            context.list_ids.insert(created.slug, created.id);
        }
        Ok(())
    }
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

impl Executor {
    async fn execute(&mut self, prepared: Prepared) -> Result<()> {
        let Prepared { rows, plan, writes, context } = prepared;
        match self.apply(writes).await {
            Ok(()) => {
                self.record(plan);
                return Ok(());
            }
            Err(Error::Database(_)) => {}
            Err(other) => return Err(other),
        }
        match self.write_carefully(&rows, &context).await {
            Ok(plan) => {
                self.record(plan);
                return Ok(());
            }
            Err(Error::Database(_)) if rows.len() > 1 => {}
            Err(other) => return Err(other),
        }
        for row in rows {
            match self.write_carefully(std::slice::from_ref(&row), &context).await {
                Ok(plan) => self.record(plan),
                Err(Error::Database(e)) if e.sql_err().is_some() => {
                    self.report.skipped += 1;
                    self.report.reject(row.line, None, format!("could not be stored: {e}"));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    async fn apply(&self, writes: Writes) -> Result<()> {
        let txn = self.db.begin_write().await?;
        run_writes(&txn, writes).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn write_carefully(&self, rows: &[Row], context: &Context) -> Result<Plan> {
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let mut plan = plan_batch(&txn, rows, context, now).await?;
        let writes = render_writes(&mut plan, context, self.db.backend(), now);
        run_writes(&txn, writes).await?;
        txn.commit().await?;
        Ok(plan)
    }

    fn record(&mut self, plan: Plan) {
        self.report.imported += plan.imported;
        self.report.updated += plan.updated;
        self.report.suppressed += plan.suppressed;
        self.report.skipped += plan.suppressed + plan.rejected.len() as u64;
        for (line, message) in plan.rejected {
            self.report.reject(line, None, message);
        }
    }
}

async fn run_writes(txn: &DatabaseTransaction, writes: Writes) -> Result<()> {
    for update in writes.updates {
        update.update(txn).await?;
    }
    for statement in writes.statements {
        crate::store::bulk::execute(txn, statement).await?;
    }
    Ok(())
}

/// Splits `rows` into owned chunks of at most `size`, without copying the rows.
fn chunks<T>(mut rows: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut parts = Vec::with_capacity(rows.len().div_ceil(size));
    while rows.len() > size {
        let rest = rows.split_off(size);
        parts.push(std::mem::replace(&mut rows, rest));
    }
    if !rows.is_empty() {
        parts.push(rows);
    }
    parts
}

/// Decides, row by row, whether each row creates, updates or is refused.
async fn plan_batch(conn: &impl ConnectionTrait, rows: &[Row], context: &Context, now: DateTime<Utc>) -> Result<Plan> {
    let suppressed = suppressed_hashes(conn, rows).await?;
    let existing = existing_subscribers(conn, rows).await?;
    let mut plan = Plan::default();
    for s in existing {
        plan.index(Target::Existing(s.id), s.email_key.as_deref(), s.phone.as_deref(), Some(s.id));
        plan.existing.insert(s.id, (s, false, Vec::new()));
    }
    let default_list = context.default_list.as_ref();
    for row in rows {
        if row_hashes(row).iter().any(|h| suppressed.contains(h)) {
            plan.suppressed += 1;
            continue;
        }
        match plan.resolve(row) {
            Err(message) => plan.rejected.push((row.line, message)),
            Ok(Some(Target::Existing(id))) => {
                plan.merge_existing(id, row);
                plan.add_links(id, row, default_list, &context.list_ids, now);
                plan.updated += 1;
            }
            Ok(Some(Target::Pending(index))) => {
                plan.merge_pending(index, row);
                let id = plan.new[index].id;
                plan.add_links(id, row, default_list, &context.list_ids, now);
                plan.updated += 1;
            }
            Ok(None) => {
                let id = row.id.unwrap_or_else(Uuid::now_v7);
                let index = plan.new.len();
                plan.new.push(NewSubscriber {
                    id,
                    profile: row.profile.clone(),
                    status: row.status.unwrap_or(SubscriberStatus::Active),
                    email_state: row.email_state.unwrap_or(default_state(row.profile.email.is_some())),
                    sms_state: row.sms_state.unwrap_or(default_state(row.profile.phone.is_some())),
                    created_at: row.created_at,
                });
                plan.index(
                    Target::Pending(index),
                    row.profile.email.as_ref().map(|e| e.key()),
                    row.profile.phone.as_ref().map(|p| p.as_str()),
                    Some(id),
                );
                plan.add_links(id, row, default_list, &context.list_ids, now);
                plan.imported += 1;
            }
        }
    }
    Ok(plan)
}

/// Renders a plan's inserts as multi-row statements, plus the updates of existing subscribers.
fn render_writes(plan: &mut Plan, context: &Context, backend: DbBackend, now: DateTime<Utc>) -> Writes {
    let by = context.actor.label();
    let list_slug = context.default_list.as_ref().map(|(slug, _)| slug.clone());
    let origin = ConsentOrigin { method: ConsentMethod::Import, source: Some(by.clone()), ip: None, user_agent: None };
    let wording = ConsentWording::default();
    let mut subscribers = Vec::with_capacity(plan.new.len());
    let mut consents = Vec::with_capacity(plan.new.len());
    let mut events = Vec::with_capacity(plan.new.len() + plan.existing.len());
    let mut writes = Writes::default();
    for n in &plan.new {
        let created_at = n.created_at.unwrap_or(now);
        subscribers.push(new_subscriber_row(n.id, &n.profile, n.status, n.email_state, n.sms_state, created_at, now));
        for (channel, state) in [(Channel::Email, n.email_state), (Channel::Sms, n.sms_state)] {
            if state == ChannelState::Subscribed {
                consents.push(records::consent(n.id, channel, true, &origin, &wording, now));
            }
        }
        events.push(records::event(n.id, kind::IMPORTED, json!({"by": by, "list": list_slug}), now));
    }
    for (model, dirty, fields) in plan.existing.values() {
        if !*dirty {
            continue;
        }
        let mut active = model.clone().into_active_model().reset_all();
        active.id = sea_orm::ActiveValue::Unchanged(model.id);
        active.updated_at = Set(now);
        writes.updates.push(active);
        events.push(records::event(model.id, kind::UPDATED, json!({"by": by, "fields": fields, "via": "import"}), now));
        for (channel, state) in [(Channel::Email, &model.email_state), (Channel::Sms, &model.sms_state)] {
            if fields.contains(&channel_state_field(channel)) && state == ChannelState::Subscribed.as_str() {
                consents.push(records::consent(model.id, channel, true, &origin, &wording, now));
            }
        }
    }
    let statements = chunks(subscribers, 1000)
        .into_iter()
        .map(|part| insert_statement(backend, part, OnDuplicate::Fail))
        .chain(
            chunks(std::mem::take(&mut plan.memberships), 2000)
                .into_iter()
                .map(|part| insert_statement(backend, part, OnDuplicate::Ignore)),
        )
        .chain(
            chunks(std::mem::take(&mut plan.tags), 3000)
                .into_iter()
                .map(|part| insert_statement(backend, part, OnDuplicate::Ignore)),
        )
        .chain(chunks(consents, 1000).into_iter().map(|part| insert_statement(backend, part, OnDuplicate::Fail)))
        .chain(chunks(events, 3000).into_iter().map(|part| insert_statement(backend, part, OnDuplicate::Fail)));
    writes.statements.extend(statements.flatten());
    writes
}

fn channel_state_field(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email_state",
        Channel::Sms => "sms_state",
    }
}

/// An imported address is taken as consented: whoever imports attests it (documented).
fn default_state(has_address: bool) -> ChannelState {
    if has_address { ChannelState::Subscribed } else { ChannelState::None }
}

fn row_hashes(row: &Row) -> Vec<String> {
    let mut hashes = Vec::with_capacity(2);
    if let Some(email) = &row.profile.email {
        hashes.push(suppression_hash(Channel::Email, email.key()));
    }
    if let Some(phone) = &row.profile.phone {
        hashes.push(suppression_hash(Channel::Sms, phone.as_str()));
    }
    hashes
}

async fn suppressed_hashes(conn: &impl ConnectionTrait, rows: &[Row]) -> Result<HashSet<String>> {
    let hashes: Vec<String> = rows.iter().flat_map(row_hashes).collect();
    let mut found = HashSet::new();
    for chunk in hashes.chunks(1000) {
        let hits: Vec<String> = suppression::Entity::find()
            .select_only()
            .column(suppression::Column::Hash)
            .filter(suppression::Column::Hash.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(hits);
    }
    Ok(found)
}

async fn existing_subscribers(conn: &impl ConnectionTrait, rows: &[Row]) -> Result<Vec<subscriber::Model>> {
    let emails: Vec<String> =
        rows.iter().filter_map(|r| r.profile.email.as_ref().map(|e| e.key().to_owned())).collect();
    let phones: Vec<String> =
        rows.iter().filter_map(|r| r.profile.phone.as_ref().map(|p| p.as_str().to_owned())).collect();
    let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.id).collect();
    let mut condition = Condition::any();
    if !emails.is_empty() {
        condition = condition.add(subscriber::Column::EmailKey.is_in(emails));
    }
    if !phones.is_empty() {
        condition = condition.add(subscriber::Column::Phone.is_in(phones));
    }
    if !ids.is_empty() {
        condition = condition.add(subscriber::Column::Id.is_in(ids));
    }
    Ok(subscriber::Entity::find().filter(condition).all(conn).await?)
}

impl Plan {
    fn index(&mut self, target: Target, email_key: Option<&str>, phone: Option<&str>, id: Option<Uuid>) {
        if let Some(key) = email_key {
            self.by_email.insert(key.to_owned(), target);
        }
        if let Some(phone) = phone {
            self.by_phone.insert(phone.to_owned(), target);
        }
        if let Some(id) = id {
            self.by_id.insert(id, target);
        }
    }

    fn target_email(&self, target: Target) -> Option<String> {
        match target {
            Target::Existing(id) => self.existing.get(&id).and_then(|(m, _, _)| m.email_key.clone()),
            Target::Pending(i) => self.new.get(i).and_then(|n| n.profile.email.as_ref().map(|e| e.key().to_owned())),
        }
    }

    /// Upsert matching: by email first; a phone or id match is accepted only when it does not
    /// belong to someone with another email address.
    fn resolve(&self, row: &Row) -> std::result::Result<Option<Target>, String> {
        let by_email = row.profile.email.as_ref().and_then(|e| self.by_email.get(e.key()).copied());
        let by_phone = row.profile.phone.as_ref().and_then(|p| self.by_phone.get(p.as_str()).copied());
        let by_id = row.id.and_then(|id| self.by_id.get(&id).copied());
        if let (Some(a), Some(b)) = (by_email, by_phone)
            && a != b
        {
            return Err("the email and the phone belong to two different subscribers".into());
        }
        if let Some(target) = by_email {
            if by_id.is_some_and(|t| t != target) {
                return Err("the id belongs to another subscriber than the email".into());
            }
            return Ok(Some(target));
        }
        let Some(target) = by_phone.or(by_id) else {
            return Ok(None);
        };
        if let (Some(a), Some(b)) = (by_phone, by_id)
            && a != b
        {
            return Err("the id belongs to another subscriber than the phone".into());
        }
        match (&row.profile.email, self.target_email(target)) {
            (Some(email), Some(existing)) if email.key() != existing => {
                Err("the phone or id belongs to a subscriber with another email".into())
            }
            _ => Ok(Some(target)),
        }
    }

    fn merge_pending(&mut self, index: usize, row: &Row) {
        let Some(pending) = self.new.get_mut(index) else {
            return;
        };
        merge_profile(&mut pending.profile, &row.profile);
        let (email, phone) = (pending.profile.email.clone(), pending.profile.phone.clone());
        if pending.email_state == ChannelState::None && email.is_some() {
            pending.email_state = row.email_state.unwrap_or(ChannelState::Subscribed);
        }
        if pending.sms_state == ChannelState::None && phone.is_some() {
            pending.sms_state = row.sms_state.unwrap_or(ChannelState::Subscribed);
        }
        let id = pending.id;
        self.index(
            Target::Pending(index),
            email.as_ref().map(|e| e.key()),
            phone.as_ref().map(|p| p.as_str()),
            Some(id),
        );
    }

    /// Fills in what the stored subscriber lacks and overwrites what the row states; never
    /// touches a channel that was left, bounced or complained.
    fn merge_existing(&mut self, id: Uuid, row: &Row) {
        let Some((model, dirty, fields)) = self.existing.get_mut(&id) else {
            return;
        };
        let mut set = |field: &'static str, slot: &mut Option<String>, value: Option<String>| {
            if value.is_some() && *slot != value {
                *slot = value;
                *dirty = true;
                if !fields.contains(&field) {
                    fields.push(field);
                }
            }
        };
        let p = &row.profile;
        if model.email.is_none() && p.email.is_some() {
            set("email", &mut model.email, p.email.as_ref().map(|e| e.as_str().to_owned()));
            model.email_key = p.email.as_ref().map(|e| e.key().to_owned());
        }
        if model.phone.is_none() && p.phone.is_some() {
            set("phone", &mut model.phone, p.phone.as_ref().map(|v| v.as_str().to_owned()));
        }
        set("first_name", &mut model.first_name, p.first_name.clone());
        set("last_name", &mut model.last_name, p.last_name.clone());
        set("timezone", &mut model.timezone, p.timezone.clone());
        set("locale", &mut model.locale, p.locale.clone());
        if model.source.is_none() && model.medium.is_none() && model.campaign.is_none() {
            set("source", &mut model.source, p.attribution.source.clone());
            set("medium", &mut model.medium, p.attribution.medium.clone());
            set("campaign", &mut model.campaign, p.attribution.campaign.clone());
            set("referrer", &mut model.referrer, p.attribution.referrer.clone());
            set("landing_page", &mut model.landing_page, p.attribution.landing_page.clone());
            set("content", &mut model.content, p.attribution.content.clone());
            set("term", &mut model.term, p.attribution.term.clone());
            set("click_id", &mut model.click_id, p.attribution.click_id.clone());
        }
        if !p.attributes.is_empty() {
            let mut merged = model.attributes.as_object().cloned().unwrap_or_default();
            merged.extend(p.attributes.clone());
            let merged = Value::Object(merged);
            if merged != model.attributes {
                model.attributes = merged;
                *dirty = true;
                fields.push("attributes");
            }
        }
        for (field, has_address, state, wanted) in [
            ("email_state", model.email.is_some(), &mut model.email_state, row.email_state),
            ("sms_state", model.phone.is_some(), &mut model.sms_state, row.sms_state),
        ] {
            if has_address && *state == ChannelState::None.as_str() {
                let next = wanted.unwrap_or(ChannelState::Subscribed);
                if next != ChannelState::None {
                    *state = next.as_str().to_owned();
                    *dirty = true;
                    fields.push(field);
                }
            }
        }
        let email = model.email_key.clone();
        let phone = model.phone.clone();
        self.index(Target::Existing(id), email.as_deref(), phone.as_deref(), Some(id));
    }

    fn add_links(
        &mut self,
        id: Uuid,
        row: &Row,
        default_list: Option<&(String, Uuid)>,
        list_ids: &HashMap<String, Uuid>,
        now: DateTime<Utc>,
    ) {
        if let Some((_, list_id)) = default_list {
            self.memberships.push(membership_row(id, *list_id, MembershipStatus::Confirmed, now));
        }
        for (slug, status) in &row.lists {
            if let Some(list_id) = list_ids.get(slug)
                && default_list.is_none_or(|(_, d)| d != list_id)
            {
                self.memberships.push(membership_row(id, *list_id, *status, now));
            }
        }
        for tag in &row.tags {
            self.tags.push(tag_row(id, tag, now));
        }
    }
}

fn merge_profile(into: &mut Profile, from: &Profile) {
    fn take<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
        if value.is_some() {
            slot.clone_from(value);
        }
    }
    take(&mut into.email, &from.email);
    take(&mut into.phone, &from.phone);
    take(&mut into.first_name, &from.first_name);
    take(&mut into.last_name, &from.last_name);
    take(&mut into.timezone, &from.timezone);
    take(&mut into.locale, &from.locale);
    into.attributes.extend(from.attributes.clone());
}
