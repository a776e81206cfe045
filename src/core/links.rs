//! Signed public links: a purpose, a subject and an expiry, sealed with HMAC-SHA256 over
//! `OWNLIST_SECRET`. Ids are never secrets (a UUIDv7 reveals its time); the signature is.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// What a link is for; a token made for one purpose is refused for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Unsubscribe,
    Preferences,
    Confirm,
    Track,
    /// A landing page's form: when it was served, so a submission can be timed.
    Form,
    /// The page that asks for a second channel.
    AddChannel,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Unsubscribe => b"unsubscribe",
            Purpose::Preferences => b"preferences",
            Purpose::Confirm => b"confirm",
            Purpose::Track => b"track",
            Purpose::Form => b"form",
            Purpose::AddChannel => b"add-channel",
        }
    }
}

#[derive(Clone)]
pub struct Signer {
    /// HMAC-SHA256 with the key already absorbed: each signature clones it, sparing the two
    /// block compressions of keying (a broadcast signs several links per message).
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is not valid")]
    Invalid,
    #[error("the link has expired")]
    Expired,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Self { keyed: crate::core::hmac::hmac_sha256(secret.as_bytes()) }
    }

    fn mac(&self, purpose: Purpose, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(purpose.tag());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// A token naming `subject` for `purpose`, valid until `expires` (seconds precision).
    pub fn sign(&self, purpose: Purpose, subject: Uuid, expires: DateTime<Utc>) -> String {
        let mut payload = Vec::with_capacity(24);
        payload.extend_from_slice(subject.as_bytes());
        payload.extend_from_slice(&expires.timestamp().to_be_bytes());
        let tag = self.mac(purpose, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag[..16]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// A form token for the page `slug`, served at `issued` (milliseconds, then a tag over the
    /// slug and the time): the submission proves when its form was served.
    pub fn form_token(&self, slug: &str, issued: DateTime<Utc>) -> String {
        let millis = issued.timestamp_millis().to_be_bytes();
        let mut mac = self.mac(Purpose::Form, slug.as_bytes());
        mac.update(b"\0");
        mac.update(&millis);
        let mut token = millis.to_vec();
        token.extend_from_slice(&mac.finalize().into_bytes()[..16]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// When the form of a valid token for `slug` was served; the comparison is constant-time.
    pub fn verify_form_token(&self, slug: &str, token: &str) -> Result<DateTime<Utc>, LinkError> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| LinkError::Invalid)?;
        if bytes.len() != 24 {
            return Err(LinkError::Invalid);
        }
        let (millis, tag) = bytes.split_at(8);
        let mut mac = self.mac(Purpose::Form, slug.as_bytes());
        mac.update(b"\0");
        mac.update(millis);
        mac.verify_truncated_left(tag).map_err(|_| LinkError::Invalid)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(millis);
        DateTime::from_timestamp_millis(i64::from_be_bytes(raw)).ok_or(LinkError::Invalid)
    }

    /// The public URL `{base_url}{path}/{token}` for a subject: what a message links to.
    pub fn url(
        &self,
        base_url: &url::Url,
        path: &str,
        purpose: Purpose,
        subject: Uuid,
        expires: DateTime<Utc>,
    ) -> String {
        let token = self.sign(purpose, subject, expires);
        link(base_url, path, &token)
    }

    /// The subject of a valid token; the comparison is constant-time.
    pub fn verify(&self, purpose: Purpose, token: &str, now: DateTime<Utc>) -> Result<Uuid, LinkError> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| LinkError::Invalid)?;
        if bytes.len() != 40 {
            return Err(LinkError::Invalid);
        }
        let (payload, tag) = bytes.split_at(24);
        self.mac(purpose, payload).verify_truncated_left(tag).map_err(|_| LinkError::Invalid)?;
        let subject = Uuid::from_slice(&payload[..16]).map_err(|_| LinkError::Invalid)?;
        let mut seconds = [0u8; 8];
        seconds.copy_from_slice(&payload[16..24]);
        if i64::from_be_bytes(seconds) < now.timestamp() {
            return Err(LinkError::Expired);
        }
        Ok(subject)
    }
}

/// `{base_url}{path}/{token}`: written out when the base URL ends in `/` (as configured URLs
/// are), otherwise resolved against it as a relative reference.
pub fn link(base_url: &url::Url, path: &str, token: &str) -> String {
    let base = base_url.as_str();
    if base.ends_with('/') && base_url.query().is_none() && base_url.fragment().is_none() {
        let mut url = String::with_capacity(base.len() + path.len() + token.len() + 1);
        url.push_str(base);
        url.push_str(path);
        url.push('/');
        url.push_str(token);
        return url;
    }
    base_url.join(&format!("{path}/{token}")).map(|u| u.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn links_written_out_match_links_resolved() {
        for base in
            ["https://news.example.com/", "https://x.example/app/", "https://x.example/app", "http://[::1]:8080/"]
        {
            let base = url::Url::parse(base).unwrap();
            let resolved = base.join("t/c/TOKEN").unwrap().to_string();
            assert_eq!(link(&base, "t/c", "TOKEN"), resolved, "{base}");
        }
    }

    #[test]
    fn tokens_verify_only_for_their_purpose_secret_and_time() {
        let signer = Signer::new("0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let id = Uuid::now_v7();
        let token = signer.sign(Purpose::Unsubscribe, id, now + Duration::days(1));
        assert_eq!(signer.verify(Purpose::Unsubscribe, &token, now), Ok(id));
        assert_eq!(signer.verify(Purpose::Confirm, &token, now), Err(LinkError::Invalid));
        assert_eq!(signer.verify(Purpose::Unsubscribe, &token, now + Duration::days(2)), Err(LinkError::Expired));
        let other = Signer::new("another secret, also 32 chars long!");
        assert_eq!(other.verify(Purpose::Unsubscribe, &token, now), Err(LinkError::Invalid));
        let mut tampered = token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert!(signer.verify(Purpose::Unsubscribe, &String::from_utf8(tampered).unwrap(), now).is_err());
        assert_eq!(signer.verify(Purpose::Unsubscribe, "garbage", now), Err(LinkError::Invalid));
    }
}
