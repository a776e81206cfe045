//! Checking what a file declares besides workflows: landing pages and lists.

use super::*;
use crate::audience::lists::Declared;
use crate::core::text::closest;
use crate::core::values::{Channel, normalize_text, validate_attribute_key, validate_slug};
use crate::workflow::format::{self};
use crate::workflow::page::{self as pages, Field, Page, ThankYou};
use serde_saphyr::Spanned;

impl<'a> Checker<'a> {
    pub(super) fn pages(&mut self, raw: &[Spanned<format::Page>]) -> Vec<Page> {
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
                            Err(_) => {
                                self.report(at(name), format!("'{}' is not email, sms or whatsapp", name.value.trim()))
                            }
                        }
                    }
                }
            }
            let consent_text = match &p.consent_text {
                Some(text) if text.value.trim().is_empty() => {
                    self.report(at(text), "consent_text is empty: say what the person agrees to");
                    None
                }
                Some(text) if text.value.chars().count() > 2000 => {
                    self.report(at(text), "consent_text is longer than 2,000 characters");
                    None
                }
                Some(text) => Some(text.value.trim().to_owned()),
                None => None,
            };
            let image = p.image.as_ref().and_then(|image| {
                let url = image.value.trim();
                let ok =
                    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
                if ok {
                    Some(url.to_owned())
                } else {
                    self.report(at(image), format!("image '{url}' is not an http(s) URL of a picture"));
                    None
                }
            });
            let image_alt = p.image_alt.as_ref().map(|alt| self.short_text("image_alt", alt, 300));
            if image_alt.is_some() && image.is_none() && p.image.is_none() {
                let alt = p.image_alt.as_ref().map_or(at(&p.slug), at);
                self.report(alt, "image_alt describes the page's image: set image too");
            }
            let bullets: Vec<String> =
                p.bullets.iter().flatten().map(|b| self.short_text("a bullet", b, 300)).collect();
            if bullets.len() > 10 {
                self.report(at(&p.slug), "a page lists at most 10 bullets");
            }
            let cta = p.cta.as_ref().map(|cta| self.short_text("cta", cta, 60));
            let locale = p.locale.as_ref().and_then(|tag| {
                let translations = self.context.templates.translations();
                match translations.find(&tag.value) {
                    Some(lang) => Some(lang.to_owned()),
                    None => {
                        let known = translations.languages().join(", ");
                        self.report(
                            at(tag),
                            format!(
                                "no words in '{}': the languages are {known} (add templates/locales/{}.toml)",
                                tag.value.trim(),
                                tag.value.trim()
                            ),
                        );
                        None
                    }
                }
            });
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
                image,
                image_alt,
                bullets,
                cta,
                locale,
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

    pub(super) fn lists(&mut self, raw: &[Spanned<format::List>]) -> Vec<DeclaredList> {
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

    pub(super) fn field(&mut self, name: &Spanned<String>) -> Option<Field> {
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

    /// A short text of a page (a bullet, the button's words): trimmed, 1 to `max` characters.
    fn short_text(&mut self, what: &str, text: &Spanned<String>, max: usize) -> String {
        let trimmed = text.value.trim();
        if trimmed.is_empty() || trimmed.chars().count() > max {
            self.report(at(text), format!("{what} is 1 to {max} characters"));
        }
        trimmed.to_owned()
    }

    pub(super) fn page_template(&mut self, name: &str, where_: At) {
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

    pub(super) fn list(&mut self, slug: &Spanned<String>) -> String {
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
}
