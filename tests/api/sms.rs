//! SMS: a Twilio-compatible provider (faked on loopback) and a generic one, failover, delivery
//! reports, keywords through the signed inbound webhook, and the sending hours.

use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::{Value, json};

use crate::fake_sms::FakeProvider;
use crate::helpers::{Backend, TestApp, expect_json, expect_problem, kinds, timeline, with_each_backend};
use ownlist::config::SmsProviderConfig;
use ownlist::delivery::sms::twilio_signature;
use ownlist::store::entities::{outbox, subscriber};

with_each_backend!(
    a_workflow_sms_goes_to_twilio_and_its_delivery_report_is_recorded,
    a_failing_provider_hands_over_and_an_unreachable_number_bounces,
    stop_help_start_and_yes_work_through_the_signed_webhook,
    marketing_sms_waits_for_the_sending_hours_in_the_subscribers_zone,
    the_generic_http_provider_sends_json_and_takes_reports_with_its_token,
    malformed_webhooks_get_a_4xx_and_change_nothing,
    a_providers_answer_is_read_only_up_to_a_bound,
    a_request_to_stop_in_words_withdraws_consent_and_is_confirmed_once_in_its_language,
);

/// Consent may be withdrawn by any reasonable means: a request to stop in words, in any language
/// ownlist ships, is a STOP, confirmed once in the language it was made in.
async fn a_request_to_stop_in_words_withdraws_consent_and_is_confirmed_once_in_its_language(backend: Backend) {
    let fake = FakeProvider::start().await;
    let Some(app) = spawn(backend, vec![twilio(&fake)]).await else { return };
    let ada = ada(&app, json!({"locale": "de"})).await;
    text_in(&app, "SMw1", "Is the blue one still there?").await;
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "subscribed", "a question is not a request to stop");
    text_in(&app, "SMw2", "Basta, non scrivetemi più!").await;
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "unsubscribed");
    text_in(&app, "SMw3", "basta!!").await;
    assert_eq!(app.sms.send_due().await.unwrap(), 1, "one confirmation");
    let texts: Vec<String> = fake.requests().iter().map(|r| r.field("Body").unwrap()).collect();
    assert_eq!(
        texts,
        ["Iscrizione annullata: non riceverai più SMS da noi. Rispondi START per iscriverti di nuovo."],
        "in the language she wrote in"
    );
    let received: Vec<Value> = timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "sms_received").collect();
    let keywords: Vec<&Value> = received.iter().map(|e| &e["data"]["keyword"]).collect();
    assert_eq!(keywords, [&Value::Null, &json!("stop"), &json!("stop")]);
    // START, then plain STOP: the confirmation speaks her own language (German).
    text_in(&app, "SMw4", "START").await;
    text_in(&app, "SMw5", "please stop texting me").await;
    app.sms.send_due().await.unwrap();
    let texts: Vec<String> = fake.requests().iter().skip(1).map(|r| r.field("Body").unwrap()).collect();
    assert_eq!(
        texts,
        [
            "Du bist wieder angemeldet. Antworte STOP zum Abmelden, HELP für Hilfe.",
            "Du bist abgemeldet und bekommst keine SMS mehr von uns. Antworte START, um dich wieder anzumelden.",
        ]
    );
    assert_eq!(app.count("consents WHERE granted = false AND method = 'sms_keyword'").await, 2);
}

/// An answer of a few hundred kilobytes is not read (nor parsed): the message counts as taken
/// on the status alone, without the provider's reference.
async fn a_providers_answer_is_read_only_up_to_a_bound(backend: Backend) {
    let fake = FakeProvider::start().await;
    let Some(app) = spawn(backend, vec![twilio(&fake)]).await else { return };
    app.install_workflow("nudge", NUDGE).await;
    ada(&app, json!({})).await;
    app.tick().await;
    fake.answer(201, json!({"sid": "SMhuge", "padding": "x".repeat(300_000)}));
    assert_eq!(app.sms.send_due().await.unwrap(), 1);
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!((message.status.as_str(), message.provider_ref.as_deref()), ("sent", None));
}

