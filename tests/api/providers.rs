//! Bounces and complaints in each provider's own format, signed as each provider signs them (by
//! the tests' own keys): Amazon SES through SNS, SendGrid, Postmark, Mailgun; and bounce mail sent
//! back to a message's return path, read by the bounce receiver.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use ownlist::core::clock::Clock;

use crate::helpers::{BOUNCE_SECRET, Backend, TestApp, expect_json, expect_problem, kinds, with_each_backend};

with_each_backend!(
    each_providers_signed_report_marks_the_right_subscriber,
    a_forged_or_foreign_provider_report_changes_nothing,
    five_soft_bounces_in_thirty_days_make_an_address_bounced,
    a_dsn_sent_to_a_messages_return_path_bounces_its_address,
);

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:ses-bounces";
const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000test.pem";
const MAILGUN_KEY: &str = "key-mailgun-signing-0123456789";

/// The tests' SNS signing key and certificate (made with openssl, as anyone's would be).
struct SnsKey {
    dir: tempfile::TempDir,
}

impl SnsKey {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sns.amazonaws.com"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("SimpleNotificationService-0000test.pem"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        Self { dir }
    }

    /// An SNS message of `kind` carrying `message`, signed with SignatureVersion `version`.
    fn message(&self, kind: &str, topic: &str, message: &str, version: &str) -> Value {
        let mut sns = json!({
            "Type": kind, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": topic,
            "Message": message, "Timestamp": "2026-12-07T10:00:06.655Z", "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        });
        let signed = format!(
            "Message\n{message}\nMessageId\n{}\nTimestamp\n{}\nTopicArn\n{topic}\nType\n{kind}\n",
            sns["MessageId"].as_str().unwrap(),
            sns["Timestamp"].as_str().unwrap()
        );
        let digest = if version == "1" { "-sha1" } else { "-sha256" };
        let input = self.dir.path().join("signed.txt");
        std::fs::write(&input, signed).unwrap();
        let signature = Command::new("openssl")
            .args(["dgst", digest, "-sign"])
            .arg(self.dir.path().join("key.pem"))
            .arg(&input)
            .output()
            .unwrap();
        assert!(signature.status.success());
        sns["Signature"] = json!(STANDARD.encode(signature.stdout));
        sns
    }
}

/// SendGrid's verification key and signing, with a P-256 key of the tests' own.
struct SendGridKey {
    pair: ring::signature::EcdsaKeyPair,
}

impl SendGridKey {
    fn new() -> Self {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        Self { pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap() }
    }

    /// The key as SendGrid shows it: base64 of its DER SubjectPublicKeyInfo.
    fn public(&self) -> String {
        use ring::signature::KeyPair;
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        der.extend_from_slice(self.pair.public_key().as_ref());
        STANDARD.encode(der)
    }

    fn sign(&self, timestamp: &str, body: &str) -> String {
        let signed = format!("{timestamp}{body}");
        STANDARD.encode(self.pair.sign(&ring::rand::SystemRandom::new(), signed.as_bytes()).unwrap().as_ref())
    }
}

fn mailgun_signature(timestamp: &str, token: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(MAILGUN_KEY.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{token}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn spawn(backend: Backend, sns: &SnsKey, sendgrid: &SendGridKey) -> Option<TestApp> {
    let (certificates, key) = (sns.dir.path().to_path_buf(), sendgrid.public());
    TestApp::spawn_with(backend, move |c| {
        c.ses_topic_arns = vec![TOPIC.into()];
        c.ses_certificates_dir = Some(certificates);
        c.sendgrid_webhook_key = Some(key);
        c.mailgun_signing_key = Some(MAILGUN_KEY.into());
    })
    .await
}

async fn person(app: &TestApp, email: &str) -> String {
    let created = app.create_subscriber(json!({"email": email, "consent": {"email": true}})).await;
    created["id"].as_str().unwrap().to_owned()
}

async fn email_state(app: &TestApp, id: &str) -> String {
    let view = expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await;
    view["channels"]["email"].as_str().unwrap().to_owned()
}

async fn post(app: &TestApp, path: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().post(app.url(path)).header("content-type", "application/json").body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A bounce notification of Amazon SES as its documentation shows one.
fn ses_bounce(address: &str) -> String {
    json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-12-07T10:00:05.237Z", "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"},
        "mail": {"timestamp": "2026-12-07T10:00:01.000Z", "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "source": "news@shop.example", "destination": [address]}
    })
    .to_string()
}

async fn each_providers_signed_report_marks_the_right_subscriber(backend: Backend) {
    if !crate::tools::openssl("each_providers_signed_report_marks_the_right_subscriber") {
        return;
    }
    let (sns, sendgrid) = (SnsKey::new(), SendGridKey::new());
    let Some(app) = spawn(backend, &sns, &sendgrid).await else { return };
    let ids: Vec<String> = futures_util::future::join_all(
        [
            "ses1@example.com",
            "ses2@example.com",
            "ses3@example.com",
            "sg1@example.com",
            "sg2@example.com",
            "pm1@example.com",
            "pm2@example.com",
            "mg1@example.com",
            "mg2@example.com",
            "bystander@example.com",
        ]
        .map(|e| person(&app, e)),
    )
    .await;
    let state = |i: usize| email_state(&app, &ids[i]);

    // Amazon SES through SNS, SignatureVersion 1 (SHA1) and 2 (SHA256); a complaint.
    for (address, version) in [("ses1@example.com", "1"), ("ses2@example.com", "2")] {
        let body = sns.message("Notification", TOPIC, &ses_bounce(address), version).to_string();
        let answer = expect_json(post(&app, "/webhooks/bounces/ses", &body, &[]).await, StatusCode::OK).await;
        assert_eq!(answer, json!({"applied": 1, "unknown_addresses": 0}), "version {version}");
    }
    let complaint = json!({"notificationType": "Complaint", "complaint": {"complainedRecipients":
        [{"emailAddress": "ses3@example.com"}], "complaintFeedbackType": "abuse", "timestamp": "2026-12-07T10:00:05Z"},
        "mail": {"messageId": "x"}})
    .to_string();
    let body = sns.message("Notification", TOPIC, &complaint, "2").to_string();
    expect_json(post(&app, "/webhooks/bounces/ses", &body, &[]).await, StatusCode::OK).await;
    assert_eq!(
        (state(0).await, state(1).await, state(2).await),
        ("bounced".into(), "bounced".into(), "complained".into())
    );

    // SendGrid: a bounce and a spam report among other events, signed over timestamp and body.
    let events = json!([
        {"email": "sg1@example.com", "timestamp": 1765101606, "event": "bounce", "type": "bounce",
         "reason": "550 5.1.1 The email account that you tried to reach does not exist", "status": "5.1.1",
         "sg_event_id": "ZHVtbXk", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"},
        {"email": "sg2@example.com", "timestamp": 1765101606, "event": "spamreport", "sg_event_id": "ZHVtbXl"},
        {"email": "bystander@example.com", "timestamp": 1765101606, "event": "delivered", "response": "250 OK"},
    ])
    .to_string();
    let stamp = "1765101606";
    let signature = sendgrid.sign(stamp, &events);
    let headers = [
        ("x-twilio-email-event-webhook-signature", signature.as_str()),
        ("x-twilio-email-event-webhook-timestamp", stamp),
    ];
    let answer = expect_json(post(&app, "/webhooks/bounces/sendgrid", &events, &headers).await, StatusCode::OK).await;
    assert_eq!(answer["applied"], 2);
    assert_eq!((state(3).await, state(4).await), ("bounced".into(), "complained".into()));

    // Postmark: basic authentication with the bounce secret, a hard bounce and a spam complaint.
    let auth = format!("Basic {}", STANDARD.encode(format!("postmark:{BOUNCE_SECRET}")));
    let hard = json!({"RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807_i64,
        "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce", "Tag": "Test", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23, "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.", "Email": "pm1@example.com",
        "From": "news@shop.example", "BouncedAt": "2026-12-07T10:00:05Z", "Inactive": true, "CanActivate": true});
    let spam = json!({"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint", "TypeCode": 512,
        "Email": "pm2@example.com", "Description": "", "Details": "Test spam complaint details"});
    for record in [&hard, &spam] {
        let answer = post(&app, "/webhooks/bounces/postmark", &record.to_string(), &[("authorization", &auth)]).await;
        expect_json(answer, StatusCode::OK).await;
    }
    assert_eq!((state(5).await, state(6).await), ("bounced".into(), "complained".into()));

    // Mailgun: the signature in the body, over a fresh timestamp and its token.
    let now = app.clock.now().timestamp().to_string();
    for (address, event) in [("mg1@example.com", "failed"), ("mg2@example.com", "complained")] {
        let token = format!("token-{address}");
        let body = json!({
            "signature": {"timestamp": now, "token": token, "signature": mailgun_signature(&now, &token)},
            "event-data": {"event": event, "severity": "permanent", "recipient": address, "reason": "bounce",
                "delivery-status": {"code": 550, "message": "5.1.1 No such user", "description": "No such user"},
                "message": {"headers": {"message-id": "20261207100001.1.ABCDEF@shop.example"}}}
        });
        expect_json(post(&app, "/webhooks/bounces/mailgun", &body.to_string(), &[]).await, StatusCode::OK).await;
    }
    assert_eq!((state(7).await, state(8).await), ("bounced".into(), "complained".into()));
    assert_eq!(state(9).await, "subscribed", "a delivered event changes nothing");
    let bounced = crate::helpers::timeline(&app, &ids[0]).await.into_iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["data"]["reason"], "smtp; 550 5.1.1 user unknown");
}

async fn a_forged_or_foreign_provider_report_changes_nothing(backend: Backend) {
    if !crate::tools::openssl("a_forged_or_foreign_provider_report_changes_nothing") {
        return;
    }
    let (sns, sendgrid) = (SnsKey::new(), SendGridKey::new());
    let Some(app) = spawn(backend, &sns, &sendgrid).await else { return };
    let ada = person(&app, "ada@example.com").await;

    // SNS: another topic (anyone may have one), a certificate elsewhere, a changed message.
    let foreign =
        sns.message("Notification", "arn:aws:sns:eu-west-1:999999999999:mine", &ses_bounce("ada@example.com"), "2");
    expect_problem(
        post(&app, "/webhooks/bounces/ses", &foreign.to_string(), &[]).await,
        StatusCode::FORBIDDEN,
        "unknown_topic",
    )
    .await;
    let mut elsewhere = sns.message("Notification", TOPIC, &ses_bounce("ada@example.com"), "2");
    elsewhere["SigningCertURL"] = json!("https://evil.example/SimpleNotificationService-0000test.pem");
    expect_problem(
        post(&app, "/webhooks/bounces/ses", &elsewhere.to_string(), &[]).await,
        StatusCode::FORBIDDEN,
        "invalid_signature",
    )
    .await;
    let mut changed = sns.message("Notification", TOPIC, &ses_bounce("bob@example.com"), "2");
    changed["Message"] = json!(ses_bounce("ada@example.com"));
    expect_problem(
        post(&app, "/webhooks/bounces/ses", &changed.to_string(), &[]).await,
        StatusCode::FORBIDDEN,
        "invalid_signature",
    )
    .await;
    let garbage = post(&app, "/webhooks/bounces/ses", "{\"Type\": 1}", &[]).await;
    assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // SendGrid: another key's signature, or none.
    let events = json!([{"email": "ada@example.com", "event": "bounce", "type": "bounce"}]).to_string();
    let other = SendGridKey::new().sign("1765101606", &events);
    let headers = [
        ("x-twilio-email-event-webhook-signature", other.as_str()),
        ("x-twilio-email-event-webhook-timestamp", "1765101606"),
    ];
    expect_problem(
        post(&app, "/webhooks/bounces/sendgrid", &events, &headers).await,
        StatusCode::FORBIDDEN,
        "invalid_signature",
    )
    .await;
    expect_problem(
        post(&app, "/webhooks/bounces/sendgrid", &events, &[]).await,
        StatusCode::FORBIDDEN,
        "invalid_signature",
    )
    .await;

    // Postmark: a wrong password.
    let wrong = format!("Basic {}", STANDARD.encode("postmark:not-the-secret-at-all"));
    let record = json!({"RecordType": "Bounce", "Type": "HardBounce", "Email": "ada@example.com"}).to_string();
    let answer = post(&app, "/webhooks/bounces/postmark", &record, &[("authorization", &wrong)]).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

    // Mailgun: a wrong signature, and a right one replayed an hour later.
    let then = (app.clock.now() - chrono::Duration::hours(1)).timestamp().to_string();
    for signature in ["00".repeat(32), mailgun_signature(&then, "t")] {
        let body = json!({"signature": {"timestamp": then, "token": "t", "signature": signature},
            "event-data": {"event": "failed", "severity": "permanent", "recipient": "ada@example.com"}});
        expect_problem(
            post(&app, "/webhooks/bounces/mailgun", &body.to_string(), &[]).await,
            StatusCode::FORBIDDEN,
            "invalid_signature",
        )
        .await;
    }
    assert_eq!(email_state(&app, &ada).await, "subscribed");
    assert_eq!(app.count("events WHERE kind IN ('bounced', 'soft_bounce', 'complained')").await, 0);
}

async fn five_soft_bounces_in_thirty_days_make_an_address_bounced(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let ada = person(&app, "ada@example.com").await;
    let soft = json!({"address": "ada@example.com", "type": "soft", "reason": "452 4.2.2 mailbox full"});
    for day in 0..5 {
        // Four, then a quiet month: the first ones no longer count.
        if day == 4 {
            app.clock.advance(chrono::Duration::days(31));
        }
        let answer = reqwest::Client::new()
            .post(app.url("/webhooks/bounces"))
            .bearer_auth(BOUNCE_SECRET)
            .json(&soft)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        app.clock.advance(chrono::Duration::days(1));
    }
    assert_eq!(email_state(&app, &ada).await, "subscribed", "four in a month, then one: still deliverable");
    for _ in 0..4 {
        reqwest::Client::new()
            .post(app.url("/webhooks/bounces"))
            .bearer_auth(BOUNCE_SECRET)
            .json(&soft)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(email_state(&app, &ada).await, "bounced", "the fifth in thirty days");
    let bounced = crate::helpers::timeline(&app, &ada).await.into_iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["data"]["reason"], "5 temporary failures in 30 days, the last: 452 4.2.2 mailbox full");
    assert_eq!(kinds(&app, &ada).await.iter().filter(|k| *k == "soft_bounce").count(), 9);
}

/// A broadcast goes out through a relay from each message's own return path; the bounce comes
/// back to the receiver by SMTP (Python's smtplib, as a mail server would send it): the address is
/// bounced. A bounce that proves no message of ours (a guessed return path, a DSN naming an
/// address alone) changes nothing.
async fn a_dsn_sent_to_a_messages_return_path_bounces_its_address(backend: Backend) {
    use ownlist::audience::bounces::mail::ReturnPath;
    use ownlist::delivery::bounce_smtp::BounceReceiver;
    let sink = crate::smtp_sink::SmtpSink::start().await;
    let relay = sink.url();
    let Some(app) = TestApp::spawn_with(backend, move |c| {
        c.smtp_relays = vec![relay];
        c.bounce_address = Some("bounces@shop.example".parse().unwrap());
    })
    .await
    else {
        return;
    };
    app.create_list("news").await;
    let mut ids = Vec::new();
    for email in ["ada@example.org", "bob@example.org"] {
        ids.push(app.join(email, "news").await);
    }
    let body = json!({"list": "news", "subject": "News", "html": "<p>Hello</p>"});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 2);
    let senders = sink.senders();
    assert_eq!(senders.len(), 2);
    assert!(senders.iter().all(|s| s.starts_with("bounces+") && s.ends_with("@shop.example")), "{senders:?}");
    assert_ne!(senders[0], senders[1], "one return path per message");

    let secret = std::fs::read_to_string(app.data_dir.join("secret")).unwrap();
    let receiver = BounceReceiver {
        db: app.db.clone(),
        clock: app.clock.clone(),
        return_path: ReturnPath::new(&"bounces@shop.example".parse().unwrap(), secret.trim()),
        host: "shop.example".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(receiver.serve(listener));

    let messages = {
        use sea_orm::EntityTrait;
        ownlist::store::entities::outbox::Entity::find().all(app.db.conn()).await.unwrap()
    };
    let ada_message = messages.iter().find(|m| m.recipient == "ada@example.org").unwrap();
    let ada_path = senders.iter().find(|s| s.contains(&ada_message.id.simple().to_string())).unwrap().clone();
    let to = ada_path.clone();
    let dsn = move |recipient: &str, message_id: &str| {
        let ada_path = &to;
        format!(
            "From: MAILER-DAEMON@mx.example.org\r\nTo: {ada_path}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n\r\n\
--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\nSubject: News\r\n\r\n--b1--\r\n"
        )
    };
    let send = move |to: String, message: String| {
        let script = "import smtplib, sys\n\
                      s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)\n\
                      try:\n    s.sendmail('', [sys.argv[2]], sys.stdin.buffer.read())\n    print('ok')\n\
                      except smtplib.SMTPRecipientsRefused as e:\n    print('refused')\nfinally:\n    s.quit()\n";
        let mut child = Command::new("python3")
            .args(["-c", script, &port.to_string(), &to])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), message.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let sent = tokio::task::spawn_blocking({
        let dsn = dsn.clone();
        move || {
            (
                // Addresses the receiver does not take mail for, and a bounce that proves nothing.
                send("someone@shop.example".into(), dsn("bob@example.org", "<x@elsewhere.example>")),
                send("bounces@shop.example".into(), dsn("bob@example.org", "<x@elsewhere.example>")),
                send(
                    format!("bounces+{}-0000000000@shop.example", uuid::Uuid::now_v7().simple()),
                    dsn("bob@example.org", ""),
                ),
                // Ada's message's own return path.
                send(ada_path.clone(), dsn("ada@example.org", "")),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(sent, ("refused".into(), "ok".into(), "ok".into(), "ok".into()));
    assert_eq!(email_state(&app, &ids[0]).await, "bounced");
    assert_eq!(email_state(&app, &ids[1]).await, "subscribed", "no proof, no bounce");
    let bounced = crate::helpers::timeline(&app, &ids[0]).await.into_iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["data"]["reason"], "550 5.1.1 <ada@example.org>: Recipient address rejected: User unknown");
    let report = expect_json(app.get("/api/v1/broadcasts").await, StatusCode::OK).await;
    let id = report["data"][0]["id"].as_str().unwrap().to_owned();
    let report = expect_json(app.get(&format!("/api/v1/broadcasts/{id}/report")).await, StatusCode::OK).await;
    assert_eq!(report["totals"]["bounced"], 1, "the broadcast's report counts it");
    server.abort();
}
