//! The bounce and complaint formats of the mail providers people send through: Amazon SES (through
//! SNS), SendGrid's event webhook, Postmark's bounce and spam-complaint webhooks and Mailgun's
//! webhooks, each read into [`Report`]s. Their signatures are checked before (see
//! [`super::signatures`]); this only reads what they say.

use serde::Deserialize;
use serde_json::Value;

use super::{Kind, Report};

fn report(address: &str, kind: Kind, reason: impl Into<String>) -> Report {
    Report { address: address.trim().to_owned(), kind, reason: reason.into() }
}

fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// An Amazon SES notification (the `Message` of an SNS notification: a JSON text), or event
/// publishing's record. Bounces: `Permanent` is hard, `Transient` and `Undetermined` soft.
/// Complaints are complaints. Deliveries and other kinds say nothing here.
pub fn ses(message: &str) -> Result<Vec<Report>, String> {
    let value: Value = serde_json::from_str(message).map_err(|e| format!("the SES message is not JSON: {e}"))?;
    let kind = value
        .get("notificationType")
        .or_else(|| value.get("eventType"))
        .and_then(Value::as_str)
        .ok_or("the SES message has no notificationType")?;
    let mut reports = Vec::new();
    match kind {
        "Bounce" => {
            let bounce = value.get("bounce").ok_or("a Bounce without 'bounce'")?;
            let hard = text(bounce, "bounceType") == "Permanent";
            let sub = text(bounce, "bounceSubType");
            for r in bounce.get("bouncedRecipients").and_then(Value::as_array).into_iter().flatten() {
                let diagnostic = text(r, "diagnosticCode");
                let reason = if diagnostic.is_empty() { format!("SES: {sub}") } else { diagnostic };
                reports.push(report(&text(r, "emailAddress"), if hard { Kind::Hard } else { Kind::Soft }, reason));
            }
        }
        "Complaint" => {
            let complaint = value.get("complaint").ok_or("a Complaint without 'complaint'")?;
            let feedback = text(complaint, "complaintFeedbackType");
            for r in complaint.get("complainedRecipients").and_then(Value::as_array).into_iter().flatten() {
                reports.push(report(&text(r, "emailAddress"), Kind::Complaint, feedback.clone()));
            }
        }
        _ => {}
    }
    Ok(reports)
}

/// SendGrid's event webhook: an array of events. `bounce` (type `bounce`) is hard, a `bounce` of
/// type `blocked` and `deferred` soft, `dropped` for a bounced or invalid address hard,
/// `spamreport` a complaint; other events (delivered, open, click…) say nothing here.
pub fn sendgrid(body: &[u8]) -> Result<Vec<Report>, String> {
    let events: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("expected SendGrid's array of events: {e}"))?;
    let mut reports = Vec::new();
    for e in &events {
        let address = text(e, "email");
        let reason = [text(e, "reason"), text(e, "response"), text(e, "status")]
            .into_iter()
            .find(|r| !r.is_empty())
            .unwrap_or_default();
        let kind = match (text(e, "event").as_str(), text(e, "type").as_str()) {
            ("bounce", "blocked") | ("deferred", _) => Kind::Soft,
            ("bounce", _) => Kind::Hard,
            ("dropped", _) if reason.contains("Bounced Address") || reason.contains("Invalid") => Kind::Hard,
            ("spamreport", _) => Kind::Complaint,
            _ => continue,
        };
        reports.push(report(&address, kind, reason));
    }
    Ok(reports)
}

/// Postmark's bounce webhook (`RecordType: Bounce`, its `Type` saying which) and spam complaint
/// webhook (`RecordType: SpamComplaint`): one record per request.
pub fn postmark(body: &[u8]) -> Result<Vec<Report>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Record {
        record_type: Option<String>,
        #[serde(rename = "Type")]
        kind: Option<String>,
        email: String,
        description: Option<String>,
        details: Option<String>,
    }
    let record: Record =
        serde_json::from_slice(body).map_err(|e| format!("expected a Postmark bounce or complaint record: {e}"))?;
    let kind = record.kind.as_deref().unwrap_or_default();
    let kind = match (record.record_type.as_deref().unwrap_or("Bounce"), kind) {
        ("SpamComplaint", _) | (_, "SpamComplaint") => Kind::Complaint,
        (_, "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated") => Kind::Hard,
        (_, "SoftBounce" | "Transient" | "DnsError" | "Blocked" | "SMTPApiError") => Kind::Soft,
        _ => return Ok(Vec::new()),
    };
    let reason = [record.details, record.description].into_iter().flatten().find(|r| !r.is_empty());
    Ok(vec![report(&record.email, kind, reason.unwrap_or_default())])
}

/// Mailgun's webhook: `event-data` with `event` `failed` (`severity` `permanent` is hard,
/// `temporary` soft) or `complained`.
pub fn mailgun(value: &Value) -> Result<Vec<Report>, String> {
    let data = value.get("event-data").ok_or("expected Mailgun's 'event-data'")?;
    let address = text(data, "recipient");
    let status = data.get("delivery-status").cloned().unwrap_or(Value::Null);
    let reason = [text(&status, "description"), text(&status, "message"), text(data, "reason")]
        .into_iter()
        .find(|r| !r.is_empty())
        .unwrap_or_default();
    let kind = match (text(data, "event").as_str(), text(data, "severity").as_str()) {
        ("failed", "permanent") => Kind::Hard,
        ("failed", _) => Kind::Soft,
        ("complained", _) => Kind::Complaint,
        _ => return Ok(Vec::new()),
    };
    Ok(vec![report(&address, kind, reason)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_says_who_bounced_and_how() {
        let ses_bounce = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"a@example.com","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{}}"#;
        assert_eq!(ses(ses_bounce).unwrap(), [report("a@example.com", Kind::Hard, "smtp; 550 5.1.1 user unknown")]);
        let transient = ses_bounce.replace("Permanent", "Transient");
        assert_eq!(ses(&transient).unwrap()[0].kind, Kind::Soft);
        let delivery = r#"{"notificationType":"Delivery","delivery":{}}"#;
        assert_eq!(ses(delivery).unwrap(), []);
        assert!(ses("{").is_err());

        let events = br#"[{"email":"a@example.com","event":"bounce","type":"bounce","reason":"550 no such user"},
            {"email":"b@example.com","event":"bounce","type":"blocked","reason":"blocked"},
            {"email":"c@example.com","event":"spamreport"},{"email":"d@example.com","event":"delivered"}]"#;
        let kinds: Vec<Kind> = sendgrid(events).unwrap().into_iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Kind::Hard, Kind::Soft, Kind::Complaint]);

        let pm = br#"{"RecordType":"Bounce","Type":"HardBounce","TypeCode":1,"Email":"a@example.com","Description":"The server was unable to deliver your message","Details":"smtp;550 5.1.1 unknown"}"#;
        assert_eq!(postmark(pm).unwrap(), [report("a@example.com", Kind::Hard, "smtp;550 5.1.1 unknown")]);
        let auto = br#"{"RecordType":"Bounce","Type":"AutoResponder","Email":"a@example.com"}"#;
        assert_eq!(postmark(auto).unwrap(), [], "an out-of-office reply is no bounce");

        let mg = serde_json::json!({"event-data": {"event": "failed", "severity": "temporary",
            "recipient": "a@example.com", "delivery-status": {"message": "mailbox full"}}});
        assert_eq!(mailgun(&mg).unwrap(), [report("a@example.com", Kind::Soft, "mailbox full")]);
    }
}
