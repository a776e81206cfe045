//! The words of pages and system emails in each language: `templates/locales/{lang}.toml` files
//! (flat `key = "text"`), the shipped ones built in, and the choice of a language for a visit.
//!
//! Every language falls back to English key by key, so a file that lacks a word still renders.
//! An operator adds a language by adding a file, and changes a word by setting it in the file of
//! that language.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The language every other one falls back to.
pub const FALLBACK: &str = "en";

/// The shipped languages, built into the binary.
const SHIPPED: &[(&str, &str)] = &[
    ("en", include_str!("../../templates/locales/en.toml")),
    ("it", include_str!("../../templates/locales/it.toml")),
    ("de", include_str!("../../templates/locales/de.toml")),
    ("fr", include_str!("../../templates/locales/fr.toml")),
    ("es", include_str!("../../templates/locales/es.toml")),
];

/// One language's words, complete (English where the language lacks one).
pub type Words = Arc<BTreeMap<String, String>>;

/// A problem in a locale file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Every language's words.
#[derive(Debug, Clone)]
pub struct Translations {
    languages: BTreeMap<String, Words>,
}

impl Default for Translations {
    fn default() -> Self {
        Self::built_in()
    }
}

fn parse(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| (e.span().map(|s| s.start).unwrap_or(0), e.message().to_owned()))?;
    let mut words = BTreeMap::new();
    for (key, value) in table {
        match value {
            toml::Value::String(text) => {
                words.insert(key, text);
            }
            _ => return Err((0, format!("'{key}' must be a text in quotes"))),
        }
    }
    Ok(words)
}

/// The 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line as u64, column as u64)
}

/// `it`, `pt-br`: a language tag as files and choices compare it.
fn normal(tag: &str) -> String {
    tag.trim().replace('_', "-").to_ascii_lowercase()
}

impl Translations {
    /// The shipped languages only.
    pub fn built_in() -> Self {
        let raw = SHIPPED.iter().map(|(lang, text)| ((*lang).to_owned(), parse(text).unwrap_or_default())).collect();
        Self::complete(raw)
    }

    /// The shipped languages with the files of `dir` (`{lang}.toml`) over them: a file adds a
    /// language or changes words of a shipped one. A file that does not parse is left out and
    /// reported.
    pub fn load(dir: &Path) -> (Self, Vec<FileProblem>) {
        let mut raw: BTreeMap<String, BTreeMap<String, String>> =
            SHIPPED.iter().map(|(lang, text)| ((*lang).to_owned(), parse(text).unwrap_or_default())).collect();
        let mut problems = Vec::new();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|entries| entries.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        for path in files {
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let Some(lang) = path.file_stem().and_then(|s| s.to_str()).map(normal) else { continue };
            let problem = |line, column, message: String| FileProblem { file: path.clone(), line, column, message };
            if crate::core::values::validate_locale(&lang).is_err() {
                problems.push(problem(
                    1,
                    1,
                    format!("'{lang}' is not a language tag such as it or pt-BR: name the file after one"),
                ));
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(problem(1, 1, format!("cannot be read: {e}")));
                    continue;
                }
            };
            match parse(&text) {
                Ok(words) => raw.entry(lang).or_default().extend(words),
                Err((offset, message)) => {
                    let (line, column) = line_column(&text, offset);
                    problems.push(problem(line, column, message));
                }
            }
        }
        (Self::complete(raw), problems)
    }

    fn complete(raw: BTreeMap<String, BTreeMap<String, String>>) -> Self {
        let english = raw.get(FALLBACK).cloned().unwrap_or_default();
        let languages = raw
            .into_iter()
            .map(|(lang, words)| {
                let mut all = english.clone();
                all.extend(words);
                (lang, Arc::new(all))
            })
            .collect();
        Self { languages }
    }

    /// The languages there are words for.
    pub fn languages(&self) -> Vec<&str> {
        self.languages.keys().map(String::as_str).collect()
    }

    /// The language among ours that `tag` asks for: itself, or its primary language (`pt` for
    /// `pt-BR`).
    pub fn find(&self, tag: &str) -> Option<&str> {
        let tag = normal(tag);
        if let Some((lang, _)) = self.languages.get_key_value(&tag) {
            return Some(lang);
        }
        let primary = tag.split('-').next().unwrap_or_default();
        self.languages.get_key_value(primary).map(|(lang, _)| lang.as_str())
    }

    /// The language of a page or message: the first of `preferred` we have words for (the page's
    /// own `locale`, then the subscriber's), else the best of the browser's `Accept-Language`,
    /// else English.
    pub fn choose(&self, preferred: &[Option<&str>], accept_language: Option<&str>) -> String {
        preferred
            .iter()
            .flatten()
            .find_map(|tag| self.find(tag))
            .or_else(|| accepted(accept_language.unwrap_or_default()).iter().find_map(|tag| self.find(tag)))
            .unwrap_or(FALLBACK)
            .to_owned()
    }

    /// The words of `lang` (English where it lacks one; English for a language we do not have).
    pub fn words(&self, lang: &str) -> Words {
        self.languages.get(lang).or_else(|| self.languages.get(FALLBACK)).cloned().unwrap_or_default()
    }

    /// One word of `lang`, or its key when no language has it.
    pub fn word(&self, lang: &str, key: &str) -> String {
        self.words(lang).get(key).cloned().unwrap_or_else(|| key.to_owned())
    }
}

