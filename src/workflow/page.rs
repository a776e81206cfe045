//! A landing page as declared under `pages:` in a workflow file and checked: what the public
//! side renders and the signup obeys, and the set of pages in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::values::Channel;

/// The template a page uses when it names none.
pub const DEFAULT_TEMPLATE: &str = "pages/default.html";
/// The thank-you template when a page names none.
pub const DEFAULT_THANK_YOU: &str = "pages/thank-you.html";
/// What page templates get.
pub const PAGE_VARIABLES: &[&str] = &[
    "page",
    "form",
    "values",
    "errors",
    "fields",
    "consents",
    "message",
    "business",
    "accent_ink",
    "lang",
    "t",
    "noindex",
    "favicon_url",
];

/// A form field a page can ask for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Email,
    Phone,
    FirstName,
    LastName,
    /// `attributes.NAME`: stored among the subscriber's attributes.
    Attribute(String),
}

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        match name.trim() {
            "email" => Some(Field::Email),
            "phone" => Some(Field::Phone),
            "first_name" => Some(Field::FirstName),
            "last_name" => Some(Field::LastName),
            other => other.strip_prefix("attributes.").map(|key| Field::Attribute(key.to_owned())),
        }
    }

    /// The form field's name (also how it is written in the YAML).
    pub fn name(&self) -> String {
        match self {
            Field::Email => "email".into(),
            Field::Phone => "phone".into(),
            Field::FirstName => "first_name".into(),
            Field::LastName => "last_name".into(),
            Field::Attribute(key) => format!("attributes.{key}"),
        }
    }

    /// The label shown next to the field.
    pub fn label(&self) -> String {
        match self {
            Field::Email => "Email".into(),
            Field::Phone => "Mobile number".into(),
            Field::FirstName => "First name".into(),
            Field::LastName => "Last name".into(),
            Field::Attribute(key) => {
                let words = key.replace(['_', '-', '.'], " ");
                let mut chars = words.chars();
                chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
            }
        }
    }

    /// The input's type and autocomplete hint.
    pub fn input(&self) -> (&'static str, &'static str) {
        match self {
            Field::Email => ("email", "email"),
            Field::Phone => ("tel", "tel"),
            Field::FirstName => ("text", "given-name"),
            Field::LastName => ("text", "family-name"),
            Field::Attribute(_) => ("text", "off"),
        }
    }

    /// The most characters a value may have.
    pub fn max_chars(&self) -> usize {
        match self {
            Field::Email => 254,
            Field::Phone => 32,
            Field::FirstName | Field::LastName => 200,
            Field::Attribute(_) => 500,
        }
    }
}

/// Where a visitor goes after signing up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThankYou {
    /// A template rendered at `/p/{slug}/thanks`.
    Template(String),
    /// Another site's page.
    Redirect(String),
}

/// A checked landing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub slug: String,
    pub title: String,
    pub description: Option<String>,
    /// An http(s) URL of a picture of the offer: shown above the form and in link previews.
    pub image: Option<String>,
    /// What the picture shows, for people who cannot see it.
    pub image_alt: Option<String>,
    /// Short points listed under the description.
    pub bullets: Vec<String>,
    /// The button's words (the language's "Sign up" when not given).
    pub cta: Option<String>,
    /// The page's language (`it`, `de`, …); when not given, the visitor's browser chooses.
    pub locale: Option<String>,
    pub template: String,
    /// The list's slug: the signup joins it.
    pub list: String,
    pub fields: Vec<Field>,
    pub required: Vec<Field>,
    /// The consents the form asks for, one checkbox each.
    pub channels: Vec<Channel>,
    pub double_opt_in: bool,
    /// What the person agrees to; the language's default words when not given.
    pub consent_text: Option<String>,
    pub thank_you: ThankYou,
    /// ISO 3166 country (e.g. `US`) for phone numbers typed without `+`.
    pub default_country: Option<String>,
    /// Origins allowed to post the JSON form from their own pages (CORS); none by default.
    pub cors: Vec<String>,
    /// The event that counts as this page's goal (a purchase, say): the funnel's last stage
    /// counts subscribers who came through the page and then had it recorded. A workflow's
    /// `exit_when` holding counts as a goal too.
    pub goal: Option<String>,
    /// The file the page is declared in (for messages).
    pub file: String,
}

impl Page {
    /// A short fingerprint of the page as declared: recorded with every consent given on it, so
    /// the words and form a person saw can be told apart from later edits.
    pub fn version(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::core::values::sha256_hex(&String::from_utf8_lossy(&json))[..12].to_owned()
    }

    pub fn asks(&self, field: &Field) -> bool {
        self.fields.contains(field)
    }
}

/// The pages in force, by slug; replaced whole when the workflow folder is reloaded.
#[derive(Debug, Default)]
pub struct Pages(std::sync::RwLock<Arc<BTreeMap<String, Arc<Page>>>>);

impl Pages {
    pub fn set(&self, pages: Vec<Page>) {
        let map = pages.into_iter().map(|p| (p.slug.clone(), Arc::new(p))).collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(map);
    }

    pub fn get(&self, slug: &str) -> Option<Arc<Page>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(slug).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Page>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}
