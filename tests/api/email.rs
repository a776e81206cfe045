//! Email delivery through the `file` transport: the message bytes as a mail client would read them.

use std::sync::Arc;

use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::helpers::{TestApp, expect_json, kinds, on_both_databases};
use crate::smtp_sink::SmtpSink;
use ownlist::core::clock::Clock;
use ownlist::core::links::Signer;
use ownlist::delivery::email::{EmailSender, Letterhead, Relay, Transport};
use ownlist::store::entities::outbox;

on_both_databases!(
    an_email_step_arrives_as_a_readable_message,
    a_transport_failure_is_retried_later_and_recorded,
    a_message_still_failing_after_the_retry_age_is_given_up,
    a_failing_relay_hands_over_to_the_next,
    a_permanent_refusal_fails_the_message_at_once,
    a_hard_bounce_marks_the_address_bounced,
    several_messages_are_in_flight_at_once_and_each_arrives_once,
    a_relay_answering_451_is_retried_until_it_recovers,
    a_failing_relay_is_skipped_for_its_cooldown_then_used_again,
    a_rate_limited_relay_gets_messages_evenly_spaced,
    the_unsubscribe_header_works_in_one_click_and_its_page_changes_nothing,
    answers_that_cannot_be_written_are_kept_and_nothing_is_sent_twice,
    an_outage_of_the_only_relay_holds_messages_and_ends_when_it_is_back,
    a_relay_that_never_answers_costs_one_probe_per_cool_down,
);

const GUIDE: &str = "name: Guide\ntrigger: { subscribed: guide-leads }\nsteps:\n  - id: deliver\n    email: { subject: \"Your guide, {{ subscriber.first_name }}\", template: emails/guide.html }\n";

