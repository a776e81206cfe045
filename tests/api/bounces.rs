//! `POST /webhooks/bounces`: hard bounces, soft bounces and complaints from a bounce processor.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{BOUNCE_SECRET, Backend, TestApp, expect_json, expect_problem, kinds, on_both_databases};

on_both_databases!(
    bounces_and_complaints_change_what_may_be_sent,
    a_bad_report_changes_nothing,
    a_batch_that_fails_half_way_is_not_applied_at_all,
);

async fn report(app: &TestApp, secret: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new().post(app.url("/webhooks/bounces")).bearer_auth(secret).json(body).send().await.unwrap()
}

async fn subscriber(app: &TestApp, email: &str) -> (String, Value) {
    let created = app.create_subscriber(json!({"email": email, "consent": {"email": true}})).await;
    (created["id"].as_str().unwrap().to_owned(), created)
}

async fn channels(app: &TestApp, id: &str) -> (String, String) {
    let view = expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await;
    (view["channels"]["email"].as_str().unwrap().to_owned(), view["status"].as_str().unwrap().to_owned())
}

async fn bounces_and_complaints_change_what_may_be_sent(app: TestApp) {
    let (hard, _) = subscriber(&app, "gone@example.com").await;
    let (soft, _) = subscriber(&app, "full@example.com").await;
    let (angry, _) = subscriber(&app, "angry@example.com").await;
    let body = json!([
        {"address": "GONE@example.com", "type": "hard", "reason": "550 5.1.1 no such user"},
        {"address": "full@example.com", "type": "soft", "reason": "452 mailbox full"},
        {"address": "angry@example.com", "type": "complaint"},
        {"address": "stranger@example.com", "type": "hard"},
    ]);
    let answer = expect_json(report(&app, BOUNCE_SECRET, &body).await, StatusCode::OK).await;
    assert_eq!(answer, json!({"applied": 3, "unknown_addresses": 1}));
    assert_eq!(channels(&app, &hard).await, ("bounced".into(), "bounced".into()));
    assert_eq!(channels(&app, &soft).await, ("subscribed".into(), "active".into()), "a soft bounce changes nothing");
    assert!(kinds(&app, &soft).await.contains(&"soft_bounce".to_owned()));
    assert_eq!(channels(&app, &angry).await, ("complained".into(), "complained".into()), "unsubscribed at once");
    assert_eq!(app.count("consents WHERE granted = false AND method = 'complaint'").await, 1);

    // The same reports again change nothing more.
    expect_json(report(&app, BOUNCE_SECRET, &body).await, StatusCode::OK).await;
    assert_eq!(app.count("consents WHERE granted = false").await, 1);
    assert_eq!(app.count("events WHERE kind = 'bounced'").await, 1);
}

async fn a_bad_report_changes_nothing(app: TestApp) {
    let (id, _) = subscriber(&app, "ada@example.com").await;
    let good = json!({"address": "ada@example.com", "type": "hard"});
    let wrong_secret = report(&app, "not-the-secret-at-all", &good).await;
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    // One bad report in a batch: nothing of the batch is applied.
    let batch = json!([good, {"address": "not an address", "type": "hard"}]);
    let problem =
        expect_problem(report(&app, BOUNCE_SECRET, &batch).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_address")
            .await;
    assert_eq!(problem["field"], "[1].address", "{problem}");
    let unknown_type = json!({"address": "ada@example.com", "type": "maybe"});
    expect_problem(report(&app, BOUNCE_SECRET, &unknown_type).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    let malformed = reqwest::Client::new()
        .post(app.url("/webhooks/bounces"))
        .bearer_auth(BOUNCE_SECRET)
        .body("{\"address\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(channels(&app, &id).await, ("subscribed".into(), "active".into()));
}

/// The database refuses the second report's write (a trigger stands in for a full disk or a lost
/// connection): the first report, already written in the same transaction, is rolled back with it.
async fn a_batch_that_fails_half_way_is_not_applied_at_all(app: TestApp) {
    let (first, _) = subscriber(&app, "first@example.com").await;
    let (second, _) = subscriber(&app, "second@example.com").await;
    let trigger = match app.backend {
        Backend::Sqlite => vec![
            "CREATE TRIGGER second_bounce_fails BEFORE INSERT ON events \
             WHEN NEW.kind = 'bounced' AND (SELECT count(*) FROM events WHERE kind = 'bounced') >= 1 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        Backend::Postgres => vec![
            "CREATE FUNCTION second_bounce_fails() RETURNS trigger AS $$ BEGIN \
             IF (SELECT count(*) FROM events WHERE kind = 'bounced') >= 1 THEN RAISE EXCEPTION 'injected failure'; \
             END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER second_bounce_fails BEFORE INSERT ON events FOR EACH ROW \
             WHEN (NEW.kind = 'bounced') EXECUTE FUNCTION second_bounce_fails()",
        ],
    };
    for sql in trigger {
        app.db.execute_unprepared(sql).await.unwrap();
    }
    let batch = json!([
        {"address": "first@example.com", "type": "hard"},
        {"address": "second@example.com", "type": "hard"},
    ]);
    let answer = report(&app, BOUNCE_SECRET, &batch).await;
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR, "the processor is told to send the batch again");
    assert_eq!(channels(&app, &first).await, ("subscribed".into(), "active".into()), "the first report is rolled back");
    assert_eq!(channels(&app, &second).await, ("subscribed".into(), "active".into()));
    assert_eq!(app.count("events WHERE kind = 'bounced'").await, 0);
    assert_eq!(app.count("consents WHERE granted = false").await, 0);
}

#[tokio::test]
async fn the_bounce_webhook_is_off_without_a_secret() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.bounce_secret = None).await.unwrap();
    let body = json!({"address": "ada@example.com", "type": "hard"});
    expect_problem(report(&app, "anything-at-all-1234", &body).await, StatusCode::NOT_FOUND, "not_configured").await;
}
