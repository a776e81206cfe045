//! Email: an outbox message becomes a MIME message (lettre) and goes out through a transport.
//!
//! Every message carries `Message-ID` (from the outbox id, so a retry is recognisably the same
//! message), `Date`, `List-Unsubscribe` (a signed one-click HTTPS link) and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, `List-Id` for list mail; with an HTML body it is
//! multipart/alternative with the plain-text part rendered beside it.
//!
//! Transports: `file` writes each message as `{outbox id}.eml` under `{data_dir}/mail/` (the
//! default: a first run sends nothing to the internet, and every message can be read). A retry
//! after a crash rewrites the same file, so a message is never there twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::{self, ContentTransferEncoding, ContentType};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox};
use serde_json::json;
use uuid::Uuid;

use super::smtp::{Endpoint, Failure, Pool, Security};
use super::{Answer, Breaker, Carrier, Outcome, Try, Worker};
use crate::clock::SharedClock;
use crate::links::{Purpose, Signer};
use crate::store::Db;
use crate::store::entities::{outbox, outbox_body};

/// How long one SMTP conversation may take before the relay counts as failing.
const SMTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long an unsubscribe link in a message stays valid.
const UNSUBSCRIBE_VALID_DAYS: i64 = 365;

/// What every message shares: the sender, and how to build its unsubscribe link.
#[derive(Clone)]
pub struct Letterhead {
    pub from: Mailbox,
    pub base_url: url::Url,
    pub signer: Signer,
    /// DKIM signing, when configured.
    pub dkim: Option<Arc<DkimConfig>>,
    /// A mailbox that takes unsubscribe requests by email, offered beside the HTTPS link.
    pub unsubscribe_mailto: Option<lettre::Address>,
}

impl std::fmt::Debug for Letterhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Letterhead").field("from", &self.from).field("dkim", &self.dkim.is_some()).finish()
    }
}

impl Letterhead {
    /// The one-click unsubscribe URL for a subscriber.
    pub fn unsubscribe_url(&self, subscriber: Uuid, now: DateTime<Utc>) -> String {
        let expires = now + chrono::Duration::days(UNSUBSCRIBE_VALID_DAYS);
        self.signer.url(&self.base_url, "u", Purpose::Unsubscribe, subscriber, expires)
    }

    /// The MIME message for an outbox row, or why it cannot be one (a permanent failure).
    pub fn build(
        &self,
        message: &outbox::Model,
        body: &outbox_body::Model,
        now: DateTime<Utc>,
    ) -> Result<Message, String> {
        let to: Mailbox = message.recipient.parse().map_err(|e| format!("bad recipient address: {e}"))?;
        let domain = self.from.email.domain();
        let url = self.unsubscribe_url(message.subscriber_id, now);
        // The one-click HTTPS link first (RFC 8058 clients use it); a mailto for older clients,
        // its subject naming the subscriber by a signed token so the mailbox can act on it.
        let list_unsubscribe = match &self.unsubscribe_mailto {
            Some(mailbox) => {
                let token = url.rsplit('/').next().unwrap_or_default();
                format!("<{url}>, <mailto:{mailbox}?subject=unsubscribe%20{token}>")
            }
            None => format!("<{url}>"),
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone().unwrap_or_default())
            .message_id(Some(format!("<{}@{domain}>", message.id)))
            .date(SystemTime::from(now))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), list_unsubscribe))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
        // List mail (a broadcast, or a workflow started by joining a list) names its list
        // (RFC 2919), so mail clients can file and filter it.
        if let Some(list) = &message.list_slug {
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Id"), format!("<{list}.{domain}>")));
        }
        // The body is written in its wire form here (see `mime`); lettre writes the headers.
        let html = body.html().map_err(|e| e.to_string())?;
        let (content_type, encoding, raw) = match html.as_deref() {
            Some(html) => {
                let boundary = format!("=_{}", message.id.simple());
                let text = plain_part(&self.base_url, body, html);
                let content_type = format!("multipart/alternative; boundary=\"{boundary}\"");
                (content_type, ContentTransferEncoding::SevenBit, super::mime::alternative(&text, html, &boundary))
            }
            None => (
                "text/plain; charset=utf-8".to_owned(),
                ContentTransferEncoding::QuotedPrintable,
                super::mime::plain(&body.text),
            ),
        };
        let content_type = ContentType::parse(&content_type).map_err(|e| format!("cannot build the message: {e}"))?;
        let mut built = builder
            .header(header::MIME_VERSION_1_0)
            .header(content_type)
            .body(Body::dangerous_pre_encoded(raw, encoding))
            .map_err(|e| format!("cannot build the message: {e}"))?;
        if let Some(dkim) = &self.dkim {
            built.sign(dkim);
        }
        Ok(built)
    }
}

