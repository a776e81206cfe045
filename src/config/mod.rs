//! Configuration: an optional `ownlist.toml`, then `OWNLIST_*` environment variables (env wins).
//! Each setting is declared once, in [`table`]; here each becomes a typed value.
//!
//! Every setting is validated here, once, so a bad value stops start-up with one line that names
//! the setting and the problem. Nothing else in the program reads the environment.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::core::error::{Reason, reason};

pub mod sms;
pub mod table;

pub use sms::SmsProviderConfig;

use crate::core::brand::{Business, parse_color};
use crate::core::text::closest;
use table::{RawSettings, apply_env};

/// Open HTTP connections at once when `max_connections` is not set.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;

/// Signups per IP address per hour when `signups_per_ip` is not set.
pub const DEFAULT_SIGNUPS_PER_IP: u32 = 10;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub base_url: url::Url,
    pub data_dir: PathBuf,
    pub workflows_dir: PathBuf,
    pub templates_dir: PathBuf,
    /// Key for signed links; when absent it is generated in the data dir on first run.
    pub secret: Option<String>,
    /// Bootstrap admin token, accepted alongside the hashed tokens in the database.
    pub admin_token: Option<String>,
    pub max_import_bytes: u64,
    pub log: String,
    /// `text` (human-readable, the default) or `json` (one object per line).
    pub log_format: LogFormat,
    /// The sender of every email: `Name <address>` or an address; by default
    /// `ownlist <noreply@HOST>` with the host of `base_url` (`localhost` when that is an IP).
    pub email_from: lettre::message::Mailbox,
    /// The business's identity, shown by every page and email.
    pub business: Business,
    /// SMTP relay URLs in order of preference (`smtp_url` first, then `smtp_relays`); none
    /// means email is written to files under `data_dir/mail`.
    pub smtp_relays: Vec<String>,
    /// Open and click tracking of email (on by default; a workflow or broadcast may turn it off).
    pub tracking: bool,
    /// SMS providers in order of preference (the `twilio_*` one first); none means SMS is written
    /// to files under `data_dir/sms`.
    pub sms_providers: Vec<SmsProviderConfig>,
    /// The hours marketing SMS may arrive, in the subscriber's zone.
    pub sms_hours: crate::delivery::sms::SendingHours,
    /// WhatsApp providers in order of preference (Twilio-compatible or generic HTTP, as SMS's);
    /// none: WhatsApp messages are written to files under `data_dir/whatsapp`.
    pub whatsapp_providers: Vec<SmsProviderConfig>,
    /// The hours marketing WhatsApp messages may arrive, in the subscriber's zone.
    pub whatsapp_hours: crate::delivery::sms::SendingHours,
    /// The zone of subscribers without one of their own.
    pub timezone: chrono_tz::Tz,
    /// The answer to an SMS `HELP`.
    pub sms_help_text: String,
    /// The most segments an SMS body may take (`workflows check` refuses longer ones).
    pub sms_max_segments: u32,
    /// The send policy's caps (none: no cap) and calendar.
    pub email_per_day: Option<u32>,
    pub email_per_week: Option<u32>,
    pub sms_per_day: Option<u32>,
    pub sms_per_week: Option<u32>,
    pub send_days: [bool; 7],
    pub email_hours: Option<crate::delivery::sms::SendingHours>,
    pub holidays: Vec<crate::delivery::policy::Holiday>,
    /// The sunset rule's span.
    pub sunset_after: Option<chrono::Duration>,
    /// Whether the sunset rule asks once before it stops.
    pub sunset_asks: bool,
    /// How long a message failing for a temporary reason is retried before it is given up.
    pub retry_max_age: chrono::Duration,
    /// How long a double opt-in confirmation link works (default 7 days).
    /// `reach: first`: how long a message failing for now waits before the next channel is tried.
    pub fallback_after: chrono::Duration,
    pub confirm_link_ttl: chrono::Duration,
    /// At most one confirmation message per address in this long (default 24 hours).
    pub confirm_every: chrono::Duration,
    /// A landing-page form sent sooner than this after it was served is a bot's (default 3 s).
    pub form_min_fill: chrono::Duration,
    /// Signups allowed per IP address per hour (0: no limit; default 10).
    pub signups_per_ip: u32,
    /// HTTP connections open at once; past it a new one is answered 503 and closed at once.
    pub max_connections: u32,
    /// How long a client has to send a request's headers, and how long an idle keep-alive
    /// connection is kept (default 10 s).
    pub header_timeout: chrono::Duration,
    /// Networks that webhook steps may reach although they are loopback, link-local or private
    /// (none by default: such addresses are refused).
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Read the client's address from the last `X-Forwarded-For` entry (behind a reverse proxy).
    pub trust_proxy: bool,
    /// When set, `GET /metrics` wants it as `Authorization: Bearer …`.
    pub metrics_token: Option<String>,
    /// Several instances (PostgreSQL): how long a claimed message stays reserved for the process
    /// that claimed it (default 5 minutes); a crashed process's messages are taken over after it.
    pub claim_lease: chrono::Duration,
    /// How long a dashboard login lasts (default 12 hours): the session ends then, or at logout.
    pub admin_session_ttl: chrono::Duration,
    /// The shared secret a bounce processor sends to `POST /webhooks/bounces` (as a bearer
    /// token); without it that endpoint is off.
    pub bounce_secret: Option<String>,
    /// The return path every message's envelope sender is made from (VERP).
    pub bounce_address: Option<lettre::Address>,
    /// Where the bounce receiver listens.
    pub bounce_smtp_listen: Option<SocketAddr>,
    /// The SNS topics the SES webhook takes notifications of.
    pub ses_topic_arns: Vec<String>,
    /// SNS signing certificates on disk, used instead of fetching them.
    pub ses_certificates_dir: Option<PathBuf>,
    /// SendGrid's event webhook verification key (base64 DER).
    pub sendgrid_webhook_key: Option<String>,
    /// Mailgun's webhook signing key.
    pub mailgun_signing_key: Option<String>,
    /// DKIM signing: `(domain, selector, key file)`, all three or none.
    pub dkim: Option<Dkim>,
    /// A mailbox offered in `List-Unsubscribe` beside the one-click link (`mailto:`).
    pub unsubscribe_mailto: Option<lettre::Address>,
}

