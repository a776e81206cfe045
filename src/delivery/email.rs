//! Email: an outbox message becomes a MIME message (lettre) and goes out through a transport.
//!
//! Every message carries `Message-ID` (from the outbox id, so a retry is recognisably the same
//! message), `Date`, `List-Unsubscribe` (a signed one-click HTTPS link) and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, `List-Id` for list mail, `Feedback-ID` (the
//! campaign that wrote it), `Precedence: bulk` on marketing mail; with an HTML body it is
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

use super::smtp::{Endpoint, Failure, Pool, Security, Timeouts};
use super::{Answer, Body as Bodies, Breaker, Carrier, Outcome, Try, Worker};
use crate::core::clock::SharedClock;
use crate::core::error::{Reason, reason};
use crate::core::links::{Purpose, Signer};
use crate::core::values::OutboxChannel;
use crate::store::Db;
use crate::store::entities::outbox;

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
    /// Each message's own envelope sender, so its bounce names it (VERP); else the sender.
    pub return_path: Option<crate::audience::bounces::mail::ReturnPath>,
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
    pub fn build(&self, message: &outbox::Model, body: &Bodies, now: DateTime<Utc>) -> Result<Message, Reason> {
        let to: Mailbox = message.recipient.parse().map_err(|e| format!("bad recipient address: {e}"))?;
        let domain = self.from.email.domain();
        let list_unsubscribe = self.list_unsubscribe(message, now);
        let mut builder = Message::builder().from(self.from.clone()).to(to);
        let subject = message.subject.clone().unwrap_or_default();
        builder = if subject.contains("=?") {
            // Text that looks like an encoded word (a first name such as `=?utf-8?b?…?=`) would be
            // decoded by mail clients into whatever it hides: encoded whole, it reads as typed.
            let encoded = encoded_words(&subject);
            builder.raw_header(HeaderValue::dangerous_new_pre_encoded(
                HeaderName::new_from_ascii_str("Subject"),
                subject,
                encoded,
            ))
        } else {
            builder.subject(subject)
        };
        let mut builder = builder
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
        builder = builder
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Feedback-ID"), feedback_id(message, domain)));
        if message.is_marketing() {
            builder = builder.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Precedence"), "bulk".into()));
        }
        // The body is written in its wire form here (see `mime`); lettre writes the headers.
        let mut raw = Vec::new();
        self.write_body(message, body, &mut raw)?;
        let (content_type, encoding) = Self::body_type(message, body);
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

    /// The message for an outbox row as it goes over the wire, and its envelope; or why it
    /// cannot be sent (a permanent failure). Without DKIM, a message whose headers are plain
    /// ASCII that needs no encoding (the usual case) is written directly (see [`Self::written`]);
    /// lettre's builder writes the others, and signs.
    pub fn wire(
        &self,
        message: &outbox::Model,
        body: &Bodies,
        now: DateTime<Utc>,
    ) -> Result<(Envelope, Vec<u8>), Reason> {
        let written = if self.dkim.is_none() { self.written(message, body, now)? } else { None };
        let (envelope, bytes) = match written {
            Some(written) => written,
            None => {
                let built = self.build(message, body, now)?;
                (built.envelope().clone(), built.formatted())
            }
        };
        match &self.return_path {
            Some(path) => {
                let sender = path.address(message.id)?;
                let envelope = Envelope::new(Some(sender), envelope.to().to_vec())
                    .map_err(|e| format!("cannot build the envelope: {e}"))?;
                Ok((envelope, bytes))
            }
            None => Ok((envelope, bytes)),
        }
    }

    /// `List-Unsubscribe`: the one-click HTTPS link first (RFC 8058 clients use it); a mailto
    /// for older clients, its subject naming the subscriber by a signed token so the mailbox can
    /// act on it.
    fn list_unsubscribe(&self, message: &outbox::Model, now: DateTime<Utc>) -> String {
        let bare = self.unsubscribe_url(message.subscriber_id, now);
        // List mail's link names its list: one click leaves that list, not all email.
        let url = match &message.list_slug {
            Some(list) => {
                format!("{bare}?list={}", url::form_urlencoded::byte_serialize(list.as_bytes()).collect::<String>())
            }
            None => bare.clone(),
        };
        match &self.unsubscribe_mailto {
            Some(mailbox) => {
                let token = bare.rsplit('/').next().unwrap_or_default();
                format!("<{url}>, <mailto:{mailbox}?subject=unsubscribe%20{token}>")
            }
            None => format!("<{url}>"),
        }
    }

    /// The Content-Type and encoding of the MIME body [`Self::write_body`] writes.
    fn body_type(message: &outbox::Model, body: &Bodies) -> (String, ContentTransferEncoding) {
        if body.has_html() {
            let boundary = boundary(message);
            (format!("multipart/alternative; boundary=\"{boundary}\""), ContentTransferEncoding::SevenBit)
        } else {
            ("text/plain; charset=utf-8".to_owned(), ContentTransferEncoding::QuotedPrintable)
        }
    }

    /// Appends the MIME body in its wire form to `out`.
    fn write_body(&self, message: &outbox::Model, body: &Bodies, out: &mut Vec<u8>) -> Result<(), Reason> {
        match body.html().map_err(|e| e.to_string())?.as_deref() {
            Some(html) => {
                let text = plain_part(&self.base_url, body, html).map_err(|e| e.to_string())?;
                super::mime::write_alternative(out, &text, html, &boundary(message));
            }
            None => super::mime::write_plain(out, body.text()),
        }
        Ok(())
    }

    /// The message written header by header, with the same headers (in the same order, with
    /// the same values) as lettre's builder gives it, when each is plain ASCII that needs no
    /// encoding: the sender's name letters, digits and spaces, the recipient an ASCII address,
    /// the subject printable ASCII of at most 60 characters, single-spaced (so it fits on its
    /// line). `None` for any other message. (lettre's builder took about a fifth of sending's
    /// CPU: it parses the addresses and the Content-Type it is given, and copies the message.)
    fn written(
        &self,
        message: &outbox::Model,
        body: &Bodies,
        now: DateTime<Utc>,
    ) -> Result<Option<(Envelope, Vec<u8>)>, Reason> {
        use std::io::Write;
        let subject = message.subject.as_deref().unwrap_or_default();
        // Words of at least one character, one space between them.
        let single_spaced = |s: &str| !s.is_empty() && !s.starts_with(' ') && !s.ends_with(' ') && !s.contains("  ");
        let simple_subject = single_spaced(subject)
            && subject.len() <= 60
            && subject.bytes().all(|b| (0x20..0x7f).contains(&b))
            && !subject.contains("=?");
        let simple_name = self
            .from
            .name
            .as_deref()
            .is_none_or(|name| single_spaced(name) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' '));
        let to = match message.recipient.parse::<lettre::Address>() {
            Ok(to)
                if simple_subject
                    && simple_name
                    && message.recipient.is_ascii()
                    && AsRef::<str>::as_ref(&self.from.email).is_ascii() =>
            {
                to
            }
            _ => return Ok(None),
        };
        let envelope = Envelope::new(Some(self.from.email.clone()), vec![to.clone()])
            .map_err(|e| format!("cannot build the message: {e}"))?;
        let domain = self.from.email.domain();
        let list_unsubscribe = self.list_unsubscribe(message, now);
        let mut out = Vec::with_capacity(2048 + body.stored.html_len() * 2 + body.text().len() * 2);
        let header_error = |e: std::io::Error| format!("cannot build the message: {e}");
        match &self.from.name {
            Some(name) => write!(out, "From: {name} <{}>\r\n", self.from.email),
            None => write!(out, "From: {}\r\n", self.from.email),
        }
        .map_err(header_error)?;
        write!(
            out,
            "To: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@{domain}>\r\nDate: {}\r\n\
             List-Unsubscribe: {}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            message.id,
            now.format("%a, %d %b %Y %H:%M:%S +0000"),
            list_unsubscribe.replace(">, <", ">,\r\n <"),
        )
        .map_err(header_error)?;
        if let Some(list) = &message.list_slug {
            write!(out, "List-Id: <{list}.{domain}>\r\n").map_err(header_error)?;
        }
        write!(out, "Feedback-ID: {}\r\n", feedback_id(message, domain)).map_err(header_error)?;
        if message.is_marketing() {
            out.extend_from_slice(b"Precedence: bulk\r\n");
        }
        let (content_type, encoding) = Self::body_type(message, body);
        let encoding = match encoding {
            ContentTransferEncoding::SevenBit => "7bit",
            _ => "quoted-printable",
        };
        write!(
            out,
            "MIME-Version: 1.0\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
        )
        .map_err(header_error)?;
        self.write_body(message, body, &mut out)?;
        Ok(Some((envelope, out)))
    }
}

