//! SMS: an outbox message goes to the first provider that takes it.
//!
//! Providers, tried in order like SMTP relays (a failing one is skipped for its cool-down):
//! - **Twilio-compatible**: a form POST to `{base}/2010-04-01/Accounts/{sid}/Messages.json` with
//!   Basic auth, `To`, `From` (or `MessagingServiceSid` when the sender starts with `MG`), `Body`
//!   and `StatusCallback`; the answer's `sid` is kept to match the status callback.
//! - **Generic HTTP JSON**: a POST of `{"id", "to", "from", "body", "status_callback"}` with a
//!   bearer token; any 2xx takes it (its JSON `id`, if any, is kept).
//!
//! Without providers, the `file` transport writes `{data_dir}/sms/{outbox id}.json`.
//!
//! Marketing SMS (a workflow's or a broadcast's) only goes out within the sending hours (default
//! 08:00–20:00) in the subscriber's time zone; one due outside is held until they open. Replies to
//! keywords (STOP, HELP, …) are not marketing and go at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, NaiveTime, Utc, Weekday};
use hmac::Mac;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::{Value, json};

use super::{Answer, Breaker, Carrier, Outcome, Try, Worker};
use crate::audience::records::{self, kind};
use crate::audience::subscribers::mark_bounced;
use crate::core::clock::SharedClock;
use crate::core::error::{Reason, reason};
use crate::core::timing::window_opens_at;
use crate::core::values::Channel;
use crate::core::values::{OutboxChannel, OutboxStatus};
use crate::store::Db;
use crate::store::entities::{outbox, subscriber};

/// Twilio error codes that say the number cannot receive SMS at all (a hard bounce), or (630xx)
/// has no WhatsApp account.
const UNREACHABLE_NUMBER_CODES: &[i64] =
    &[21211, 21214, 21217, 21407, 21421, 21612, 21614, 30003, 30005, 30006, 63003, 63024];
const DEFAULT_COOLDOWN_SECONDS: i64 = 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// One SMS provider.
pub struct Provider {
    /// For the timeline and logs (never the credentials).
    pub name: String,
    kind: Kind,
    breaker: Breaker,
}

enum Kind {
    Twilio { messages_url: url::Url, account_sid: String, auth_token: String, from: String },
    Http { url: url::Url, token: Option<String>, from: String },
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Provider {
    /// A Twilio-compatible provider at `base` (`https://api.twilio.com` for Twilio itself).
    pub fn twilio(base: &url::Url, account_sid: &str, auth_token: &str, from: &str) -> Result<Self, Reason> {
        let path = format!("2010-04-01/Accounts/{account_sid}/Messages.json");
        let messages_url = base.join(&path).map_err(|e| format!("'{base}': {e}"))?;
        Ok(Self {
            name: format!("twilio:{}", base.host_str().unwrap_or_default()),
            kind: Kind::Twilio {
                messages_url,
                account_sid: account_sid.to_owned(),
                auth_token: auth_token.to_owned(),
                from: from.to_owned(),
            },
            breaker: Breaker::new(chrono::Duration::seconds(DEFAULT_COOLDOWN_SECONDS)),
        })
    }

    /// A generic HTTP JSON provider.
    pub fn http(url: &url::Url, token: Option<&str>, from: &str) -> Self {
        Self {
            name: format!("http:{}", url.host_str().unwrap_or_default()),
            kind: Kind::Http { url: url.clone(), token: token.map(str::to_owned), from: from.to_owned() },
            breaker: Breaker::new(chrono::Duration::seconds(DEFAULT_COOLDOWN_SECONDS)),
        }
    }

    /// The auth token a Twilio-compatible provider signs its webhooks with.
    pub fn twilio_auth_token(&self) -> Option<&str> {
        match &self.kind {
            Kind::Twilio { auth_token, .. } => Some(auth_token),
            Kind::Http { .. } => None,
        }
    }
}

/// Where SMS goes.
#[derive(Debug)]
pub enum SmsTransport {
    /// One JSON file per message in this folder.
    File(PathBuf),
    /// Providers in order of preference.
    Providers(Vec<Arc<Provider>>),
}

/// The hours marketing SMS may arrive, in the subscriber's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendingHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl SendingHours {
    /// `HH:MM-HH:MM`, the start before the end.
    pub fn parse(text: &str) -> Result<Self, Reason> {
        let problem = || format!("'{text}' is not a range of hours like 08:00-20:00");
        let (start, end) = text.split_once('-').ok_or_else(problem)?;
        let start = NaiveTime::parse_from_str(start.trim(), "%H:%M").map_err(|_| problem())?;
        let end = NaiveTime::parse_from_str(end.trim(), "%H:%M").map_err(|_| problem())?;
        if start >= end {
            return Err(reason!("'{text}': the hours must start before they end"));
        }
        Ok(Self { start, end })
    }