/// Default SMS `HELP` answer when `sms_help_text` is not set.
const DEFAULT_HELP: &str = "Reply STOP to stop, START to start again.";
const DEFAULT_MAX_SEGMENTS: u32 = crate::workflow::check::DEFAULT_SMS_MAX_SEGMENTS;

/// Where the DKIM key is and what it signs for (the key itself is read when the service starts).
#[derive(Debug, Clone)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    pub key_file: PathBuf,
}

impl Dkim {
    /// The signing configuration, from the key file.
    pub fn load(&self) -> Result<lettre::message::dkim::DkimConfig, Reason> {
        let key = fs::read_to_string(&self.key_file)
            .map_err(|e| format!("cannot read the DKIM key {}: {e}", self.key_file.display()))?;
        crate::delivery::email::dkim_config(&self.selector, &self.domain, &key)
    }
}

/// A setting that could not be used, with the name the user wrote it under.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { setting: setting.into(), problem: problem.into() }
    }
}

const DEFAULT_MAX_IMPORT_BYTES: u64 = 1024 * 1024 * 1024;
/// Info for ownlist; the libraries' routine chatter (each migration applied) only when asked.
const DEFAULT_LOG: &str = "info,sea_orm_migration=warn,sqlx=warn";

impl Config {
    /// The send policy of a channel (email, or SMS).
    pub fn send_policy(&self, sms: bool) -> crate::delivery::policy::SendPolicy {
        let (per_day, per_week) =
            if sms { (self.sms_per_day, self.sms_per_week) } else { (self.email_per_day, self.email_per_week) };
        crate::delivery::policy::SendPolicy {
            per_day,
            per_week,
            days: self.send_days,
            holidays: self.holidays.clone(),
            default_zone: self.timezone,
            sunset_after: if sms { None } else { self.sunset_after },
            sunset_asks: self.sunset_asks && self.tracking,
            hours: if sms { None } else { self.email_hours },
        }
    }

    pub fn return_path_address(&self) -> Option<lettre::Address> {
        self.bounce_address.clone().or_else(|| {
            self.bounce_smtp_listen?;
            lettre::Address::new("bounces", self.email_from.email.domain()).ok()
        })
    }

    /// What loading the workflow folder needs from the configuration.
    pub fn load_settings(&self) -> crate::workflow::loader::LoadSettings {
        crate::workflow::loader::LoadSettings {
            workflows_dir: self.workflows_dir.clone(),
            templates_dir: self.templates_dir.clone(),
            sms_max_segments: self.sms_max_segments,
        }
    }

