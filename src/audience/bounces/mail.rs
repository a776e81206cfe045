//! Bounce mail: what comes back to the per-message return path (VERP) when a message cannot be
//! delivered (a delivery status notification, RFC 3464) or is reported as spam (an abuse report
//! in the Abuse Reporting Format, RFC 5965), read with `mail-parser`.
//!
//! Each message goes out with the envelope sender `LOCAL+ID-MAC@DOMAIN` (from `bounce_address`
//! `LOCAL@DOMAIN`): ID is the outbox id, MAC a short HMAC of it with the instance's secret, so a
//! bounce names its message exactly, and nobody can bounce an address by guessing.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use uuid::Uuid;

use super::Kind;
use crate::core::hmac::hmac_sha256;

/// The return path of every message, and how to read one back.
#[derive(Debug, Clone)]
pub struct ReturnPath {
    local: String,
    domain: String,
    secret: String,
}

impl ReturnPath {
    /// For `bounce_address` (`LOCAL@DOMAIN`).
    pub fn new(address: &lettre::Address, secret: &str) -> Self {
        Self { local: address.user().to_owned(), domain: address.domain().to_owned(), secret: secret.to_owned() }
    }

    fn mac(&self, id: Uuid) -> String {
        use hmac::Mac;
        let mut mac = hmac_sha256(self.secret.as_bytes());
        mac.update(b"return-path:");
        mac.update(id.simple().to_string().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..5])
    }

    /// The envelope sender of message `id`.
    pub fn address(&self, id: Uuid) -> Result<lettre::Address, String> {
        format!("{}+{}-{}@{}", self.local, id.simple(), self.mac(id), self.domain)
            .parse()
            .map_err(|e| format!("cannot build the return path: {e}"))
    }

    /// What a return path looks like (`LOCAL+…@DOMAIN`).
    pub fn example(&self) -> String {
        format!("{}+…@{}", self.local, self.domain)
    }

    /// Whether `address` is one of ours (a message's, or the bare bounce address).
    pub fn is_ours(&self, address: &str) -> bool {
        let Some((local, domain)) = address.trim().rsplit_once('@') else { return false };
        let (local, ours) = (local.to_ascii_lowercase(), self.local.to_ascii_lowercase());
        domain.eq_ignore_ascii_case(&self.domain)
            && (local == ours || local.strip_prefix(&ours).is_some_and(|rest| rest.starts_with('+')))
    }

    /// The message a return path names, when it is one of ours and its MAC is right (in any
    /// case: some servers fold addresses to one case).
    pub fn message(&self, address: &str) -> Option<Uuid> {
        let (local, domain) = address.trim().rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let local = local.to_ascii_lowercase();
        let tag = local.strip_prefix(&self.local.to_ascii_lowercase())?.strip_prefix('+')?;
        let (id, mac) = tag.split_once('-')?;
        let id = Uuid::try_parse(id).ok()?;
        use subtle::ConstantTimeEq;
        bool::from(mac.as_bytes().ct_eq(self.mac(id).as_bytes())).then_some(id)
    }
}

/// What a bounce mail says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceMail {
    pub kind: Kind,
    /// The recipients it is about (a DSN's failed recipients; an abuse report's original one).
    pub recipients: Vec<String>,
    /// Our message, when the returned headers carry its Message-ID (`<ID@domain>`).
    pub message: Option<Uuid>,
    pub reason: String,
}

