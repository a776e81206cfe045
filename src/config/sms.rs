//! SMS providers as configured: the Twilio settings and `[[sms_providers]]` tables.

use super::http_url;
use crate::core::error::{Reason, reason};

/// One SMS provider as configured.
#[derive(Clone)]
pub enum SmsProviderConfig {
    Twilio { base_url: url::Url, account_sid: String, auth_token: String, from: String },
    Http { url: url::Url, token: Option<String>, from: String },
}

impl std::fmt::Debug for SmsProviderConfig {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Twilio { base_url, account_sid, from, .. } => {
                write!(f, "twilio {base_url} account {account_sid} from {from}")
            }
            Self::Http { url, from, .. } => write!(f, "http {url} from {from}"),
        }
    }
}

impl SmsProviderConfig {
    /// The provider, ready to send.
    pub fn build(&self) -> Result<crate::delivery::sms::Provider, Reason> {
        use crate::delivery::sms::Provider;
        match self {
            Self::Twilio { base_url, account_sid, auth_token, from } => {
                Provider::twilio(base_url, account_sid, auth_token, from)
            }
            Self::Http { url, token, from } => Ok(Provider::http(url, token.as_deref(), from)),
        }
    }
}

/// The `[[sms_providers]]` (or `[[whatsapp_providers]]`) tables, `setting` naming them in errors,
/// each checked whole (it builds) and taking `default_from` when it has no `from`.
pub(super) fn tables(
    (setting, key): (&str, &str),
    value: Option<toml::Value>,
    default_from: Option<&str>,
) -> Result<Vec<SmsProviderConfig>, super::ConfigError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let toml::Value::Array(items) = value else {
        return Err(super::ConfigError::new(setting, format!("must be a list of [[{key}]] tables in ownlist.toml")));
    };
    let mut providers = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let provider =
            provider(&item, default_from).map_err(|p| super::ConfigError::new(format!("{setting} [{i}]"), p))?;
        provider.build().map_err(|p| super::ConfigError::new(setting, p))?;
        providers.push(provider);
    }
    Ok(providers)
}

/// One `[[sms_providers]]` table: `type = "twilio"` (base_url, account_sid, auth_token, from) or
/// `type = "http"` (url, token, from); `from` defaults to `sms_from`.
pub(super) fn provider(item: &toml::Value, default_from: Option<&str>) -> Result<SmsProviderConfig, Reason> {
    let table = item.as_table().ok_or("each provider is a table with a type")?;
    let text = |key: &str| table.get(key).and_then(toml::Value::as_str).map(str::to_owned);
    let known: &[&str] = match text("type").as_deref() {
        Some("twilio") => &["type", "base_url", "account_sid", "auth_token", "from"],
        Some("http") => &["type", "url", "token", "from"],
        Some(other) => return Err(reason!("type '{other}' is not twilio or http")),
        None => return Err("type is missing (twilio or http)".into()),
    };
    if let Some(unknown) = table.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(reason!("unknown key '{unknown}' (a provider takes {})", known.join(", ")));
    }
    let from = text("from").or_else(|| default_from.map(str::to_owned)).ok_or("from is missing (or set sms_from)")?;
    let required = |key: &str| text(key).ok_or_else(|| format!("{key} is missing"));
    if known.contains(&"account_sid") {
        let base = text("base_url").unwrap_or_else(|| "https://api.twilio.com/".into());
        Ok(SmsProviderConfig::Twilio {
            base_url: http_url(&base)?,
            account_sid: required("account_sid")?,
            auth_token: required("auth_token")?,
            from,
        })
    } else {
        Ok(SmsProviderConfig::Http { url: http_url(&required("url")?)?, token: text("token"), from })
    }
}

impl super::Config {
    /// Each channel's relays and providers by the names the delivery statistics use (SMTP relays
    /// as `host:port`, SMS providers as `twilio:host` or `http:host`), for reachability drills.
    pub fn reach_providers(&self) -> crate::audience::reach::Providers {
        use crate::core::values::Channel;
        let relays = self
            .smtp_relays
            .iter()
            .filter_map(|url| crate::delivery::email::Relay::from_url(url).ok())
            .map(|relay| (Channel::Email, relay.name));
        let providers =
            self.sms_providers.iter().filter_map(|p| p.build().ok()).map(|provider| (Channel::Sms, provider.name));
        let whatsapp = self
            .whatsapp_providers
            .iter()
            .filter_map(|p| p.build().ok())
            .map(|provider| (Channel::Whatsapp, provider.name));
        crate::audience::reach::Providers(relays.chain(providers).chain(whatsapp).collect())
    }
}
