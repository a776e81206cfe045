//! Validated values: an invalid address, slug or tag cannot exist past the edge of the program.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sha2::{Digest, Sha256};

use crate::core::error::{Error, Reason, Result, reason};

/// An email address that parsed, with its case-insensitive key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    address: String,
    key: String,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, Reason> {
        let address = input.trim();
        if address.is_empty() {
            return Err("is empty".into());
        }
        if address.len() > 254 {
            return Err("is longer than 254 characters".into());
        }
        let parsed =
            lettre::Address::from_str(address).map_err(|_| format!("'{address}' is not a valid email address"))?;
        // RFC 5322 allows quoted local parts ("a b"@example.com) and address literals
        // (a@[127.0.0.1]); mail providers and relays do not take them, so no message would arrive.
        if parsed.user().contains(['"', ' ', '\\']) || address.chars().any(char::is_control) {
            return Err(reason!("'{address}' has quotes or spaces before the @: write it as the mailbox shows it"));
        }
        if parsed.domain().starts_with('[') {
            return Err(reason!("'{address}' names an IP address instead of a domain"));
        }
        let tld = parsed.domain().rsplit('.').next().unwrap_or_default();
        if !parsed.domain().contains('.') || tld.len() < 2 || tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(reason!("'{address}' has no top-level domain"));
        }
        Ok(Self { address: address.to_owned(), key: address.to_lowercase() })
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The lower-cased address that uniqueness and suppression are keyed on.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A phone number in E.164 form (`+14155550123`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(input: &str) -> Result<Self, Reason> {
        Self::parse_in(input, None)
    }

    /// Parses a number, reading one without `+` or `00` as a national number of `country`
    /// (ISO 3166, e.g. `US`) when given.
    pub fn parse_in(input: &str, country: Option<&str>) -> Result<Self, Reason> {
        let text = input.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.len() > 32 {
            return Err("is longer than 32 characters".into());
        }
        let international = match text.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => text.to_owned(),
        };
        let country = country.and_then(|c| c.parse::<phonenumber::country::Id>().ok());
        if !international.starts_with('+') && country.is_none() {
            return Err(reason!("'{text}' must be in international format, like +14155550123"));
        }
        let region = if international.starts_with('+') { None } else { country };
        let number =
            phonenumber::parse(region, &international).map_err(|_| format!("'{text}' is not a phone number"))?;
        if !phonenumber::is_valid(&number) {
            return Err(reason!("'{text}' is not a valid phone number"));
        }
        Ok(Self(number.format().mode(phonenumber::Mode::E164).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A list's slug: lower-case letters, digits and dashes.
pub fn validate_slug(slug: &str) -> Result<(), Reason> {
    let ok = (1..=64).contains(&slug.len())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(reason!("'{slug}' is not a slug: use 1 to 64 lower-case letters, digits and inner dashes"))
    }
}

/// The OpenAPI shapes of these values. A pattern states what a parser here accepts; what no
/// schema can state (a number valid in its country, a list that exists) answers 422.
pub mod schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::{Array, Object};

    /// A list's slug, as `validate_slug` takes it.
    pub const SLUG: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
    /// A tag, as `normalize_tag` takes it: something besides spaces, no control characters, commas
    /// or semicolons.
    pub const TAG: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F,;]*[^\\s\\u0000-\\u001F\\u007F-\\u009F,;][^\\u0000-\\u001F\\u007F-\\u009F,;]*$";

    /// Free text such as a name, as `normalize_text` takes it: no control characters but tabs.
    pub const TEXT: &str = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$";
    /// Free text that is required: as `TEXT`, with something besides spaces.
    pub const NAME: &str = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$";
    /// A phone number in E.164 (empty: none).
    pub const PHONE: &str = "^(\\+[1-9][0-9]{6,14})?$";
    /// A language tag in its common shapes (empty: none).
    pub const LOCALE: &str = "^([A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*)?$";
    /// A list's slug in a query, where empty means not given.
    pub const SLUG_OR_EMPTY: &str = "^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$";
    /// A page cursor (16 bytes in URL-safe base64), where empty means the first page.
    pub const CURSOR: &str = "^([A-Za-z0-9_-]{21}[AQgw])?$";
    /// An event's name.
    pub const EVENT: &str = "^[A-Za-z0-9_.-]{1,64}$";
    /// A day, `YYYY-MM-DD`, in a query (empty: not given).
    pub const DAY_OR_EMPTY: &str = "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$";

    /// Every pattern the API's document uses: the document test holds the two together.
    pub const ALL: [&str; 10] = [SLUG, TAG, TEXT, NAME, PHONE, LOCALE, SLUG_OR_EMPTY, CURSOR, EVENT, DAY_OR_EMPTY];

    /// An email address, or empty or `null` for none.
    pub fn email() -> utoipa::openapi::Schema {
        use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, SchemaFormat};
        let address = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(254));
        let empty = ObjectBuilder::new().schema_type(Type::String).max_length(Some(0));
        utoipa::openapi::Schema::AnyOf(
            AnyOfBuilder::new().item(address).item(empty).item(ObjectBuilder::new().schema_type(Type::Null)).build(),
        )
    }

    fn strings(pattern: &str, max_length: usize) -> Object {
        ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).max_length(Some(max_length)).build()
    }

    fn array_of(item: Object, nullable: bool) -> Array {
        let kind =
            if nullable { SchemaType::from_iter([Type::Array, Type::Null]) } else { SchemaType::new(Type::Array) };
        ArrayBuilder::new().schema_type(kind).items(item).build()
    }

    pub fn tags() -> Array {
        array_of(strings(TAG, 64), false)
    }

    pub fn tags_or_null() -> Array {
        array_of(strings(TAG, 64), true)
    }

    pub fn slugs() -> Array {
        array_of(strings(SLUG, 64), false)
    }

    pub fn slugs_or_null() -> Array {
        array_of(strings(SLUG, 64), true)
    }

    /// `email`, `sms` or both.
    pub fn channels_or_null() -> Array {
        let channel = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["email", "sms"])).build();
        let kind = SchemaType::from_iter([Type::Array, Type::Null]);
        ArrayBuilder::new().schema_type(kind).items(channel).min_items(Some(1)).max_items(Some(2)).build()
    }
}

