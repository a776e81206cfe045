//! Checking workflow files: YAML in, a [`Workflow`] or `file:line:column: message` diagnostics out.
//!
//! Every problem in a file is reported at once, each where it is, with a hint where one helps.
//! Nothing here panics on any input: a file that cannot be read is itself a diagnostic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::format::{self, CONDITION_KEYS, FILE_KEYS, LIST_KEYS, PAGE_KEYS, STEP_KEYS, TRIGGER_KEYS};
use super::model::{
    Action, AttributeTest, Condition, Reentry, SendWindow, SmsBody, Step, Trigger, WaitUntil, Workflow,
};
use super::templates::TemplateChecker;
use super::timing::{Span, parse_clock, parse_weekday, translate_cron};
use crate::audience::lists::Declared;
use crate::audience::values::{
    Channel, normalize_tag, normalize_text, validate_attribute_key, validate_slug, validate_timezone,
};
use crate::config::closest;
use crate::pages::{self, Field, Page, ThankYou};

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

    fn ok<T>(&mut self, at: At, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.report(at, message);
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

    fn pages(&mut self, raw: &[Spanned<format::Page>]) -> Vec<Page> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for page in raw {
            let p = &page.value;
            let slug = p.slug.value.trim().to_owned();
            if let Err(message) = validate_slug(&slug) {
                self.report(at(&p.slug), format!("a page's slug is its address /p/SLUG: {message}"));
            } else if !seen.insert(slug.clone()) {
                self.report(at(&p.slug), format!("another page in this file is already '{slug}'"));
            }
            let title = p.title.value.trim().to_owned();
            if title.is_empty() || title.chars().count() > 200 {
                self.report(at(&p.title), "a page's title is 1 to 200 characters");
            }
            let list = self.list(&p.list);
            let mut fields = Vec::new();
            match &p.fields {
                None => fields.push(Field::Email),
                Some(given) => {
                    if given.value.is_empty() {
                        self.report(at(given), "a page asks for at least one field (email or phone)");
                    }
                    for name in &given.value {
                        match self.field(name) {
                            Some(field) if fields.contains(&field) => {
                                self.report(at(name), format!("'{}' is listed twice", name.value.trim()));
                            }
                            Some(field) => fields.push(field),
                            None => {}
                        }
                    }
                }
            }
            if !fields.contains(&Field::Email) && !fields.contains(&Field::Phone) && !fields.is_empty() {
                let at_fields = p.fields.as_ref().map_or(at(&p.slug), at);
                self.report(at_fields, "a page needs an email or phone field to subscribe with");
            }
            let mut required = Vec::new();
            for name in p.required.iter().flatten() {
                if let Some(field) = self.field(name) {
                    if fields.contains(&field) {
                        required.push(field);
                    } else {
                        self.report(at(name), format!("'{}' is required but not among the fields", name.value.trim()));
                    }
                }
            }
            let mut channels = Vec::new();
            match &p.channels {
                None => {
                    if fields.contains(&Field::Email) {
                        channels.push(Channel::Email);
                    }
                    if fields.contains(&Field::Phone) {
                        channels.push(Channel::Sms);
                    }
                }
                Some(given) => {
                    for name in given {
                        match name.value.trim().parse::<Channel>() {
                            Ok(channel) => {
                                let needs = if channel == Channel::Email { Field::Email } else { Field::Phone };
                                if !fields.contains(&needs) {
                                    self.report(
                                        at(name),
                                        format!("the {} box needs the '{}' field", channel.as_str(), needs.name()),
                                    );
                                } else if !channels.contains(&channel) {
                                    channels.push(channel);
                                }
                            }
                            Err(_) => self.report(at(name), format!("'{}' is not email or sms", name.value.trim())),
                        }
                    }
                }
            }
            let consent_text = match &p.consent_text {
                Some(text) if text.value.trim().is_empty() => {
                    self.report(at(text), "consent_text is empty: say what the person agrees to");
                    String::new()
                }
                Some(text) if text.value.chars().count() > 2000 => {
                    self.report(at(text), "consent_text is longer than 2,000 characters");
                    String::new()
                }
                Some(text) => text.value.trim().to_owned(),
                None => pages::DEFAULT_CONSENT_TEXT.to_owned(),
            };
            let template = match &p.template {
                Some(name) => {
                    self.page_template(name.value.trim(), at(name));
                    name.value.trim().to_owned()
                }
                None => {
                    self.page_template(pages::DEFAULT_TEMPLATE, at(&p.slug));
                    pages::DEFAULT_TEMPLATE.to_owned()
                }
            };
            let thank_you = match &p.thank_you {
                None => {
                    self.page_template(pages::DEFAULT_THANK_YOU, at(&p.slug));
                    ThankYou::Template(pages::DEFAULT_THANK_YOU.to_owned())
                }
                Some(t) => match &t.value {
                    format::ThankYou::Template(name) => {
                        self.page_template(name.trim(), at(t));
                        ThankYou::Template(name.trim().to_owned())
                    }
                    format::ThankYou::Redirect { redirect } => {
                        let ok = url::Url::parse(redirect.trim())
                            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
                        if !ok {
                            self.report(at(t), format!("redirect '{redirect}' is not an http(s) URL"));
                        }
                        ThankYou::Redirect(redirect.trim().to_owned())
                    }
                },
            };
            let default_country = p.default_country.as_ref().and_then(|c| {
                let code = c.value.trim().to_ascii_uppercase();
                let ok = code.len() == 2 && code.parse::<phonenumber::country::Id>().is_ok();
                if ok {
                    Some(code)
                } else {
                    self.report(at(c), format!("'{}' is not a two-letter country code such as US or IT", c.value));
                    None
                }
            });
            let mut cors = Vec::new();
            for origin in p.cors.iter().flatten() {
                match url::Url::parse(origin.value.trim()) {
                    Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() && u.path() == "/" => {
                        cors.push(u.origin().ascii_serialization());
                    }
                    _ => self.report(
                        at(origin),
                        format!("'{}' is not an origin such as https://shop.example.com", origin.value.trim()),
                    ),
                }
            }
            let goal = p.goal.as_ref().map(|g| self.name("an event name", g));
            out.push(Page {
                slug,
                title,
                description: p.description.as_deref().map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned),
                template,
                list,
                fields,
                required,
                channels,
                double_opt_in: p.double_opt_in.unwrap_or(true),
                consent_text,
                thank_you,
                default_country,
                cors,
                goal,
                file: self.file.display().to_string(),
            });
        }
        out
    }

    fn lists(&mut self, raw: &[Spanned<format::List>]) -> Vec<DeclaredList> {
        let mut out: Vec<DeclaredList> = Vec::new();
        for list in raw {
            let l = &list.value;
            let slug = l.slug.value.trim().to_owned();
            if let Err(message) = validate_slug(&slug) {
                self.report(at(&l.slug), format!("a list's slug: {message}"));
                continue;
            }
            if out.iter().any(|d| d.list.slug == slug) {
                self.report(at(&l.slug), format!("list '{slug}' is declared twice in this file"));
                continue;
            }
            let name = match normalize_text(&l.name.value, 200) {
                Ok(Some(name)) => name,
                Ok(None) => {
                    self.report(at(&l.name), "a list's name is empty");
                    String::new()
                }
                Err(message) => {
                    self.report(at(&l.name), format!("a list's name {message}"));
                    String::new()
                }
            };
            let description = l.description.as_ref().and_then(|d| {
                normalize_text(&d.value, 2000)
                    .map_err(|message| self.report(at(d), format!("a list's description {message}")))
                    .ok()
                    .flatten()
            });
            out.push(DeclaredList {
                list: Declared { slug, name, description, double_opt_in: l.double_opt_in.unwrap_or(true) },
                file: self.file.to_path_buf(),
                line: at(&l.slug).line,
            });
        }
        out
    }

    fn field(&mut self, name: &Spanned<String>) -> Option<Field> {
        match Field::parse(&name.value) {
            Some(Field::Attribute(key)) => match validate_attribute_key(&key) {
                Ok(()) => Some(Field::Attribute(key)),
                Err(message) => {
                    self.report(at(name), message);
                    None
                }
            },
            Some(field) => Some(field),
            None => {
                let known = ["email", "phone", "first_name", "last_name", "attributes.NAME"];
                let hint =
                    closest(name.value.trim(), &known).map(|b| format!(" (did you mean '{b}'?)")).unwrap_or_default();
                self.report(
                    at(name),
                    format!(
                        "'{}' is not a field: use email, phone, first_name, last_name or attributes.NAME{hint}",
                        name.value.trim()
                    ),
                );
                None
            }
        }
    }

    fn page_template(&mut self, name: &str, where_: At) {
        if let Err(problems) = self.context.templates.check_file_for(name, pages::PAGE_VARIABLES) {
            for problem in problems {
                match problem {
                    crate::workflow::templates::Problem::At { file, line, column, message } => {
                        self.diagnostics.push(Diagnostic { file, line, column, message })
                    }
                    crate::workflow::templates::Problem::Here(message) => self.report(where_, message),
                }
            }
        }
    }

    fn list(&mut self, slug: &Spanned<String>) -> String {
        let name = slug.value.trim().to_owned();
        if let Err(message) = validate_slug(&name) {
            self.report(at(slug), message);
        } else if let Some(lists) = self.context.lists
            && !lists.contains(&name)
        {
            let known: Vec<&str> = lists.iter().map(String::as_str).collect();
            let hint = closest(&name, &known).map(|b| format!(" (did you mean '{b}'?)")).unwrap_or_default();
            self.report(
                at(slug),
                format!(
                    "unknown list '{name}'{hint}; declare it under `lists:` in a workflow file (or create it with POST /api/v1/lists)"
                ),
            );
        }
        name
    }

    fn tag(&mut self, tag: &Spanned<String>) -> String {
        self.ok(at(tag), normalize_tag(&tag.value)).unwrap_or_default()
    }

    fn name(&mut self, what: &str, value: &Spanned<String>) -> String {
        let text = value.value.trim();
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            self.report(at(value), format!("'{text}' is not {what}: use 1 to 64 letters, digits, '_', '-' or '.'"));
        }
        text.to_owned()
    }

    fn duration(&mut self, value: &Spanned<String>) -> Option<Span> {
        self.ok(at(value), Span::parse(&value.value, false)).filter(|d| d.seconds() > 0).or_else(|| {
            if Span::parse(&value.value, false).is_ok() {
                self.report(at(value), "a duration must be longer than zero");
            }
            None
        })
    }

    fn trigger(&mut self, trigger: &Spanned<format::Trigger>) -> (Trigger, Option<Condition>) {
        let t = &trigger.value;
        let kinds =
            [t.subscribed.is_some(), t.tag_added.is_some(), t.event.is_some(), t.date.is_some(), t.schedule.is_some()];
        let count = kinds.iter().filter(|k| **k).count();
        if count != 1 {
            self.report(
                at(trigger),
                format!("a trigger has exactly one of subscribed, tag_added, event, date, schedule (found {count})"),
            );
        }
        let filter = t.filter.as_ref().map(|c| self.condition(c, false));
        let fallback = Trigger::Event { name: String::new() };
        let kind = if let Some(list) = &t.subscribed {
            Trigger::Subscribed { list: self.list(list) }
        } else if let Some(tag) = &t.tag_added {
            Trigger::TagAdded { tag: self.tag(tag) }
        } else if let Some(event) = &t.event {
            Trigger::Event { name: self.name("an event name", event) }
        } else if let Some(date) = &t.date {
            let d = &date.value;
            let attribute = d.attribute.value.trim().to_owned();
            self.ok(at(&d.attribute), validate_attribute_key(&attribute));
            let offset = d.offset.as_ref().and_then(|o| self.ok(at(o), Span::parse(&o.value, true)));
            let time = d.at.as_ref().and_then(|t| self.ok(at(t), parse_clock(&t.value)));
            Trigger::Date { attribute, offset: offset.unwrap_or(Span::ZERO), at: time.unwrap_or_default() }
        } else if let Some(schedule) = &trigger.value.schedule {
            let s = &schedule.value;
            self.ok(at(&s.cron), translate_cron(&s.cron.value));
            let timezone = s.timezone.as_ref().and_then(|tz| self.ok(at(tz), validate_timezone(&tz.value)));
            Trigger::Schedule { cron: s.cron.value.trim().to_owned(), timezone, list: self.list(&s.list) }
        } else {
            fallback
        };
        (kind, filter)
    }

    fn send_window(&mut self, window: &Spanned<format::SendWindow>) -> Option<SendWindow> {
        let w = &window.value;
        let mut days = Vec::new();
        for day in w.days.iter().flatten() {
            if let Some(d) = self.ok(at(day), parse_weekday(&day.value))
                && !days.contains(&d)
            {
                days.push(d);
            }
        }
        if w.days.as_ref().is_some_and(Vec::is_empty) {
            self.report(at(window), "send_window.days is empty: no message could ever be sent");
        }
        if w.days.is_none() {
            days = vec![
                chrono::Weekday::Mon,
                chrono::Weekday::Tue,
                chrono::Weekday::Wed,
                chrono::Weekday::Thu,
                chrono::Weekday::Fri,
                chrono::Weekday::Sat,
                chrono::Weekday::Sun,
            ];
        }
        let (start, end) = match &w.between {
            None => (chrono::NaiveTime::MIN, chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default()),
            Some(between) => {
                if between.value.len() != 2 {
                    self.report(at(between), "between takes two times: [\"09:00\", \"18:00\"]");
                    return None;
                }
                let start = self.ok(at(between), parse_clock(&between.value[0]))?;
                let end = self.ok(at(between), parse_clock(&between.value[1]))?;
                if start >= end {
                    self.report(at(between), "the window's start must be before its end (same day)");
                }
                (start, end)
            }
        };
        Some(SendWindow { days, start, end })
    }

    fn steps(&mut self, steps: &[Spanned<format::Step>]) -> Vec<Step> {
        steps.iter().filter_map(|s| self.step(s)).collect()
    }

    fn step(&mut self, spanned: &Spanned<format::Step>) -> Option<Step> {
        let s = &spanned.value;
        let id = s.id.value.trim().to_owned();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            self.report(at(&s.id), format!("'{id}' is not a step id: use lower-case letters, digits, '-' and '_'"));
        }
        if let Some(first) = self.step_ids.get(&id).copied() {
            self.report(
                at(&s.id),
                format!(
                    "duplicate step id '{id}' (first used at line {}); step ids must be unique in a file",
                    first.line
                ),
            );
        } else {
            self.step_ids.insert(id.clone(), at(&s.id));
        }
        let actions: Vec<&str> = [
            ("email", s.email.is_some()),
            ("sms", s.sms.is_some()),
            ("wait", s.wait.is_some()),
            ("wait_until", s.wait_until.is_some()),
            ("wait_for", s.wait_for.is_some()),
            ("if", s.condition.is_some()),
            ("tag", s.tag.is_some()),
            ("untag", s.untag.is_some()),
            ("set", s.set.is_some()),
            ("join", s.join.is_some()),
            ("leave", s.leave.is_some()),
            ("webhook", s.webhook.is_some()),
            ("exit", s.exit.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match actions.len() {
            1 => {}
            0 => {
                self.report(at(spanned), format!("step '{id}' does nothing: give it one action (email, sms, wait, wait_until, wait_for, if, tag, untag, set, join, leave, webhook or exit)"));
                return None;
            }
            _ => {
                self.report(
                    at(spanned),
                    format!(
                        "step '{id}' has {} actions ({}); split it into one step per action",
                        actions.len(),
                        actions.join(", ")
                    ),
                );
                return None;
            }
        }
        if s.condition.is_none() && (s.then.is_some() || s.otherwise.is_some()) {
            self.report(at(spanned), format!("step '{id}': `then` and `else` belong to an `if` step"));
        }
        if s.wait_for.is_none() && s.on_timeout.is_some() {
            self.report(at(spanned), format!("step '{id}': `on_timeout` belongs to a `wait_for` step"));
        }
        let action = self.action(spanned, &id)?;
        if matches!(action, Action::Email { .. }) {
            self.emails_so_far.insert(id.clone());
        }
        Some(Step { id, action })
    }

    fn action(&mut self, spanned: &Spanned<format::Step>, id: &str) -> Option<Action> {
        let s = &spanned.value;
        if let Some(email) = &s.email {
            let e = &email.value;
            let subject = e.subject.value.trim().to_owned();
            if subject.is_empty() || subject.chars().count() > 200 {
                self.report(at(&e.subject), "a subject has 1 to 200 characters");
            }
            for problem in self.context.templates.check_inline(&subject) {
                self.report(at(&e.subject), format!("subject: {problem}"));
            }
            let template = self.template(&e.template);
            return Some(Action::Email { subject, template, tracking: e.tracking });
        }
        if let Some(sms) = &s.sms {
            let body = match (&sms.value.template, &sms.value.text) {
                (Some(template), None) => {
                    let name = self.template(template);
                    let rendered = self.context.templates.tera().render(&name, &sample_context());
                    if let Ok(text) = rendered {
                        self.check_segments(at(template), text.trim());
                    }
                    SmsBody::Template(name)
                }
                (None, Some(text)) => {
                    let problems = self.context.templates.check_inline(&text.value);
                    for problem in &problems {
                        self.report(at(text), format!("text: {problem}"));
                    }
                    let rendered = self.context.templates.tera().render_str(&text.value, &sample_context(), false);
                    if let (true, Ok(rendered)) = (problems.is_empty(), rendered) {
                        self.check_segments(at(text), rendered.trim());
                    }
                    SmsBody::Text(text.value.clone())
                }
                _ => {
                    self.report(at(sms), "an sms step has either `template` or `text`");
                    return None;
                }
            };
            return Some(Action::Sms { body });
        }
        if let Some(wait) = &s.wait {
            return self.duration(wait).map(Action::Wait);
        }
        if let Some(until) = &s.wait_until {
            let u = &until.value;
            return match (&u.cron, &u.time) {
                (Some(cron), None) if u.weekday.is_none() => {
                    self.ok(at(cron), translate_cron(&cron.value))?;
                    Some(Action::WaitUntil(WaitUntil::Cron(cron.value.trim().to_owned())))
                }
                (None, Some(time)) => {
                    let weekday = match &u.weekday {
                        Some(day) => Some(self.ok(at(day), parse_weekday(&day.value))?),
                        None => None,
                    };
                    let time = self.ok(at(time), parse_clock(&time.value))?;
                    Some(Action::WaitUntil(WaitUntil::Time { weekday, time }))
                }
                _ => {
                    self.report(
                        at(until),
                        "wait_until takes either { time } with an optional weekday, or { cron } alone",
                    );
                    None
                }
            };
        }
        if let Some(wait_for) = &s.wait_for {
            let event = self.name("an event name", &wait_for.value.event);
            let timeout = self.duration(&wait_for.value.timeout);
            let on_timeout = s.on_timeout.as_ref().map(|steps| self.steps(steps)).unwrap_or_default();
            return Some(Action::WaitFor { event, timeout: timeout?, on_timeout });
        }
        if let Some(condition) = &s.condition {
            let condition = self.condition(condition, false);
            let Some(then) = &s.then else {
                self.report(at(spanned), format!("step '{id}': an `if` needs `then` steps (and may have `else`)"));
                return None;
            };
            let then = self.steps(then);
            let otherwise = s.otherwise.as_ref().map(|steps| self.steps(steps)).unwrap_or_default();
            return Some(Action::If { condition, then, otherwise });
        }
        if let Some(tag) = &s.tag {
            return Some(Action::Tag(self.tag(tag)));
        }
        if let Some(tag) = &s.untag {
            return Some(Action::Untag(self.tag(tag)));
        }
        if let Some(set) = &s.set {
            let mut values = BTreeMap::new();
            for (key, value) in &set.value {
                self.ok(at(value), validate_attribute_key(key));
                values.insert(key.clone(), value.value.clone());
            }
            if values.is_empty() {
                self.report(at(set), "set needs at least one attribute: { plan: pro }");
            }
            return Some(Action::Set(values));
        }
        if let Some(list) = &s.join {
            return Some(Action::Join(self.list(list)));
        }
        if let Some(list) = &s.leave {
            return Some(Action::Leave(self.list(list)));
        }
        if let Some(webhook) = &s.webhook {
            let w = &webhook.value;
            let url_ok = url::Url::parse(w.url.value.trim())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !url_ok {
                self.report(at(&w.url), format!("'{}' is not an http(s) URL", w.url.value));
            }
            let env = w.secret_env.value.trim();
            let env_ok = !env.is_empty()
                && env.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !env.as_bytes()[0].is_ascii_digit();
            if !env_ok {
                self.report(
                    at(&w.secret_env),
                    format!("'{env}' is not an environment variable name such as CRM_WEBHOOK_SECRET"),
                );
            } else if env.starts_with("OWNLIST_") {
                self.report(
                    at(&w.secret_env),
                    format!("'{env}' is one of ownlist's own settings: a webhook's secret needs a variable of its own"),
                );
            }
            return Some(Action::Webhook {
                url: w.url.value.trim().to_owned(),
                secret_env: env.to_owned(),
                body: w.body.clone().unwrap_or_default(),
            });
        }
        if let Some(exit) = &s.exit {
            let reason = exit.value.trim().to_owned();
            if reason.is_empty() {
                self.report(at(exit), "exit needs a reason, e.g. exit: not-interested");
            }
            return Some(Action::Exit(reason));
        }
        None
    }

    fn template(&mut self, name: &Spanned<String>) -> String {
        let template = name.value.trim().to_owned();
        if let Err(problems) = self.context.templates.check_file(&template) {
            for problem in problems {
                match problem {
                    super::templates::Problem::At { file, line, column, message } => {
                        self.diagnostics.push(Diagnostic { file, line, column, message })
                    }
                    super::templates::Problem::Here(message) => self.report(at(name), message),
                }
            }
        }
        template
    }

    /// An SMS (rendered for a sample subscriber) over the segment limit is refused.
    fn check_segments(&mut self, place: At, text: &str) {
        let segments = crate::delivery::compose::sms_segments(text);
        let limit = self.context.sms_max_segments;
        if segments > limit {
            let alphabet = if crate::delivery::compose::is_gsm7(text) {
                "GSM-7: 160 characters in one, 153 each when split"
            } else {
                "UCS-2, for a character outside the GSM alphabet: 70 characters in one, 67 each when split"
            };
            self.report(
                place,
                format!(
                    "this text takes {segments} SMS segments ({} characters, {alphabet}); the limit is {limit} (sms_max_segments): shorten it",
                    text.chars().count()
                ),
            );
        }
    }

    /// `anywhere`: the condition is checked before any step (exit_when), so it may name any
    /// email step; otherwise only email steps above it.
    fn condition(&mut self, spanned: &Spanned<format::Condition>, anywhere: bool) -> Condition {
        match &spanned.value {
            format::Condition::Opened(step) | format::Condition::Clicked(step) => {
                let name = step.value.trim().to_owned();
                let known = if anywhere { &self.all_emails } else { &self.emails_so_far };
                if !known.contains(&name) {
                    let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
                    let hint =
                        closest(&name, &candidates).map(|b| format!(" (did you mean '{b}'?)")).unwrap_or_default();
                    let place =
                        if anywhere { "an email step of this workflow" } else { "an email step above this one" };
                    self.report(at(step), format!("'{name}' is not {place}{hint}"));
                }
                match &spanned.value {
                    format::Condition::Opened(_) => Condition::Opened(name),
                    _ => Condition::Clicked(name),
                }
            }
            format::Condition::Tag(tag) => Condition::Tag(self.tag(tag)),
            format::Condition::List(list) => Condition::List(self.list(list)),
            format::Condition::Has(what) => match what.value.trim() {
                "email" => Condition::Has(Channel::Email),
                "phone" => Condition::Has(Channel::Sms),
                other => {
                    self.report(at(what), format!("has: '{other}' must be email or phone"));
                    Condition::Has(Channel::Email)
                }
            },
            format::Condition::Attribute(test) => {
                let t = &test.value;
                let name = t.name.value.trim().to_owned();
                self.ok(at(&t.name), validate_attribute_key(&name));
                let tests = [t.equals.is_some(), t.one_of.is_some(), t.exists.is_some()];
                let test_kind = match (&t.equals, &t.one_of, t.exists) {
                    _ if tests.iter().filter(|x| **x).count() != 1 => {
                        self.report(at(test), "attribute takes its name and exactly one of equals, in, exists");
                        AttributeTest::Exists(true)
                    }
                    (Some(value), _, _) => AttributeTest::Equals(value.clone()),
                    (_, Some(values), _) => AttributeTest::In(values.clone()),
                    (_, _, Some(exists)) => AttributeTest::Exists(exists),
                    _ => AttributeTest::Exists(true),
                };
                Condition::Attribute { name, test: test_kind }
            }
            format::Condition::Event(test) => {
                let name = self.name("an event name", &test.value.name);
                let within = test.value.within.as_ref().and_then(|w| self.duration(w));
                Condition::Event { name, within }
            }
            format::Condition::Source(v) => Condition::Source(v.value.trim().to_owned()),
            format::Condition::Medium(v) => Condition::Medium(v.value.trim().to_owned()),
            format::Condition::Campaign(v) => Condition::Campaign(v.value.trim().to_owned()),
            format::Condition::All(items) | format::Condition::Any(items) => {
                if items.is_empty() {
                    self.report(at(spanned), "all/any needs at least one condition");
                }
                let inner: Vec<Condition> = items.iter().map(|c| self.condition(c, anywhere)).collect();
                match &spanned.value {
                    format::Condition::All(_) => Condition::All(inner),
                    _ => Condition::Any(inner),
                }
            }
            format::Condition::Not(inner) => Condition::Not(Box::new(self.condition(inner, anywhere))),
        }
    }
}

