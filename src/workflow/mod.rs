//! Workflows: drip sequences that marketers write as YAML files under `workflows/`.
//!
//! - [`format`]: the file as written (serde types that keep positions),
//! - [`check`]: turning a file into a [`model::Workflow`] or `file:line:column` diagnostics,
//! - [`model`]: the checked workflow the engine runs,
//! - [`templates`]: checking the tera templates steps refer to,
//! - [`timing`]: durations, weekdays, clock times, cron.
//!
//! This module never touches the database or HTTP: callers pass in what a check needs to know
//! (the templates, the lists that exist).

pub mod check;
pub mod format;
pub mod model;
pub mod program;
pub mod templates;
pub mod timing;

pub use check::{Context, Diagnostic, check, check_dir};
pub use model::Workflow;