/// Reads a bounce: a DSN with a failed (5.x.x: hard) or delayed (4.x.x: soft) recipient, or an
/// abuse report (a complaint). `None` for anything else (an out-of-office reply, a delivery
/// confirmation, spam sent to the bounce address).
pub fn read(raw: &[u8]) -> Option<BounceMail> {
    let message = MessageParser::default().parse(raw)?;
    let report_type = message.content_type().and_then(|c| c.attribute("report-type")).map(str::to_ascii_lowercase);
    let mut found: Option<BounceMail> = None;
    let mut original: Option<Uuid> = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else { continue };
        let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase();
        match kind.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                found = delivery_status(&String::from_utf8_lossy(part.contents())).or(found);
            }
            "message/feedback-report" => {
                let fields = fields(&String::from_utf8_lossy(part.contents()));
                let feedback = field(&fields, "feedback-type").unwrap_or("abuse").to_owned();
                let recipients = field(&fields, "original-rcpt-to").map(|r| vec![address_of(r)]).unwrap_or_default();
                found = Some(BounceMail { kind: Kind::Complaint, recipients, message: None, reason: feedback });
            }
            "message/rfc822" | "message/global" => {
                if let PartType::Message(inner) = &part.body {
                    original = inner.message_id().and_then(our_id).or(original);
                    if let Some(found) = found.as_mut().filter(|f| f.recipients.is_empty() && f.kind == Kind::Complaint)
                    {
                        found.recipients = inner
                            .to()
                            .into_iter()
                            .flat_map(|to| to.iter())
                            .filter_map(|a| a.address.as_deref().map(str::to_owned))
                            .collect();
                    }
                }
            }
            "text/rfc822-headers" | "message/rfc822-headers" | "message/global-headers" => {
                let fields = fields(&String::from_utf8_lossy(part.contents()));
                original = field(&fields, "message-id").and_then(our_id).or(original);
            }
            _ => {}
        }
    }
    if found.is_none() && report_type.is_some() {
        return None;
    }
    let mut found = found?;
    found.message = original;
    Some(found)
}

/// Our outbox id from a Message-ID (`<ID@domain>` or `ID@domain`).
fn our_id(message_id: &str) -> Option<Uuid> {
    let local = message_id.trim().trim_start_matches('<').split('@').next()?;
    Uuid::try_parse(local).ok()
}