    /// Loads `file` (or `./ownlist.toml` when it exists), then overrides it with `env`.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("OWNLIST_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("ownlist.toml")).filter(|p| p.exists()));
        let mut raw = match &file {
            Some(path) => read_file(path)?,
            None => RawSettings::default(),
        };
        apply_env(&mut raw, env)?;
        Self::validate(raw, file.as_deref())
    }

    /// The configuration used when nothing is configured, rooted at `dir` (its `data`,
    /// `workflows` and `templates` folders), listening on a free port: for tests and tools.
    pub fn defaults_in(dir: &Path) -> Result<Self, ConfigError> {
        let raw = RawSettings {
            data_dir: Some(dir.join("data").display().to_string()),
            listen: Some("127.0.0.1:0".into()),
            base_url: Some("http://127.0.0.1:8080/".into()),
            ..RawSettings::default()
        };
        let mut config = Self::validate(raw, None)?;
        config.workflows_dir = dir.join("workflows");
        config.templates_dir = dir.join("templates");
        Ok(config)
    }

    fn validate(mut raw: RawSettings, file: Option<&Path>) -> Result<Self, ConfigError> {
        let name = |key: &str| setting_name(key, file);
        let business = business(&mut raw, &name)?;
        let data_dir = PathBuf::from(raw.data_dir.clone().unwrap_or_else(|| "./data".into()));
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::new(name("listen"), format!("'{listen_text}' is not an address like 127.0.0.1:8080"))
        })?;
        let base_url_text = raw.base_url.unwrap_or_else(|| format!("http://{listen}/"));
        let base_url = url::Url::parse(&base_url_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    name("base_url"),
                    format!("'{base_url_text}' is not an http(s) URL like https://example.com/"),
                )
            })?;
        let database_url = raw.database_url.unwrap_or_else(|| sqlite_url(&data_dir));
        check_database_url(&database_url).map_err(|problem| ConfigError::new(name("database_url"), problem))?;
        let workflows_dir = directory(raw.workflows_dir, "./workflows", &name("workflows_dir"))?;
        let templates_dir = directory(raw.templates_dir, "./templates", &name("templates_dir"))?;
        if let Some(secret) = &raw.secret
            && secret.len() < 32
        {
            return Err(ConfigError::new(
                name("secret"),
                "must be at least 32 characters (try `openssl rand -hex 32`)",
            ));
        }
        if let Some(token) = &raw.admin_token
            && token.len() < 16
        {
            return Err(ConfigError::new(name("admin_token"), "must be at least 16 characters"));
        }
        let max_import_bytes = match raw.max_import_bytes {
            None => DEFAULT_MAX_IMPORT_BYTES,
            Some(value) => parse_bytes(&value).ok_or_else(|| {
                ConfigError::new(
                    name("max_import_bytes"),
                    format!("'{value}' is not a size in bytes (e.g. 1073741824)"),
                )
            })?,
        };
        let email_from = match raw.email_from {
            Some(text) => text.parse().map_err(|e| {
                ConfigError::new(
                    name("email_from"),
                    format!("'{text}' is not a sender like Shop <news@example.com>: {e}"),
                )
            })?,
            None => default_email_from(&base_url, &business.name)
                .map_err(|problem| ConfigError::new(name("email_from"), problem))?,
        };
        let mut smtp_relays: Vec<String> = raw.smtp_url.into_iter().collect();
        match raw.smtp_relays {
            None => {}
            Some(toml::Value::String(list)) => smtp_relays.extend(list.split(',').map(str::to_owned)),
            Some(toml::Value::Array(items)) => {
                for item in items {
                    let toml::Value::String(url) = item else {
                        return Err(ConfigError::new(name("smtp_relays"), "every relay must be a URL string"));
                    };
                    smtp_relays.push(url);
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    name("smtp_relays"),
                    format!("'{other}' is not a list of relay URLs (a TOML array, or comma-separated)"),
                ));
            }
        }
        smtp_relays = smtp_relays.iter().map(|url| url.trim().to_owned()).filter(|url| !url.is_empty()).collect();
        for url in &smtp_relays {
            crate::delivery::email::Relay::check_url(url)
                .map_err(|problem| ConfigError::new(name("smtp_relays"), problem))?;
        }
        let tracking = match raw.tracking {
            None => true,
            Some(toml::Value::Boolean(on)) => on,
            Some(toml::Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => true,
                "false" | "off" | "no" | "0" => false,
                _ => return Err(ConfigError::new(name("tracking"), format!("'{text}' is not on or off"))),
            },
            Some(other) => return Err(ConfigError::new(name("tracking"), format!("'{other}' is not true or false"))),
        };
        if let Some(secret) = &raw.bounce_secret
            && secret.len() < 16
        {
            return Err(ConfigError::new(name("bounce_secret"), "must be at least 16 characters"));
        }
        let dkim = match (raw.dkim_domain, raw.dkim_selector, raw.dkim_key_file) {
            (None, None, None) => None,
            (Some(domain), Some(selector), Some(key_file)) => {
                let dkim = Dkim { domain, selector, key_file: PathBuf::from(key_file) };
                dkim.load().map_err(|problem| ConfigError::new(name("dkim_key_file"), problem))?;
                Some(dkim)
            }
            _ => {
                return Err(ConfigError::new(
                    name("dkim_domain"),
                    "DKIM needs all three of dkim_domain, dkim_selector and dkim_key_file",
                ));
            }
        };
        let mut sms_providers = Vec::new();
        match (raw.twilio_account_sid.clone(), raw.twilio_auth_token.clone(), raw.sms_from.clone()) {
            (None, None, _) => {}
            // Twilio for WhatsApp only.
            (Some(_), Some(_), None) if raw.whatsapp_from.is_some() => {}
            (Some(account_sid), Some(auth_token), Some(from)) => {
                let base = raw.twilio_base_url.clone().unwrap_or_else(|| "https://api.twilio.com/".into());
                let base_url = http_url(&base).map_err(|p| ConfigError::new(name("twilio_base_url"), p))?;
                sms_providers.push(SmsProviderConfig::Twilio { base_url, account_sid, auth_token, from });
            }
            _ => {
                return Err(ConfigError::new(
                    name("twilio_account_sid"),
                    "Twilio needs twilio_account_sid, twilio_auth_token and sms_from (or whatsapp_from)",
                ));
            }
        }
        for provider in &sms_providers {
            provider.build().map_err(|p| ConfigError::new(name("twilio_base_url"), p))?;
        }
        let setting = name("sms_providers");
        sms_providers.extend(sms::tables((&setting, "sms_providers"), raw.sms_providers, raw.sms_from.as_deref())?);
        let mut whatsapp_providers = Vec::new();
        if let (Some(account_sid), Some(auth_token), Some(from)) =
            (raw.twilio_account_sid.clone(), raw.twilio_auth_token.clone(), raw.whatsapp_from.clone())
        {
            let base = raw.twilio_base_url.clone().unwrap_or_else(|| "https://api.twilio.com/".into());
            let base_url = http_url(&base).map_err(|p| ConfigError::new(name("twilio_base_url"), p))?;
            whatsapp_providers.push(SmsProviderConfig::Twilio { base_url, account_sid, auth_token, from });
        }
        for provider in &whatsapp_providers {
            provider.build().map_err(|p| ConfigError::new(name("twilio_base_url"), p))?;
        }
        let setting = name("whatsapp_providers");
        let tables =
            sms::tables((&setting, "whatsapp_providers"), raw.whatsapp_providers, raw.whatsapp_from.as_deref());
        whatsapp_providers.extend(tables?);
        let hours = |key: &str, text: Option<String>| match text {
            None => Ok(crate::delivery::sms::SendingHours::default()),
            Some(text) => crate::delivery::sms::SendingHours::parse(&text).map_err(|p| ConfigError::new(name(key), p)),
        };
        let sms_hours = hours("sms_hours", raw.sms_hours)?;
        let whatsapp_hours = hours("whatsapp_hours", raw.whatsapp_hours)?;
        let timezone = match raw.timezone {
            None => chrono_tz::Tz::UTC,
            Some(text) => text.parse().map_err(|_| {
                ConfigError::new(name("timezone"), format!("'{text}' is not an IANA time zone like Europe/Rome"))
            })?,
        };
        // A whole number in a range, written as a number in the file or as text in the environment.
        let whole =
            |key: &str, value: Option<toml::Value>, default: u32, range: std::ops::RangeInclusive<u32>, hint: &str| {
                let Some(value) = value else { return Ok(default) };
                value
                    .as_integer()
                    .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                        ConfigError::new(name(key), format!("'{shown}' is not {hint}"))
                    })
            };
        let sms_max_segments =
            whole("sms_max_segments", raw.sms_max_segments, DEFAULT_MAX_SEGMENTS, 1..=10, "a number from 1 to 10")?;
        let cap = |key: &str, value: Option<toml::Value>| -> Result<Option<u32>, ConfigError> {
            let n = whole(key, value, 0, 0..=10_000, "a whole number (0: no cap)")?;
            Ok((n > 0).then_some(n))
        };
        let (email_per_day, email_per_week) =
            (cap("email_per_day", raw.email_per_day)?, cap("email_per_week", raw.email_per_week)?);
        let (sms_per_day, sms_per_week) =
            (cap("sms_per_day", raw.sms_per_day)?, cap("sms_per_week", raw.sms_per_week)?);
        let email_hours = match raw.email_hours.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(
                crate::delivery::sms::SendingHours::parse(text)
                    .map_err(|problem| ConfigError::new(name("email_hours"), problem))?,
            ),
        };
        let send_days = match raw.send_days.as_deref() {
            None => [true; 7],
            Some(text) => crate::delivery::policy::parse_days(text)
                .map_err(|problem| ConfigError::new(name("send_days"), problem))?,
        };
        let holidays = match raw.holidays {
            None => Vec::new(),
            Some(value) => {
                let items = list_items(&value);
                items
                    .iter()
                    .filter(|i| !i.trim().is_empty())
                    .map(|i| crate::delivery::policy::Holiday::parse(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|problem| ConfigError::new(name("holidays"), problem))?
            }
        };
        let sunset_after = match raw.sunset_after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(
                crate::core::timing::Span::parse(text, false)
                    .map(crate::core::timing::Span::as_chrono)
                    .ok()
                    .filter(|span| *span >= chrono::Duration::days(7))
                    .ok_or_else(|| {
                        ConfigError::new(
                            name("sunset_after"),
                            format!("'{text}' is not a span of at least 7 days such as 180d"),
                        )
                    })?,
            ),
        };
        let sunset_asks = match raw.sunset.as_deref().map(str::trim) {
            None | Some("ask") => true,
            Some("stop") => false,
            Some(other) => return Err(ConfigError::new(name("sunset"), format!("'{other}' is not ask or stop"))),
        };
        let retry_max_age = match raw.retry_max_age {
            None => chrono::Duration::hours(crate::delivery::DEFAULT_MAX_AGE_HOURS),
            Some(text) => crate::core::timing::Span::parse(&text, false)
                .map(crate::core::timing::Span::as_chrono)
                .ok()
                .filter(|age| *age >= chrono::Duration::minutes(1))
                .ok_or_else(|| {
                    ConfigError::new(name("retry_max_age"), format!("'{text}' is not a duration like 48h or 5d"))
                })?,
        };
        let span = |key: &str, text: Option<String>, default: chrono::Duration, least: chrono::Duration| match text {
            None => Ok(default),
            Some(text) => crate::core::timing::Span::parse(&text, false)
                .map(crate::core::timing::Span::as_chrono)
                .ok()
                .filter(|d| *d >= least)
                .ok_or_else(|| ConfigError::new(name(key), format!("'{text}' is not a duration like 30s, 24h or 7d"))),
        };
        let fallback_after = span(
            "fallback_after",
            raw.fallback_after,
            chrono::Duration::minutes(crate::audience::reach::fallback::DEFAULT_FALLBACK_AFTER_MINUTES),
            chrono::Duration::seconds(1),
        )?;
        let confirm_link_ttl =
            span("confirm_link_ttl", raw.confirm_link_ttl, chrono::Duration::days(7), chrono::Duration::minutes(1))?;
        let confirm_every =
            span("confirm_every", raw.confirm_every, chrono::Duration::hours(24), chrono::Duration::zero())?;
        let form_min_fill =
            span("form_min_fill", raw.form_min_fill, chrono::Duration::seconds(3), chrono::Duration::zero())?;
        let claim_lease = span(
            "claim_lease",
            raw.claim_lease,
            chrono::Duration::seconds(crate::delivery::DEFAULT_CLAIM_LEASE_SECONDS),
            chrono::Duration::seconds(2),
        )?;
        let admin_session_ttl = span(
            "admin_session_ttl",
            raw.admin_session_ttl,
            chrono::Duration::hours(12),
            chrono::Duration::minutes(1),
        )?;
        let header_timeout =
            span("header_timeout", raw.header_timeout, chrono::Duration::seconds(10), chrono::Duration::seconds(1))?;
        let max_connections =
            whole("max_connections", raw.max_connections, DEFAULT_MAX_CONNECTIONS, 1..=u32::MAX, "a whole number ≥ 1")?;
        let webhook_allow = match raw.webhook_allow {
            None => Vec::new(),
            Some(value) => {
                let items = list_items(&value);
                let mut networks = Vec::new();
                for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
                    let network = item
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            ConfigError::new(
                                name("webhook_allow"),
                                format!("'{item}' is not an address or network such as 10.0.0.0/8"),
                            )
                        })?;
                    networks.push(network);
                }
                networks
            }
        };
        let signups_per_ip = whole(
            "signups_per_ip",
            raw.signups_per_ip,
            DEFAULT_SIGNUPS_PER_IP,
            0..=u32::MAX,
            "a whole number (0: no limit)",
        )?;
        let trust_proxy = match raw.trust_proxy {
            None => false,
            Some(value) => value
                .as_bool()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| ConfigError::new(name("trust_proxy"), format!("'{value}' is not true or false")))?,
        };
        let bounce_smtp_listen = match raw.bounce_smtp_listen.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    name("bounce_smtp_listen"),
                    format!("'{text}' is not an address and port such as 0.0.0.0:25"),
                )
            })?),
        };
        let bounce_address = match raw.bounce_address.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(text) => Some(text.parse::<lettre::Address>().map_err(|e| {
                ConfigError::new(
                    name("bounce_address"),
                    format!("'{text}' is not an address like bounces@mail.example.com: {e}"),
                )
            })?),
            None => None,
        };
        if let Some(address) = &bounce_address
            && address.user().contains('+')
        {
            return Err(ConfigError::new(name("bounce_address"), "must not contain '+' (each message adds its own)"));
        }
        let ses_topic_arns: Vec<String> = raw
            .ses_topic_arns
            .as_ref()
            .map(list_items)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = ses_topic_arns.iter().find(|arn| !arn.starts_with("arn:aws") || arn.split(':').count() != 6)
        {
            return Err(ConfigError::new(
                name("ses_topic_arns"),
                format!("'{bad}' is not a topic ARN such as arn:aws:sns:eu-west-1:123456789012:ses-bounces"),
            ));
        }
        if let Some(key) = &raw.sendgrid_webhook_key {
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD.decode(key.trim()).map_or(true, |k| k.len() < 64) {
                return Err(ConfigError::new(
                    name("sendgrid_webhook_key"),
                    "must be the base64 verification key SendGrid shows",
                ));
            }
        }
        let unsubscribe_mailto = match raw.unsubscribe_mailto {
            None => None,
            Some(text) => Some(text.parse::<lettre::Address>().map_err(|e| {
                ConfigError::new(
                    name("unsubscribe_mailto"),
                    format!("'{text}' is not an address like unsubscribe@example.com: {e}"),
                )
            })?),
        };
        let log_format = match raw.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(name("log_format"), format!("'{other}' is not text or json")));
            }
        };
        let log = raw.log.unwrap_or_else(|| DEFAULT_LOG.into());
        tracing_subscriber::EnvFilter::try_new(&log)
            .map_err(|e| ConfigError::new(name("log"), format!("'{log}' is not a log filter: {e}")))?;
        Ok(Self {
            database_url,
            listen,
            base_url,
            data_dir,
            workflows_dir,
            templates_dir,
            secret: raw.secret,
            admin_token: raw.admin_token,
            max_import_bytes,
            log,
            log_format,
            email_from,
            business,
            smtp_relays,
            tracking,
            sms_providers,
            sms_hours,
            whatsapp_providers,
            whatsapp_hours,
            timezone,
            sms_help_text: raw.sms_help_text.unwrap_or_else(|| DEFAULT_HELP.into()),
            sms_max_segments,
            retry_max_age,
            confirm_link_ttl,
            fallback_after,
            confirm_every,
            form_min_fill,
            signups_per_ip,
            max_connections,
            header_timeout,
            webhook_allow,
            trust_proxy,
            metrics_token: raw.metrics_token,
            claim_lease,
            admin_session_ttl,
            email_per_day,
            email_per_week,
            sms_per_day,
            sms_per_week,
            send_days,
            email_hours,
            holidays,
            sunset_after,
            sunset_asks,
            bounce_secret: raw.bounce_secret,
            bounce_address,
            bounce_smtp_listen,
            ses_topic_arns,
            ses_certificates_dir: raw.ses_certificates_dir.map(PathBuf::from),
            sendgrid_webhook_key: raw.sendgrid_webhook_key,
            mailgun_signing_key: raw.mailgun_signing_key,
            dkim,
            unsubscribe_mailto,
        })
    }

    /// What a real sender still lacks, as hints that name the setting to set: `serve` prints
    /// them at start (nothing stops it from running without them).
    pub fn hints(&self) -> Vec<String> {
        let mut hints = Vec::new();
        if self.business.postal_address.is_none() {
            hints.push(
                "set postal_address (OWNLIST_POSTAL_ADDRESS): marketing email must carry the sender's postal address (CAN-SPAM)"
                    .to_owned(),
            );
        }
        if self.email_from.email.domain() == "localhost" {
            hints.push(format!(
                "the sender is {}, which no mailbox provider accepts: set email_from (OWNLIST_EMAIL_FROM) or a base_url on your domain",
                self.email_from.email
            ));
        }
        if self.business.name == crate::core::brand::Business::default().name {
            hints.push("set business_name (OWNLIST_BUSINESS_NAME): pages and emails are signed 'ownlist'".to_owned());
        }
        hints
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    /// The SQLite database file, when the database is SQLite (`sqlite://path?…`, `sqlite:path`).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        if !self.is_sqlite() {
            return None;
        }
        let rest = self.database_url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A webhook's signing secret, from the environment variable its workflow step names. (Secrets
