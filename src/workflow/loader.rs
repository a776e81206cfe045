//! Loading the workflow folder into the registry: check everything, and only if every file is
//! valid, store what changed. An invalid edit is refused whole and the last valid version keeps
//! running.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::registry::{Move, Registry};
use super::templates::TemplateChecker;
use super::{Context, Diagnostic, Workflow, check_dir};
use crate::error::Result;
use crate::pages::Page;
use crate::store::Db;

/// The outcome of a successful load.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// Workflow ids now in force.
    pub workflows: Vec<String>,
    /// Landing pages now served (their slugs).
    pub pages: Vec<String>,
    /// Enrollments moved onto new versions.
    #[schema(value_type = Vec<Object>)]
    pub moves: Vec<Move>,
}

/// A load that found problems: nothing was changed.
#[derive(Debug, Clone)]
pub struct Refused {
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks the folder against the templates and the lists in the database.
pub async fn check_folder(
    db: &Db,
    workflows: &Path,
    config: &crate::config::Config,
) -> Result<(Vec<Workflow>, Vec<Page>, TemplateChecker, Vec<Diagnostic>)> {
    let checker = TemplateChecker::load(&config.templates_dir);
    let lists: BTreeSet<String> = crate::audience::lists::all(db).await?.into_iter().map(|l| l.slug).collect();
    let context = Context { templates: &checker, lists: Some(&lists), sms_max_segments: config.sms_max_segments };
    let (found, pages, diagnostics) = check_dir(workflows, &context);
    Ok((found, pages, checker, diagnostics))
}

/// Checks and, when valid, stores the folder's workflows; returns the templates to render with.
pub async fn load(
    db: &Db,
    registry: &Registry,
    now: DateTime<Utc>,
    config: &crate::config::Config,
) -> Result<std::result::Result<(Reloaded, Arc<TemplateChecker>, Vec<Page>), Refused>> {
    let (found, pages, checker, diagnostics) = check_folder(db, &config.workflows_dir, config).await?;
    if !diagnostics.is_empty() {
        return Ok(Err(Refused { diagnostics }));
    }
    let moves = registry.sync(now, &found).await?;
    let reloaded = Reloaded {
        workflows: found.iter().map(|w| w.id.clone()).collect(),
        pages: pages.iter().map(|p| p.slug.clone()).collect(),
        moves,
    };
    Ok(Ok((reloaded, Arc::new(checker), pages)))
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