/// The tags of an `Accept-Language` header, most wanted first (`q=0` left out).
fn accepted(header: &str) -> Vec<String> {
    let mut tags: Vec<(f32, usize, String)> = header
        .split(',')
        .take(20)
        .enumerate()
        .filter_map(|(i, item)| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            if tag.is_empty() || tag == "*" || tag.len() > 35 {
                return None;
            }
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .unwrap_or(1.0);
            (q > 0.0).then(|| (q, i, tag.to_owned()))
        })
        .collect();
    tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, tag)| tag).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_language_parses_and_has_every_english_word() {
        let english = parse(SHIPPED[0].1).unwrap();
        for (lang, text) in SHIPPED {
            let words = parse(text).unwrap_or_else(|(at, e)| panic!("{lang}.toml at byte {at}: {e}"));
            let missing: Vec<&String> = english.keys().filter(|k| !words.contains_key(*k)).collect();
            assert!(missing.is_empty(), "{lang}.toml lacks {missing:?}");
            let extra: Vec<&String> = words.keys().filter(|k| !english.contains_key(*k)).collect();
            assert!(extra.is_empty(), "{lang}.toml has words English lacks: {extra:?}");
        }
    }

    #[test]
    fn the_page_then_the_subscriber_then_the_browser_choose() {
        let t = Translations::built_in();
        assert_eq!(t.choose(&[Some("it"), Some("de")], Some("fr")), "it");
        assert_eq!(t.choose(&[None, Some("de-AT")], Some("fr")), "de");
        assert_eq!(t.choose(&[None, Some("ja")], Some("pt-BR,es;q=0.8,fr;q=0.9")), "fr");
        assert_eq!(t.choose(&[], Some("it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7")), "it");
        assert_eq!(t.choose(&[], Some("de;q=0, es")), "es");
        assert_eq!(t.choose(&[], Some("ja, *")), "en");
        assert_eq!(t.choose(&[], None), "en");
        assert_eq!(t.word("de", "sign_up"), "Anmelden");
        assert_eq!(t.word("xx", "sign_up"), "Sign up");
    }

    #[test]
    fn an_operator_adds_a_language_and_changes_words_by_adding_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pt.toml"), "sign_up = \"Inscrever-se\"\n").unwrap();
        std::fs::write(dir.path().join("it.toml"), "sign_up = \"Iscrivimi\"\n").unwrap();
        std::fs::write(dir.path().join("nl.toml"), "sign_up = \"Aanmelden\"\nthanks = [1]\n").unwrap();
        std::fs::write(dir.path().join("fr.toml"), "sign_up = \"S'inscrire\n").unwrap();
        let (t, problems) = Translations::load(dir.path());
        assert_eq!(t.word("pt", "sign_up"), "Inscrever-se");
        assert_eq!(t.word("pt", "keep_in_touch"), "Keep in touch", "English where a file lacks a word");
        assert_eq!(t.word("it", "sign_up"), "Iscrivimi");
        assert_eq!(t.word("it", "keep_in_touch"), t.word("it", "keep_in_touch"));
        assert_ne!(t.word("it", "keep_in_touch"), "Keep in touch", "the shipped words stay");
        assert_eq!(t.choose(&[Some("pt-BR")], None), "pt");
        assert_eq!(problems.len(), 2, "{problems:?}");
        let broken = problems.iter().find(|p| p.file.ends_with("fr.toml")).unwrap();
        assert_eq!(broken.line, 1);
        assert!(problems.iter().any(|p| p.file.ends_with("nl.toml") && p.message.contains("thanks")));
        assert_eq!(t.word("fr", "sign_up"), "S'inscrire", "a broken file leaves the shipped words");
    }
}