/// `Feedback-ID` (Gmail's feedback loop, also read by Yahoo): `CAMPAIGN:LIST:KIND:DOMAIN`, where
/// the campaign is the broadcast, or the workflow and step, that wrote the message. Complaint
/// figures come back per value, so each names a campaign, never one message or person.
fn feedback_id(message: &outbox::Model, domain: &str) -> String {
    let clean =
        |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect::<String>();
    let (campaign, kind) = match (&message.broadcast_id, &message.workflow_id, &message.step_id) {
        (Some(broadcast), _, _) => (broadcast.simple().to_string(), "broadcast"),
        (None, Some(workflow), step) => {
            (format!("{}.{}", clean(workflow), clean(step.as_deref().unwrap_or_default())), "workflow")
        }
        (None, None, _) => (String::new(), "transactional"),
    };
    let list = clean(message.list_slug.as_deref().unwrap_or_default());
    format!("{campaign}:{list}:{kind}:{}", clean(domain))
}

/// The MIME boundary of a message's parts (see [`super::mime::write_alternative`]).
fn boundary(message: &outbox::Model) -> String {
    format!("=_{}", message.id.simple())
}

/// The plain part of an HTML email: the stored text, or (when none was stored: the template had
/// no text part) the HTML as text, each tracking link shown as the URL it stands for.
fn plain_part(
    base_url: &url::Url,
    body: &Bodies,
    html: &str,
) -> Result<String, crate::store::entities::outbox_body::Damaged> {
    if !body.text().trim().is_empty() {
        return Ok(body.text().to_owned());
    }
    let links = body.links()?;
    Ok(crate::core::text::html_to_text_with(html, |href| {
        crate::outbox::compose::Tracking::clicked_target(base_url, href, &links)
    }))
}