/// A tag: 1 to 64 characters, no control characters, no separators used in CSV cells.
pub fn normalize_tag(tag: &str) -> Result<String, Reason> {
    let tag = tag.trim();
    if tag.is_empty() || tag.chars().count() > 64 {
        return Err(reason!("'{tag}' is not a tag: use 1 to 64 characters"));
    }
    if tag.chars().any(|c| c.is_control() || c == ';' || c == ',') {
        return Err(reason!("'{tag}' is not a tag: no control characters, commas or semicolons"));
    }
    Ok(tag.to_owned())
}

/// A free-text field such as a name: trimmed, bounded, empty means absent.
pub fn normalize_text(value: &str, max_chars: usize) -> Result<Option<String>, Reason> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max_chars {
        return Err(reason!("is longer than {max_chars} characters"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("contains control characters".into());
    }
    Ok(Some(value.to_owned()))
}

pub fn validate_timezone(tz: &str) -> Result<String, Reason> {
    chrono_tz::Tz::from_str(tz.trim())
        .map(|z| z.name().to_owned())
        .map_err(|_| reason!("'{tz}' is not an IANA time zone such as Europe/Rome"))
}

/// A BCP 47 language tag in its common shapes: `en`, `pt-BR`, `zh-Hant-TW`.
pub fn validate_locale(locale: &str) -> Result<String, Reason> {
    let locale = locale.trim().replace('_', "-");
    let mut parts = locale.split('-');
    let language_ok =
        parts.next().is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok = parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if language_ok && rest_ok { Ok(locale) } else { Err(reason!("'{locale}' is not a locale such as en or pt-BR")) }
}

/// Attribute maps: keys of 1 to 64 characters, at most 16 KiB of JSON in all.
pub fn validate_attribute_key(key: &str) -> Result<(), Reason> {
    if key.is_empty() || key.chars().count() > 64 || key.chars().any(char::is_control) {
        return Err(reason!("'{key}' is not an attribute name: use 1 to 64 characters"));
    }
    Ok(())
}

pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// What remains of an address after an erasure: enough to refuse it again, not to read it.
pub fn suppression_hash(channel: Channel, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(channel.as_str().as_bytes());
    hasher.update(b":");
    hasher.update(key.as_bytes());
    hex::encode(hasher.finalize())
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Declares a closed set of words stored as text, with parsing and printing; each can be a
/// column of an entity (stored as its word).
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
            sea_orm::DeriveValueType,
        )]
        #[serde(rename_all = "snake_case")]
        #[sea_orm(value_type = "String")]
        pub enum $name { $($variant),+ }

        /// A word is never an auto-increment key (it can still be part of a primary key).
        impl sea_orm::TryFromU64 for $name {
            fn try_from_u64(_: u64) -> std::result::Result<Self, sea_orm::DbErr> {
                Err(sea_orm::DbErr::ConvertFromU64(stringify!($name)))
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Reason;
            fn from_str(s: &str) -> Result<Self, Reason> {
                match s.trim() {
                    $($text => Ok($name::$variant),)+
                    other => Err(reason!(
                        "'{other}' is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

word_enum!(
    /// A way to reach a subscriber.
    Channel { Email = "email", Sms = "sms", Whatsapp = "whatsapp" }
);

word_enum!(
    /// What carries an outbox message: a subscriber's channel, or a workflow's webhook.
    OutboxChannel { Email = "email", Sms = "sms", Whatsapp = "whatsapp", Webhook = "webhook" }
);

impl OutboxChannel {
    /// The subscriber's channel this carries, if it is one (a webhook is not).
    pub fn subscriber_channel(self) -> Option<Channel> {
        match self {
            OutboxChannel::Email => Some(Channel::Email),
            OutboxChannel::Sms => Some(Channel::Sms),
            OutboxChannel::Whatsapp => Some(Channel::Whatsapp),
            OutboxChannel::Webhook => None,
        }
    }
}

impl From<Channel> for OutboxChannel {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Email => OutboxChannel::Email,
            Channel::Sms => OutboxChannel::Sms,
            Channel::Whatsapp => OutboxChannel::Whatsapp,
        }
    }
}

word_enum!(
    /// Where an outbox message is: waiting (or being retried), accepted, given up, withdrawn
    /// before it was sent (a broadcast cancelled, an SMS `STOP`), or kept back to go only if the
    /// message before it on another channel fails for good (`reach: first`).
    OutboxStatus {
        Queued = "queued",
        Sent = "sent",
        Failed = "failed",
        Cancelled = "cancelled",
        Standby = "standby",
    }
);

word_enum!(
    /// The subscriber as a whole.
    SubscriberStatus { Active = "active", Unsubscribed = "unsubscribed", Bounced = "bounced", Complained = "complained" }
);

word_enum!(
    /// Whether a channel may carry marketing to this subscriber.
    ChannelState {
        None = "none",
        Pending = "pending",
        Subscribed = "subscribed",
        Unsubscribed = "unsubscribed",
        Bounced = "bounced",
        Complained = "complained",
    }
);

word_enum!(
    /// A subscriber's place on one list.
    MembershipStatus { Pending = "pending", Confirmed = "confirmed", Unsubscribed = "unsubscribed" }
);

word_enum!(
    /// How a consent was given or withdrawn.
    ConsentMethod {
        Form = "form",
        Api = "api",
        Import = "import",
        SmsKeyword = "sms_keyword",
        UnsubscribeLink = "unsubscribe_link",
        Complaint = "complaint",
        DoubleOptIn = "double_opt_in",
        Preferences = "preferences",
    }
);

/// Parses a stored word, treating an unknown one (a database edited by hand) as a default.
pub fn stored<T: FromStr>(text: &str, default: T) -> T {
    text.parse().unwrap_or(default)
}

/// An opaque position in an id-ordered listing.
pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| Error::field("cursor", "is not a cursor returned by this API"))
}

pub fn page_limit(limit: Option<u64>) -> Result<u64> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(Error::field("limit", "must be between 1 and 1000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the OpenAPI document promises is what the parsers take.
    #[test]
    fn the_documented_patterns_agree_with_the_parsers() {
        let compiled = |p: &str| regex::Regex::new(p).unwrap();
        let long = "x".repeat(65);
        let samples = [
            "vip",
            " vip ",
            "",
            "  ",
            "\t",
            "a,b",
            "a;b",
            "a\u{7}b",
            "a\u{85}",
            "Città",
            "a b",
            "a\tb",
            "\u{2003}x ",
            "new-leads",
            "-a",
            "a-",
            "A",
            "a--b",
            &long,
        ];
        let (tag, slug, text, name) =
            (compiled(schema::TAG), compiled(schema::SLUG), compiled(schema::TEXT), compiled(schema::NAME));
        // What the document allows is taken, and what it refuses is refused (but the parsers trim
        // first, so a refused character at either end may be trimmed away instead).
        let agree = |documented: bool, taken: bool, s: &str, what: &str| {
            assert!(documented == taken || (taken && s.trim() != s), "{what} {s:?}: {documented} vs {taken}");
        };
        for s in samples {
            let chars = s.chars().count();
            agree(tag.is_match(s) && chars <= 64, normalize_tag(s).is_ok(), s, "tag");
            agree(slug.is_match(s) && chars <= 64, validate_slug(s).is_ok(), s, "slug");
            agree(text.is_match(s), normalize_text(s, 200).is_ok(), s, "text");
            agree(name.is_match(s), normalize_text(s, 200).is_ok_and(|v| v.is_some()), s, "name");
        }
        let cursor = compiled(schema::CURSOR);
        for id in [uuid::Uuid::nil(), uuid::Uuid::max(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7()] {
            let encoded = encode_cursor(id);
            assert!(cursor.is_match(&encoded), "{encoded}");
        }
        for any in ["AAAAAAAAAAAAAAAAAAAAAw", "zzzzzzzzzzzzzzzzzzzzzQ", "-_-_-_-_-_-_-_-_-_-_-g"] {
            assert!(cursor.is_match(any));
            assert!(decode_cursor(any).is_ok(), "{any}");
        }
        let phone = compiled(schema::PHONE);
        assert!(phone.is_match(PhoneNumber::parse("+39 06 6988 1234").unwrap().as_str()));
        let locale = compiled(schema::LOCALE);
        for l in ["it", "pt-BR", "zh-Hant-TW", "de_DE", "x", "english", "en-"] {
            assert_eq!(locale.is_match(l), validate_locale(l).is_ok(), "locale {l:?}");
        }
    }

    #[test]
    fn email_keys_are_case_insensitive() {
        let a = EmailAddress::parse(" Ada@Example.COM ").unwrap();
        assert_eq!(a.as_str(), "Ada@Example.COM");
        assert_eq!(a.key(), "ada@example.com");
        assert!(EmailAddress::parse("not-an-address").is_err());
        assert!(EmailAddress::parse("a@localhost").is_err());
        // What no mail provider delivers to is refused, with a word on why.
        for unreachable in ["\"a b\"@example.com", "\"ada\"@example.com", "a@[127.0.0.1]", "a@10.0.0.1", "a@example.c"]
        {
            assert!(EmailAddress::parse(unreachable).is_err(), "{unreachable}");
        }
        assert!(EmailAddress::parse("o'brien+news@mail.example.co.uk").is_ok());
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(PhoneNumber::parse("+1 (415) 555-2671").unwrap().as_str(), "+14155552671");
        assert_eq!(PhoneNumber::parse("0039 06 6988 0000").unwrap().as_str(), "+390669880000");
        assert!(PhoneNumber::parse("4155552671").unwrap_err().contains("international"));
        assert!(PhoneNumber::parse("+1 555").is_err());
    }

    #[test]
    fn words_round_trip() {
        for state in ChannelState::ALL {
            assert_eq!(state.as_str().parse::<ChannelState>().unwrap(), *state);
        }
        assert!("maybe".parse::<MembershipStatus>().unwrap_err().as_str().contains("pending, confirmed, unsubscribed"));
    }

    #[test]
    fn slugs_tags_locales() {
        assert!(validate_slug("guide-leads").is_ok());
        assert!(validate_slug("Guide").is_err());
        assert!(validate_slug("-x").is_err());
        assert_eq!(normalize_tag("  vip ").unwrap(), "vip");
        assert!(normalize_tag("a;b").is_err());
        assert_eq!(validate_locale("pt_BR").unwrap(), "pt-BR");
        assert!(validate_locale("english!").is_err());
        assert_eq!(validate_timezone("Europe/Rome").unwrap(), "Europe/Rome");
        assert!(validate_timezone("Mars/Base").is_err());
    }
}