/// The plain part of an HTML email: the stored text, or (when none was stored: the template had
/// no text part) the HTML as text, each tracking link shown as the URL it stands for.
fn plain_part(base_url: &url::Url, body: &outbox_body::Model, html: &str) -> String {
    if !body.text.trim().is_empty() {
        return body.text.clone();
    }
    let links: Vec<&str> = match body.links.as_ref().and_then(serde_json::Value::as_array) {
        Some(links) => links.iter().filter_map(serde_json::Value::as_str).collect(),
        None => Vec::new(),
    };
    crate::workflow::engine::html_to_text_with(html, |href| {
        super::compose::Tracking::clicked_target(base_url, href, &links)
    })
}

/// DKIM signing for `domain` with the key published at `selector._domainkey.domain`. The key is
/// RSA as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`; signs rsa-sha256) or Ed25519 (signs
/// ed25519-sha256) as PKCS#8 PEM (`openssl genpkey -algorithm ed25519`) or as the base64 of its
/// 32 private bytes. The signature covers From, To, Subject, Date,
/// Message-ID, List-Unsubscribe and List-Unsubscribe-Post, relaxed/relaxed.
pub fn dkim_config(selector: &str, domain: &str, key: &str) -> Result<DkimConfig, String> {
    let (algorithm, key) = if key.contains("BEGIN RSA PRIVATE KEY") {
        (DkimSigningAlgorithm::Rsa, key.trim().to_owned())
    } else if key.contains("BEGIN PRIVATE KEY") {
        (DkimSigningAlgorithm::Ed25519, ed25519_seed_from_pkcs8(key)?)
    } else if key.contains("BEGIN") {
        return Err(
            "an RSA key must be PKCS#1 PEM ('BEGIN RSA PRIVATE KEY'; convert with `openssl rsa -traditional`)".into()
        );
    } else {
        (DkimSigningAlgorithm::Ed25519, key.trim().to_owned())
    };
    let key = DkimSigningKey::new(&key, algorithm).map_err(|e| format!("not a usable {algorithm} key: {e}"))?;
    let headers = ["From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"]
        .into_iter()
        .map(HeaderName::new_from_ascii_str)
        .collect();
    let relaxed =
        DkimCanonicalization { header: DkimCanonicalizationType::Relaxed, body: DkimCanonicalizationType::Relaxed };
    Ok(DkimConfig::new(selector.to_owned(), domain.to_owned(), key, headers, relaxed))
}

/// The base64 of the 32-byte seed inside an Ed25519 PKCS#8 PEM key (RFC 8410).
fn ed25519_seed_from_pkcs8(pem: &str) -> Result<String, String> {
    use base64::Engine;
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM key is not base64: {e}"))?;
    match der.strip_prefix(&PREFIX[..]) {
        Some(seed) if seed.len() == 32 => Ok(base64::engine::general_purpose::STANDARD.encode(seed)),
        _ => Err("a 'BEGIN PRIVATE KEY' PEM must be an Ed25519 key (`openssl genpkey -algorithm ed25519`); \
                  RSA keys must be PKCS#1 ('BEGIN RSA PRIVATE KEY')"
            .into()),
    }
}

/// Where messages go.
#[derive(Clone)]
pub enum Transport {
    /// One `.eml` file per message in this folder.
    File(PathBuf),
    /// SMTP relays in order of preference: a message goes to the first that takes it.
    Smtp(Vec<Relay>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::File(dir) => write!(f, "file transport to {}", dir.display()),
            Transport::Smtp(relays) => {
                let names: Vec<&str> = relays.iter().map(|r| r.name.as_str()).collect();
                write!(f, "SMTP relays {names:?}")
            }
        }
    }
}

/// One SMTP relay: pooled connections, TLS and authentication as its URL says, an optional rate
/// limit, and a circuit breaker.
#[derive(Clone)]
pub struct Relay {
    /// `host:port`, for the timeline and logs (never the credentials).
    pub name: String,
    pool: Arc<Pool>,
    /// At most this many messages begin per second (`?rate=`), spaced evenly.
    pacing: Option<Arc<Pacing>>,
    /// Skips the relay for a cool-down (`?cooldown=` seconds) after it fails.
    breaker: Arc<Breaker>,
}

