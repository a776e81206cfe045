//! `ownlist export --all DIR` and `ownlist import --all DIR`: everything an instance holds, as
//! files anyone can read without ownlist, and back into an empty instance.
//!
//! The export is one consistent snapshot (one read transaction): every table as JSON Lines (one
//! object per line, the table's columns as keys), the subscribers also as the CSV of
//! `ownlist export`, a `manifest.json` with the counts, and a `README.md` describing the files.
//! Admin tokens, dashboard sessions and leases are not exported (make new tokens). The import checks that the instance is empty,
//! then writes every file in one transaction: a bad line (reported as `FILE:LINE: problem`)
//! leaves the instance as it was.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sea_orm::{
    AccessMode, ActiveModelTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, IsolationLevel, PaginatorTrait,
    TransactionTrait,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::error::{Error, Result};
use crate::store::Db;
use crate::store::entities::{
    audit_entry, broadcast, consent, delivery_day, enrollment, event, funnel_day, list, membership, outbox,
    outbox_body, outbox_dictionary, page, page_count, pending_trigger, schedule_run, signup_confirmation, step_day,
    subscriber, subscriber_tag, suppression, workflow, workflow_version,
};

/// The files, in the order an import writes them (each row's references come before it).
pub const TABLES: &[(&str, &str)] = &[
    ("lists", "the lists (id, slug, name, double_opt_in, …)"),
    ("subscribers", "every subscriber: addresses, names, attributes, states, first-touch attribution"),
    ("suppressions", "SHA-256 hashes of erased addresses, never to be re-added"),
    ("memberships", "who is on which list: subscriber_id, list_id, status, confirmed_at, unsubscribed_at"),
    ("subscriber_tags", "tags: subscriber_id, tag"),
    (
        "consents",
        "every consent given or withdrawn: channel, granted, method, the exact text, page, IP, user agent, time",
    ),
    ("events", "every subscriber's timeline: kind, data, time"),
    ("workflows", "the workflows in force: id, current version, paused"),
    ("workflow_versions", "every version of every workflow ever loaded, as its checked definition"),
    ("pages", "the landing pages in force, as last loaded from valid workflow files"),
    ("enrollments", "who is where in which workflow"),
    ("schedule_runs", "the progress of scheduled and date-triggered workflows"),
    ("pending_triggers", "triggers not yet turned into enrollments"),
    ("broadcasts", "one-off messages to lists"),
    ("outbox", "every message: recipient, subject, status, attempts, provider reference, opens and clicks"),
    (
        "outbox_bodies",
        "each message's HTML and text as sent (the HTML as text here, stored compressed), and where its tracked links lead",
    ),
    ("signup_confirmations", "double opt-in confirmations sent, and when they were confirmed"),
    ("page_counts", "per landing page and day: rejected bot submissions"),
    ("audit_log", "admin API changes: who, what, when"),
    (
        "funnel_daily",
        "per day, landing page and source: views, bot views, signups, confirmed, first opens, clicks, goals",
    ),
    ("step_daily", "per workflow, day and step: entered, completed, skipped (by reason), messages and their fate"),
    ("delivery_daily", "per day, channel and relay or provider: sent, failed, retried, attempts, total latency"),
];

/// What an export wrote or an import read: rows per table.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    pub counts: Vec<(String, u64)>,
}

const FORMAT: &str = "ownlist-export";
const VERSION: u32 = 1;

async fn dump<E>(txn: &DatabaseTransaction, dir: &Path, name: &str) -> Result<u64>
where
    E: EntityTrait,
    E::Model: Serialize + Send + Sync,
{
    dump_as::<E>(txn, dir, name, |row, out| serde_json::to_writer(out, row)).await
}

/// Writes every row of `E` into `{name}.jsonl`, each as `write` writes it as JSON.
async fn dump_as<E>(
    txn: &DatabaseTransaction,
    dir: &Path,
    name: &str,
    write: impl Fn(&E::Model, &mut BufWriter<std::fs::File>) -> serde_json::Result<()>,
) -> Result<u64>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    let path = dir.join(format!("{name}.jsonl"));
    let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
    let mut out = BufWriter::new(file);
    let mut stream = E::find().stream(txn).await?;
    let mut n = 0;
    while let Some(row) = stream.try_next().await? {
        write(&row, &mut out).map_err(|e| Error::Other(anyhow::anyhow!("{name}: {e}")))?;
        out.write_all(b"\n").map_err(|e| io(&path, e))?;
        n += 1;
    }
    out.flush().map_err(|e| io(&path, e))?;
    Ok(n)
}

