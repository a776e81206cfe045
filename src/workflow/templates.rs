//! Checking tera templates before they are used: the file exists under `templates/`, it parses,
//! and it uses only the variables a message is rendered with.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use std::sync::Arc;

use crate::core::i18n::Translations;
use crate::core::text::closest;

/// The variables every message template is rendered with.
pub const VARIABLES: &[&str] = &["subscriber", "workflow", "business", "unsubscribe_url", "preferences_url"];

/// The folder under the templates folder that holds the words of each language, not templates.
pub const LOCALES: &str = "locales";

/// A problem in a template: inside the template file itself, or about the reference to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    At { file: PathBuf, line: u64, column: u64, message: String },
    Here(String),
}

/// Every template under one folder, parsed once.
pub struct TemplateChecker {
    dir: PathBuf,
    tera: tera::Tera,
    /// Templates that did not parse, with their problem.
    broken: BTreeMap<String, Problem>,
    names: Vec<String>,
    /// The words of pages and system emails (`locales/{lang}.toml` over the shipped ones).
    translations: Arc<Translations>,
    /// The locale files that did not parse.
    locale_problems: Vec<Problem>,
    /// How machines are told from people (`machines.toml` over the shipped file).
    machines: Arc<crate::audience::machines::Machines>,
    /// The folder's `machines.toml` when it did not parse.
    machines_problem: Option<Problem>,
    /// Each language's words as a template value, made once (a message's context takes a
    /// reference to it rather than a copy of a hundred texts).
    words: BTreeMap<String, tera::Value>,
}

impl std::fmt::Debug for TemplateChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateChecker").field("dir", &self.dir).field("templates", &self.names.len()).finish()
    }
}

impl TemplateChecker {
    /// Reads and parses every file under `dir` (missing `dir` means no templates).
    pub fn load(dir: &Path) -> Self {
        let mut files = Vec::new();
        collect(dir, dir, &mut files);
        files.sort();
        let mut tera = tera::Tera::new();
        let mut broken = BTreeMap::new();
        let mut names = Vec::new();
        let mut good = Vec::new();
        for (name, path) in files {
            match std::fs::read_to_string(&path) {
                Err(e) => {
                    broken.insert(name.clone(), Problem::Here(format!("template '{name}' cannot be read: {e}")));
                }
                Ok(text) => {
                    let mut probe = tera::Tera::new();
                    // Alone, a template only shows syntax errors; its includes resolve below.
                    match probe.add_raw_template(&name, &text) {
                        Err(e) if matches!(e.kind(), tera::ErrorKind::SyntaxError(_)) => {
                            broken.insert(name.clone(), syntax_problem(&path, &e));
                        }
                        _ => good.push((name.clone(), text)),
                    }
                }
            }
            names.push(name);
        }
        // Templates that include or extend each other are added together; if one of them refers to
        // a template that does not exist, each is added alone so the others stay usable.
        if tera.add_raw_templates(good.iter().map(|(n, t)| (n.as_str(), t.as_str()))).is_err() {
            for (name, text) in &good {
                if let Err(e) = tera.add_raw_template(name, text) {
                    broken.insert(
                        name.clone(),
                        Problem::At { file: dir.join(name), line: 1, column: 1, message: first_line(&e) },
                    );
                }
            }
        }
        let (translations, problems) = Translations::load(&dir.join(LOCALES));
        let locale_problems = problems
            .into_iter()
            .map(|p| Problem::At { file: p.file, line: p.line, column: p.column, message: p.message })
            .collect();
        let (machines, machines_problem) = crate::audience::machines::Machines::load(dir);
        let machines_problem =
            machines_problem.map(|p| Problem::At { file: p.file, line: p.line, column: p.column, message: p.message });
        let words = translations
            .languages()
            .into_iter()
            .map(|lang| (lang.to_owned(), tera::Value::from_serializable(&*translations.words(lang))))
            .collect();
        Self {
            dir: dir.to_path_buf(),
            tera,
            broken,
            names,
            translations: Arc::new(translations),
            locale_problems,
            machines: Arc::new(machines),
            machines_problem,
            words,
        }
    }

    /// How machines are told from people.
    pub fn machines(&self) -> Arc<crate::audience::machines::Machines> {
        self.machines.clone()
    }

    /// The folder's `machines.toml`, when it did not parse (the shipped file is used).
    pub fn machines_problem(&self) -> Option<&Problem> {
        self.machines_problem.as_ref()
    }

    /// The words of `lang` as a template value (`t`), English for a language there are none for.
    pub fn words_value(&self, lang: &str) -> tera::Value {
        self.words
            .get(lang)
            .or_else(|| self.words.get(crate::core::i18n::FALLBACK))
            .cloned()
            .unwrap_or_else(|| tera::Value::from_serializable(&BTreeMap::<String, String>::new()))
    }

    /// The words of every language, the folder's locale files over the shipped ones.
    pub fn translations(&self) -> Arc<Translations> {
        self.translations.clone()
    }