/// Ada joins the list, the workflow queues the guide; returns her id and the queued message.
async fn queue_the_guide(app: &TestApp) -> (String, outbox::Model) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", GUIDE).await;
    let ada = app
        .create_subscriber(json!({
            "email": "ada@example.com", "first_name": "Ada", "lists": ["guide-leads"], "consent": {"email": true}
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.tick().await;
    let queued = outbox::Entity::find().all(app.db.conn()).await.unwrap();
    assert_eq!(queued.len(), 1, "the guide is queued");
    (ada, queued.into_iter().next().unwrap())
}

/// Makes the database refuse to mark a message sent, as a full disk would (SQLite rolls the
/// transaction back; PostgreSQL answers `disk_full`); `false` lifts it.
pub async fn refuse_answers(app: &TestApp, refuse: bool) {
    use crate::helpers::Backend;
    let statements: &[&str] = match (app.backend, refuse) {
        (Backend::Sqlite, true) => &["CREATE TRIGGER disk_full BEFORE UPDATE ON outbox WHEN NEW.status = 'sent' \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"],
        (Backend::Sqlite, false) => &["DROP TRIGGER disk_full"],
        (Backend::Postgres, true) => &[
            "CREATE FUNCTION disk_full() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$ \
             LANGUAGE plpgsql",
            "CREATE TRIGGER disk_full BEFORE UPDATE ON outbox FOR EACH ROW WHEN (NEW.status = 'sent') \
             EXECUTE FUNCTION disk_full()",
        ],
        (Backend::Postgres, false) => &["DROP TRIGGER disk_full ON outbox", "DROP FUNCTION disk_full()"],
    };
    for sql in statements {
        app.db.execute_unprepared(sql).await.unwrap();
    }
}

/// A message is sent but its answer cannot be written: the answer is kept, nothing more is
/// claimed (the message is still queued in the database), and once writes work again the answer
/// is written and the message is not sent a second time.
async fn answers_that_cannot_be_written_are_kept_and_nothing_is_sent_twice(app: TestApp) {
    let (_, queued) = queue_the_guide(&app).await;
    let relay = SmtpSink::start().await;
    let sender = smtp_sender(&app, &[&relay]);
    refuse_answers(&app, true).await;
    assert!(sender.send_due().await.is_err(), "the answer could not be written");
    assert_eq!(relay.taken().len(), 1);
    assert_eq!(message(&app, queued.id).await.status, "queued", "nothing was written");
    // While the answer cannot be written, nothing is claimed: the message would go out again.
    assert!(sender.send_due().await.is_err());
    assert!(sender.send_due().await.is_err());
    assert_eq!(relay.taken().len(), 1, "sent once, though still queued in the database");
    refuse_answers(&app, false).await;
    assert_eq!(sender.send_due().await.unwrap(), 0, "the kept answer is written; nothing is left to send");
    assert_eq!(message(&app, queued.id).await.status, "sent");
    assert_eq!(relay.taken().len(), 1);
    assert_eq!(sender.send_due().await.unwrap(), 0);
    assert_eq!(relay.taken().len(), 1);
}

/// Several instances (PostgreSQL): a pass whose answers cannot be written gives back at once
/// the leases of the messages it claimed and did not send, so other instances need not wait out
/// the lease; the messages it sent keep theirs until their answers are written, and nothing is
/// sent twice.
#[tokio::test]
async fn a_failed_pass_gives_back_the_leases_of_what_it_did_not_send() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        eprintln!("OWNLIST_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    queue_broadcast(&app, 600).await;
    let relay = SmtpSink::start().await;
    let urls = [relay.url()];
    let sender = Arc::new(
        Arc::try_unwrap(sender_through(&app, &urls))
            .ok()
            .unwrap()
            .with_leases("this-instance".into(), chrono::Duration::minutes(5)),
    );
    refuse_answers(&app, true).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(sender.clone().run(stopped));
    let leased = || app.count("outbox WHERE lease_owner IS NOT NULL AND status = 'queued'");
    let mut released = false;
    for _ in 0..200 {
        let sent = relay.taken().len();
        if sent > 0 && sent < 600 && leased().await == i64::try_from(sent).unwrap() {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        released,
        "only the sent messages keep their leases: {} sent, {} leased",
        relay.taken().len(),
        leased().await
    );
    refuse_answers(&app, false).await;
    for _ in 0..400 {
        if app.count("outbox WHERE status = 'sent'").await == 600 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();
    assert_eq!(app.count("outbox WHERE status = 'sent'").await, 600);
    let ids: std::collections::BTreeSet<String> =
        relay.taken().iter().map(|m| header(&headers(m), "Message-ID").to_owned()).collect();
    assert_eq!((relay.taken().len(), ids.len()), (600, 600), "each message arrived once");
}

/// The header fields of a message, unfolded.
fn headers(raw: &str) -> Vec<(String, String)> {
    let head = raw.split("\r\n\r\n").next().unwrap().replace("\r\n ", " ").replace("\r\n\t", " ");
    head.lines()
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

fn header<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<_> = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).collect();
    assert_eq!(found.len(), 1, "exactly one {name} header in {fields:?}");
    &found[0].1
}

fn mail_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir(app.data_dir.join("mail")) else { return Vec::new() };
    dir.map(|entry| entry.unwrap().path()).collect()
}

async fn an_email_step_arrives_as_a_readable_message(app: TestApp) {
    let (ada, queued) = queue_the_guide(&app).await;
    assert!(mail_files(&app).is_empty(), "nothing is written before the worker runs");
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    assert_eq!(app.email.send_due().await.unwrap(), 0, "sent once");

    let files = mail_files(&app);
    assert_eq!(files.len(), 1, "one file, no partial leftovers: {files:?}");
    assert_eq!(files[0].file_name().unwrap().to_str().unwrap(), format!("{}.eml", queued.id));
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    let fields = headers(&raw);
    assert_eq!(header(&fields, "From"), "ownlist <noreply@localhost>");
    assert_eq!(header(&fields, "To"), "ada@example.com");
    assert_eq!(header(&fields, "Subject"), "Your guide, Ada");
    assert_eq!(header(&fields, "Message-ID"), format!("<{}@localhost>", queued.id));
    let date = chrono::DateTime::parse_from_rfc2822(header(&fields, "Date")).unwrap();
    assert_eq!(date, app.clock.now());
    let unsubscribe = header(&fields, "List-Unsubscribe");
    assert!(unsubscribe.starts_with("<http://127.0.0.1:8080/u/") && unsubscribe.ends_with('>'), "{unsubscribe}");
    assert_eq!(header(&fields, "List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    assert!(header(&fields, "Content-Type").starts_with("multipart/alternative"), "{fields:?}");
    let plain = raw.find("Content-Type: text/plain").expect("a plain-text part");
    let html = raw.find("Content-Type: text/html").expect("an HTML part");
    assert!(plain < html, "plain text first, HTML last (the preferred part)");

    let sent = outbox::Entity::find_by_id(queued.id).one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!((sent.status.as_str(), sent.attempts, sent.sent_at), ("sent", 1, Some(app.clock.now())));
    assert!(kinds(&app, &ada).await.contains(&"email_sent".to_owned()));
}

async fn a_transport_failure_is_retried_later_and_recorded(app: TestApp) {
    let (ada, queued) = queue_the_guide(&app).await;
    // A file where the mail folder should be: every write fails until it is moved away.
    std::fs::create_dir_all(&app.data_dir).unwrap();
    std::fs::write(app.data_dir.join("mail"), "in the way").unwrap();
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let waiting = outbox::Entity::find_by_id(queued.id).one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!((waiting.status.as_str(), waiting.attempts), ("queued", 1));
    assert!(waiting.last_error.as_deref().unwrap().contains("cannot write the message file"), "{waiting:?}");
    let wait = waiting.due_at - app.clock.now();
    assert!(wait >= chrono::Duration::seconds(60) && wait <= chrono::Duration::seconds(75), "{wait:?}");
    assert!(kinds(&app, &ada).await.contains(&"email_retrying".to_owned()));
    assert_eq!(app.email.send_due().await.unwrap(), 0, "not before then");

    std::fs::remove_file(app.data_dir.join("mail")).unwrap();
    app.clock.set(app.clock.now() + chrono::Duration::seconds(75));
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let sent = outbox::Entity::find_by_id(queued.id).one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!((sent.status.as_str(), sent.attempts, sent.last_error), ("sent", 2, None));
    assert_eq!(mail_files(&app).len(), 1);
    let timeline = expect_json(app.get(&format!("/api/v1/subscribers/{ada}/timeline")).await, StatusCode::OK).await;
    let sent_entry = timeline["data"].as_array().unwrap().iter().find(|e| e["kind"] == "email_sent").unwrap().clone();
    assert_eq!(sent_entry["data"]["attempt"], 2, "{sent_entry}");
    assert_eq!(sent_entry["data"]["step"], "deliver");
}

/// An email worker sending through these relays, in this order.
fn smtp_sender(app: &TestApp, relays: &[&SmtpSink]) -> Arc<EmailSender> {
    let urls: Vec<String> = relays.iter().map(|sink| sink.url()).collect();
    sender_through(app, &urls)
}

/// An email worker sending through relays given by URL.
fn sender_through(app: &TestApp, urls: &[String]) -> Arc<EmailSender> {
    let letterhead = Letterhead {
        from: "Shop <news@shop.example>".parse().unwrap(),
        base_url: url::Url::parse("https://shop.example/").unwrap(),
        signer: Signer::new("a-test-secret-of-at-least-thirty-two-characters"),
        dkim: None,
        unsubscribe_mailto: Some("leave@shop.example".parse().unwrap()),
        return_path: None,
    };
    let relays = urls.iter().map(|url| Relay::from_url(url).unwrap()).collect();
    Arc::new(EmailSender::new(app.db.clone(), app.clock.clone(), letterhead, Transport::Smtp(relays)))
}

async fn message(app: &TestApp, id: uuid::Uuid) -> outbox::Model {
    outbox::Entity::find_by_id(id).one(app.db.conn()).await.unwrap().unwrap()
}

async fn a_failing_relay_hands_over_to_the_next(app: TestApp) {
    let (ada, queued) = queue_the_guide(&app).await;
    let (first, second) = (SmtpSink::start().await, SmtpSink::start().await);
    first.refuse(Some("421 4.3.2 shutting down"));
    let sender = smtp_sender(&app, &[&first, &second]);
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert!(first.taken().is_empty());
    let arrived = second.taken();
    assert_eq!(arrived.len(), 1, "the second relay took it");
    let fields = headers(&arrived[0]);
    assert_eq!(header(&fields, "From"), "Shop <news@shop.example>");
    assert_eq!(header(&fields, "Message-ID"), format!("<{}@shop.example>", queued.id));
    let unsubscribe = header(&fields, "List-Unsubscribe");
    assert!(unsubscribe.starts_with("<https://shop.example/u/"), "{unsubscribe}");
    assert!(unsubscribe.contains(">, <mailto:leave@shop.example?subject=unsubscribe%20"), "{unsubscribe}");
    let sent_message = message(&app, queued.id).await;
    assert_eq!(sent_message.status, "sent");
    assert!(sent_message.provider_ref.unwrap().starts_with("250 2.0.0 queued as"), "the relay's answer is kept");
    let timeline = expect_json(app.get(&format!("/api/v1/subscribers/{ada}/timeline")).await, StatusCode::OK).await;
    let sent = timeline["data"].as_array().unwrap().iter().find(|e| e["kind"] == "email_sent").unwrap().clone();
    assert_eq!(sent["data"]["detail"]["relay"], second.address, "{sent}");
    assert!(sent["data"]["detail"]["reply"].as_str().unwrap().starts_with("250"), "{sent}");
}

async fn a_permanent_refusal_fails_the_message_at_once(app: TestApp) {
    let (ada, queued) = queue_the_guide(&app).await;
    let (first, second) = (SmtpSink::start().await, SmtpSink::start().await);
    first.refuse(Some("554 5.7.1 message rejected as spam"));
    let sender = smtp_sender(&app, &[&first, &second]);
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert!(second.taken().is_empty(), "a 5xx is about the message: no other relay is tried");
    let failed = message(&app, queued.id).await;
    assert_eq!(failed.status, "failed");
    assert!(failed.last_error.as_deref().unwrap().contains("rejected as spam"), "{failed:?}");
    assert!(kinds(&app, &ada).await.contains(&"email_failed".to_owned()));
    assert_eq!(sender.send_due().await.unwrap(), 0, "failed for good");
    let still = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(still["channels"]["email"], "subscribed", "a refused message says nothing about the address");
}

async fn a_hard_bounce_marks_the_address_bounced(app: TestApp) {
    let (ada, queued) = queue_the_guide(&app).await;
    let relay = SmtpSink::start().await;
    relay.refuse(Some("550 5.1.1 <ada@example.com>: no such mailbox"));
    let sender = smtp_sender(&app, &[&relay]);
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!(message(&app, queued.id).await.status, "failed");
    let after = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!((after["channels"]["email"].as_str(), after["status"].as_str()), (Some("bounced"), Some("bounced")));
    let timeline = expect_json(app.get(&format!("/api/v1/subscribers/{ada}/timeline")).await, StatusCode::OK).await;
    let bounce = timeline["data"].as_array().unwrap().iter().find(|e| e["kind"] == "bounced").unwrap().clone();
    assert_eq!(bounce["data"]["channel"], "email", "{bounce}");
    assert!(bounce["data"]["reason"].as_str().unwrap().contains("5.1.1"), "{bounce}");
}

async fn a_relay_answering_451_is_retried_until_it_recovers(app: TestApp) {
    let (_, queued) = queue_the_guide(&app).await;
    let only = SmtpSink::start().await;
    only.refuse(Some("451 4.7.1 try again later"));
    let sender = smtp_sender(&app, &[&only]);
    assert_eq!(sender.send_due().await.unwrap(), 1);
    let waiting = message(&app, queued.id).await;
    assert_eq!((waiting.status.as_str(), waiting.attempts), ("queued", 1));
    assert!(waiting.last_error.as_deref().unwrap().contains("try again later"), "{waiting:?}");

    only.refuse(None);
    assert_eq!(sender.send_due().await.unwrap(), 0, "not before the backoff");
    app.clock.set(app.clock.now() + chrono::Duration::seconds(75));
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!(only.taken().len(), 1);
    let sent = message(&app, queued.id).await;
    assert_eq!((sent.status.as_str(), sent.attempts), ("sent", 2));
}

async fn the_unsubscribe_header_works_in_one_click_and_its_page_changes_nothing(app: TestApp) {
    let (ada, _) = queue_the_guide(&app).await;
    app.email.send_due().await.unwrap();
    let raw = std::fs::read_to_string(&mail_files(&app)[0]).unwrap();
    let fields = headers(&raw);
    let link = header(&fields, "List-Unsubscribe").trim_matches(|c| c == '<' || c == '>').to_owned();
    // The message names the configured base URL; the test server listens elsewhere.
    let path = url::Url::parse(&link).unwrap().path().to_owned();
    assert!(path.starts_with("/u/"), "{link}");
    let anonymous = reqwest::Client::new();
    let subscriber =
        || async { expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await };

    // Opening the link (as a mail scanner would) shows a button and changes nothing.
    let page = anonymous.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    assert!(text.contains("<form method=\"post\">") && !text.contains("<script"), "{text}");
    assert_eq!(subscriber().await["channels"]["email"], "subscribed");

    // The mail client's one-click request (RFC 8058).
    let one_click = anonymous
        .post(app.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), StatusCode::OK);
    assert!(one_click.text().await.unwrap().contains("You are unsubscribed"));
    let after = subscriber().await;
    assert_eq!(
        (after["channels"]["email"].as_str(), after["status"].as_str()),
        (Some("unsubscribed"), Some("unsubscribed"))
    );
    assert_eq!(app.count("consents WHERE granted = false AND method = 'unsubscribe_link'").await, 1);
    assert!(kinds(&app, &ada).await.contains(&"consent_revoked".to_owned()));

    // Again: nothing more is written.
    let again = anonymous.post(app.url(&path)).body("").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.text().await.unwrap().contains("already unsubscribed"));
    assert_eq!(app.count("consents WHERE granted = false").await, 1);

    // A forged or damaged token is refused; an old one has expired.
    let mut forged = path.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(anonymous.post(app.url(&forged)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(anonymous.get(app.url("/u/not-a-token")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    app.clock.set(app.clock.now() + chrono::Duration::days(400));
    assert_eq!(anonymous.get(app.url(&path)).send().await.unwrap().status(), StatusCode::GONE);
}

/// An RSA key for DKIM in `dir` (PKCS#1 PEM), and its DNS TXT record.
fn dkim_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("dkim.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl (CI installs it)");
    assert!(made.status.success(), "{made:?}");
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success(), "{public:?}");
    use base64::Engine;
    let record = format!("v=DKIM1; k=rsa; p={}", base64::engine::general_purpose::STANDARD.encode(&public.stdout));
    (key, record)
}

/// mail-auth's DKIM verifier (another project's, written to the RFCs) on a message, its DNS
/// query answered with `record` for `news._domainkey.shop.example`.
async fn verifier_accepts(message: &str, record: &str) -> bool {
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, Txt};
    let key = mail_auth::common::verify::DomainKey::parse(record.as_bytes()).unwrap();
    let records = KnownRecords(std::collections::HashMap::from([(
        Box::<str>::from("news._domainkey.shop.example."),
        Txt::DomainKey(std::sync::Arc::new(key)),
    )]));
    // The resolver is never asked: the record is known beforehand.
    let verifier = MessageAuthenticator::new_cloudflare().unwrap();
    let parsed = AuthenticatedMessage::parse(message.as_bytes()).unwrap();
    let results = verifier.verify_dkim(Parameters::new(&parsed).with_txt_cache(&records)).await;
    !results.is_empty() && results.iter().all(|r| r.result() == &DkimResult::Pass)
}

/// TXT records known in advance, as mail-auth's DNS cache.
struct KnownRecords(std::collections::HashMap<Box<str>, mail_auth::Txt>);

impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for KnownRecords {
    fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.get(name).cloned()
    }

    fn remove<Q>(&self, _: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: mail_auth::Txt, _: std::time::Instant) {}
}

#[tokio::test]
async fn messages_carry_a_dkim_signature_a_real_verifier_accepts() {
    if !crate::tools::openssl("messages_carry_a_dkim_signature_a_real_verifier_accepts") {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (key_file, record) = dkim_key(keys.path());
    for backend in [crate::helpers::Backend::Sqlite, crate::helpers::Backend::Postgres] {
        let dkim = ownlist::config::Dkim {
            domain: "shop.example".into(),
            selector: "news".into(),
            key_file: key_file.clone(),
        };
        let Some(app) = TestApp::spawn_with(backend, |c| {
            c.email_from = "Shop <news@shop.example>".parse().unwrap();
            c.dkim = Some(dkim);
        })
        .await
        else {
            continue;
        };
        queue_the_guide(&app).await;
        assert_eq!(app.email.send_due().await.unwrap(), 1);
        let file = mail_files(&app).remove(0);
        let raw = std::fs::read_to_string(&file).unwrap();
        let signature = header(&headers(&raw), "DKIM-Signature").to_owned();
        assert!(signature.contains("a=rsa-sha256") && signature.contains("d=shop.example"), "{signature}");
        let signed: Vec<String> = signature
            .split(';')
            .find_map(|tag| tag.trim().strip_prefix("h="))
            .unwrap()
            .split(':')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        for needed in ["from", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"] {
            assert!(signed.iter().any(|h| h == needed), "{needed} is signed: {signature}");
        }
        assert!(verifier_accepts(&raw, &record).await, "the verifier accepts the signature");
        // A changed subject breaks it: the verifier really checks.
        let tampered = raw.replace("Subject: Your guide, Ada", "Subject: Your guide, Bob");
        assert!(!verifier_accepts(&tampered, &record).await, "a tampered message fails");
    }
}

async fn several_messages_are_in_flight_at_once_and_each_arrives_once(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", GUIDE).await;
    for n in 0..30 {
        app.create_subscriber(json!({
            "email": format!("reader{n}@example.com"), "first_name": "Reader", "lists": ["guide-leads"],
            "consent": {"email": true}
        }))
        .await;
    }
    app.tick().await;
    let relay = SmtpSink::start().await;
    let sender = smtp_sender(&app, &[&relay]);
    assert_eq!(sender.send_due().await.unwrap(), 30);
    let most = relay.most_at_once.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most > 1 && most <= ownlist::delivery::CONCURRENCY, "{most} at once");
    let mut recipients: Vec<String> = relay.taken().iter().map(|m| header(&headers(m), "To").to_owned()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!((relay.taken().len(), recipients.len()), (30, 30), "each exactly once");
    let pipelined = relay.pipelined.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(pipelined, 30, "MAIL, RCPT and DATA go in one write to a relay offering PIPELINING");
    assert_eq!(app.count("outbox WHERE status = 'sent'").await, 30);
    assert_eq!(sender.send_due().await.unwrap(), 0);
}

/// Queues one broadcast message per member of `news` (creating the list and members first when
/// `members` is not empty).
async fn queue_broadcast(app: &TestApp, members: usize) {
    if members > 0 {
        app.create_list("news").await;
        for i in 0..members {
            app.create_subscriber(
                json!({"email": format!("r{i}@example.com"), "lists": ["news"], "consent": {"email": true}}),
            )
            .await;
        }
    }
    let body = json!({"list": "news", "subject": "News", "html": "<p>News</p>"});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
}

async fn a_failing_relay_is_skipped_for_its_cooldown_then_used_again(app: TestApp) {
    let (first, second) = (SmtpSink::start().await, SmtpSink::start().await);
    first.refuse(Some("421 4.3.2 too busy"));
    let sender = sender_through(&app, &[format!("{}?cooldown=60", first.url()), second.url()]);
    queue_broadcast(&app, 1).await;
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!((first.attempts(), second.taken().len()), (1, 1), "failed over");

    // While it cools down the failing relay is not even tried.
    first.refuse(None);
    queue_broadcast(&app, 0).await;
    sender.send_due().await.unwrap();
    app.clock.advance(chrono::Duration::seconds(59));
    queue_broadcast(&app, 0).await;
    sender.send_due().await.unwrap();
    assert_eq!((first.attempts(), second.taken().len()), (1, 3), "skipped during the cool-down");

    // After it, the first relay is tried again, and keeps the traffic once it works.
    app.clock.advance(chrono::Duration::seconds(1));
    for _ in 0..2 {
        queue_broadcast(&app, 0).await;
        sender.send_due().await.unwrap();
    }
    assert_eq!((first.taken().len(), second.taken().len()), (2, 3), "back to the preferred relay");
    assert_eq!(app.count("outbox WHERE status = 'sent'").await, 5);
}

/// The only relay is down. Once it is known to fail, messages are held (no attempt, no backoff,
/// no timeline entry) and nothing is claimed while it cools down; after each cool-down one
/// message probes it; once it works again, everything, the messages waiting out a backoff too,
/// goes out at once: within seconds of its return on the test clock, not minutes.
async fn an_outage_of_the_only_relay_holds_messages_and_ends_when_it_is_back(app: TestApp) {
    let relay = SmtpSink::start().await;
    relay.refuse(Some("421 4.3.2 down for maintenance"));
    let sender = sender_through(&app, &[relay.url()]);
    queue_broadcast(&app, 3).await;
    assert_eq!(sender.send_due().await.unwrap(), 3, "not known to fail yet: all three are tried");
    assert_eq!(relay.attempts(), 3);

    queue_broadcast(&app, 0).await;
    assert_eq!(sender.send_due().await.unwrap(), 0, "cooling down: nothing is claimed");
    assert_eq!(relay.attempts(), 3);

    app.clock.advance(chrono::Duration::seconds(20));
    sender.send_due().await.unwrap();
    assert_eq!(relay.attempts(), 4, "one probe after the cool-down, not the whole batch");

    relay.refuse(None);
    app.clock.advance(chrono::Duration::seconds(20));
    let back = app.clock.now();
    for _ in 0..5 {
        sender.send_due().await.unwrap();
        if app.count("outbox WHERE status = 'sent'").await == 6 {
            break;
        }
        app.clock.advance(chrono::Duration::seconds(1));
    }
    assert_eq!(app.count("outbox WHERE status = 'sent'").await, 6, "everything went out");
    assert!(app.clock.now() - back <= chrono::Duration::seconds(3), "within seconds of the relay's return");
    let ids: std::collections::BTreeSet<String> =
        relay.taken().iter().map(|m| header(&headers(m), "Message-ID").to_owned()).collect();
    assert_eq!((relay.taken().len(), ids.len()), (6, 6), "each message arrived once");
    assert_eq!(app.count("events WHERE kind = 'email_retrying'").await, 4, "only real tries are in the timeline");
    let attempts: i64 =
        outbox::Entity::find().all(app.db.conn()).await.unwrap().iter().map(|m| i64::from(m.attempts)).sum();
    assert_eq!(attempts, 4 + 6, "a hold is no attempt");
}

/// A tarpit: it accepts connections and never says a word. Returns its address and how many
/// connections it has taken.
async fn tarpit() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = taken.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (address, taken)
}

/// The preferred relay accepts connections and never answers. No connection to it having
/// worked yet, one message tries it while the others wait half a second at most and go on to the
/// healthy relay; then it is skipped, and after each cool-down a single message probes it (and
/// goes on to the healthy relay) while the rest go straight to the healthy one.
async fn a_relay_that_never_answers_costs_one_probe_per_cool_down(app: TestApp) {
    let (silent, connections) = tarpit().await;
    let healthy = SmtpSink::start().await;
    let sender = sender_through(&app, &[format!("smtp://{silent}?timeout=3"), healthy.url()]);
    let at = |n: usize| connections.load(std::sync::atomic::Ordering::SeqCst) == n;
    queue_broadcast(&app, 20).await;
    assert_eq!(sender.send_due().await.unwrap(), 20);
    let first_wave = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(first_wave, 1, "one connection at a time to a relay not known to work");
    assert_eq!(healthy.taken().len(), 20, "every message went on to the healthy relay");

    // Cooling down: not one connection to it.
    queue_broadcast(&app, 0).await;
    assert_eq!(sender.send_due().await.unwrap(), 20);
    assert!(at(first_wave));

    // After the cool-down, one probe; the other 19 do not wait for it.
    app.clock.advance(chrono::Duration::seconds(20));
    queue_broadcast(&app, 0).await;
    assert_eq!(sender.send_due().await.unwrap(), 20);
    assert!(at(first_wave + 1), "one probe: {}", connections.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(healthy.taken().len(), 60);
    assert_eq!(app.count("outbox WHERE status = 'sent'").await, 60);
}

async fn a_rate_limited_relay_gets_messages_evenly_spaced(app: TestApp) {
    let relay = SmtpSink::start().await;
    let sender = sender_through(&app, &[format!("{}?rate=20", relay.url())]);
    queue_broadcast(&app, 21).await;
    assert_eq!(sender.send_due().await.unwrap(), 21);
    let mut starts = relay.starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), 21);
    // 20 a second, evenly spaced: any k+1 consecutive starts span at least k × 50 ms, less a
    // margin for a connection that had to be opened first (a late start shortens the span after
    // it); spans of 10 and 20 intervals keep that margin small against what is measured.
    for k in [10, 20] {
        for i in 0..starts.len() - k {
            let span = starts[i + k] - starts[i];
            let least = std::time::Duration::from_millis(50 * k as u64 - 40);
            assert!(span >= least, "{k} intervals after start {i} took only {span:?}");
        }
    }
}

/// Postfix's `smtp-sink` (a real MTA's test server, from Debian's postfix package) on a free
/// loopback port, writing each message it takes into a folder.
struct PostfixSink {
    child: std::process::Child,
    url: String,
    dumps: tempfile::TempDir,
}

impl PostfixSink {
    fn start() -> Self {
        let dumps = tempfile::tempdir().unwrap();
        // smtp-sink drops root privileges to `nobody`, who must be able to write the dumps.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = std::process::Command::new("smtp-sink");
        if running_as_root() {
            command.args(["-u", "nobody"]);
        }
        let template = format!("{}/%H%M%S.", dumps.path().display());
        let child = command
            .args(["-d", &template, &format!("127.0.0.1:{port}"), "16"])
            .spawn()
            .expect("postfix's smtp-sink (CI installs postfix)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, url: format!("smtp://127.0.0.1:{port}"), dumps }
    }

    /// The messages taken so far, waiting up to a few seconds for `count` of them to be written.
    fn messages(&self, count: usize) -> Vec<std::path::PathBuf> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let files: Vec<_> = std::fs::read_dir(self.dumps.path()).unwrap().map(|e| e.unwrap().path()).collect();
            // A multipart message is whole once its closing boundary (`--…--`) is written.
            let complete = files.iter().all(|f| {
                std::fs::read_to_string(f).is_ok_and(|t| {
                    t.trim_end().lines().last().is_some_and(|l| l.starts_with("--") && l.ends_with("--"))
                })
            });
            if files.len() >= count && complete {
                return files;
            }
            assert!(std::time::Instant::now() < deadline, "smtp-sink wrote {} of {count} messages", files.len());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Whether this process runs as root (smtp-sink then needs `-u`).
fn running_as_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Ed25519 key for DKIM in `dir` (PKCS#8 PEM, as openssl makes it), and its DNS TXT record.
fn ed25519_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("dkim-ed25519.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .output()
        .expect("openssl (CI installs it)");
    assert!(made.status.success(), "{made:?}");
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success() && public.stdout.len() == 44, "{public:?}");
    use base64::Engine;
    let raw = &public.stdout[12..];
    (key, format!("v=DKIM1; k=ed25519; p={}", base64::engine::general_purpose::STANDARD.encode(raw)))
}

#[tokio::test]
async fn a_real_mta_takes_the_message_with_every_header_and_a_signature_a_verifier_accepts() {
    let test = "a_real_mta_takes_the_message_with_every_header_and_a_signature_a_verifier_accepts";
    if !crate::tools::smtp_sink(test) || !crate::tools::openssl(test) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let rsa = dkim_key(keys.path());
    let ed25519 = ed25519_key(keys.path());
    for backend in [crate::helpers::Backend::Sqlite, crate::helpers::Backend::Postgres] {
        for ((key_file, record), algorithm) in [(&rsa, "rsa-sha256"), (&ed25519, "ed25519-sha256")] {
            let mta = PostfixSink::start();
            let dkim = ownlist::config::Dkim {
                domain: "shop.example".into(),
                selector: "news".into(),
                key_file: key_file.clone(),
            };
            let Some(app) = TestApp::spawn_with(backend, |c| {
                c.email_from = "Shop <news@shop.example>".parse().unwrap();
                c.smtp_relays = vec![mta.url.clone()];
                c.dkim = Some(dkim);
            })
            .await
            else {
                continue;
            };
            let (_, queued) = queue_the_guide(&app).await;
            assert_eq!(app.email.send_due().await.unwrap(), 1);
            let files = mta.messages(1);
            assert_eq!(files.len(), 1);
            let raw = std::fs::read_to_string(&files[0]).unwrap().replace("\r\n", "\n").replace('\n', "\r\n");
            let fields = headers(&raw);
            assert_eq!(header(&fields, "X-Rcpt-Args"), "<ada@example.com>", "the envelope recipient");
            assert_eq!(header(&fields, "From"), "Shop <news@shop.example>");
            assert_eq!(header(&fields, "To"), "ada@example.com");
            assert_eq!(header(&fields, "Subject"), "Your guide, Ada");
            assert_eq!(header(&fields, "Message-ID"), format!("<{}@shop.example>", queued.id));
            chrono::DateTime::parse_from_rfc2822(header(&fields, "Date")).unwrap();
            assert!(header(&fields, "List-Unsubscribe").starts_with("<http://127.0.0.1:8080/u/"));
            assert_eq!(header(&fields, "List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
            assert_eq!(header(&fields, "List-Id"), "<guide-leads.shop.example>");
            assert!(header(&fields, "Content-Type").starts_with("multipart/alternative"));
            let signature = header(&fields, "DKIM-Signature");
            assert!(signature.contains(&format!("a={algorithm}")), "{signature}");
            assert!(verifier_accepts(&raw, record).await, "the verifier accepts the {algorithm} signature");
            let tampered = raw.replace("Subject: Your guide, Ada", "Subject: Your guide, Bob");
            assert!(!verifier_accepts(&tampered, record).await, "a tampered message fails ({algorithm})");
        }
    }
}

async fn a_message_still_failing_after_the_retry_age_is_given_up(app: TestApp) {
    let (ada, queued) = queue_the_guide(&app).await;
    let only = SmtpSink::start().await;
    only.refuse(Some("451 4.3.0 try again later"));
    let sender = smtp_sender(&app, &[&only]);
    // Retried while younger than the retry age (48 hours by default)…
    for _ in 0..3 {
        assert_eq!(sender.send_due().await.unwrap(), 1);
        assert_eq!(message(&app, queued.id).await.status, "queued");
        app.clock.set(message(&app, queued.id).await.due_at);
    }
    // …and given up on the first failure after it.
    app.clock.set(queued.created_at + chrono::Duration::hours(48));
    assert_eq!(sender.send_due().await.unwrap(), 1);
    let failed = message(&app, queued.id).await;
    assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 4));
    assert!(
        failed.last_error.as_deref().unwrap().starts_with("still failing after 48 hours and 4 attempts"),
        "{failed:?}"
    );
    assert!(kinds(&app, &ada).await.contains(&"email_failed".to_owned()));
    assert_eq!(sender.send_due().await.unwrap(), 0);
}