const AUTH_TOKEN: &str = "twilio-auth-token-for-tests";
const NUDGE: &str = "name: Nudge\ntrigger: { subscribed: texts }\nsteps:\n  - id: hello\n    sms: { text: \"Hi {{ subscriber.first_name }}, the shop is open.\" }\n";

fn twilio(fake: &FakeProvider) -> SmsProviderConfig {
    SmsProviderConfig::Twilio {
        base_url: url::Url::parse(&fake.base).unwrap(),
        account_sid: "AC0123".into(),
        auth_token: AUTH_TOKEN.into(),
        from: "+15005550006".into(),
    }
}

/// An app with these providers and the `texts` list.
async fn spawn(backend: Backend, providers: Vec<SmsProviderConfig>) -> Option<TestApp> {
    let app = TestApp::spawn_with(backend, |c| c.sms_providers = providers).await?;
    app.create_list("texts").await;
    Some(app)
}

/// Ada, on the `texts` list with SMS consent; returns her id.
async fn ada(app: &TestApp, extra: Value) -> String {
    let mut body = json!({
        "email": "ada@example.com", "phone": "+14155552671", "first_name": "Ada",
        "lists": ["texts"], "consent": {"sms": true, "email": true}
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    app.create_subscriber(body).await["id"].as_str().unwrap().to_owned()
}

/// Posts a form to a Twilio webhook path, signed with `token` as Twilio would.
async fn twilio_post(app: &TestApp, path: &str, fields: &[(&str, &str)], token: &str) -> reqwest::Response {
    let owned: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let signature = twilio_signature(token, &format!("http://127.0.0.1:8080{path}"), &owned);
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn text_in(app: &TestApp, sid: &str, body: &str) -> reqwest::Response {
    twilio_post(
        app,
        "/webhooks/sms/twilio",
        &[("MessageSid", sid), ("From", "+14155552671"), ("To", "+15005550006"), ("Body", body)],
        AUTH_TOKEN,
    )
    .await
}

async fn person(app: &TestApp, id: &str) -> Value {
    expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await
}

async fn a_workflow_sms_goes_to_twilio_and_its_delivery_report_is_recorded(backend: Backend) {
    let fake = FakeProvider::start().await;
    let Some(app) = spawn(backend, vec![twilio(&fake)]).await else { return };
    app.install_workflow("nudge", NUDGE).await;
    let ada = ada(&app, json!({})).await;
    app.tick().await;
    assert_eq!(app.sms.send_due().await.unwrap(), 1);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/2010-04-01/Accounts/AC0123/Messages.json");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AC0123:{AUTH_TOKEN}"));
    assert_eq!(sent.authorization, format!("Basic {basic}"));
    assert_eq!(sent.content_type, "application/x-www-form-urlencoded");
    assert_eq!(sent.field("To").as_deref(), Some("+14155552671"));
    assert_eq!(sent.field("From").as_deref(), Some("+15005550006"));
    assert_eq!(sent.field("Body").as_deref(), Some("Hi Ada, the shop is open."));
    assert_eq!(sent.field("StatusCallback").as_deref(), Some("http://127.0.0.1:8080/webhooks/sms/status"));

    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!(
        (message.status.as_str(), message.provider_ref.as_deref(), message.segments),
        ("sent", Some("SM1"), Some(1))
    );
    assert!(kinds(&app, &ada).await.contains(&"sms_sent".to_owned()));

    let report = [("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+14155552671")];
    let forged = twilio_post(&app, "/webhooks/sms/status", &report, "not-the-token").await;
    expect_problem(forged, StatusCode::FORBIDDEN, "invalid_signature").await;
    assert!(!kinds(&app, &ada).await.contains(&"sms_delivered".to_owned()), "a forged report changes nothing");
    let answer = twilio_post(&app, "/webhooks/sms/status", &report, AUTH_TOKEN).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let delivered = timeline(&app, &ada).await.into_iter().find(|e| e["kind"] == "sms_delivered").unwrap();
    assert_eq!(
        (delivered["data"]["workflow"].as_str(), delivered["data"]["step"].as_str()),
        (Some("nudge"), Some("hello"))
    );
    let unknown = twilio_post(
        &app,
        "/webhooks/sms/status",
        &[("MessageSid", "SM999"), ("MessageStatus", "delivered")],
        AUTH_TOKEN,
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NO_CONTENT, "an unknown message is acknowledged");
}

async fn a_failing_provider_hands_over_and_an_unreachable_number_bounces(backend: Backend) {
    let (first, second) = (FakeProvider::start().await, FakeProvider::start().await);
    let Some(app) = spawn(backend, vec![twilio(&first), twilio(&second)]).await else { return };
    app.install_workflow("nudge", NUDGE).await;
    let ada = ada(&app, json!({})).await;
    app.tick().await;
    first.answer(503, json!({"message": "down for maintenance"}));
    assert_eq!(app.sms.send_due().await.unwrap(), 1);
    assert_eq!((first.requests().len(), second.requests().len()), (1, 1), "the second provider took it");
    let sent = timeline(&app, &ada).await.into_iter().find(|e| e["kind"] == "sms_sent").unwrap();
    assert!(sent["data"]["detail"]["provider"].as_str().unwrap().starts_with("twilio:127.0.0.1"), "{sent}");

    // A number that cannot get texts: refused for good, and the channel is marked bounced.
    expect_json(
        app.post("/api/v1/broadcasts", &json!({"list": "texts", "channels": ["sms"], "sms_text": "Sale!"})).await,
        StatusCode::CREATED,
    )
    .await;
    app.tick().await;
    app.clock.advance(chrono::Duration::seconds(61)); // the first provider's cool-down is over
    first.answer(400, json!({"code": 21211, "message": "The 'To' number is not a valid phone number."}));
    assert_eq!(app.sms.send_due().await.unwrap(), 1);
    assert_eq!(second.requests().len(), 1, "a refusal about the number is not retried elsewhere");
    let failed = outbox::Entity::find()
        .filter(outbox::Column::BroadcastId.is_not_null())
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, "failed");
    assert!(failed.last_error.unwrap().contains("21211"));
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "bounced");
}

