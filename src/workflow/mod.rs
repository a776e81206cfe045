//! Workflows: drip sequences that marketers write as YAML files under `workflows/`.
//!
//! - [`format`]: the file as written (serde types that keep positions),
//! - [`check`]: turning a file into a [`model::Workflow`] or `file:line:column` diagnostics,
//! - [`model`]: the checked workflow the engine runs,
//! - [`templates`]: checking the tera templates steps refer to,
//! - [`timing`]: durations, weekdays, clock times, cron, local time across daylight saving,
//! - [`program`]: a workflow as a graph of steps (where each step goes next),
//! - [`registry`]: stored versions and the workflows in force,
//! - [`catalog`]: what the loaded folder says (templates, landing pages, problems), in force now,
//! - [`engine`]: triggers into enrollments, enrollments advanced step by step.
//!
//! Checking (`format`, `check`, `model`, `timing`, `templates`) never touches the database or
//! HTTP: callers pass in what it needs (the templates, the lists that exist). The runtime
//! (`registry`, `engine`) works on the database and never on HTTP.

pub mod catalog;
pub mod check;
pub mod engine;
pub mod format;
pub mod loader;
pub mod model;
pub mod page;
pub mod plan;
pub mod program;
pub mod registry;
pub mod simulate;
pub mod templates;

pub use check::{Checked, Context, DeclaredList, Diagnostic, FileState, Folder, check, check_dir, check_file};
pub use model::Workflow;