/// stay out of workflow files, which live in git.)
pub fn webhook_secret(variable: &str) -> Option<String> {
    // ownlist's own settings (its secret, tokens, database URL) are never sent anywhere.
    if variable.starts_with("OWNLIST_") {
        return None;
    }
    std::env::var(variable).ok().filter(|v| !v.is_empty())
}

/// An http(s) URL with a host.
pub(crate) fn http_url(text: &str) -> Result<url::Url, Reason> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| reason!("'{text}' is not an http(s) URL"))
}

fn setting_name(key: &str, file: Option<&Path>) -> String {
    let env = format!("OWNLIST_{}", key.to_uppercase());
    match file {
        Some(path) => format!("{env} (or {key} in {})", path.display()),
        None => env,
    }
}

/// `BUSINESS_NAME <noreply@HOST>`, HOST from `base_url` (`localhost` for an address or a
/// name without a dot).
/// A list setting's items: a TOML array in the file, comma-separated text in the environment.
fn list_items(value: &toml::Value) -> Vec<String> {
    match value {
        toml::Value::Array(items) => items.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect(),
        other => other.as_str().unwrap_or_default().split(',').map(str::to_owned).collect(),
    }
}

fn default_email_from(base_url: &url::Url, business_name: &str) -> Result<lettre::message::Mailbox, Reason> {
    let domain = match base_url.host() {
        Some(url::Host::Domain(domain)) if domain.contains('.') => domain,
        _ => "localhost",
    };
    let address = lettre::Address::new("noreply", domain).map_err(|e| reason!("noreply@{domain}: {e}"))?;
    Ok(lettre::message::Mailbox::new(Some(business_name.to_owned()), address))
}