const STOPPED_EN: &str = "You are unsubscribed and will get no more texts from us. Reply START to resubscribe.";

async fn stop_help_start_and_yes_work_through_the_signed_webhook(backend: Backend) {
    let fake = FakeProvider::start().await;
    let Some(app) = spawn(backend, vec![twilio(&fake)]).await else { return };
    let ada = ada(&app, json!({})).await;
    // A marketing text waiting in the outbox: STOP must cancel it.
    expect_json(
        app.post("/api/v1/broadcasts", &json!({"list": "texts", "channels": ["sms"], "sms_text": "Sale!"})).await,
        StatusCode::CREATED,
    )
    .await;
    app.tick().await;

    let forged = twilio_post(
        &app,
        "/webhooks/sms/twilio",
        &[("MessageSid", "SMx"), ("From", "+14155552671"), ("Body", "STOP")],
        "wrong",
    )
    .await;
    expect_problem(forged, StatusCode::FORBIDDEN, "invalid_signature").await;
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "subscribed", "a forged STOP changes nothing");

    let answer = text_in(&app, "SMin1", "Stop").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["content-type"], "text/xml");
    assert!(answer.text().await.unwrap().contains("<Response></Response>"));
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "unsubscribed");
    assert_eq!(person(&app, &ada).await["channels"]["email"], "subscribed", "only SMS consent is withdrawn");
    assert_eq!(app.count("consents WHERE granted = false AND method = 'sms_keyword'").await, 1);
    // The same webhook delivered again, and a second STOP: still one confirmation.
    text_in(&app, "SMin1", "Stop").await;
    text_in(&app, "SMin2", "STOP").await;
    app.clock.set(chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 2, 23, 0, 0).unwrap());
    assert_eq!(app.sms.send_due().await.unwrap(), 1, "the confirmation goes at once, even at night");
    let texts: Vec<String> = fake.requests().iter().map(|r| r.field("Body").unwrap()).collect();
    assert_eq!(texts, [STOPPED_EN], "one confirmation, no marketing");

    text_in(&app, "SMin3", "help").await;
    text_in(&app, "SMin4", "START").await;
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "subscribed");
    app.sms.send_due().await.unwrap();
    let texts: Vec<String> = fake.requests().iter().skip(1).map(|r| r.field("Body").unwrap()).collect();
    assert_eq!(
        texts,
        [
            "Reply STOP to stop, START to start again.",
            "You are subscribed again. Reply STOP to unsubscribe, HELP for help."
        ]
    );

    // YES confirms a pending SMS opt-in.
    let mut row = subscriber::Entity::find_by_id(ada.parse::<uuid::Uuid>().unwrap())
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    row.sms_state = sea_orm::ActiveValue::Set("pending".into());
    row.update(app.db.conn()).await.unwrap();
    text_in(&app, "SMin5", "yes").await;
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "subscribed");
    let received: Vec<Value> = timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "sms_received").collect();
    let keywords: Vec<&str> = received.iter().map(|e| e["data"]["keyword"].as_str().unwrap()).collect();
    assert_eq!(keywords, ["stop", "stop", "help", "start", "yes"]);
    let other = text_in(&app, "SMin6", "what time do you open?").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(timeline(&app, &ada).await.last().unwrap()["data"]["body"], "what time do you open?");
    let stranger = twilio_post(
        &app,
        "/webhooks/sms/twilio",
        &[("MessageSid", "SMin7"), ("From", "+447700900123"), ("Body", "STOP")],
        AUTH_TOKEN,
    )
    .await;
    assert_eq!(stranger.status(), StatusCode::OK, "an unknown number gets the same answer");
}

