//! Checking workflow files: YAML in, a [`Workflow`] or `file:line:column: message` diagnostics out.
//!
//! Every problem in a file is reported at once, each where it is, with a hint where one helps.
//! Nothing here panics on any input: a file that cannot be read is itself a diagnostic.

mod conditions;
mod declarations;
mod folder;
mod steps;

pub use folder::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::format::{self, CONDITION_KEYS, FILE_KEYS, LIST_KEYS, PAGE_KEYS, STEP_KEYS, TRIGGER_KEYS};
use super::model::{Reentry, Trigger, Workflow};
use super::templates::TemplateChecker;
use crate::audience::lists::Declared;
use crate::core::error::Reason;
use crate::core::text::closest;
use crate::core::timing::Span;
use crate::core::values::{validate_slug, validate_timezone};
use crate::workflow::page::Page;

/// One problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// What a check may look at besides the file itself.
pub struct Context<'a> {
    pub templates: &'a TemplateChecker,
    /// The lists that exist; `None` skips the check (no database at hand).
    pub lists: Option<&'a BTreeSet<String>>,
    /// The most segments an SMS may take (`sms_max_segments`).
    pub sms_max_segments: u32,
}

/// `sms_max_segments` when it is not configured.
pub const DEFAULT_SMS_MAX_SEGMENTS: u32 = 3;

/// A position in the file.
#[derive(Debug, Clone, Copy, Default)]
struct At {
    line: u64,
    column: u64,
}

fn at<T>(spanned: &Spanned<T>) -> At {
    At { line: spanned.referenced.line(), column: spanned.referenced.column() }
}

struct Checker<'a> {
    file: &'a Path,
    context: &'a Context<'a>,
    diagnostics: Vec<Diagnostic>,
    step_ids: BTreeMap<String, At>,
    /// Email steps seen so far in document order: what `opened:` and `clicked:` may name.
    emails_so_far: BTreeSet<String>,
    /// Every email step in the file (for `exit_when`, checked before any step).
    all_emails: BTreeSet<String>,
}

/// What templates are rendered with to measure an SMS: a subscriber with typical values.
fn sample_context() -> tera::Context {
    let sample = serde_json::json!({
        "subscriber": {
            "id": "0190e5e2-0000-7000-8000-000000000000", "email": "alexandra@example.com", "phone": "+14155552671",
            "first_name": "Alexandra", "last_name": "Lovelace", "timezone": "Europe/Rome", "locale": "en",
            "attributes": {},
        },
        "workflow": {"id": "sample", "name": "Sample"},
        "business": {
            "name": "Bottega Rossi", "postal_address": "Via Roma 1, 20121 Milano, Italy",
            "logo_url": "https://example.com/logo.png", "accent_color": "#2f6fed",
            "privacy_url": "https://example.com/privacy", "support_email": "hello@example.com",
        },
        "unsubscribe_url": "https://example.com/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "preferences_url": "https://example.com/preferences/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    });
    tera::Context::from_serialize(&sample).unwrap_or_default()
}

/// What one file declares: a workflow, landing pages, lists, or several of these.
#[derive(Debug, Clone)]
pub struct Checked {
    pub workflow: Option<Workflow>,
    pub pages: Vec<Page>,
    pub lists: Vec<DeclaredList>,
}

/// A list declared under `lists:`, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredList {
    pub list: Declared,
    /// The file that declares it, and the line of its slug (for messages).
    pub file: PathBuf,
    pub line: u64,
}

/// Checks the workflow file at `path` whose text is `text`: it must declare a workflow.
pub fn check(path: &Path, text: &str, context: &Context<'_>) -> Result<Workflow, Vec<Diagnostic>> {
    let checked = check_file(path, text, context)?;
    checked.workflow.ok_or_else(|| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "this file declares pages only, no workflow".into(),
        }]
    })
}

/// Checks a file under `workflows/`, which may declare a workflow, `pages:`, or both.
pub fn check_file(path: &Path, text: &str, context: &Context<'_>) -> Result<Checked, Vec<Diagnostic>> {
    let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    let mut raw: format::File = match serde_saphyr::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(vec![yaml_diagnostic(path, &e)]),
    };
    let mut checker = Checker::new(path, context);
    let lists = raw.lists.take().map(|lists| checker.lists(&lists)).unwrap_or_default();
    let pages = raw.pages.take().map(|pages| checker.pages(&pages)).unwrap_or_default();
    let declarations_only =
        (!pages.is_empty() || !lists.is_empty()) && raw.name.is_none() && raw.trigger.is_none() && raw.steps.is_none();
    let workflow = if declarations_only {
        None
    } else {
        if let Err(message) = validate_slug(&id) {
            checker.report(At { line: 1, column: 1 }, format!("the file name is the workflow's id: {message}"));
        }
        if let Some(steps) = &raw.steps {
            collect_emails(&steps.value, &mut checker.all_emails);
        }
        Some(checker.file_(id, raw))
    };
    if checker.diagnostics.is_empty() { Ok(Checked { workflow, pages, lists }) } else { Err(checker.diagnostics) }
}

