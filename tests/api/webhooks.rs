use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use chrono::Duration;
use ownlist::delivery::webhook::{WebhookSender, signature};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_json, on_both_databases};

on_both_databases!(
    a_webhook_step_posts_signed_json_and_retries_until_it_succeeds,
    a_webhook_without_its_secret_fails_and_says_why,
    a_webhook_never_reaches_private_addresses_unless_allowed_nor_follows_a_redirect,
);

#[derive(Default)]
struct Received {
    requests: Vec<(HeaderMap, String)>,
    answers: Vec<u16>,
}

/// A receiver on loopback that answers with the queued statuses, then 200.
async fn receiver(answers: Vec<u16>) -> (String, Arc<Mutex<Received>>) {
    let state = Arc::new(Mutex::new(Received { requests: Vec::new(), answers }));
    let shared = state.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let shared = shared.clone();
            async move {
                let mut received = shared.lock().unwrap();
                received.requests.push((headers, body));
                let status = if received.answers.is_empty() { 200 } else { received.answers.remove(0) };
                AxumStatus::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

fn workflow(url: &str) -> String {
    format!(
        "name: Hook\ntrigger: {{ event: signed-up }}\nsteps:\n  - id: tell-crm\n    webhook: {{ url: \"{url}\", secret_env: CRM_SECRET, body: {{ stage: lead }} }}\n"
    )
}

async fn sign_up(app: &TestApp) -> String {
    sign_up_as(app, "ada@example.com").await
}

async fn sign_up_as(app: &TestApp, email: &str) -> String {
    let created = app.create_subscriber(json!({"email": email, "first_name": "Ada"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let response = app.post("/api/v1/events", &json!({"subscriber_id": id, "name": "signed-up"})).await;
    expect_json(response, StatusCode::CREATED).await;
    app.tick().await;
    id
}

async fn a_webhook_step_posts_signed_json_and_retries_until_it_succeeds(app: TestApp) {
    let (url, received) = receiver(vec![503, 500]).await;
    app.install_workflow("hook", &workflow(&url)).await;
    let id = sign_up(&app).await;
    let sender = Arc::new(WebhookSender::allowing(
        app.db.clone(),
        app.clock.clone(),
        Arc::new(|name: &str| (name == "CRM_SECRET").then(|| "s3cret".to_owned())),
        vec!["127.0.0.0/8".parse().unwrap()],
    ));

    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!(sender.send_due().await.unwrap(), 0, "not before the backoff");
    app.clock.advance(Duration::seconds(75)); // a minute, and up to a quarter more
    assert_eq!(sender.send_due().await.unwrap(), 1);
    app.clock.advance(Duration::seconds(150));
    assert_eq!(sender.send_due().await.unwrap(), 1);
    app.clock.advance(Duration::hours(2));
    assert_eq!(sender.send_due().await.unwrap(), 0, "delivered: nothing more to send");

    let requests = received.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 3);
    let (headers, body) = &requests[2];
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed["subscriber"]["email"], "ada@example.com");
    assert_eq!(parsed["data"], json!({"stage": "lead"}));
    assert_eq!(parsed["workflow"]["id"], "hook");
    assert_eq!(parsed["step"], "tell-crm");
    let header = headers["x-ownlist-signature"].to_str().unwrap();
    let t: i64 = header.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
    let at = chrono::DateTime::from_timestamp(t, 0).unwrap();
    assert_eq!(header, signature("s3cret", at, body), "the signature covers the timestamp and the body");
    assert_ne!(header, signature("wrong", at, body));
    assert_eq!(requests[0].0["idempotency-key"], requests[2].0["idempotency-key"], "retries carry the same key");

    let page =
        expect_json(app.get(&format!("/api/v1/subscribers/{id}/timeline?limit=100")).await, StatusCode::OK).await;
    let kinds: Vec<&str> = page["data"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "webhook_retrying").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "webhook_sent").count(), 1);
}

async fn a_webhook_without_its_secret_fails_and_says_why(app: TestApp) {
    let (url, received) = receiver(vec![]).await;
    app.install_workflow("hook", &workflow(&url)).await;
    let id = sign_up(&app).await;
    let sender = Arc::new(WebhookSender::allowing(
        app.db.clone(),
        app.clock.clone(),
        Arc::new(|_: &str| None),
        vec!["127.0.0.0/8".parse().unwrap()],
    ));
    assert_eq!(sender.send_due().await.unwrap(), 1);
    app.clock.advance(Duration::hours(2));
    assert_eq!(sender.send_due().await.unwrap(), 0, "failed for good");
    assert!(received.lock().unwrap().requests.is_empty(), "nothing unsigned ever leaves");
    let page =
        expect_json(app.get(&format!("/api/v1/subscribers/{id}/timeline?limit=100")).await, StatusCode::OK).await;
    let failed = page["data"].as_array().unwrap().iter().find(|e| e["kind"] == "webhook_failed").unwrap().clone();
    assert!(failed["data"]["detail"]["error"].as_str().unwrap().contains("CRM_SECRET is not set"), "{failed}");
}

/// The timeline's `webhook_failed` detail of the one subscriber in `app`.
async fn failure(app: &TestApp, id: &str) -> String {
    let page =
        expect_json(app.get(&format!("/api/v1/subscribers/{id}/timeline?limit=100")).await, StatusCode::OK).await;
    let failed = page["data"].as_array().unwrap().iter().find(|e| e["kind"] == "webhook_failed").cloned();
    failed.map(|f| f["data"]["detail"]["error"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

async fn a_webhook_never_reaches_private_addresses_unless_allowed_nor_follows_a_redirect(app: TestApp) {
    let secret: ownlist::delivery::webhook::Secrets = Arc::new(|_: &str| Some("s3cret".to_owned()));
    let (url, received) = receiver(vec![]).await;
    let by_name = url.replace("127.0.0.1", "localhost");
    // By default neither the address nor a name resolving to it is reached.
    let cases = [(url.as_str(), "127.0.0.1 is a loopback", "a"), (by_name.as_str(), "resolves only to loopback", "b")];
    for (target, says, who) in cases {
        app.install_workflow(&format!("hook-{who}"), &workflow(target).replace("signed-up", who)).await;
        let id = sign_up_as(&app, &format!("{who}@example.com")).await;
        app.post("/api/v1/events", &json!({"subscriber_id": id, "name": who})).await;
        app.tick().await;
        let sender = Arc::new(WebhookSender::new(app.db.clone(), app.clock.clone(), secret.clone()));
        assert_eq!(sender.send_due().await.unwrap(), 1);
        assert!(failure(&app, &id).await.contains(says), "{target}: {}", failure(&app, &id).await);
        std::fs::remove_file(app.workflows_dir.join(format!("hook-{who}.yaml"))).unwrap();
    }
    assert!(received.lock().unwrap().requests.is_empty(), "nothing reached the loopback receiver");

    // Allowed by the operator, it goes; a redirect is not followed (the signature stays home).
    let (redirecting, hits) = receiver(vec![307]).await;
    app.install_workflow("hook", &workflow(&redirecting)).await;
    let id = sign_up_as(&app, "c@example.com").await;
    let allowed = vec!["127.0.0.0/8".parse().unwrap()];
    let sender = Arc::new(WebhookSender::allowing(app.db.clone(), app.clock.clone(), secret, allowed));
    assert_eq!(sender.send_due().await.unwrap(), 1);
    assert_eq!(hits.lock().unwrap().requests.len(), 1);
    assert!(failure(&app, &id).await.contains("redirects are not followed"), "{}", failure(&app, &id).await);
}