/// Evenly spaced starts: each message takes the next free slot, `interval` after the previous
/// one, and waits for it. No burst: a relay limited to 10/s sees one message every 100 ms.
struct Pacing {
    interval: std::time::Duration,
    next_free: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacing {
    async fn wait_turn(&self) {
        let slot = {
            let mut next_free = self.next_free.lock().await;
            let slot = (*next_free).max(tokio::time::Instant::now());
            *next_free = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The default cool-down of a failing relay.
const DEFAULT_COOLDOWN_SECONDS: i64 = 60;

impl Relay {
    /// A relay from a URL: `smtp://host:port` (plain, or `?tls=required` / `?tls=opportunistic`
    /// for STARTTLS), `smtps://host:port` (TLS from the start), with `user:password@` to log in;
    /// `rate=N` limits it to N messages per second, `cooldown=S` sets how many seconds a failing
    /// relay is skipped (default 60). Nothing is contacted until the first message.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let parsed = Self::parse(url)?;
        let pacing = parsed.rate.map(|rate| {
            Arc::new(Pacing {
                interval: std::time::Duration::from_secs_f64(1.0 / rate),
                next_free: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            })
        });
        Ok(Self {
            name: parsed.name,
            pool: Arc::new(Pool::new(parsed.endpoint, SMTP_TIMEOUT)),
            pacing,
            breaker: Arc::new(Breaker::new(parsed.cooldown)),
        })
    }

    /// Whether `url` names a relay `from_url` accepts (nothing is started or contacted).
    pub fn check_url(url: &str) -> Result<(), String> {
        Self::parse(url).map(|_| ())
    }

    fn parse(url: &str) -> Result<ParsedRelay, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        let shown = redacted(&parsed);
        if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
            return Err(format!("'{shown}' is not an smtp:// or smtps:// URL with a host"));
        }
        let (mut rate, mut cooldown) = (None, chrono::Duration::seconds(DEFAULT_COOLDOWN_SECONDS));
        let mut for_lettre = parsed.clone();
        for_lettre.set_query(None);
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "rate" => match value.parse::<f64>() {
                    Ok(n) if n.is_finite() && n > 0.0 && n <= 100_000.0 => rate = Some(n),
                    _ => return Err(format!("'{shown}': rate={value} is not a number of messages per second")),
                },
                "cooldown" => match value.parse::<u32>() {
                    Ok(n) => cooldown = chrono::Duration::seconds(n.into()),
                    Err(_) => return Err(format!("'{shown}': cooldown={value} is not a number of seconds")),
                },
                _ => {
                    for_lettre.query_pairs_mut().append_pair(&key, &value);
                }
            }
        }
        let tls = for_lettre.query_pairs().find(|(key, _)| key == "tls").map(|(_, v)| v.into_owned());
        let (security, default_port) = match (parsed.scheme(), tls.as_deref()) {
            ("smtps", _) => (Security::Tls, 465),
            ("smtp", None | Some("none")) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTlsRequired, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTlsOpportunistic, 587),
            (_, Some(other)) => {
                return Err(format!("'{shown}': tls={other} is not required, opportunistic or none"));
            }
            _ => return Err(format!("'{shown}' is not an smtp:// or smtps:// URL with a host")),
        };
        if let Some((key, _)) = for_lettre.query_pairs().find(|(key, _)| key != "tls") {
            return Err(format!("'{shown}': unknown parameter '{key}' (relays take tls, rate and cooldown)"));
        }
        let credentials = parsed.password().map(|password| {
            lettre::transport::smtp::authentication::Credentials::new(
                percent_decoded(parsed.username()),
                percent_decoded(password),
            )
        });
        let hello = match parsed.path().trim_matches('/') {
            "" => lettre::transport::smtp::extension::ClientId::default(),
            name => lettre::transport::smtp::extension::ClientId::Domain(name.to_owned()),
        };
        let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let port = parsed.port().unwrap_or(default_port);
        let name = format!("{}:{port}", parsed.host_str().unwrap_or_default());
        let endpoint = Endpoint { host, port, security, credentials, hello };
        Ok(ParsedRelay { endpoint, name, rate, cooldown })
    }
}

struct ParsedRelay {
    endpoint: Endpoint,
    name: String,
    rate: Option<f64>,
    cooldown: chrono::Duration,
}

/// A URL's user or password as written before encoding (`%40` is `@`; `+` stays `+`).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL without its password, to name it in messages.
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Sends email messages from the outbox.
#[derive(Debug)]
pub struct Mailer {
    letterhead: Letterhead,
    transport: Transport,
}

/// The email worker.
pub type EmailSender = Worker<Mailer>;

impl EmailSender {
    pub fn new(db: Db, clock: SharedClock, letterhead: Letterhead, transport: Transport) -> Self {
        Worker::with(db, clock, Mailer { letterhead, transport })
    }
}

impl Carrier for Mailer {
    const CHANNEL: &'static str = "email";