/// The message bodies, readable: the HTML as text and the links spelled out, whether they are
/// stored alone or against a dictionary (dictionaries are a way of storing, not exported).
async fn dump_bodies(txn: &DatabaseTransaction, dir: &Path, name: &str) -> Result<u64> {
    let dictionaries: std::collections::HashMap<uuid::Uuid, outbox_dictionary::Model> =
        outbox_dictionary::Entity::find().all(txn).await?.into_iter().map(|d| (d.id, d)).collect();
    dump_as::<outbox_body::Entity>(txn, dir, name, |body, out| {
        let dictionary = body.dictionary_id.and_then(|id| dictionaries.get(&id));
        let readable = body.readable(dictionary).map_err(|e| {
            <serde_json::Error as serde::ser::Error>::custom(format!("message {}: {e}", body.outbox_id))
        })?;
        serde_json::to_writer(out, &readable)
    })
    .await
}

fn malformed(detail: String) -> Error {
    Error::Malformed { code: "invalid_archive", detail }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Other(anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes everything into `dir` (created; it must be empty if it exists).
pub async fn export_all(db: &Db, now: DateTime<Utc>, dir: &Path) -> Result<Manifest> {
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| io(dir, e))?.next().is_some() {
        return Err(malformed(format!("{} is not empty: export into a new folder", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let txn = db.conn().begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await?;
    let mut counts = Vec::new();
    for (name, _) in TABLES {
        let n = match *name {
            "lists" => dump::<list::Entity>(&txn, dir, name).await?,
            "subscribers" => dump::<subscriber::Entity>(&txn, dir, name).await?,
            "suppressions" => dump::<suppression::Entity>(&txn, dir, name).await?,
            "memberships" => dump::<membership::Entity>(&txn, dir, name).await?,
            "subscriber_tags" => dump::<subscriber_tag::Entity>(&txn, dir, name).await?,
            "consents" => dump::<consent::Entity>(&txn, dir, name).await?,
            "events" => dump::<event::Entity>(&txn, dir, name).await?,
            "workflows" => dump::<workflow::Entity>(&txn, dir, name).await?,
            "workflow_versions" => dump::<workflow_version::Entity>(&txn, dir, name).await?,
            "pages" => dump::<page::Entity>(&txn, dir, name).await?,
            "enrollments" => dump::<enrollment::Entity>(&txn, dir, name).await?,
            "schedule_runs" => dump::<schedule_run::Entity>(&txn, dir, name).await?,
            "pending_triggers" => dump::<pending_trigger::Entity>(&txn, dir, name).await?,
            "broadcasts" => dump::<broadcast::Entity>(&txn, dir, name).await?,
            "outbox" => dump::<outbox::Entity>(&txn, dir, name).await?,
            "outbox_bodies" => dump_bodies(&txn, dir, name).await?,
            "signup_confirmations" => dump::<signup_confirmation::Entity>(&txn, dir, name).await?,
            "page_counts" => dump::<page_count::Entity>(&txn, dir, name).await?,
            "audit_log" => dump::<audit_entry::Entity>(&txn, dir, name).await?,
            "funnel_daily" => dump::<funnel_day::Entity>(&txn, dir, name).await?,
            "step_daily" => dump::<step_day::Entity>(&txn, dir, name).await?,
            "delivery_daily" => dump::<delivery_day::Entity>(&txn, dir, name).await?,
            _ => 0,
        };
        counts.push(((*name).to_owned(), n));
    }
    // The subscribers once more in the CSV of `ownlist export`, for spreadsheets.
    let path = dir.join("subscribers.csv");
    let mut csv = BufWriter::new(std::fs::File::create(&path).map_err(|e| io(&path, e))?);
    let mut chunks = std::pin::pin!(super::export::subscribers_csv(db.clone()));
    while let Some(chunk) = chunks.try_next().await? {
        csv.write_all(&chunk).map_err(|e| io(&path, e))?;
    }
    csv.flush().map_err(|e| io(&path, e))?;
    txn.commit().await?;
    let manifest = Manifest { format: FORMAT.into(), version: VERSION, exported_at: now, counts };
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Other(anyhow::anyhow!("{e}")))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    let path = dir.join("README.md");
    std::fs::write(&path, readme(&manifest)).map_err(|e| io(&path, e))?;
    Ok(manifest)
}

fn readme(manifest: &Manifest) -> String {
    let mut text = format!(
        "# ownlist export ({})\n\nEverything this ownlist instance held. Each `.jsonl` file is JSON Lines: one JSON \
         object per line, one line per row, the keys being the table's columns (ids are UUIDs, times RFC 3339 in \
         UTC). `subscribers.csv` is the same subscribers as a spreadsheet (lists as `slug:status;…`, attributes as \
         JSON). `manifest.json` counts the rows. Restore into an empty instance with `ownlist import --all DIR`.\n\n\
         | file | rows | what |\n|---|---|---|\n",
        manifest.exported_at.to_rfc3339()
    );
    for (name, what) in TABLES {
        let n = manifest.counts.iter().find(|(t, _)| t == name).map_or(0, |(_, n)| *n);
        text.push_str(&format!("| `{name}.jsonl` | {n} | {what} |\n"));
    }
    text.push_str("\nAdmin API tokens are not exported: create new ones with `ownlist tokens create NAME`.\n");
    text
}

async fn load<E>(txn: &DatabaseTransaction, dir: &Path, name: &str) -> Result<u64>
where
    E: EntityTrait,
    E::Model: DeserializeOwned + IntoActiveModel<E::ActiveModel>,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    use crate::store::bulk::{OnDuplicate, execute, insert_statement};
    let path = dir.join(format!("{name}.jsonl"));
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&path, e)),
    };
    let backend = sea_orm::ConnectionTrait::get_database_backend(txn);
    let mut batch = Vec::new();
    let mut n = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io(&path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let model: E::Model =
            serde_json::from_str(&line).map_err(|e| malformed(format!("{}:{}: {e}", path.display(), i + 1)))?;
        batch.push(model.into_active_model().reset_all());
        n += 1;
        if batch.len() == 200
            && let Some(statement) = insert_statement(backend, std::mem::take(&mut batch), OnDuplicate::Fail)
        {
            execute(txn, statement)
                .await
                .map_err(|e| malformed(format!("{} (near line {}): {e}", path.display(), i + 1)))?;
        }
    }
    if let Some(statement) = insert_statement(backend, batch, OnDuplicate::Fail) {
        execute(txn, statement).await.map_err(|e| malformed(format!("{}: {e}", path.display())))?;
    }
    Ok(n)
}