/// The business's identity from its six settings (taken out of `raw`).
fn business(raw: &mut RawSettings, name: &impl Fn(&str) -> String) -> Result<Business, ConfigError> {
    let text = |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let url = |key: &str, value: Option<String>| -> Result<Option<String>, ConfigError> {
        text(value)
            .map(|v| http_url(&v).map(|u| u.to_string()).map_err(|problem| ConfigError::new(name(key), problem)))
            .transpose()
    };
    let defaults = Business::default();
    let business_name = text(raw.business_name.take()).unwrap_or(defaults.name);
    if business_name.chars().count() > 100 || business_name.chars().any(char::is_control) {
        return Err(ConfigError::new(name("business_name"), "must be at most 100 characters, on one line"));
    }
    let accent_color = match text(raw.accent_color.take()) {
        None => defaults.accent_color,
        Some(color) => parse_color(&color)
            .ok_or_else(|| ConfigError::new(name("accent_color"), format!("'{color}' is not a colour like #2f6fed")))?,
    };
    let support_email = match text(raw.support_email.take()) {
        None => None,
        Some(address) => Some(
            address
                .parse::<lettre::Address>()
                .map_err(|e| {
                    ConfigError::new(
                        name("support_email"),
                        format!("'{address}' is not an address like help@example.com: {e}"),
                    )
                })?
                .to_string(),
        ),
    };
    Ok(Business {
        name: business_name,
        postal_address: text(raw.postal_address.take()),
        logo_url: url("logo_url", raw.logo_url.take())?,
        accent_color,
        privacy_url: url("privacy_url", raw.privacy_url.take())?,
        support_email,
    })
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("ownlist.db").display())
}