async fn marketing_sms_waits_for_the_sending_hours_in_the_subscribers_zone(backend: Backend) {
    let fake = FakeProvider::start().await;
    let Some(app) = spawn(backend, vec![twilio(&fake)]).await else { return };
    // 21:30 UTC is 22:30 in Rome: too late to text Ada.
    app.clock.set(chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 2, 21, 30, 0).unwrap());
    ada(&app, json!({"timezone": "Europe/Rome"})).await;
    expect_json(
        app.post("/api/v1/broadcasts", &json!({"list": "texts", "channels": ["sms"], "sms_text": "Sale!"})).await,
        StatusCode::CREATED,
    )
    .await;
    app.tick().await;
    app.sms.send_due().await.unwrap();
    assert!(fake.requests().is_empty(), "held");
    let held = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!((held.status.as_str(), held.attempts), ("queued", 0));
    assert_eq!(
        held.due_at,
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 3, 7, 0, 0).unwrap(),
        "08:00 in Rome"
    );
    app.clock.set(held.due_at - chrono::Duration::seconds(1));
    assert_eq!(app.sms.send_due().await.unwrap(), 0);
    app.clock.set(held.due_at);
    assert_eq!(app.sms.send_due().await.unwrap(), 1);
    assert_eq!(fake.requests().len(), 1);
}

async fn the_generic_http_provider_sends_json_and_takes_reports_with_its_token(backend: Backend) {
    let fake = FakeProvider::start().await;
    let provider = SmsProviderConfig::Http {
        url: url::Url::parse(&format!("{}send", fake.base)).unwrap(),
        token: Some("generic-provider-token".into()),
        from: "Shop".into(),
    };
    let Some(app) = spawn(backend, vec![provider]).await else { return };
    app.install_workflow("nudge", NUDGE).await;
    let ada = ada(&app, json!({})).await;
    app.tick().await;
    assert_eq!(app.sms.send_due().await.unwrap(), 1);
    let sent = &fake.requests()[0];
    assert_eq!((sent.path.as_str(), sent.authorization.as_str()), ("/send", "Bearer generic-provider-token"));
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!((body["to"].as_str(), body["from"].as_str()), (Some("+14155552671"), Some("Shop")));
    assert_eq!(body["body"], "Hi Ada, the shop is open.");

    let report = json!({"id": "SM1", "status": "failed", "error": "invalid_number"});
    let refused = reqwest::Client::new()
        .post(app.url("/webhooks/sms/status"))
        .json(&report)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    expect_problem(refused, StatusCode::FORBIDDEN, "invalid_signature").await;
    let taken = reqwest::Client::new()
        .post(app.url("/webhooks/sms/status"))
        .json(&report)
        .bearer_auth("generic-provider-token")
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::NO_CONTENT);
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "bounced");
    assert!(kinds(&app, &ada).await.contains(&"sms_failed".to_owned()));
}