/// The fields of a DSN's or ARF report's blocks (header-like lines, continuation lines folded),
/// lower-cased names, in order; blocks are separated by an empty field name.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().take(10_000) {
        if line.trim().is_empty() {
            out.push((String::new(), String::new()));
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `rfc822; ada@example.com` → `ada@example.com`.
fn address_of(value: &str) -> String {
    value.rsplit(';').next().unwrap_or(value).trim().trim_matches(['<', '>']).to_owned()
}

/// A delivery-status body: the recipients that failed (hard for 5.x.x) or were delayed (soft).
fn delivery_status(text: &str) -> Option<BounceMail> {
    let fields = fields(text);
    let (mut hard, mut soft, mut reason) = (Vec::new(), Vec::new(), String::new());
    // Per-recipient blocks: each from a Final-Recipient to the next empty line.
    for block in fields.split(|(name, _)| name.is_empty()) {
        let Some(recipient) = field(block, "final-recipient").or_else(|| field(block, "original-recipient")) else {
            continue;
        };
        let action = field(block, "action").unwrap_or_default().to_ascii_lowercase();
        let status = field(block, "status").unwrap_or_default();
        let diagnostic = field(block, "diagnostic-code").map(address_of_diagnostic).unwrap_or_default();
        let line = if diagnostic.is_empty() { format!("status {status}") } else { diagnostic };
        match (action.as_str(), status.chars().next()) {
            ("failed", _) | (_, Some('5')) => {
                hard.push(address_of(recipient));
                reason = line;
            }
            ("delayed", _) | (_, Some('4')) => {
                soft.push(address_of(recipient));
                if reason.is_empty() {
                    reason = line;
                }
            }
            _ => {}
        }
    }
    if !hard.is_empty() {
        Some(BounceMail { kind: Kind::Hard, recipients: hard, message: None, reason })
    } else if !soft.is_empty() {
        Some(BounceMail { kind: Kind::Soft, recipients: soft, message: None, reason })
    } else {
        None
    }
}

/// `smtp; 550 5.1.1 <ada@…>: user unknown` → `550 5.1.1 <ada@…>: user unknown`.
fn address_of_diagnostic(value: &str) -> String {
    value.split_once(';').map(|(_, rest)| rest).unwrap_or(value).trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.example.org\r\nTo: bounces+x@news.example.com\r\n\
Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n\
--b1\r\nContent-Type: message/delivery-status\r\n\r\n\
Reporting-MTA: dns; mx.example.org\r\nArrival-Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\n\
Final-Recipient: rfc822; ada@example.org\r\nOriginal-Recipient: rfc822;ada@example.org\r\nAction: failed\r\n\
Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <ada@example.org>: Recipient address rejected:\r\n User unknown\r\n\
\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n\
Message-ID: <0193a0b4-8a1e-7c3d-9f00-2b7e1c4d5e6f@news.example.com>\r\nSubject: Hello\r\n\r\n--b1--\r\n";

    #[test]
    fn a_dsn_names_the_failed_recipient_its_reason_and_our_message() {
        let read = read(DSN.as_bytes()).unwrap();
        assert_eq!(read.kind, Kind::Hard);
        assert_eq!(read.recipients, ["ada@example.org"]);
        assert_eq!(read.reason, "550 5.1.1 <ada@example.org>: Recipient address rejected: User unknown");
        assert_eq!(read.message, Uuid::try_parse("0193a0b4-8a1e-7c3d-9f00-2b7e1c4d5e6f").ok());
        let delayed = DSN.replace("Action: failed", "Action: delayed").replace("Status: 5.1.1", "Status: 4.2.2");
        assert_eq!(super::read(delayed.as_bytes()).unwrap().kind, Kind::Soft);
        let relayed = DSN.replace("Action: failed", "Action: delivered").replace("Status: 5.1.1", "Status: 2.0.0");
        assert_eq!(super::read(relayed.as_bytes()), None, "a delivery confirmation is no bounce");
    }

    #[test]
    fn an_abuse_report_is_a_complaint_about_the_original_recipient() {
        let arf = "From: feedback@mail.example.net\r\nTo: bounces@news.example.com\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"b2\"\r\n\r\n\
--b2\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\
--b2\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n\r\n\
--b2\r\nContent-Type: message/rfc822\r\n\r\nFrom: Shop <news@news.example.com>\r\nTo: bob@example.net\r\n\
Message-ID: <0193a0b4-8a1e-7c3d-9f00-2b7e1c4d5e70@news.example.com>\r\nSubject: Sale\r\n\r\nBuy now.\r\n--b2--\r\n";
        let read = read(arf.as_bytes()).unwrap();
        assert_eq!(read.kind, Kind::Complaint);
        assert_eq!(read.recipients, ["bob@example.net"]);
        assert_eq!(read.reason, "abuse");
        assert_eq!(read.message, Uuid::try_parse("0193a0b4-8a1e-7c3d-9f00-2b7e1c4d5e70").ok());
    }

    #[test]
    fn anything_else_is_no_bounce() {
        let away = "From: ada@example.org\r\nTo: bounces@news.example.com\r\nSubject: Out of office\r\n\r\nBack on Monday.\r\n";
        assert_eq!(read(away.as_bytes()), None);
        assert_eq!(read(b"\x00\xff garbage"), None);
        assert_eq!(read(b""), None);
    }

    #[test]
    fn a_return_path_names_its_message_and_cannot_be_forged() {
        let path = ReturnPath::new(&"bounces@news.example.com".parse().unwrap(), "a-secret-of-some-length");
        let id = Uuid::now_v7();
        let address = path.address(id).unwrap().to_string();
        assert!(address.starts_with("bounces+") && address.ends_with("@news.example.com"), "{address}");
        assert_eq!(path.message(&address), Some(id));
        assert_eq!(path.message(&address.to_uppercase()), Some(id), "a server that folds case");
        let forged = format!("bounces+{}-0000000000@news.example.com", Uuid::now_v7().simple());
        assert_eq!(path.message(&forged), None, "a guessed id without its MAC");
        let other = ReturnPath::new(&"bounces@news.example.com".parse().unwrap(), "another-secret-entirely");
        assert_eq!(other.message(&address), None);
        assert!(path.is_ours(&address) && path.is_ours("bounces@news.example.com"));
        assert!(!path.is_ours("ada@news.example.com") && !path.is_ours("bounces@elsewhere.example"));
    }
}