/// A workflow folder checked file by file: what its valid files declare, and every problem.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    /// The workflows of the valid files.
    pub workflows: Vec<Workflow>,
    /// The landing pages of the valid files.
    pub pages: Vec<Page>,
    /// Every list declared by a file whose `lists:` is valid (even when the rest of it is not).
    pub lists: Vec<DeclaredList>,
    /// Every problem, each at `file:line:column`.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file read, in order, with whether it was valid.
    pub files: Vec<FileState>,
}

/// One file of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub path: PathBuf,
    /// Its path inside the folder, with `/` (how stored pages name it).
    pub name: String,
    /// Its workflow id (the file name without `.yaml`), whether or not it declares a workflow.
    pub id: String,
    pub valid: bool,
}

impl Folder {
    /// The ids of the files with problems: their workflows keep the version last loaded.
    pub fn invalid_ids(&self) -> BTreeSet<String> {
        self.files.iter().filter(|f| !f.valid).map(|f| f.id.clone()).collect()
    }
}

/// Checks every `.yaml`/`.yml` file under `dir`. Lists declared in any file count as existing
/// for every file, beside `context.lists`.
pub fn check_dir(dir: &Path, context: &Context<'_>) -> Folder {
    let mut paths = Vec::new();
    collect_files(dir, &mut paths);
    paths.sort();
    let mut folder = Folder::default();
    let mut texts = Vec::new();
    for path in paths {
        let name = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for list in declared_lists(&path, &text, context) {
                    match folder.lists.iter().find(|d| d.list.slug == list.list.slug) {
                        Some(first) if first.list != list.list => {
                            let message = format!(
                                "list '{}' is also declared in {}:{} with other settings: declare it once",
                                list.list.slug,
                                first.file.display(),
                                first.line
                            );
                            folder.diagnostics.push(Diagnostic {
                                file: path.clone(),
                                line: list.line,
                                column: 1,
                                message,
                            });
                        }
                        Some(_) => {}
                        None => folder.lists.push(list),
                    }
                }
                texts.push((path, name, id, Ok(text)));
            }
            Err(e) => texts.push((path, name, id, Err(format!("cannot read the file: {e}")))),
        }
    }
    let mut known = context.lists.cloned().unwrap_or_default();
    known.extend(folder.lists.iter().map(|l| l.list.slug.clone()));
    let context = Context {
        templates: context.templates,
        lists: context.lists.map(|_| &known),
        sms_max_segments: context.sms_max_segments,
    };
    let at_top = |path: &PathBuf, message: String| Diagnostic { file: path.clone(), line: 1, column: 1, message };
    for (path, name, id, text) in texts {
        let mut problems: Vec<Diagnostic> = folder.diagnostics.iter().filter(|d| d.file == path).cloned().collect();
        let checked = match text {
            Err(message) => {
                problems.push(at_top(&path, message));
                None
            }
            Ok(text) => match check_file(&path, &text, &context) {
                Ok(checked) => Some(checked),
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
        };
        if let Some(checked) = &checked {
            if let Some(workflow) = &checked.workflow
                && folder.workflows.iter().any(|w| w.id == workflow.id)
            {
                let message = format!("another file is already named '{}': workflow ids must be unique", workflow.id);
                problems.push(at_top(&path, message));
            }
            for page in &checked.pages {
                if let Some(other) = folder.pages.iter().find(|p| p.slug == page.slug) {
                    let message =
                        format!("page '{}' is also declared in {}: page slugs must be unique", page.slug, other.file);
                    problems.push(at_top(&path, message));
                }
            }
        }
        let valid = problems.is_empty();
        if let (true, Some(checked)) = (valid, checked) {
            folder.workflows.extend(checked.workflow);
            folder.pages.extend(checked.pages);
        }
        folder.diagnostics.retain(|d| d.file != path);
        folder.diagnostics.extend(problems);
        folder.files.push(FileState { path, name, id, valid });
    }
    folder
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}
