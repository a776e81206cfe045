//! Every setting, declared once: its key (the `ownlist.toml` key; the environment variable is
//! `OWNLIST_` and the key in upper case), how it is written, its default and what it means. The
//! raw settings a file or the environment gives, the list of known keys, the reading of the
//! environment and the table in docs/configuration.md all come from this one declaration; the
//! typed value of each setting and its checks are in [`super::Config::validate`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;
use crate::core::text::closest;

/// How a setting is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Text, in the file and in the environment.
    Text,
    /// A TOML value in the file (a number, a boolean, a list); text in the environment.
    Value,
    /// TOML tables in the file only (`[[sms_providers]]`).
    Tables,
}

/// One setting as declared.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub form: Form,
    /// The default, as the documentation gives it.
    pub default: &'static str,
    /// What it means, as the documentation gives it (Markdown).
    pub meaning: &'static str,
}

impl Setting {
    /// The environment variable that sets it (none for file-only settings).
    pub fn env(&self) -> Option<String> {
        (self.form != Form::Tables).then(|| format!("OWNLIST_{}", self.key.to_uppercase()))
    }
}

/// The type a raw setting is kept as, by how it is written.
macro_rules! raw_type {
    (Text) => {
        String
    };
    (Value) => {
        toml::Value
    };
    (Tables) => {
        toml::Value
    };
}

macro_rules! settings {
    ($( $key:ident : $form:ident, default $default:literal, $meaning:literal; )*) => {
        /// The settings as a file or the environment spells them, not yet checked.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawSettings {
            $( pub(super) $key: Option<raw_type!($form)>, )*
        }

        /// Every setting, in the order the documentation lists them.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { key: stringify!($key), form: Form::$form, default: $default, meaning: $meaning }, )*
        ];

        impl RawSettings {
            /// Sets `key` from an environment variable's text; false for an unknown key.
            fn set_from_env(&mut self, key: &str, text: String) -> bool {
                match key {
                    $( stringify!($key) => { self.$key = Some(from_env!($form, text)); true } )*
                    _ => false,
                }
            }
        }
    };
}

/// A raw setting from the environment's text.
macro_rules! from_env {
    (Text, $text:expr) => {
        $text
    };
    (Value, $text:expr) => {
        toml::Value::String($text)
    };
    (Tables, $text:expr) => {
        toml::Value::String($text)
    };
}

