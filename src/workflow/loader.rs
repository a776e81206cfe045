//! Loading the workflow folder: every file is checked on its own. What the valid files declare
//! is stored (lists created or updated, a new version of each changed workflow, their landing
//! pages); a file with problems changes nothing: its workflow keeps the last valid version and
//! its pages stay as they were. Every problem is reported, and kept for `/readyz`, the API and
//! the dashboard, until a load finds it mended.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use super::registry::{Move, Registry};
use super::templates::TemplateChecker;
use super::{Context, Diagnostic, Folder, check_dir};
use crate::audience::lists::{self, Declared};
use crate::core::error::{Error, Result};
use crate::store::Db;
use crate::store::entities::page;
use crate::workflow::page::Page;

/// What a load did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// Workflow ids now in force.
    pub workflows: Vec<String>,
    /// Landing pages now served (their slugs).
    pub pages: Vec<String>,
    /// Lists created because a file declares them.
    pub lists_created: Vec<String>,
    /// Declared lists whose name, description or double opt-in changed.
    pub lists_updated: Vec<String>,
    /// Enrollments moved onto new versions.
    #[schema(value_type = Vec<Object>)]
    pub moves: Vec<Move>,
    /// Every problem found; the files they are in changed nothing.
    pub problems: Vec<FileProblem>,
}

/// A problem in a workflow file, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FileProblem {
    /// `file:line:column`.
    pub at: String,
    pub message: String,
}

impl From<&Diagnostic> for FileProblem {
    fn from(d: &Diagnostic) -> Self {
        Self { at: format!("{}:{}:{}", d.file.display(), d.line, d.column), message: d.message.clone() }
    }
}

/// A load's outcome: what it did, the templates to render with, the pages to serve.
pub struct Load {
    pub reloaded: Reloaded,
    pub templates: Arc<TemplateChecker>,
    pub pages: Vec<Page>,
}

/// What loading the workflow folder needs to know (from the configuration).
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub workflows_dir: std::path::PathBuf,
    pub templates_dir: std::path::PathBuf,
    /// The most segments an SMS step's text may take.
    pub sms_max_segments: u32,
}

/// Checks the folder against the templates and the lists in the database (and those the files
/// declare).
pub async fn check_folder(db: &Db, workflows: &Path, settings: &LoadSettings) -> Result<(Folder, TemplateChecker)> {
    let checker = TemplateChecker::load(&settings.templates_dir);
    let lists: BTreeSet<String> = lists::all(db).await?.into_iter().map(|l| l.slug).collect();
    let context = Context { templates: &checker, lists: Some(&lists), sms_max_segments: settings.sms_max_segments };
    let folder = check_dir(workflows, &context);
    Ok((folder, checker))
}

/// Checks the folder and stores what its valid files declare, in one transaction.
pub async fn load(db: &Db, registry: &Registry, now: DateTime<Utc>, settings: &LoadSettings) -> Result<Load> {
    let (folder, checker) = check_folder(db, &settings.workflows_dir, settings).await?;
    let declared: Vec<Declared> = folder.lists.iter().map(|l| l.list.clone()).collect();
    let txn = db.begin_write().await?;
    let (lists_created, lists_updated) = lists::declare(&txn, now, &declared).await?;
    let moves = registry.store(&txn, now, &folder.workflows, &folder.invalid_ids()).await?;
    store_pages(&txn, now, &folder).await?;
    txn.commit().await?;
    registry.refresh().await?;
    let pages = stored_pages(db).await?;
    for diagnostic in &folder.diagnostics {
        tracing::error!(%diagnostic, "workflow file invalid: it changes nothing until mended (its last valid version runs)");
    }
    let reloaded = Reloaded {
        workflows: registry.current().into_keys().collect(),
        pages: pages.iter().map(|p| p.slug.clone()).collect(),
        lists_created,
        lists_updated,
        moves,
        problems: folder.diagnostics.iter().map(FileProblem::from).collect(),
    };
    Ok(Load { reloaded, templates: Arc::new(checker), pages })
}

/// The pages of each valid file replace the ones stored for it; a file that is gone takes its
/// pages with it; an invalid file's stay.
async fn store_pages(txn: &impl ConnectionTrait, now: DateTime<Utc>, folder: &Folder) -> Result<()> {
    let present: Vec<String> = folder.files.iter().map(|f| f.name.clone()).collect();
    let valid: Vec<String> = folder.files.iter().filter(|f| f.valid).map(|f| f.name.clone()).collect();
    page::Entity::delete_many().filter(page::Column::File.is_not_in(present)).exec(txn).await?;
    page::Entity::delete_many().filter(page::Column::File.is_in(valid)).exec(txn).await?;
    let slugs: Vec<String> = folder.pages.iter().map(|p| p.slug.clone()).collect();
    // A valid file's page takes its slug over from an invalid file that had it.
    page::Entity::delete_many().filter(page::Column::Slug.is_in(slugs)).exec(txn).await?;
    for p in &folder.pages {
        let file = folder
            .files
            .iter()
            .find(|f| f.path.display().to_string() == p.file)
            .map_or_else(|| p.file.clone(), |f| f.name.clone());
        let definition = serde_json::to_value(p).map_err(|e| Error::Other(e.into()))?;
        page::ActiveModel {
            slug: Set(p.slug.clone()),
            file: Set(file),
            definition: Set(definition),
            updated_at: Set(now),
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

/// Re-reads the workflow folder into the running engine: valid files are loaded, invalid ones
/// change nothing (their last valid version runs); the problems come back with what was done.
pub async fn reload(
    db: &Db,
    settings: &LoadSettings,
    engine: &super::engine::Engine,
    now: DateTime<Utc>,
) -> Result<Reloaded> {
    let load = load(db, engine.registry(), now, settings).await?;
    Ok(engine.catalog().take_load(load))
}

/// The landing pages in force, as last loaded.
pub async fn stored_pages(db: &Db) -> Result<Vec<Page>> {
    let rows = page::Entity::find().order_by_asc(page::Column::Slug).all(db.conn()).await?;
    let mut pages = Vec::with_capacity(rows.len());
    for row in rows {
        match serde_json::from_value::<Page>(row.definition) {
            Ok(page) => pages.push(page),
            Err(e) => tracing::error!(slug = %row.slug, error = %e, "a stored landing page is unreadable; not served"),
        }
    }
    Ok(pages)
}

/// A cheap fingerprint of a folder (names, sizes, modification times) to notice edits.
pub fn fingerprint(dirs: &[&Path]) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(meta) = entry.metadata() {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        walk(dir, &mut out);
    }
    out.sort();
    out
}