    /// The problems of the templates no workflow file names but every page or message uses (the
    /// pages under `pages/`, the email layout, the confirmations) that do not parse: the shipped
    /// ones stand in for them, and `workflows check` says so.
    pub fn shared_problems(&self) -> Vec<Problem> {
        self.broken
            .iter()
            .filter(|(name, _)| {
                name.starts_with("pages/") || name.starts_with("emails/_layout") || name.starts_with("confirm/")
            })
            .map(|(_, problem)| problem.clone())
            .collect()
    }

    /// The locale files under `locales/` that did not parse (left out; the shipped words stand).
    pub fn locale_problems(&self) -> &[Problem] {
        &self.locale_problems
    }

    /// Checks the template `name` (a path relative to the templates folder), and each of its
    /// versions in other languages (`emails/welcome.it.html` beside `emails/welcome.html`).
    pub fn check_file(&self, name: &str) -> Result<(), Vec<Problem>> {
        self.check_file_for(name, VARIABLES)?;
        let mut problems = Vec::new();
        for lang in self.translations.languages() {
            let version = localized(name, lang);
            if self.tera.contains_template(&version) || self.broken.contains_key(&version) {
                problems.extend(self.check_file_for(&version, VARIABLES).err().unwrap_or_default());
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// The version of the template `name` in `lang` when there is one (`emails/welcome.it.html`
    /// for `emails/welcome.html` in `it`), else `name` itself.
    pub fn in_language<'a>(&self, name: &'a str, lang: &str) -> std::borrow::Cow<'a, str> {
        let version = localized(name, lang);
        if self.tera.contains_template(&version) {
            std::borrow::Cow::Owned(version)
        } else {
            std::borrow::Cow::Borrowed(name)
        }
    }

    /// Like [`Self::check_file`] for a template that gets `variables` (a landing page's, say).
    pub fn check_file_for(&self, name: &str, variables: &[&str]) -> Result<(), Vec<Problem>> {
        let safe = !name.is_empty() && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(vec![Problem::Here(format!(
                "'{name}' must be a path inside the templates folder, like emails/guide.html"
            ))]);
        }
        if let Some(problem) = self.broken.get(name) {
            return Err(vec![problem.clone()]);
        }
        if !self.tera.contains_template(name) {
            let known: Vec<&str> = self.names.iter().map(String::as_str).collect();
            let hint = closest(name, &known).map(|b| format!(" (did you mean '{b}'?)")).unwrap_or_default();
            return Err(vec![Problem::Here(format!("template '{name}' not found in {}{hint}", self.dir.display()))]);
        }
        let problems: Vec<Problem> = self
            .tera
            .get_template_variables(name)
            .map(|vars| unknown_variables(vars.into_iter(), variables))
            .unwrap_or_default()
            .into_iter()
            .map(|m| Problem::Here(format!("template '{name}': {m}")))
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// Checks a template written inline in a workflow file (a subject, an SMS text).
    pub fn check_inline(&self, text: &str) -> Vec<String> {
        let mut tera = tera::Tera::new();
        if let Err(e) = tera.add_raw_template("inline", text) {
            return vec![inline_message(&e)];
        }
        tera.get_template_variables("inline")
            .map(|vars| unknown_variables(vars.into_iter(), VARIABLES))
            .unwrap_or_default()
    }

    /// Renders a checked template (used by the engine and previews).
    pub fn tera(&self) -> &tera::Tera {
        &self.tera
    }
}

/// `emails/welcome.html` in `it`: `emails/welcome.it.html`.
fn localized(name: &str, lang: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.ends_with('/') && !extension.contains('/') => {
            format!("{stem}.{lang}.{extension}")
        }
        _ => format!("{name}.{lang}"),
    }
}

fn unknown_variables<'a>(vars: impl Iterator<Item = &'a str>, known: &[&str]) -> Vec<String> {
    let mut unknown: Vec<String> = vars
        .filter(|v| !known.contains(v))
        .map(|v| {
            let hint = closest(v, known).map(|b| format!(" (did you mean '{b}'?)")).unwrap_or_default();
            format!("unknown variable '{v}'{hint}; templates get {}", known.join(", "))
        })
        .collect();
    unknown.sort();
    unknown
}

fn syntax_problem(path: &Path, error: &tera::Error) -> Problem {
    match error.kind() {
        tera::ErrorKind::SyntaxError(report) => Problem::At {
            file: path.to_path_buf(),
            line: u64::try_from(report.span().start_line).unwrap_or(1),
            column: u64::try_from(report.span().start_col).unwrap_or(0) + 1,
            message: format!("template syntax error: {}", report.message()),
        },
        _ => Problem::At { file: path.to_path_buf(), line: 1, column: 1, message: first_line(error) },
    }
}

fn inline_message(error: &tera::Error) -> String {
    match error.kind() {
        tera::ErrorKind::SyntaxError(report) => format!("template syntax error: {}", report.message()),
        _ => first_line(error),
    }
}

fn first_line(error: &tera::Error) -> String {
    error.to_string().lines().next().unwrap_or("template error").to_owned()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if dir == root && path.file_name().is_some_and(|n| n == LOCALES) {
                continue;
            }
            collect(root, &path, out);
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && n != "README.md")
            && !(dir == root && path.file_name().is_some_and(|n| n == crate::audience::machines::FILE))
            && let Ok(relative) = path.strip_prefix(root)
        {
            let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((name, path));
        }
    }
}