/// DKIM signing for `domain` with the key published at `selector._domainkey.domain`. The key is
/// RSA as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`; signs rsa-sha256) or Ed25519 (signs
/// ed25519-sha256) as PKCS#8 PEM (`openssl genpkey -algorithm ed25519`) or as the base64 of its
/// 32 private bytes. The signature covers From, To, Subject, Date,
/// Message-ID, List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID, relaxed/relaxed.
pub fn dkim_config(selector: &str, domain: &str, key: &str) -> Result<DkimConfig, Reason> {
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
    let headers =
        ["From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID"]
            .into_iter()
            .map(HeaderName::new_from_ascii_str)
            .collect();
    let relaxed =
        DkimCanonicalization { header: DkimCanonicalizationType::Relaxed, body: DkimCanonicalizationType::Relaxed };
    Ok(DkimConfig::new(selector.to_owned(), domain.to_owned(), key, headers, relaxed))
}

/// The base64 of the 32-byte seed inside an Ed25519 PKCS#8 PEM key (RFC 8410).
fn ed25519_seed_from_pkcs8(pem: &str) -> Result<String, Reason> {
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
const DEFAULT_COOLDOWN_SECONDS: i64 = 20;

impl Relay {
    /// A relay from a URL: `smtp://host:port` (plain, or `?tls=required` / `?tls=opportunistic`
    /// for STARTTLS), `smtps://host:port` (TLS from the start), with `user:password@` to log in;
    /// `rate=N` limits it to N messages per second, `cooldown=S` sets how many seconds a failing
    /// relay is skipped (default 20), `timeout=S` how long its greeting and each reply may take
    /// (default 10 and 30). Nothing is contacted until the first message.
    pub fn from_url(url: &str) -> Result<Self, Reason> {
        let parsed = Self::parse(url)?;
        let pacing = parsed.rate.map(|rate| {
            Arc::new(Pacing {
                interval: std::time::Duration::from_secs_f64(1.0 / rate),
                next_free: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            })
        });
        Ok(Self {
            name: parsed.name,
            pool: Arc::new(Pool::new(parsed.endpoint, parsed.timeouts)),
            pacing,
            breaker: Arc::new(Breaker::new(parsed.cooldown)),
        })
    }

    /// Connects as for sending (TLS as configured, EHLO, AUTH with its credentials) and quits:
    /// nothing is sent.
    pub async fn probe(&self) -> Result<(), String> {
        self.pool.probe().await.map_err(|failure| match failure {
            Failure::Permanent { text, .. } | Failure::Transient(text) => text,
            Failure::Untried => "no answer".to_owned(),
        })
    }

    /// Its host, and whether the connection to it is encrypted (TLS or required STARTTLS).
    pub fn host_and_encryption(&self) -> (String, bool) {
        let endpoint = self.pool.endpoint();
        (endpoint.host.clone(), matches!(endpoint.security, Security::Tls | Security::StartTlsRequired))
    }

    /// Whether `url` names a relay `from_url` accepts (nothing is started or contacted).
    pub fn check_url(url: &str) -> Result<(), Reason> {
        Self::parse(url).map(|_| ())
    }

    fn parse(url: &str) -> Result<ParsedRelay, Reason> {
        let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        let shown = redacted(&parsed);
        if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
            return Err(reason!("'{shown}' is not an smtp:// or smtps:// URL with a host"));
        }
        let (mut rate, mut cooldown) = (None, chrono::Duration::seconds(DEFAULT_COOLDOWN_SECONDS));
        let mut timeouts = Timeouts::DEFAULT;
        let mut for_lettre = parsed.clone();
        for_lettre.set_query(None);
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "rate" => match value.parse::<f64>() {
                    Ok(n) if n.is_finite() && n > 0.0 && n <= 100_000.0 => rate = Some(n),
                    _ => {
                        return Err(reason!("'{shown}': rate={value} is not a number of messages per second"));
                    }
                },
                "cooldown" => match value.parse::<u32>() {
                    Ok(n) => cooldown = chrono::Duration::seconds(n.into()),
                    Err(_) => {
                        return Err(reason!("'{shown}': cooldown={value} is not a number of seconds"));
                    }
                },
                "timeout" => match value.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s <= 600.0 => {
                        timeouts = Timeouts::all(std::time::Duration::from_secs_f64(s));
                    }
                    _ => {
                        return Err(reason!("'{shown}': timeout={value} is not a number of seconds up to 600"));
                    }
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
                return Err(reason!("'{shown}': tls={other} is not required, opportunistic or none"));
            }
            _ => return Err(reason!("'{shown}' is not an smtp:// or smtps:// URL with a host")),
        };
        if let Some((key, _)) = for_lettre.query_pairs().find(|(key, _)| key != "tls") {
            return Err(reason!("'{shown}': unknown parameter '{key}' (relays take tls, rate, cooldown and timeout)"));
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
        Ok(ParsedRelay { endpoint, name, rate, cooldown, timeouts })
    }
}