    async fn attempt(
        &self,
        message: &outbox::Model,
        body: &outbox_body::Model,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> Answer {
        // Building is CPU work. DKIM signing (about a millisecond with RSA) goes to the blocking
        // pool, so the messages in flight are signed on every core while this task waits on the
        // network; without it, building (MIME encoding) takes tens of microseconds and is done
        // here, on the runtime's own threads, sparing two thread hand-offs per message.
        let built = if self.letterhead.dkim.is_some() {
            let (letterhead, queued, bodies) = (self.letterhead.clone(), message.clone(), body.clone());
            tokio::task::spawn_blocking(move || {
                letterhead.build(&queued, &bodies, now).map(|built| (built.envelope().clone(), built.formatted()))
            })
            .await
        } else {
            Ok(self.letterhead.build(message, body, now).map(|built| (built.envelope().clone(), built.formatted())))
        };
        let (envelope, bytes) = match built {
            Ok(Ok(built)) => built,
            Ok(Err(problem)) => return Answer::Fail(problem),
            Err(e) => return Answer::Retry(format!("building the message failed: {e}")),
        };
        match &self.transport {
            Transport::File(dir) => super::to_file(dir, message.id, "eml", &bytes, tries).await,
            Transport::Smtp(relays) => send_through(relays, &envelope, &bytes, now, tries).await,
        }
    }
}

/// Tries each relay in turn, skipping those cooling down after a failure. A permanent refusal
/// (5xx) is about the message or its recipient, so no other relay is tried; anything else (4xx,
/// a connection or TLS failure, a timeout) opens that relay's breaker and moves on to the next,
/// and when none took it the message is retried later.
async fn send_through(
    relays: &[Relay],
    envelope: &Envelope,
    bytes: &[u8],
    now: DateTime<Utc>,
    tries: &mut Vec<Try>,
) -> Answer {
    let mut failures = Vec::new();
    for relay in relays {
        if !relay.breaker.available(now) {
            failures.push(format!("{}: cooling down after a failure", relay.name));
            continue;
        }
        if let Some(pacing) = &relay.pacing {
            pacing.wait_turn().await;
        }
        let started = std::time::Instant::now();
        let sent = relay.pool.send(envelope, bytes).await;
        let outcome = match &sent {
            Ok(_) => Outcome::Sent,
            Err(Failure::Permanent { .. }) => Outcome::Failed,
            Err(Failure::Transient(_)) => Outcome::Retried,
        };
        tries.push(super::tried("email", &relay.name, outcome, started.elapsed()));
        match sent {
            Ok(reply) => {
                relay.breaker.worked(&relay.name);
                return Answer::Delivered(
                    json!({"transport": "smtp", "relay": relay.name, "reply": reply, "provider_ref": reply}),
                );
            }
            Err(Failure::Permanent { code, text }) => {
                relay.breaker.worked(&relay.name);
                let reason = format!("{}: {text}", relay.name);
                return if hard_bounce(code, &text) { Answer::Bounce(reason) } else { Answer::Fail(reason) };
            }
            Err(Failure::Transient(text)) => {
                relay.breaker.failed(&relay.name, now);
                failures.push(format!("{}: {text}", relay.name));
            }
        }
    }
    if failures.is_empty() {
        return Answer::Retry("no SMTP relay is configured".into());
    }
    Answer::Retry(failures.join("; "))
}

/// Whether a permanent SMTP refusal says the address does not exist (a hard bounce), rather than
/// refusing this message (content, policy, size). An enhanced status code (RFC 3463) decides:
/// 5.1.x (bad address) and 5.2.1 (mailbox disabled) are hard; without one, 550, 551 and 553 are.
pub fn hard_bounce(code: Option<u16>, text: &str) -> bool {
    let enhanced = text.split_whitespace().find(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && parts[0] == "5"
            && parts[1..].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match enhanced {
        Some(status) => status.starts_with("5.1.") || status == "5.2.1",
        None => matches!(code, Some(550 | 551 | 553)),
    }
}

#[cfg(test)]
mod tests {
    use super::hard_bounce;

    #[test]
    fn relay_credentials_are_percent_decoded_and_plus_kept() {
        assert_eq!(super::percent_decoded("p%40ss+w%2Frd%"), "p@ss+w/rd%");
    }

    #[test]
    fn only_refusals_about_the_address_are_hard_bounces() {
        assert!(hard_bounce(Some(550), "550 5.1.1 <ada@example.com>: no such user"));
        assert!(hard_bounce(Some(550), "550 5.2.1 mailbox disabled"));
        assert!(hard_bounce(Some(550), "550 requested action not taken: mailbox unavailable"));
        assert!(hard_bounce(Some(553), "553 mailbox name not allowed"));
        assert!(!hard_bounce(Some(550), "550 5.7.1 message rejected as spam"), "policy, not the address");
        assert!(!hard_bounce(Some(552), "552 5.3.4 message too big"));
        assert!(!hard_bounce(Some(554), "554 transaction failed"));
    }
}