fn read_file(path: &Path) -> Result<RawSettings, ConfigError> {
    let shown = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| ConfigError::new(&shown, format!("cannot read the file: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().to_string();
        let location = e
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        let hint = unknown_key_hint(&message);
        ConfigError::new(format!("{shown}{location}"), format!("{message}{hint}"))
    })
}

fn unknown_key_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return String::new();
    };
    let key = rest.split('`').next().unwrap_or_default();
    match closest(key, &table::keys()) {
        Some(best) => format!(" (did you mean `{best}`?)"),
        None => String::new(),
    }
}

fn check_database_url(url: &str) -> Result<(), Reason> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url::Url::parse(url)
            .map(|_| ())
            .map_err(|e| reason!("'{}' is not a valid PostgreSQL URL: {e}", redact(url)));
    }
    Err(reason!("'{}' is neither sqlite:… nor postgres://…", redact(url)))
}

/// Hides a password in a URL before it is printed.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn directory(value: Option<String>, default: &str, setting: &str) -> Result<PathBuf, ConfigError> {
    let Some(value) = value else {
        return Ok(PathBuf::from(default));
    };
    let path = PathBuf::from(&value);
    match fs::read_dir(&path) {
        Ok(_) => Ok(path),
        Err(e) => Err(ConfigError::new(setting, format!("cannot read directory '{value}': {e}"))),
    }
}