/// Restores an export into this instance, which must hold no subscribers, lists, messages or
/// workflows yet; all or nothing.
pub async fn import_all(db: &Db, dir: &Path) -> Result<Vec<(String, u64)>> {
    let manifest_path = dir.join("manifest.json");
    let manifest: serde_json::Value = std::fs::read_to_string(&manifest_path)
        .map_err(|e| io(&manifest_path, e))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| malformed(format!("{}: {e}", manifest_path.display()))))?;
    if manifest["format"] != FORMAT || manifest["version"].as_u64() != Some(u64::from(VERSION)) {
        return Err(malformed(format!("{} is not an ownlist export of version {VERSION}", manifest_path.display())));
    }
    let txn = db.begin_write().await?;
    let held = subscriber::Entity::find().count(&txn).await?
        + list::Entity::find().count(&txn).await?
        + outbox::Entity::find().count(&txn).await?
        + workflow_version::Entity::find().count(&txn).await?;
    if held > 0 {
        return Err(malformed("this instance is not empty: import --all restores into a new, empty database".into()));
    }
    let mut counts = Vec::new();
    for (name, _) in TABLES {
        let n = match *name {
            "lists" => load::<list::Entity>(&txn, dir, name).await?,
            "subscribers" => load::<subscriber::Entity>(&txn, dir, name).await?,
            "suppressions" => load::<suppression::Entity>(&txn, dir, name).await?,
            "memberships" => load::<membership::Entity>(&txn, dir, name).await?,
            "subscriber_tags" => load::<subscriber_tag::Entity>(&txn, dir, name).await?,
            "consents" => load::<consent::Entity>(&txn, dir, name).await?,
            "events" => load::<event::Entity>(&txn, dir, name).await?,
            "workflows" => load::<workflow::Entity>(&txn, dir, name).await?,
            "workflow_versions" => load::<workflow_version::Entity>(&txn, dir, name).await?,
            "pages" => load::<page::Entity>(&txn, dir, name).await?,
            "enrollments" => load::<enrollment::Entity>(&txn, dir, name).await?,
            "schedule_runs" => load::<schedule_run::Entity>(&txn, dir, name).await?,
            "pending_triggers" => load::<pending_trigger::Entity>(&txn, dir, name).await?,
            "broadcasts" => load::<broadcast::Entity>(&txn, dir, name).await?,
            "outbox" => load::<outbox::Entity>(&txn, dir, name).await?,
            "outbox_bodies" => load::<outbox_body::Entity>(&txn, dir, name).await?,
            "signup_confirmations" => load::<signup_confirmation::Entity>(&txn, dir, name).await?,
            "page_counts" => load::<page_count::Entity>(&txn, dir, name).await?,
            "audit_log" => load::<audit_entry::Entity>(&txn, dir, name).await?,
            "funnel_daily" => load::<funnel_day::Entity>(&txn, dir, name).await?,
            "step_daily" => load::<step_day::Entity>(&txn, dir, name).await?,
            "delivery_daily" => load::<delivery_day::Entity>(&txn, dir, name).await?,
            _ => 0,
        };
        counts.push(((*name).to_owned(), n));
    }
    txn.commit().await?;
    Ok(counts)
}