settings! {
    database_url: Text, default "`sqlite://DATA_DIR/ownlist.db?mode=rwc`",
        "`sqlite:…` or `postgres://user:pass@host/db`; nothing else changes between the two";
    listen: Text, default "`127.0.0.1:8080`", "address and port to serve on";
    base_url: Text, default "`http://LISTEN/`", "the public URL, used in links";
    data_dir: Text, default "`./data`", "SQLite database and the generated secret";
    workflows_dir: Text, default "`./workflows`", "workflow YAML files (must be readable when set)";
    templates_dir: Text, default "`./templates`", "tera templates (must be readable when set)";
    secret: Text, default "generated into `DATA_DIR/secret` (mode 0600) on first run",
        "key for signed links, at least 32 characters";
    admin_token: Text, default "none",
        "a bootstrap admin token (≥ 16 characters), accepted beside the hashed ones";
    max_import_bytes: Value, default "`1073741824` (1 GiB)", "largest CSV accepted by `POST /api/v1/imports`";
    log: Text, default "`info`", "log filter, e.g. `info,ownlist=debug`";
    log_format: Text, default "`text`",
        "`json` writes one JSON object per line (`timestamp`, `level`, `target`, `message` and the event's fields) for a log collector. At `info`, logs name subscribers by id only, never by address or name";
    claim_lease: Text, default "`5m`",
        "several instances (PostgreSQL): how long a batch of messages claimed by one process stays reserved for it; a message is attempted only while at least half its lease remains, so keep it over twice the longest attempt (30 s per SMTP relay, 15 s per SMS provider). A crashed process's messages are taken over when their leases end; a stopped one gives them back at once. The engine lease is the smaller of this and 30 s";
    admin_session_ttl: Text, default "`12h`",
        "how long a dashboard (`/admin`) login lasts before it asks for the token again";
    metrics_token: Text, default "none (`/metrics` is open, like `/healthz`)",
        "when set, `GET /metrics` wants it as `Authorization: Bearer …`";
    email_from: Text, default "`BUSINESS_NAME <noreply@HOST>` (HOST from `base_url`, `localhost` for an IP)",
        "the sender of every email, `Name <address>` or an address; `ownlist serve` warns when it is at `localhost`, which no mailbox provider accepts";
    business_name: Text, default "`ownlist`",
        "the business's name: the default sender's name, above and below every page and email (docs/branding.md), `business.name` in templates";
    postal_address: Text, default "none (`ownlist serve` warns)",
        "the business's postal address, in every email's footer and every page's, which marketing email must carry (CAN-SPAM; `business.postal_address`)";
    logo_url: Text, default "none", "an http(s) URL of the business's logo, above every page and email and the pages' icon (`business.logo_url`)";
    accent_color: Text, default "`#2f6fed`", "the brand colour of buttons, cards and the icon, `#rrggbb`; button text is white or black for contrast (`business.accent_color`)";
    privacy_url: Text, default "none", "an http(s) URL of the privacy policy, linked from every page's footer (`business.privacy_url`)";
    support_email: Text, default "none", "an address people can write to, linked from every page's footer (`business.support_email`)";
    smtp_url: Text, default "none",
        "one SMTP relay (the common case, environment alone): `smtp://host:25` plain, `smtp://user:pw@host:587?tls=required` STARTTLS (`?tls=opportunistic`: when offered), `smtps://user:pw@host:465` TLS; `&rate=N` sends at most N messages a second to it, evenly spaced; `&cooldown=S` sets how long it is skipped after failing (default 20 s); `&timeout=S` how long its greeting and each reply may take (default: 5 s to connect, 10 s for the greeting, 30 s a reply); a path names the EHLO host";
    smtp_relays: Value, default "none",
        "more relays in order of preference, after `smtp_url`: a TOML array of URLs (or comma-separated in the environment). Without any relay, email is written to `data/mail/{id}.eml`. A relay that fails (connection, TLS, timeout, 4xx) hands the message to the next and is skipped for its cool-down; then one message probes it while the others keep going elsewhere, and its first success reopens it to all (circuit breaker). When every relay is cooling down, messages wait for the first to reopen (no attempt is counted), and when a relay works again the messages waiting out a retry are sent at once. A 5xx fails the message at once";
    tracking: Value, default "`true`",
        "open and click tracking of email (`false`/`off` turns it off everywhere; a workflow, an email step or a broadcast can turn it off for itself)";
    unsubscribe_mailto: Text, default "none",
        "a mailbox offered in `List-Unsubscribe` after the one-click link, for mail clients without one-click; the subject carries the subscriber's signed token, so whoever reads the mailbox (or a script) unsubscribes them with `POST /u/{token}`";
    bounce_secret: Text, default "none (the bounce webhook is off)",
        "shared secret (≥ 16 characters) a bounce processor sends as `Authorization: Bearer …` to `POST /webhooks/bounces`, and Postmark as the password of the webhook URL's basic authentication (`https://any:SECRET@…/webhooks/bounces/postmark`)";
    bounce_address: Text, default "none; `bounces@` the sender's domain when `bounce_smtp_listen` is set",
        "the envelope sender (return path) of email: each message goes out from `LOCAL+ID-MAC@DOMAIN`, so the bounce mail that comes back names its message exactly (VERP); point the domain's MX at the bounce receiver";
    bounce_smtp_listen: Text, default "none (no bounce receiver)",
        "where the bounce receiver listens for SMTP (`0.0.0.0:25`): it takes delivery status notifications (RFC 3464) and abuse reports (RFC 5965) sent to the return paths, and nothing else";
    ses_topic_arns: Value, default "none (the SES webhook is off)",
        "the SNS topics whose notifications `POST /webhooks/bounces/ses` takes (comma-separated, an array in the file): Amazon SES bounce and complaint notifications, their signature checked against the certificate SNS names, fetched only from an `sns.REGION.amazonaws.com` HTTPS address; the subscription is confirmed by itself";
    ses_certificates_dir: Text, default "none (fetched from SNS)",
        "a folder of SNS signing certificates (PEM, each named as the last part of its `SigningCertURL`) used instead of fetching them: for a machine without outgoing HTTPS, or to pin them";
    sendgrid_webhook_key: Text, default "none (the SendGrid webhook is off)",
        "the verification key of SendGrid's signed event webhook (base64, as SendGrid shows it), for `POST /webhooks/bounces/sendgrid`";
    mailgun_signing_key: Text, default "none (the Mailgun webhook is off)",
        "Mailgun's HTTP webhook signing key, for `POST /webhooks/bounces/mailgun`";
    dkim_domain: Text, default "none (unsigned)",
        "DKIM signing, with `dkim_selector` and `dkim_key_file` (all three or none): RSA as PKCS#1 PEM (`openssl genrsa -traditional 2048`; publish `v=DKIM1; k=rsa; p=…` at `SELECTOR._domainkey.DOMAIN`) signs rsa-sha256; Ed25519 as PKCS#8 PEM (`openssl genpkey -algorithm ed25519`; publish `k=ed25519; p=` the base64 of the raw 32-byte public key) or the base64 of its 32 private bytes signs ed25519-sha256. The signature (relaxed/relaxed) covers From, To, Subject, Date, Message-ID, List-Unsubscribe and List-Unsubscribe-Post";
    dkim_selector: Text, default "none", "the DKIM selector (see `dkim_domain`)";
    dkim_key_file: Text, default "none", "the DKIM private key's file (see `dkim_domain`)";
    twilio_account_sid: Text, default "none",
        "one Twilio-compatible SMS provider, with `twilio_auth_token` and `sms_from` (all three or none)";
    twilio_auth_token: Text, default "none", "that provider's auth token (see `twilio_account_sid`)";
    sms_from: Text, default "none",
        "the sender of SMS: a number (E.164) or a Messaging Service SID (`MG…`); the default `from` of `[[sms_providers]]`";
    twilio_base_url: Text, default "`https://api.twilio.com/`",
        "where that provider's API is (a compatible provider, or a fake in tests)";
    sms_providers: Tables, default "none",
        "more SMS providers in order of preference, after the Twilio one: tables `[[sms_providers]]` with `type = \"twilio\"` (`account_sid`, `auth_token`, `base_url`, `from`) or `type = \"http\"` (`url`, `token`, `from`), see \"SMS\" below. Without any provider, SMS is written to `data/sms/{id}.json`";
    sms_hours: Text, default "`08:00-20:00`",
        "when marketing SMS (workflow steps, broadcasts) may arrive, in the subscriber's time zone; one due outside waits for the next opening";
    timezone: Text, default "`UTC`", "the time zone of subscribers without one (for `sms_hours`)";
    whatsapp_from: Text, default "none",
        "the WhatsApp sender (a number, E.164, approved for WhatsApp; or a Messaging Service SID `MG…`): with `twilio_account_sid` and `twilio_auth_token` it makes a Twilio WhatsApp provider; the default `from` of `[[whatsapp_providers]]`";
    whatsapp_providers: Tables, default "none",
        "more WhatsApp providers in order of preference, as `[[sms_providers]]` (`type = \"twilio\"` or `\"http\"`), see \"WhatsApp\" below. Without any provider, WhatsApp messages are written to `data/whatsapp/{id}.json`";
    whatsapp_hours: Text, default "`08:00-20:00`",
        "when marketing WhatsApp messages may arrive, in the subscriber's time zone; one due outside waits for the next opening";
    sms_help_text: Text, default "`Reply STOP to stop, START to start again.`",
        "the answer to a text saying HELP (put your business name and contact here)";
    sms_max_segments: Value, default "`3`",
        "the most segments an SMS text may take; `workflows check` refuses a longer one";
    email_per_day: Value, default "none (no cap)",
        "the most marketing emails (workflow steps and broadcasts together) one subscriber gets in a rolling day; one more waits in the outbox until the oldest leaves the day, and the timeline says so. Confirmations and replies are never capped; `0` means no cap";
    email_per_week: Value, default "none (no cap)", "likewise, in a rolling week (e.g. `email_per_day = 1`, `email_per_week = 3`)";
    sms_per_day: Value, default "none (no cap)", "the most marketing texts one subscriber gets in a rolling day (as `email_per_day`)";
    sms_per_week: Value, default "none (no cap)", "likewise, in a rolling week";
    email_hours: Text, default "none (any hour)",
        "when marketing email may arrive, in the subscriber's time zone (`08:00-20:00`); one due outside waits for the next opening (text messages keep to `sms_hours`)";
    send_days: Text, default "`mon-sun`",
        "the days marketing (email and SMS) goes out, in the subscriber's time zone (`mon-fri`, `mon,wed,fri`); what falls due on another day waits for the next open one";
    holidays: Value, default "none",
        "days no marketing goes out, in the subscriber's time zone: `MM-DD` every year, `YYYY-MM-DD` once (comma-separated, an array in the file)";
    sunset_after: Text, default "none",
        "the sunset rule: marketing email to someone who has had it for this long (`180d`) with no open or click by a person in that time is not sent (cancelled; the timeline says why). Opens by privacy proxies and clicks by link scanners do not count as engagement";
    sunset: Text, default "`ask`",
        "what the sunset rule does: `ask` sends them, once, a short email asking whether they still want email (following its link resumes it; without an answer no more marketing email goes), `stop` stops at once";
    retry_max_age: Text, default "`48h`",
        "how long a message failing for a temporary reason (4xx, network, HTTP 429/5xx) keeps being retried (backoff 1 min doubling to 1 h); then it fails";
    fallback_after: Text, default "`10m`",
        "`reach: first` (a broadcast's, or a `message:` step's): a message failing for now (its relays or providers down, say) is tried once more after this long, and failing again it goes on the next channel instead";
    confirm_link_ttl: Text, default "`7d`",
        "how long a double opt-in confirmation link works; after that it answers 410 and points to the page to sign up again";
    confirm_every: Text, default "`24h`",
        "at most one confirmation message per address and channel in this long (subscription bombing); a signup within it is recorded but sends nothing";
    form_min_fill: Text, default "`3s`",
        "a landing-page form submitted sooner than this after it was served is taken for a bot's";
    signups_per_ip: Value, default "`10`",
        "landing-page signups allowed per client address per sliding hour (per process); past it, 429 with `Retry-After`; `0` turns the limit off";
    max_connections: Value, default "`4096`",
        "HTTP connections open at once; past it a new connection is answered 503 (`Retry-After: 1`) and closed at once, so a flood of idle sockets cannot use up the process's file descriptors. Keep the open-files limit (`ulimit -n`, systemd's `LimitNOFILE`) at least this plus 256 for the database, relays and files";
    header_timeout: Text, default "`10s`",
        "how long a client has to send a request's headers, and how long an idle keep-alive connection stays open; a connection that sends nothing in time is closed";
    webhook_allow: Value, default "none",
        "networks webhook steps may reach although they are loopback, link-local or private, comma-separated (`10.0.0.0/8,192.168.1.20`; an array in the file). Without it such addresses are refused, checked on every address a name resolves to, when connecting; redirects are never followed, and a step's `secret_env` may not name an `OWNLIST_*` setting";
    trust_proxy: Value, default "`false`",
        "behind a reverse proxy: take the client's address from the last `X-Forwarded-For` entry (for the rate limit and consent records)";
}