    /// When a message due `now` for someone in `tz` may go: `None` for now.
    pub fn opens_at(&self, now: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        const EVERY_DAY: [Weekday; 7] =
            [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];
        window_opens_at(now, tz, &EVERY_DAY, self.start, self.end)
    }
}

impl Default for SendingHours {
    fn default() -> Self {
        Self {
            start: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            end: NaiveTime::from_hms_opt(20, 0, 0).unwrap_or_default(),
        }
    }
}

/// Sends SMS (or WhatsApp) messages from the outbox.
pub struct Texter {
    /// `Sms`, or `Whatsapp`: the same providers' API with `whatsapp:` addresses.
    channel: OutboxChannel,
    db: Db,
    client: reqwest::Client,
    transport: SmsTransport,
    hours: SendingHours,
    /// The zone of subscribers without one of their own.
    default_zone: chrono_tz::Tz,
    /// Where providers report delivery (`{base_url}webhooks/sms/status`).
    status_callback: String,
}

impl std::fmt::Debug for Texter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Texter").field("transport", &self.transport).field("hours", &self.hours).finish()
    }
}

/// The SMS worker.
pub type SmsSender = Worker<Texter>;

/// WhatsApp through Twilio-compatible providers: as SMS, to `whatsapp:` addresses, in an
/// approved template when the message names one (Twilio's `ContentSid`, the text as its
/// variable `1`), with delivery reports and STOP as for SMS.
pub struct WhatsApp(Texter);

/// The WhatsApp worker.
pub type WhatsAppSender = Worker<WhatsApp>;

impl WhatsAppSender {
    pub fn new(db: Db, clock: SharedClock, setup: SmsSetup) -> Self {
        Worker::with(db.clone(), clock, WhatsApp(Texter::new(db, OutboxChannel::Whatsapp, setup)))
    }
}

impl Carrier for WhatsApp {
    const CHANNEL: OutboxChannel = OutboxChannel::Whatsapp;

    fn paused_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.paused_until(now)
    }

    fn recoveries(&self) -> u64 {
        self.0.recoveries()
    }

    async fn attempt(
        &self,
        message: &outbox::Model,
        body: &super::Body,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> Answer {
        self.0.attempt(message, body, now, tries).await
    }
}

/// What the SMS worker is given.
#[derive(Debug)]
pub struct SmsSetup {
    pub transport: SmsTransport,
    pub hours: SendingHours,
    pub default_zone: chrono_tz::Tz,
    pub base_url: url::Url,
}

/// The most of a provider's answer that is read (its JSON is a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A response's body when it is at most `limit` bytes; `None` (and the rest left unread) when it
/// is longer or breaks off.
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= limit => body.extend_from_slice(&chunk),
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) => return Some(body),
        }
    }
}

impl SmsSender {
    pub fn new(db: Db, clock: SharedClock, setup: SmsSetup) -> Self {
        Worker::with(db.clone(), clock, Texter::new(db, OutboxChannel::Sms, setup))
    }
}

impl Texter {
    fn new(db: Db, channel: OutboxChannel, setup: SmsSetup) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ownlist/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let status_callback = setup.base_url.join("webhooks/sms/status").map(|u| u.to_string()).unwrap_or_default();
        Texter {
            channel,
            db,
            client,
            transport: setup.transport,
            hours: setup.hours,
            default_zone: setup.default_zone,
            status_callback,
        }
    }
}

impl Carrier for Texter {
    const CHANNEL: OutboxChannel = OutboxChannel::Sms;

    fn paused_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.transport {
            SmsTransport::File(_) => None,
            SmsTransport::Providers(providers) => super::all_closed_until(providers.iter().map(|p| &p.breaker), now),
        }
    }

    fn recoveries(&self) -> u64 {
        match &self.transport {
            SmsTransport::File(_) => 0,
            SmsTransport::Providers(providers) => providers.iter().map(|p| p.breaker.recoveries()).sum(),
        }
    }

    async fn attempt(
        &self,
        message: &outbox::Model,
        body: &super::Body,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> Answer {
        let marketing = message.workflow_id.is_some() || message.broadcast_id.is_some();
        if marketing {
            let zone = match subscriber::Entity::find_by_id(message.subscriber_id).one(self.db.conn()).await {
                Ok(found) => found.and_then(|s| s.timezone).and_then(|z| z.parse().ok()).unwrap_or(self.default_zone),
                Err(e) => return Answer::Retry(format!("cannot read the subscriber's time zone: {e}")),
            };
            if let Some(opens) = self.hours.opens_at(now, zone) {
                return Answer::Hold(opens);
            }
        }
        match &self.transport {
            SmsTransport::File(dir) => {
                let mut record = json!({
                    "id": message.id, "to": message.recipient, "body": body.text(), "segments": message.segments,
                });
                if self.channel == OutboxChannel::Whatsapp {
                    record["channel"] = json!("whatsapp");
                    record["template"] = json!(message.subject);
                }
                super::to_file(dir, message.id, "json", record.to_string().as_bytes(), tries).await
            }
            SmsTransport::Providers(providers) => self.send_through(providers, message, body.text(), now, tries).await,
        }
    }
}