#[tokio::test]
async fn without_providers_sms_is_written_to_files() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    app.create_list("texts").await;
    app.install_workflow("nudge", NUDGE).await;
    ada(&app, json!({})).await;
    app.tick().await;
    assert_eq!(app.sms.send_due().await.unwrap(), 1);
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    let file = app.data_dir.join("sms").join(format!("{}.json", message.id));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(written["to"], "+14155552671");
    assert_eq!(written["body"], "Hi Ada, the shop is open.");
    assert_eq!(written["segments"], 1);
    let no_twilio = text_in(&app, "SM1", "STOP").await;
    expect_problem(no_twilio, StatusCode::NOT_FOUND, "not_configured").await;
}

#[tokio::test]
async fn outbox_lookups_use_the_partial_indexes() {
    use sea_orm::{ConnectionTrait, Statement};
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let db = &app.db;
    let plan = |sql: &str, values: Vec<sea_orm::Value>| {
        let statement = Statement::from_sql_and_values(db.backend(), format!("EXPLAIN QUERY PLAN {sql}"), values);
        async move {
            let rows = db.conn().query_all_raw(statement).await.unwrap();
            rows.iter().map(|r| r.try_get::<String>("", "detail").unwrap()).collect::<Vec<_>>().join("; ")
        }
    };
    // The lookup `record_status` makes for a delivery report.
    let report = plan("SELECT id FROM outbox WHERE provider_ref = ? AND channel = 'sms'", vec!["SM1".into()]).await;
    assert!(report.contains("INDEX outbox_sms_provider_ref"), "{report}");
    // A delivery worker's claim: only queued messages are in its index.
    let claim = plan(
        "SELECT id FROM outbox WHERE channel = ? AND status = 'queued' AND due_at <= ? ORDER BY due_at, id LIMIT 200",
        vec!["email".into(), "2026-03-02T09:00:00Z".into()],
    )
    .await;
    assert!(claim.contains("INDEX outbox_queued") && !claim.contains("TEMP B-TREE"), "{claim}");
}

async fn malformed_webhooks_get_a_4xx_and_change_nothing(backend: Backend) {
    let fake = FakeProvider::start().await;
    let generic = SmsProviderConfig::Http {
        url: url::Url::parse(&format!("{}send", fake.base)).unwrap(),
        token: Some("generic-provider-token".into()),
        from: "Shop".into(),
    };
    let Some(app) = spawn(backend, vec![twilio(&fake), generic]).await else { return };
    let ada = ada(&app, json!({})).await;
    // Signed, but without the sender or the message id.
    let no_sender =
        twilio_post(&app, "/webhooks/sms/twilio", &[("MessageSid", "SM1"), ("Body", "STOP")], AUTH_TOKEN).await;
    expect_problem(no_sender, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let no_status = twilio_post(&app, "/webhooks/sms/status", &[("MessageSid", "SM1")], AUTH_TOKEN).await;
    expect_problem(no_status, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let client = reqwest::Client::new();
    for body in ["{not json", r#"{"id": "SM1"}"#, r#"{"id": 5, "status": "failed"}"#] {
        let answer = client
            .post(app.url("/webhooks/sms/status"))
            .header("content-type", "application/json")
            .bearer_auth("generic-provider-token")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_problem(answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    }
    assert_eq!(person(&app, &ada).await["channels"]["sms"], "subscribed");
    assert_eq!(app.count("outbox").await, 0, "no reply was queued");
}
