//! Checking conditions and the words they are made of: tags, names, durations.

use super::*;
use crate::core::text::closest;
use crate::core::timing::Span;
use crate::core::values::{Channel, normalize_tag, validate_attribute_key};
use crate::workflow::format::{self};
use crate::workflow::model::{AttributeTest, Condition};
use serde_saphyr::Spanned;

impl<'a> Checker<'a> {
    pub(super) fn tag(&mut self, tag: &Spanned<String>) -> String {
        self.ok(at(tag), normalize_tag(&tag.value)).unwrap_or_default()
    }

    pub(super) fn name(&mut self, what: &str, value: &Spanned<String>) -> String {
        let text = value.value.trim();
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            self.report(at(value), format!("'{text}' is not {what}: use 1 to 64 letters, digits, '_', '-' or '.'"));
        }
        text.to_owned()
    }

    pub(super) fn duration(&mut self, value: &Spanned<String>) -> Option<Span> {
        self.ok(at(value), Span::parse(&value.value, false)).filter(|d| d.seconds() > 0).or_else(|| {
            if Span::parse(&value.value, false).is_ok() {
                self.report(at(value), "a duration must be longer than zero");
            }
            None
        })
    }

    /// `anywhere`: the condition is checked before any step (exit_when), so it may name any
    /// email step; otherwise only email steps above it.
    pub(super) fn condition(&mut self, spanned: &Spanned<format::Condition>, anywhere: bool) -> Condition {
        match &spanned.value {
            format::Condition::Opened(step) | format::Condition::Clicked(step) => {
                let name = step.value.step.trim().to_owned();
                let known = if anywhere { &self.all_emails } else { &self.emails_so_far };
                if !known.contains(&name) {
                    let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
                    let hint =
                        closest(&name, &candidates).map(|b| format!(" (did you mean '{b}'?)")).unwrap_or_default();
                    let place =
                        if anywhere { "an email step of this workflow" } else { "an email step above this one" };
                    self.report(at(step), format!("'{name}' is not {place}{hint}"));
                }
                let engaged =
                    crate::workflow::model::Engaged { step: name, include_machine: step.value.include_machine };
                match &spanned.value {
                    format::Condition::Opened(_) => Condition::Opened(engaged),
                    _ => Condition::Clicked(engaged),
                }
            }
            format::Condition::Tag(tag) => Condition::Tag(self.tag(tag)),
            format::Condition::List(list) => Condition::List(self.list(list)),
            format::Condition::Has(what) => match what.value.trim() {
                "email" => Condition::Has(Channel::Email),
                "phone" => Condition::Has(Channel::Sms),
                "whatsapp" => Condition::Has(Channel::Whatsapp),
                other => {
                    self.report(at(what), format!("has: '{other}' must be email, phone or whatsapp"));
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