/// What one provider said.
enum Reply {
    Took(Value),
    /// About the message or number: no other provider would do better.
    Refused {
        reason: String,
        unreachable: bool,
    },
    /// The provider is failing (network, 429, 5xx): try the next.
    Failing(String),
}

impl Texter {
    async fn send_through(
        &self,
        providers: &[Arc<Provider>],
        message: &outbox::Model,
        text: &str,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> Answer {
        let (mut failures, mut skipped) = (Vec::new(), super::Skipped::default());
        for provider in providers {
            if let super::Admit::Skip(until) = provider.breaker.admit(now) {
                skipped.until(until);
                continue;
            }
            let started = std::time::Instant::now();
            let reply = self.send_one(provider, message, text).await;
            let outcome = match &reply {
                Reply::Took(_) => Outcome::Sent,
                Reply::Refused { .. } => Outcome::Failed,
                Reply::Failing(_) => Outcome::Retried,
            };
            tries.push(super::tried(self.channel, &provider.name, outcome, started.elapsed()));
            match reply {
                Reply::Took(detail) => {
                    provider.breaker.worked(&provider.name);
                    return Answer::Delivered(detail);
                }
                Reply::Refused { reason, unreachable } => {
                    provider.breaker.worked(&provider.name);
                    let reason = format!("{}: {reason}", provider.name);
                    return if unreachable { Answer::Bounce(reason) } else { Answer::Fail(reason) };
                }
                Reply::Failing(reason) => {
                    provider.breaker.failed(&provider.name, now);
                    failures.push(format!("{}: {reason}", provider.name));
                }
            }
        }
        skipped.answer(failures, "no provider is configured for this channel")
    }

    async fn send_one(&self, provider: &Provider, message: &outbox::Model, text: &str) -> Reply {
        let request = match &provider.kind {
            Kind::Twilio { messages_url, account_sid, auth_token, from } => {
                let whatsapp = self.channel == OutboxChannel::Whatsapp;
                let address = |number: &str| {
                    if whatsapp && !number.starts_with("whatsapp:") {
                        format!("whatsapp:{number}")
                    } else {
                        number.to_owned()
                    }
                };
                let (sender, from) = if from.starts_with("MG") {
                    ("MessagingServiceSid", from.clone())
                } else {
                    ("From", address(from))
                };
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("To", &address(&message.recipient)).append_pair(sender, &from);
                match message.subject.as_deref().filter(|_| whatsapp) {
                    // An approved template, the text as its variable.
                    Some(template) => form
                        .append_pair("ContentSid", template)
                        .append_pair("ContentVariables", &json!({"1": text}).to_string()),
                    None => form.append_pair("Body", text),
                };
                let form = form.append_pair("StatusCallback", &self.status_callback).finish();
                self.client
                    .post(messages_url.clone())
                    .basic_auth(account_sid, Some(auth_token))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
            }
            Kind::Http { url, token, from } => {
                let mut body = json!({
                    "id": message.id, "to": message.recipient, "from": from, "body": text,
                    "status_callback": self.status_callback,
                });
                if self.channel == OutboxChannel::Whatsapp {
                    body["channel"] = json!("whatsapp");
                    body["template"] = json!(message.subject);
                }
                let request =
                    self.client.post(url.clone()).json(&body).header("idempotency-key", message.id.to_string());
                match token {
                    Some(token) => request.bearer_auth(token),
                    None => request,
                }
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Reply::Failing(e.without_url().to_string()),
        };
        let status = response.status().as_u16();
        let body: Value = match read_at_most(response, MAX_ANSWER_BYTES).await {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let twilio = matches!(provider.kind, Kind::Twilio { .. });
        match status {
            200..=299 => {
                let reference = body.get(if twilio { "sid" } else { "id" }).and_then(Value::as_str);
                Reply::Took(json!({"provider": provider.name, "provider_ref": reference, "status": status}))
            }
            408 | 429 | 500.. => Reply::Failing(format!("HTTP {status}")),
            _ => {
                let code = body.get("code").and_then(Value::as_i64);
                let text =
                    body.get("message").or_else(|| body.get("error")).and_then(Value::as_str).unwrap_or_default();
                let word = if twilio { None } else { body.get("error").and_then(Value::as_str) };
                let unreachable = unreachable_number(code, word);
                let code = code.map(|c| format!(" (code {c})")).unwrap_or_default();
                Reply::Refused { reason: format!("HTTP {status}{code}: {text}"), unreachable }
            }
        }
    }
}

/// Whether a provider's refusal or report says the number cannot get SMS (a hard bounce): a
/// Twilio error code for that, or the generic provider's `invalid_number`.
fn unreachable_number(code: Option<i64>, error: Option<&str>) -> bool {
    code.is_some_and(|c| UNREACHABLE_NUMBER_CODES.contains(&c)) || error == Some("invalid_number")
}

/// A provider's report on a message it took.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The provider's id for the message.
    pub provider_ref: String,
    /// `delivered`, `undelivered` or `failed` matter; others (`queued`, `sent`, …) are progress.
    pub status: String,
    /// Twilio's error code, when it failed.
    pub error_code: Option<i64>,
    /// The generic provider's error word (`invalid_number` is a hard bounce).
    pub error: Option<String>,
}

/// Records a delivery report: delivered into the timeline; undelivered or failed fails the
/// message (already counted as sent when the provider took it), and a number that cannot get SMS
/// marks the channel bounced. Returns false for a message ownlist does not know.
pub async fn record_status(db: &Db, now: DateTime<Utc>, report: &StatusReport) -> crate::core::error::Result<bool> {
    let txn = db.begin_write().await?;
    let mut found = None;
    // A literal, not a parameter: it is what lets the partial indexes on SMS and WhatsApp
    // messages' provider references serve the lookup (migrations m9, m14).
    for channel in ["channel = 'sms'", "channel = 'whatsapp'"] {
        found = outbox::Entity::find()
            .filter(outbox::Column::ProviderRef.eq(&report.provider_ref))
            .filter(sea_orm::sea_query::Expr::cust(channel))
            .one(&txn)
            .await?;
        if found.is_some() {
            break;
        }
    }
    let Some(message) = found else { return Ok(false) };
    let channel = message.channel.subscriber_channel().unwrap_or(Channel::Sms);
    let about = json!({
        "message": message.id, "workflow": message.workflow_id, "step": message.step_id,
        "broadcast": message.broadcast_id, "status": report.status, "error_code": report.error_code,
    });
    let subscriber = message.subscriber_id;
    match report.status.as_str() {
        "delivered" => {
            let delivered = if channel == Channel::Whatsapp { "whatsapp_delivered" } else { kind::SMS_DELIVERED };
            records::event(subscriber, delivered, about, now).insert(&txn).await?;
        }
        "undelivered" | "failed" if message.status != OutboxStatus::Failed => {
            let unreachable = unreachable_number(report.error_code, report.error.as_deref());
            let reason = format!(
                "the provider reports the message {}{}",
                report.status,
                report.error_code.map(|c| format!(" (error {c})")).unwrap_or_default()
            );
            let mut active = message.clone().into_active_model();
            active.status = Set(OutboxStatus::Failed);
            active.last_error = Set(Some(reason.clone()));
            active.updated_at = Set(now);
            active.update(&txn).await?;
            if unreachable {
                mark_bounced(&txn, subscriber, channel, &reason, now).await?;
            }
            // `reach: first`: the next channel goes instead (a no-op when the bounce did it).
            crate::audience::reach::fallback::fall_through(&txn, &message, &reason, now).await?;
            records::event(subscriber, &format!("{channel}_failed"), about, now).insert(&txn).await?;
        }
        _ => {}
    }
    txn.commit().await?;
    Ok(true)
}

/// The `X-Twilio-Signature` of a webhook request: base64 of HMAC-SHA1 (keyed with the auth
/// token) over the full URL followed by each form field's name and value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, fields: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = fields.iter().collect();
    sorted.sort();
    let mut mac = crate::core::hmac::hmac_sha1(auth_token.as_bytes());
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twilio_signature_matches_twilios_documented_example() {
        // The example in Twilio's webhook security documentation.
        let fields: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let signature = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &fields);
        assert_eq!(signature, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn sending_hours_parse_and_hold_until_they_open() {
        assert!(SendingHours::parse("20:00-08:00").is_err());
        assert!(SendingHours::parse("8-20").is_err());
        let hours = SendingHours::parse("08:00-20:00").unwrap();
        assert_eq!(hours, SendingHours::default());
        let rome: chrono_tz::Tz = "Europe/Rome".parse().unwrap();
        let late = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 21, 30, 0).unwrap(); // 22:30 in Rome
        let opens = hours.opens_at(late, rome).unwrap();
        assert_eq!(opens, chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 3, 7, 0, 0).unwrap());
        let noon = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 11, 0, 0).unwrap();
        assert_eq!(hours.opens_at(noon, rome), None);
    }
}
