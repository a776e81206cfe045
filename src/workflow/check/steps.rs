//! Checking a workflow's trigger and steps: actions, templates, send windows, SMS length.

use super::*;
use crate::core::timing::{Span, parse_clock, parse_weekday, translate_cron};
use crate::core::values::{Channel, validate_attribute_key, validate_timezone};
use crate::workflow::format::{self};
use crate::workflow::model::{Action, Condition, SendWindow, SmsBody, Step, Trigger, WaitUntil};
use serde_saphyr::Spanned;

impl<'a> Checker<'a> {
    pub(super) fn trigger(&mut self, trigger: &Spanned<format::Trigger>) -> (Trigger, Option<Condition>) {
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

    pub(super) fn send_window(&mut self, window: &Spanned<format::SendWindow>) -> Option<SendWindow> {
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

    pub(super) fn steps(&mut self, steps: &[Spanned<format::Step>]) -> Vec<Step> {
        steps.iter().filter_map(|s| self.step(s)).collect()
    }

    pub(super) fn step(&mut self, spanned: &Spanned<format::Step>) -> Option<Step> {
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
            ("ask_channel", s.ask_channel.is_some()),
            ("message", s.message.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match actions.len() {
            1 => {}
            0 => {
                self.report(at(spanned), format!("step '{id}' does nothing: give it one action (email, sms, wait, wait_until, wait_for, if, tag, untag, set, join, leave, webhook, ask_channel, message or exit)"));
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

    pub(super) fn action(&mut self, spanned: &Spanned<format::Step>, id: &str) -> Option<Action> {
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
        if let Some(message) = &s.message {
            return self.message_step(message);
        }
        if let Some(what) = &s.ask_channel {
            return match what.value.trim() {
                "sms" | "phone" | "whatsapp" => Some(Action::AskChannel(Channel::Sms)),
                "email" => Some(Action::AskChannel(Channel::Email)),
                other => {
                    self.report(at(what), format!("ask_channel: '{other}' is not sms (a mobile number) or email"));
                    None
                }
            };
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

    pub(super) fn template(&mut self, name: &Spanned<String>) -> String {
        let template = name.value.trim().to_owned();
        if let Err(problems) = self.context.templates.check_file(&template) {
            for problem in problems {
                match problem {
                    crate::workflow::templates::Problem::At { file, line, column, message } => {
                        self.diagnostics.push(Diagnostic { file, line, column, message })
                    }
                    crate::workflow::templates::Problem::Here(message) => self.report(at(name), message),
                }
            }
        }
        template
    }

    /// An SMS (rendered for a sample subscriber) over the segment limit is refused.
    /// A `message:` step: its channels (each once), and what each needs (a subject and template
    /// for email, a text for SMS and WhatsApp).
    fn message_step(&mut self, spanned: &Spanned<format::MessageStep>) -> Option<Action> {
        let m = &spanned.value;
        let mut channels = Vec::new();
        for name in &m.channels.value {
            match name.value.trim().parse::<Channel>() {
                Ok(channel) if channels.contains(&channel) => {
                    self.report(at(name), format!("'{channel}' is listed twice"));
                }
                Ok(channel) => channels.push(channel),
                Err(_) => self.report(at(name), format!("'{}' is not email, sms or whatsapp", name.value.trim())),
            }
        }
        if m.channels.value.is_empty() {
            self.report(at(&m.channels), "name at least one channel: email, sms, whatsapp");
        }
        let reach_first = match m.reach.as_ref().map(|r| r.value.trim()) {
            None | Some("first") => true,
            Some("all") => false,
            Some(other) => {
                if let Some(reach) = &m.reach {
                    self.report(at(reach), format!("reach: '{other}' is not first or all"));
                }
                true
            }
        };
        let email = channels.contains(&Channel::Email);
        let texts = channels.contains(&Channel::Sms) || channels.contains(&Channel::Whatsapp);
        let (mut subject, mut template, mut text) = (None, None, None);
        match (&m.subject, &m.template, email) {
            (Some(s), Some(t), true) => {
                let value = s.value.trim().to_owned();
                if value.is_empty() || value.chars().count() > 200 {
                    self.report(at(s), "a subject has 1 to 200 characters");
                }
                for problem in self.context.templates.check_inline(&value) {
                    self.report(at(s), format!("subject: {problem}"));
                }
                subject = Some(value);
                template = Some(self.template(t));
            }
            (_, _, true) => self.report(at(spanned), "email needs a subject and a template"),
            (Some(s), _, false) => self.report(at(s), "subject is for email, which is not among the channels"),
            (None, Some(t), false) => self.report(at(t), "template is for email, which is not among the channels"),
            (None, None, false) => {}
        }
        match (&m.text, texts) {
            (Some(t), true) => {
                let problems = self.context.templates.check_inline(&t.value);
                for problem in &problems {
                    self.report(at(t), format!("text: {problem}"));
                }
                let rendered = self.context.templates.tera().render_str(&t.value, &sample_context(), false);
                if let (true, Ok(rendered)) = (problems.is_empty(), rendered) {
                    self.check_segments(at(t), rendered.trim());
                }
                text = Some(t.value.clone());
            }
            (None, true) => self.report(at(spanned), "sms and whatsapp need a text"),
            (Some(t), false) => {
                self.report(at(t), "text is for sms and whatsapp, neither of which is among the channels")
            }
            (None, false) => {}
        }
        if let Some(t) = &m.whatsapp_template
            && !channels.contains(&Channel::Whatsapp)
        {
            self.report(at(t), "whatsapp_template is for whatsapp, which is not among the channels");
        }
        Some(Action::Message(crate::workflow::model::MessageAction {
            channels,
            reach_first,
            subject,
            template,
            text,
            whatsapp_template: m.whatsapp_template.as_ref().map(|t| t.value.trim().to_owned()),
            tracking: m.tracking,
        }))
    }

    pub(super) fn check_segments(&mut self, place: At, text: &str) {
        let segments = crate::core::sms_text::sms_segments(text);
        let limit = self.context.sms_max_segments;
        if segments > limit {
            let alphabet = if crate::core::sms_text::is_gsm7(text) {
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
}