fn parse_bytes(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok().filter(|n| *n > 0),
        toml::Value::String(s) => s.trim().parse::<u64>().ok().filter(|n| *n > 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn defaults_serve_sqlite_on_localhost() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.database_url.starts_with("sqlite://"));
        assert!(config.database_url.contains("data/ownlist.db"));
    }

    #[test]
    fn the_business_is_set_once_and_checked() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.business, crate::core::brand::Business::default());
        let hints = config.hints().join("\n");
        for missing in ["postal_address", "noreply@localhost", "business_name"] {
            assert!(hints.contains(missing), "{hints}");
        }
        let set = [
            ("OWNLIST_BASE_URL", "https://bottega.example/"),
            ("OWNLIST_BUSINESS_NAME", "Bottega Rossi"),
            ("OWNLIST_POSTAL_ADDRESS", "Via Roma 1, 20121 Milano"),
            ("OWNLIST_LOGO_URL", "https://bottega.example/logo.png"),
            ("OWNLIST_ACCENT_COLOR", "#C0392B"),
            ("OWNLIST_PRIVACY_URL", "https://bottega.example/privacy"),
            ("OWNLIST_SUPPORT_EMAIL", "ciao@bottega.example"),
        ];
        let config = Config::load(None, &env(&set)).unwrap();
        assert_eq!(config.business.name, "Bottega Rossi");
        assert_eq!(config.business.postal_address.as_deref(), Some("Via Roma 1, 20121 Milano"));
        assert_eq!(config.business.accent_color, "#c0392b");
        assert_eq!(config.business.privacy_url.as_deref(), Some("https://bottega.example/privacy"));
        // The default sender is the business, on base_url's domain.
        assert_eq!(config.email_from.to_string(), "Bottega Rossi <noreply@bottega.example>");
        assert_eq!(config.hints(), Vec::<String>::new());
        for (key, value, problem) in [
            ("OWNLIST_ACCENT_COLOR", "red", "OWNLIST_ACCENT_COLOR: 'red' is not a colour like #2f6fed"),
            ("OWNLIST_LOGO_URL", "logo.png", "OWNLIST_LOGO_URL: 'logo.png' is not an http(s) URL"),
            (
                "OWNLIST_PRIVACY_URL",
                "ftp://x.example/",
                "OWNLIST_PRIVACY_URL: 'ftp://x.example/' is not an http(s) URL",
            ),
            ("OWNLIST_SUPPORT_EMAIL", "nobody", "OWNLIST_SUPPORT_EMAIL: 'nobody' is not an address"),
            (
                "OWNLIST_BUSINESS_NAME",
                "two\nlines",
                "OWNLIST_BUSINESS_NAME: must be at most 100 characters, on one line",
            ),
        ] {
            let err = Config::load(None, &env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().starts_with(problem), "{err}");
        }
    }

    #[test]
    fn unknown_env_setting_is_named_with_a_suggestion() {
        let err = Config::load(None, &env(&[("OWNLIST_LISTN", "x")])).unwrap_err();
        assert_eq!(err.to_string(), "OWNLIST_LISTN: unknown setting (did you mean OWNLIST_LISTEN?)");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = Config::load(None, &env(&[("OWNLIST_LISTEN", "localhost")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_LISTEN: 'localhost'"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_DATABASE_URL:"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_BASE_URL", "not a url")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_BASE_URL:"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_TEMPLATES_DIR", "/nonexistent/x")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_TEMPLATES_DIR: cannot read directory"), "{err}");
    }

    #[test]
    fn mail_settings_are_checked_and_relays_never_show_their_password() {
        let config = Config::load(None, &env(&[("OWNLIST_BASE_URL", "https://shop.example/")])).unwrap();
        assert_eq!(config.email_from.to_string(), "ownlist <noreply@shop.example>");
        assert!(config.smtp_relays.is_empty(), "email goes to files unless relays are set");
        let relays = "smtps://user:pw@mail.example:465, smtp://backup.example:2525?tls=required";
        let config = Config::load(None, &env(&[("OWNLIST_SMTP_RELAYS", relays)])).unwrap();
        assert_eq!(config.smtp_relays.len(), 2);
        assert!(config.tracking, "tracking is on by default");
        let single = [("OWNLIST_SMTP_URL", "smtp://mail.example:25"), ("OWNLIST_TRACKING", "off")];
        let config = Config::load(None, &env(&single)).unwrap();
        assert_eq!(config.smtp_relays, vec!["smtp://mail.example:25"]);
        assert!(!config.tracking);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ownlist.toml");
        let file = "smtp_relays = [\"smtp://a.example\", \"smtp://b.example:2525\"]\ntracking = false\n";
        fs::write(&path, file).unwrap();
        let config = Config::load(Some(&path), &env(&[("OWNLIST_SMTP_URL", "smtp://first.example")])).unwrap();
        assert_eq!(config.smtp_relays, vec!["smtp://first.example", "smtp://a.example", "smtp://b.example:2525"]);
        assert!(!config.tracking);
        let paced = [("OWNLIST_SMTP_URL", "smtp://mail.example?rate=2.5&cooldown=30&tls=opportunistic")];
        assert!(Config::load(None, &env(&paced)).is_ok());
        for (url, problem) in [
            ("smtp://mail.example?rate=fast", "rate=fast is not a number of messages per second"),
            ("smtp://mail.example?rate=0", "rate=0 is not"),
            ("smtp://mail.example?cooldown=-1", "cooldown=-1 is not a number of seconds"),
        ] {
            let err = Config::load(None, &env(&[("OWNLIST_SMTP_URL", url)])).unwrap_err();
            assert!(err.to_string().contains(problem), "{err}");
        }
        assert_eq!(config.retry_max_age, chrono::Duration::hours(48));
        let config = Config::load(None, &env(&[("OWNLIST_RETRY_MAX_AGE", "5d")])).unwrap();
        assert_eq!(config.retry_max_age, chrono::Duration::days(5));
        let err = Config::load(None, &env(&[("OWNLIST_RETRY_MAX_AGE", "soon")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_RETRY_MAX_AGE: 'soon'"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_TRACKING", "sometimes")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_TRACKING: 'sometimes'"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_EMAIL_FROM", "not an address")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_EMAIL_FROM: 'not an address'"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_SMTP_RELAYS", "http://user:secret@mail.example")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_SMTP_RELAYS: 'http://user:***@mail.example/'"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_UNSUBSCRIBE_MAILTO", "nobody")])).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_UNSUBSCRIBE_MAILTO: 'nobody'"), "{err}");
        let err = Config::load(None, &env(&[("OWNLIST_DKIM_DOMAIN", "shop.example")])).unwrap_err();
        assert!(err.to_string().contains("all three"), "{err}");
        let missing = [
            ("OWNLIST_DKIM_DOMAIN", "shop.example"),
            ("OWNLIST_DKIM_SELECTOR", "news"),
            ("OWNLIST_DKIM_KEY_FILE", "/nonexistent/dkim.pem"),
        ];
        let err = Config::load(None, &env(&missing)).unwrap_err();
        assert!(err.to_string().starts_with("OWNLIST_DKIM_KEY_FILE: cannot read the DKIM key"), "{err}");
    }

    #[test]
    fn file_errors_carry_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ownlist.toml");
        fs::write(&path, "listen = \"127.0.0.1:9000\"\nlisten_addr = 1\n").unwrap();
        let err = Config::load(Some(&path), &env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ownlist.toml:2:1"), "{text}");
        assert!(text.contains("did you mean `listen`"), "{text}");
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ownlist.toml");
        fs::write(&path, "listen = \"127.0.0.1:9000\"\n").unwrap();
        let config = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(config.listen.port(), 9000);
        let config = Config::load(Some(&path), &env(&[("OWNLIST_LISTEN", "127.0.0.1:9001")])).unwrap();
        assert_eq!(config.listen.port(), 9001);
    }

    #[test]
    fn test_variables_are_not_settings() {
        assert!(Config::load(None, &env(&[("OWNLIST_TEST_DATABASE_URL", "postgres://x")])).is_ok());
    }
}
