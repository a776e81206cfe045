//! How the public side looks and speaks: every page a person meets (landing, thank-you,
//! confirmation, unsubscribe, preferences, not found, …) is a template under `templates/pages/`
//! sharing `pages/_layout.html`, rendered in the visitor's language with the business's name,
//! logo, colour and privacy link. The shipped templates are built in: an operator's template that
//! is missing or broken falls back to the shipped one, so a mistake never takes a page down.

use std::sync::{Arc, LazyLock};

use axum::extract::FromRef;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::config::Config;
use crate::core::i18n::Translations;
use crate::web::AppState;
use crate::workflow::catalog::Catalog;

/// The shipped page templates, by name.
const SHIPPED: &[(&str, &str)] = &[
    ("pages/_layout.html", include_str!("../../../templates/pages/_layout.html")),
    ("pages/_style.html", include_str!("../../../templates/pages/_style.html")),
    ("pages/default.html", include_str!("../../../templates/pages/default.html")),
    ("pages/thank-you.html", include_str!("../../../templates/pages/thank-you.html")),
    ("pages/confirmed.html", include_str!("../../../templates/pages/confirmed.html")),
    ("pages/already-confirmed.html", include_str!("../../../templates/pages/already-confirmed.html")),
    ("pages/expired.html", include_str!("../../../templates/pages/expired.html")),
    ("pages/not-found.html", include_str!("../../../templates/pages/not-found.html")),
    ("pages/notice.html", include_str!("../../../templates/pages/notice.html")),
    ("pages/unsubscribe.html", include_str!("../../../templates/pages/unsubscribe.html")),
    ("pages/unsubscribed.html", include_str!("../../../templates/pages/unsubscribed.html")),
    ("pages/preferences.html", include_str!("../../../templates/pages/preferences.html")),
    ("pages/add-channel.html", include_str!("../../../templates/pages/add-channel.html")),
];

/// The shipped page templates, parsed once: the fallback of every page.
static BUILT_IN: LazyLock<Option<tera::Tera>> = LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    let added = tera.add_raw_templates(SHIPPED.iter().copied());
    added.map(|()| tera).map_err(|e| tracing::error!(error = %e, "the built-in page templates do not parse")).ok()
});

/// Whether a page is about one person (confirmation, unsubscribe, preferences, …): never indexed,
/// never framed, never cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A landing page or its thank-you page: open to search engines and previews.
    Public,
    Personal,
}

/// What rendering a public page needs: the templates and words in force, and the business.
#[derive(Clone)]
pub struct Face {
    catalog: Arc<Catalog>,
    config: Arc<Config>,
}

impl FromRef<AppState> for Face {
    fn from_ref(state: &AppState) -> Self {
        Self { catalog: state.catalog.clone(), config: state.config.clone() }
    }
}

impl Face {
    /// The words of every language in force.
    pub fn translations(&self) -> Arc<Translations> {
        self.catalog.templates().translations()
    }

    /// The language of a page: the first of `preferred` that we have words for, else the
    /// browser's `Accept-Language`, else English.
    pub fn language(&self, preferred: &[Option<&str>], headers: &HeaderMap) -> String {
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
        self.translations().choose(preferred, accept)
    }

    /// One word of `lang`.
    pub fn word(&self, lang: &str, key: &str) -> String {
        self.translations().word(lang, key)
    }

    /// Where the icon of every page is: the logo, or a letter in the business's colour.
    fn favicon_url(&self) -> String {
        self.config.business.logo_url.clone().unwrap_or_else(|| "/favicon.svg".to_owned())
    }

    /// Renders the template `name` in `lang` (its fallback: the shipped `fallback`), with what
    /// every page gets added to `context`: `business`, `accent_ink`, `lang`, `t` (the words),
    /// `noindex`, `favicon_url`.
    pub fn render(
        &self,
        lang: &str,
        name: &str,
        fallback: &str,
        mut context: tera::Context,
        status: StatusCode,
        kind: Kind,
    ) -> Response {
        let business = &self.config.business;
        context.insert("business", business);
        context.insert("accent_ink", business.accent_ink());
        context.insert("lang", lang);
        let templates = self.catalog.templates();
        context.insert_value("t", templates.words_value(lang));
        context.insert("noindex", &(kind == Kind::Personal));
        context.insert("favicon_url", &self.favicon_url());
        let rendered = templates.tera().render(name, &context).or_else(|e| {
            tracing::error!(template = name, error = %e, "a page template failed to render; the built-in one is shown");
            BUILT_IN.as_ref().map_or(Err(e), |built_in| built_in.render(fallback, &context))
        });
        match rendered {
            Ok(body) => respond(status, kind, body),
            Err(e) => {
                tracing::error!(template = name, error = %e, "a page template failed to render");
                last_resort()
            }
        }
    }