struct ParsedRelay {
    endpoint: Endpoint,
    name: String,
    rate: Option<f64>,
    cooldown: chrono::Duration,
    timeouts: Timeouts,
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
    const CHANNEL: OutboxChannel = OutboxChannel::Email;

    fn paused_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.transport {
            Transport::File(_) => None,
            Transport::Smtp(relays) => super::all_closed_until(relays.iter().map(|r| &*r.breaker), now),
        }
    }

    fn recoveries(&self) -> u64 {
        match &self.transport {
            Transport::File(_) => 0,
            Transport::Smtp(relays) => relays.iter().map(|r| r.breaker.recoveries()).sum(),
        }
    }

    async fn attempt(
        &self,
        message: &outbox::Model,
        body: &Bodies,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> Answer {
        // Building is CPU work. DKIM signing (about a millisecond with RSA) goes to the blocking
        // pool, so the messages in flight are signed on every core while this task waits on the
        // network; without it, building (MIME encoding) takes tens of microseconds and is done
        // here, on the runtime's own threads, sparing two thread hand-offs per message.
        let built = if self.letterhead.dkim.is_some() {
            let (letterhead, queued, bodies) = (self.letterhead.clone(), message.clone(), body.clone());
            tokio::task::spawn_blocking(move || letterhead.wire(&queued, &bodies, now)).await
        } else {
            Ok(self.letterhead.wire(message, body, now))
        };
        let (envelope, bytes) = match built {
            Ok(Ok(built)) => built,
            Ok(Err(problem)) => return Answer::Fail(problem.into()),
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
    let (mut failures, mut skipped) = (Vec::new(), super::Skipped::default());
    for relay in relays {
        if let super::Admit::Skip(until) = relay.breaker.admit(now) {
            skipped.until(until);
            continue;
        }
        if let Some(pacing) = &relay.pacing {
            pacing.wait_turn().await;
        }
        let started = std::time::Instant::now();
        let sent = relay.pool.send(envelope, bytes).await;
        if let Err(Failure::Untried) = sent {
            skipped.until(now + chrono::Duration::seconds(1));
            continue;
        }
        let outcome = match &sent {
            Ok(_) => Outcome::Sent,
            Err(Failure::Permanent { .. }) => Outcome::Failed,
            Err(Failure::Transient(_) | Failure::Untried) => Outcome::Retried,
        };
        tries.push(super::tried(OutboxChannel::Email, &relay.name, outcome, started.elapsed()));
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
            Err(failure) => {
                relay.breaker.failed(&relay.name, now);
                failures.push(format!("{}: {failure}", relay.name));
            }
        }
    }
    skipped.answer(failures, "no SMTP relay is configured")
}

/// `text` as RFC 2047 encoded words (UTF-8, base64), each within the 75-character limit, folded
/// onto continuation lines.
fn encoded_words(text: &str) -> String {
    use base64::Engine;
    let encode = |chunk: &str| format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(chunk));
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        // 45 bytes of UTF-8 are 60 of base64: 72 characters a word with its delimiters.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(encode(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(encode(&chunk));
    }
    words.join("\r\n ")
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
    use super::*;
    use crate::core::values::OutboxStatus;
    use crate::store::entities::outbox_body;

    fn letterhead(from: &str, mailto: Option<&str>) -> Letterhead {
        Letterhead {
            from: from.parse().unwrap(),
            base_url: "https://news.example.com/".parse().unwrap(),
            signer: Signer::new("a-secret-of-some-length-for-tests"),
            dkim: None,
            unsubscribe_mailto: mailto.map(|m| m.parse().unwrap()),
            return_path: None,
        }
    }

    fn message(subject: &str, recipient: &str, list: Option<&str>) -> outbox::Model {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, 9, 5, 7).unwrap();
        outbox::Model {
            id: Uuid::now_v7(),
            idempotency_key: "k".into(),
            subscriber_id: Uuid::now_v7(),
            enrollment_id: None,
            workflow_id: None,
            step_id: None,
            channel: OutboxChannel::Email,
            recipient: recipient.into(),
            subject: Some(subject.into()),
            status: OutboxStatus::Queued,
            attempts: 0,
            last_error: None,
            sent_at: None,
            due_at: at,
            created_at: at,
            updated_at: at,
            broadcast_id: None,
            list_slug: list.map(Into::into),
            segments: None,
            provider_ref: None,
            opened_at: None,
            clicked_at: None,
            lease_until: None,
            lease_owner: None,
            fallback_id: None,
        }
    }

    /// A message's headers (names and unfolded values, in order) and its body.
    fn parts(bytes: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        let headers = unfolded
            .split("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_owned(), value.split_whitespace().collect::<Vec<_>>().join(" "))
            })
            .collect();
        (headers, body.as_bytes().to_vec())
    }

    #[test]
    fn messages_written_directly_carry_what_lettre_writes() {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, 9, 5, 7).unwrap();
        let html = "<p>Hello Ada,</p><p><a href=\"https://news.example.com/t/c/x/0\">the shop</a> = 50% off</p>";
        for (from, mailto) in [("Shop <news@example.com>", None), ("news@example.com", Some("leave@example.com"))] {
            let letterhead = letterhead(from, mailto);
            for (subject, list) in [("Spring news for Ada", Some("news")), ("Hi! 50% off: (today) & more?", None)] {
                let mut message = message(subject, "ada@example.org", list);
                if list.is_some() {
                    message.broadcast_id = Some(Uuid::now_v7());
                }
                let links = Some(serde_json::json!(["https://shop.example.com/a?b=c"]));
                for body in [
                    Bodies::alone(outbox_body::Model::new(message.id, Some(html), String::new(), links.clone(), None)),
                    Bodies::alone(outbox_body::Model::new(
                        message.id,
                        None,
                        "Just text, café.\n.\nBye".into(),
                        None,
                        None,
                    )),
                ] {
                    let (envelope, written) = letterhead.written(&message, &body, at).unwrap().expect("plain headers");
                    let built = letterhead.build(&message, &body, at).unwrap();
                    assert_eq!(&envelope, built.envelope());
                    let (ours, our_body) = parts(&written);
                    let (lettres, lettre_body) = parts(&built.formatted());
                    assert_eq!(ours, lettres, "{subject:?} from {from:?}");
                    let header = |name: &str| ours.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                    let feedback = header("Feedback-ID").expect("every message names its campaign");
                    match message.broadcast_id {
                        Some(b) => {
                            assert_eq!(feedback, format!("{}:news:broadcast:example.com", b.simple()));
                            assert_eq!(header("Precedence").as_deref(), Some("bulk"), "list mail is bulk mail");
                        }
                        None => {
                            assert_eq!(feedback, "::transactional:example.com");
                            assert_eq!(header("Precedence"), None, "a confirmation is not bulk mail");
                        }
                    }
                    assert_eq!(our_body, lettre_body);
                    assert_eq!(letterhead.wire(&message, &body, at).unwrap().1, written, "sent as written");
                }
            }
        }
    }

    #[test]
    fn a_subject_that_looks_encoded_is_encoded_so_it_reads_as_typed() {
        use base64::Engine;
        let at = Utc::now();
        let typed = "Welcome =?utf-8?b?QWRtaW46IHJlc2V0IHlvdXIgcGFzc3dvcmQ=?= and a long tail of words after it";
        let message = message(typed, "ada@example.org", None);
        let body = Bodies::alone(outbox_body::Model::new(message.id, None, "Hi".into(), None, None));
        let built = letterhead("Shop <news@example.com>", None).build(&message, &body, at).unwrap();
        let (headers, _) = parts(&built.formatted());
        let subject = &headers.iter().find(|(name, _)| name == "Subject").unwrap().1;
        let mut decoded = Vec::new();
        for word in subject.split(' ') {
            let inner = word.strip_prefix("=?utf-8?b?").and_then(|w| w.strip_suffix("?=")).unwrap();
            assert!(word.len() <= 75, "{word}");
            decoded.extend(base64::engine::general_purpose::STANDARD.decode(inner).unwrap());
        }
        assert_eq!(String::from_utf8(decoded).unwrap(), typed);
    }

    #[test]
    fn headers_that_need_encoding_are_left_to_lettre() {
        let at = Utc::now();
        let body = |m: &outbox::Model| Bodies::alone(outbox_body::Model::new(m.id, None, "Hi".into(), None, None));
        let plain = letterhead("Shop <news@example.com>", None);
        for message in [
            message("Café news", "ada@example.org", None),
            message(&"long ".repeat(20), "ada@example.org", None),
            message("two  spaces", "ada@example.org", None),
            message("=?utf-8?q?looks_encoded?=", "ada@example.org", None),
            message("Hi", "zoë@example.org", None),
        ] {
            assert!(plain.written(&message, &body(&message), at).unwrap().is_none(), "{:?}", message.subject);
            let (_, bytes) = plain.wire(&message, &body(&message), at).unwrap();
            assert_eq!(bytes, plain.build(&message, &body(&message), at).unwrap().formatted());
        }
        let named = letterhead("\"Shop, Inc.\" <news@example.com>", None);
        let message = message("Hi", "ada@example.org", None);
        assert!(named.written(&message, &body(&message), at).unwrap().is_none(), "a name that needs quoting");
    }

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