/// Environment variables with the prefix that are not settings: the path to the file itself,
/// and the test suite's own.
const ENV_NOT_SETTINGS: &[&str] = &["OWNLIST_CONFIG"];
const ENV_IGNORED_PREFIXES: &[&str] = &["OWNLIST_TEST_"];

/// Every key, for "did you mean" hints.
pub fn keys() -> Vec<&'static str> {
    SETTINGS.iter().map(|s| s.key).collect()
}

/// Overrides `raw` with the `OWNLIST_*` variables in `env`.
pub(super) fn apply_env(raw: &mut RawSettings, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(key) = name.strip_prefix("OWNLIST_") else { continue };
        if ENV_NOT_SETTINGS.contains(&name.as_str()) || ENV_IGNORED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let key = key.to_lowercase();
        if SETTINGS.iter().any(|s| s.key == key && s.form == Form::Tables) {
            return Err(ConfigError::new(
                name,
                format!("providers are set as [[{key}]] tables in ownlist.toml, not in the environment"),
            ));
        }
        if !raw.set_from_env(&key, value.clone()) {
            let hint = closest(&key, &keys())
                .map(|best| format!(" (did you mean OWNLIST_{}?)", best.to_uppercase()))
                .unwrap_or_default();
            return Err(ConfigError::new(name, format!("unknown setting{hint}")));
        }
    }
    Ok(())
}

/// The settings table of docs/configuration.md, as Markdown.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| environment variable | `ownlist.toml` key | default | meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let env = s.env().map_or_else(|| "—".to_owned(), |e| format!("`{e}`"));
        let key = if s.form == Form::Tables { format!("`[[{}]]`", s.key) } else { format!("`{}`", s.key) };
        out.push_str(&format!("| {env} | {key} | {} | {} |\n", s.default, s.meaning));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documentation_lists_every_setting_as_declared() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let docs = std::fs::read_to_string(&path).unwrap();
        let (start, end) = ("<!-- settings: generated -->\n", "<!-- /settings -->");
        let from = docs.find(start).expect("docs/configuration.md has the settings markers") + start.len();
        let to = docs[from..].find(end).expect("the end marker") + from;
        assert_eq!(
            &docs[from..to],
            markdown_table(),
            "docs/configuration.md's table differs from src/config/table.rs; it should read:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn keys_are_unique_and_raw_settings_take_each() {
        let mut keys = keys();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
        for s in SETTINGS.iter().filter(|s| s.form != Form::Tables) {
            let mut raw = RawSettings::default();
            assert!(raw.set_from_env(s.key, "x".into()), "{}", s.key);
        }
    }
}