    /// A shipped page by its name under `pages/` (an operator's copy in `templates/pages/` first).
    pub fn page(&self, lang: &str, name: &str, context: tera::Context, status: StatusCode, kind: Kind) -> Response {
        let name = format!("pages/{name}.html");
        self.render(lang, &name, &name, context, status, kind)
    }

    /// A short notice (`pages/notice.html`) whose title and text are the words `title` and `text`.
    pub fn notice(&self, lang: &str, status: StatusCode, title: &str, text: &str) -> Response {
        let words = self.translations().words(lang);
        let word = |key: &str| words.get(key).cloned().unwrap_or_default();
        let context = json!({"notice": {"title": word(title), "text": word(text)}});
        self.page(lang, "notice", context_of(context), status, Kind::Personal)
    }

    /// "Please try again": something failed on our side and nothing was changed.
    pub fn try_again(&self, lang: &str) -> Response {
        let mut response = self.notice(lang, StatusCode::SERVICE_UNAVAILABLE, "try_again_title", "try_again_text");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        response
    }

    /// 404: no page here (`what`: `page`), or a link that is not ours (`link`).
    pub fn not_found(&self, lang: &str, what: &str) -> Response {
        self.page(lang, "not-found", context_of(json!({"what": what})), StatusCode::NOT_FOUND, Kind::Personal)
    }

    /// 404 for a landing page that does not exist, in the browser's language.
    pub fn no_page(&self, headers: &HeaderMap) -> Response {
        self.not_found(&self.language(&[], headers), "page")
    }

    /// 410: a link past its time; `sign_up_url` when signing up again gets a new one.
    pub fn expired(&self, lang: &str, sign_up_url: Option<&str>) -> Response {
        let context = context_of(json!({"sign_up_url": sign_up_url}));
        self.page(lang, "expired", context, StatusCode::GONE, Kind::Personal)
    }

    /// The page icon when no logo is set: the business's initial on its colour (SVG).
    pub fn favicon(&self) -> Response {
        let business = &self.config.business;
        let initial: String = business
            .name
            .chars()
            .find(|c| c.is_alphanumeric())
            .map(|c| c.to_uppercase().collect())
            .unwrap_or_else(|| "•".to_owned());
        let initial = initial.replace('&', "&amp;").replace('<', "&lt;");
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\"><rect width=\"64\" height=\"64\" rx=\"14\" fill=\"{}\"/>\
             <text x=\"32\" y=\"44\" font-family=\"system-ui,sans-serif\" font-size=\"36\" font-weight=\"700\" text-anchor=\"middle\" fill=\"{}\">{initial}</text></svg>",
            business.accent_color,
            business.accent_ink()
        );
        ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], svg)
            .into_response()
    }
}

/// A template context from JSON.
pub fn context_of(value: serde_json::Value) -> tera::Context {
    tera::Context::from_serialize(&value).unwrap_or_default()
}

fn respond(status: StatusCode, kind: Kind, body: String) -> Response {
    let mut response = (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response();
    if kind == Kind::Personal {
        // Their buttons change consent: never framed (no clickjacking), never indexed.
        let h = response.headers_mut();
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
        h.insert(header::HeaderName::from_static("x-robots-tag"), HeaderValue::from_static("noindex"));
    }
    response
}

/// When not even the shipped template renders: a plain page of its own.
fn last_resort() -> Response {
    let body = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
                content=\"width=device-width,initial-scale=1\"><title>Please try again</title></head><body><main>\
                <h1>Please try again</h1><p>This page cannot be shown just now. Please try again in a minute.</p>\
                </main></body></html>";
    respond(StatusCode::SERVICE_UNAVAILABLE, Kind::Personal, body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_page_parses_together() {
        assert!(BUILT_IN.is_some());
    }
}
