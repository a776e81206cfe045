//! The signatures that prove a bounce report comes from the provider: Amazon SNS (RSA, with the
//! certificate named in the message, fetched only from an SNS host), SendGrid (ECDSA P-256 over
//! the timestamp and body) and Mailgun (HMAC-SHA256 over the timestamp and token).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// An SNS message as posted to an HTTPS endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    pub subject: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

impl SnsMessage {
    /// The text SNS signs: the message's fields, each as its name and value on lines of their
    /// own, in the order SNS documents for its type.
    pub fn string_to_sign(&self) -> Result<String, String> {
        let mut fields: Vec<(&str, &str)> = vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind.as_str() {
            "Notification" => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.extend([("Timestamp", self.timestamp.as_str()), ("TopicArn", &self.topic_arn)]);
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                let url = self.subscribe_url.as_deref().ok_or("a confirmation without SubscribeURL")?;
                let token = self.token.as_deref().ok_or("a confirmation without Token")?;
                fields.extend([
                    ("SubscribeURL", url),
                    ("Timestamp", self.timestamp.as_str()),
                    ("Token", token),
                    ("TopicArn", &self.topic_arn),
                ]);
            }
            other => return Err(format!("unknown SNS message type '{other}'")),
        }
        fields.push(("Type", &self.kind));
        Ok(fields.into_iter().map(|(k, v)| format!("{k}\n{v}\n")).collect())
    }

    /// Checks the signature against the certificate (PEM) it names.
    pub fn verify(&self, certificate_pem: &str) -> Result<(), String> {
        use x509_cert::der::DecodePem;
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match self.signature_version.as_str() {
            "1" => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            other => return Err(format!("unknown SignatureVersion '{other}'")),
        };
        let certificate = x509_cert::Certificate::from_pem(certificate_pem.as_bytes())
            .map_err(|e| format!("the signing certificate does not parse: {e}"))?;
        let key = certificate.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        let signature = STANDARD.decode(self.signature.trim()).map_err(|_| "the signature is not base64")?;
        ring::signature::UnparsedPublicKey::new(algorithm, key)
            .verify(self.string_to_sign()?.as_bytes(), &signature)
            .map_err(|_| "the signature does not match".to_owned())
    }
}

/// Whether `url` may be an SNS signing certificate's or subscription's address: HTTPS on an SNS
/// host (`sns.REGION.amazonaws.com`, or `.amazonaws.com.cn`), so nothing else is ever fetched
/// on a message's say-so.
pub fn sns_host(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    let host = url.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| h.strip_suffix(".amazonaws.com").or_else(|| h.strip_suffix(".amazonaws.com.cn")));
    url.scheme() == "https"
        && url.port().is_none()
        && region.is_some_and(|r| {
            !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// SendGrid's signed event webhook: an ECDSA P-256 SHA-256 signature (base64 DER) over the
/// timestamp header followed by the body, checked with the verification key SendGrid shows
/// (base64 of its DER SubjectPublicKeyInfo).
pub fn sendgrid(public_key: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    use x509_cert::der::Decode;
    let Ok(der) = STANDARD.decode(public_key.trim()) else { return false };
    let Ok(spki) = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(&der) else { return false };
    let Ok(signature) = STANDARD.decode(signature.trim()) else { return false };
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        spki.subject_public_key.raw_bytes(),
    )
    .verify(&signed, &signature)
    .is_ok()
}

/// Mailgun's webhook signature: hex HMAC-SHA256 of the timestamp followed by the token, keyed with
/// the webhook signing key; compared in constant time.
pub fn mailgun(signing_key: &str, timestamp: &str, token: &str, signature: &str) -> bool {
    use hmac::Mac;
    let Ok(expected) = hex::decode(signature.trim()) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_key.as_bytes()) else { return false };
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_over_https_are_fetched() {
        assert!(sns_host("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        assert!(sns_host("https://sns.cn-north-1.amazonaws.com.cn/x.pem"));
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
            "https://s3.amazonaws.com/x.pem",
            "https://127.0.0.1/x.pem",
            "not a url",
        ] {
            assert!(!sns_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_mailgun_signature_is_the_hmac_of_timestamp_and_token() {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"key-1").unwrap();
        mac.update(b"1700000000token");
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(mailgun("key-1", "1700000000", "token", &good));
        assert!(!mailgun("key-2", "1700000000", "token", &good));
        assert!(!mailgun("key-1", "1700000001", "token", &good));
        assert!(!mailgun("key-1", "1700000000", "token", "zz"));
    }
}