/// The lists a file declares, when its `lists:` is valid (whatever the rest of the file says);
/// nothing when it is not, or when the file is not YAML at all.
fn declared_lists(path: &Path, text: &str, context: &Context<'_>) -> Vec<DeclaredList> {
    let Ok(raw) = serde_saphyr::from_str::<format::Declarations>(text) else { return Vec::new() };
    let mut checker = Checker::new(path, context);
    let lists = raw.lists.map(|lists| checker.lists(&lists)).unwrap_or_default();
    if checker.diagnostics.is_empty() { lists } else { Vec::new() }
}

fn collect_emails(steps: &[Spanned<format::Step>], out: &mut BTreeSet<String>) {
    for step in steps {
        let s = &step.value;
        if s.email.is_some() {
            out.insert(s.id.value.clone());
        }
        for nested in [&s.then, &s.otherwise, &s.on_timeout].into_iter().flatten() {
            collect_emails(nested, out);
        }
    }
}

/// A YAML or shape error from the parser, with a "did you mean" for misspelt keys.
fn yaml_diagnostic(path: &Path, error: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = error.location().map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    let text = error.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") => rest,
        _ => message,
    };
    Diagnostic { file: path.to_path_buf(), line, column, message: format!("{message}{}", suggestion(message)) }
}

/// For "unknown field `x`, expected one of a, b": the closest of the expected names.
fn suggestion(message: &str) -> String {
    let Some(unknown) = message.split('`').nth(1) else { return String::new() };
    if !(message.starts_with("unknown field") || message.starts_with("unknown variant")) {
        return String::new();
    }
    let pools: [&[&str]; 6] = [FILE_KEYS, TRIGGER_KEYS, STEP_KEYS, CONDITION_KEYS, PAGE_KEYS, LIST_KEYS];
    let listed: Vec<&str> = message
        .split_once("expected one of ")
        .map(|(_, list)| list.split(',').map(|s| s.trim().trim_matches('`')).collect())
        .unwrap_or_default();
    let candidates: Vec<&str> = if listed.is_empty() { pools.concat() } else { listed };
    match closest(unknown, &candidates) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None => String::new(),
    }
}

impl<'a> Checker<'a> {
    fn new(file: &'a Path, context: &'a Context<'a>) -> Self {
        Self {
            file,
            context,
            diagnostics: Vec::new(),
            step_ids: BTreeMap::new(),
            emails_so_far: BTreeSet::new(),
            all_emails: BTreeSet::new(),
        }
    }

    fn report(&mut self, at: At, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_path_buf(),
            line: at.line.max(1),
            column: at.column.max(1),
            message: message.into(),
        });
    }

    fn ok<T>(&mut self, at: At, result: Result<T, impl Into<Reason>>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.report(at, reason.into());
                None
            }
        }
    }

    fn file_(&mut self, id: String, raw: format::File) -> Workflow {
        let top = At { line: 1, column: 1 };
        let name = match &raw.name {
            Some(name) => {
                if name.value.trim().is_empty() {
                    self.report(at(name), "name is empty");
                }
                name.value.trim().to_owned()
            }
            None => {
                self.report(top, "missing field `name` (a workflow needs name, trigger and steps)");
                String::new()
            }
        };
        let name_at = raw.name.as_ref().map_or(top, at);
        let (trigger, filter) = match &raw.trigger {
            Some(trigger) => self.trigger(trigger),
            None => {
                self.report(top, "missing field `trigger` (what enrolls a subscriber)");
                (Trigger::Event { name: String::new() }, None)
            }
        };
        let exit_when = raw.exit_when.as_ref().map(|c| self.condition(c, true));
        let reentry = match &raw.reentry {
            None => Reentry::Never,
            Some(r) => match &r.value {
                format::Reentry::Never => Reentry::Never,
                format::Reentry::Always => Reentry::Always,
                format::Reentry::After(d) => Reentry::After(self.duration(d).unwrap_or(Span::DAY)),
            },
        };
        if matches!(trigger, Trigger::Date { .. }) && reentry == Reentry::Never {
            self.report(
                raw.trigger.as_ref().map_or(top, at),
                "a date trigger fires every year: set `reentry: always` (or `{ after: 300d }`) so it can",
            );
        }
        let timezone = raw.timezone.as_ref().and_then(|tz| self.ok(at(tz), validate_timezone(&tz.value)));
        let send_window = raw.send_window.as_ref().and_then(|w| self.send_window(w));
        let no_steps = Vec::new();
        let raw_steps = raw.steps.as_ref().map_or(&no_steps, |s| &s.value);
        if raw_steps.is_empty() {
            self.report(name_at, "a workflow needs at least one step under `steps:`");
        }
        let steps = self.steps(raw_steps);
        Workflow {
            id,
            name,
            description: raw.description.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()),
            trigger,
            filter,
            exit_when,
            reentry,
            timezone,
            send_window,
            tracking: raw.tracking.unwrap_or(true),
            steps,
        }
    }
}
