//! What loading the workflow files would change, before it is done: `ownlist workflows plan`
//! and the dashboard's workflows page say the same.

use std::path::Path;

use crate::store::Db;
use crate::workflow::loader::LoadSettings;

/// The plan: the problems that stop files from loading, or what loading would change.
pub enum Plan {
    /// Files with problems: they would change nothing (their last valid version keeps running).
    Problems(Vec<String>),
    /// One line per change (or unchanged workflow), as a person reads it.
    Changes(Vec<String>),
}

/// Compares the files under `dir` with what runs now.
pub async fn plan(db: &Db, dir: &Path, settings: &LoadSettings) -> anyhow::Result<Plan> {
    let (folder, _) = crate::workflow::loader::check_folder(db, dir, settings).await?;
    if !folder.diagnostics.is_empty() {
        return Ok(Plan::Problems(folder.diagnostics.iter().map(ToString::to_string).collect()));
    }
    let mut lines = Vec::new();
    let workflows = folder.workflows;
    let existing: std::collections::BTreeSet<String> =
        crate::audience::lists::all(db).await?.into_iter().map(|l| l.slug).collect();
    for declared in folder.lists.iter().map(|l| &l.list).filter(|l| !existing.contains(&l.slug)) {
        lines.push(format!("list {}: new, created as '{}'", declared.slug, declared.name));
    }
    let registry = crate::workflow::registry::Registry::open(db.clone()).await?;
    let current = registry.current();
    let moves = registry.plan(&workflows).await?;
    for w in &workflows {
        match current.get(&w.id) {
            None => lines.push(format!("{}: new, version 1", w.id)),
            Some(c) if moves.iter().any(|m| m.workflow == w.id) || c.program.workflow != *w => {
                lines.push(format!("{}: version {} → {}", w.id, c.version, c.version + 1));
                for m in moves.iter().filter(|m| m.workflow == w.id) {
                    let from = m.step.as_deref().unwrap_or("(start)");
                    let to = match (&m.to_step, m.wait_changed) {
                        (None, _) => "complete (their step is gone and nothing follows it)".to_owned(),
                        (Some(to), true) => format!("stay at '{to}'; the wait is recomputed from when it began"),
                        (Some(to), false) if to == from => format!("stay at '{to}'"),
                        (Some(to), false) => format!("move to '{to}'"),
                    };
                    lines.push(format!("  {} at '{from}' (version {}): {to}", m.enrollments, m.from_version));
                }
            }
            Some(c) => lines.push(format!("{}: unchanged (version {})", w.id, c.version)),
        }
    }
    for id in current.keys().filter(|id| !workflows.iter().any(|w| &w.id == *id)) {
        lines.push(format!("{id}: removed (no new enrollments; live ones finish on their version)"));
    }
    Ok(Plan::Changes(lines))
}
