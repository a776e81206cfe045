//! Operations: readiness, metrics and the audit log.

use reqwest::StatusCode;

use serde_json::json;

use crate::helpers::{Backend, TestApp, expect_json, expect_problem, with_each_backend};

with_each_backend!(
    readiness_needs_the_database_and_a_current_schema,
    admin_changes_are_in_the_audit_log_with_who_and_how_they_ended,
    metrics_show_requests_signups_deliveries_breakers_and_the_outbox,
);

async fn readiness_needs_the_database_and_a_current_schema(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(expect_json(ready, StatusCode::OK).await["status"], "ready");
    app.db.execute_unprepared("DELETE FROM seaql_migrations WHERE version = 'm20261122_000004_pages'").await.unwrap();
    let stale = app.client.get(app.url("/readyz")).send().await.unwrap();
    let problem = expect_problem(stale, StatusCode::SERVICE_UNAVAILABLE, "migrations_pending").await;
    assert!(problem["detail"].as_str().unwrap().contains("m20261122_000004_pages"), "{problem}");
    let alive = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), StatusCode::OK, "alive all the same");
}

async fn admin_changes_are_in_the_audit_log_with_who_and_how_they_ended(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("news").await;
    let ada = app.create_subscriber(json!({"email": "ada@example.com", "lists": ["news"]})).await;
    let id = ada["id"].as_str().unwrap();
    let refused = app.post("/api/v1/subscribers", &json!({"email": "not-an-address"})).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    expect_json(app.patch(&format!("/api/v1/subscribers/{id}"), &json!({"first_name": "Ada"})).await, StatusCode::OK)
        .await;
    app.get("/api/v1/lists").await;
    let anonymous =
        app.client.post(app.url("/api/v1/lists")).json(&json!({"slug": "x", "name": "x"})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let log = expect_json(app.get("/api/v1/audit").await, StatusCode::OK).await;
    let entries = log["data"].as_array().unwrap();
    let seen: Vec<(String, String, i64)> = entries
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PATCH".to_owned(), format!("/api/v1/subscribers/{id}"), 200),
            ("POST".to_owned(), "/api/v1/subscribers".to_owned(), 422),
            ("POST".to_owned(), "/api/v1/subscribers".to_owned(), 201),
            ("POST".to_owned(), "/api/v1/lists".to_owned(), 201),
        ],
        "changes only (no reads, nothing unauthenticated), newest first, with how they ended"
    );
    assert!(entries.iter().all(|e| e["actor"] == "token:test" && e["ip"] == "127.0.0.1" && e["at"].is_string()));
    assert!(entries.iter().all(|e| e["request_id"].as_str().is_some_and(|r| !r.is_empty())));

    let first = expect_json(app.get("/api/v1/audit?limit=3").await, StatusCode::OK).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = expect_json(app.get(&format!("/api/v1/audit?limit=3&cursor={cursor}")).await, StatusCode::OK).await;
    assert_eq!(rest["data"][0]["path"], "/api/v1/lists");
    assert!(rest["next_cursor"].is_null());
}

const DRIP: &str = "name: Drip
trigger: { subscribed: metered }
steps:
  - id: hello
    email: { subject: Hello, template: emails/welcome.html }
  - id: pause
    wait: 3d
  - id: later
    email: { subject: Later, template: emails/welcome.html }
";

const PAGE: &str = "pages:
  - slug: metered-page
    title: Metered
    list: metered
    double_opt_in: false
";

/// The value of the sample `line_start` (the metric and its labels) in a scrape.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse().ok()))
}

async fn metrics_show_requests_signups_deliveries_breakers_and_the_outbox(backend: Backend) {
    // Counters and gauges are per process, and a test binary runs both backends' tests at once:
    // each run uses names of its own (list, page, workflow), so neither sees the other's counts.
    let tag = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let (list, page, workflow) = (format!("metered{tag}"), format!("metered{tag}-page"), format!("drip{tag}"));
    let relay = crate::smtp_sink::SmtpSink::start().await;
    let url = relay.url();
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.metrics_token = Some("metrics-token-0123456789".into());
        c.smtp_relays = vec![url];
    })
    .await
    else {
        return;
    };
    let scrape = |token: Option<&'static str>| {
        let request = app.client.get(app.url("/metrics"));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    assert_eq!(scrape(None).await.status(), StatusCode::UNAUTHORIZED, "metrics_token guards the scrape");
    assert_eq!(scrape(Some("wrong")).await.status(), StatusCode::UNAUTHORIZED);

    // Counters are per process, and a test binary may run both backends' tests in one: compare
    // with a scrape taken before.
    let before = scrape(Some("metrics-token-0123456789")).await.text().await.unwrap();
    let signups = format!("ownlist_signups_total{{page=\"{page}\",source=\"instagram\"}}");
    let rejected = format!("ownlist_signups_rejected_total{{page=\"{page}\",reason=\"honeypot\"}}");
    let (signups_before, rejected_before) =
        (sample(&before, &signups).unwrap_or(0.0), sample(&before, &rejected).unwrap_or(0.0));
    app.create_list(&list).await;
    app.install_workflow(&workflow, &DRIP.replace("metered", &list)).await;
    app.install_workflow(&format!("{list}-pages"), &PAGE.replace("metered", &list)).await;
    let token =
        expect_json(app.client.get(app.url(&format!("/p/{page}/token"))).send().await.unwrap(), StatusCode::OK).await;
    app.clock.advance(chrono::Duration::seconds(5));
    let body =
        json!({"_form": token["token"], "email": "ada@example.com", "consent": ["email"], "utm_source": "instagram"});
    let signed = app.client.post(app.url(&format!("/p/{page}"))).json(&body).send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::ACCEPTED);
    let bot = json!({"_form": token["token"], "email": "bot@example.com", "consent": ["email"], "website": "x"});
    app.client.post(app.url(&format!("/p/{page}"))).json(&bot).send().await.unwrap();
    app.tick().await;
    app.clock.advance(chrono::Duration::seconds(30));

    let response = scrape(Some("metrics-token-0123456789")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE ownlist_http_requests_total counter"), "{text}");
    let routed = "ownlist_http_requests_total{method=\"POST\",route=\"/p/{slug}\",status=\"202\"}";
    assert!(sample(&text, routed).is_some_and(|n| n >= 1.0), "requests are labelled by route: {text}");
    assert!(!text.contains(&format!("route=\"/p/{page}\"")), "never by raw path");
    assert!(
        text.contains("ownlist_http_request_duration_seconds_bucket{method=\"POST\",route=\"/p/{slug}\",le=\"+Inf\"}")
    );
    assert_eq!(sample(&text, &signups), Some(signups_before + 1.0));
    assert_eq!(sample(&text, &rejected), Some(rejected_before + 1.0));
    assert_eq!(sample(&text, "ownlist_outbox_queued{channel=\"email\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ownlist_outbox_due{channel=\"email\"}"), Some(1.0));
    assert_eq!(sample(&text, "ownlist_outbox_oldest_due_seconds{channel=\"email\"}"), Some(30.0));
    let waiting = format!("ownlist_enrollments_active{{workflow=\"{workflow}\",step=\"pause\"}}");
    assert_eq!(sample(&text, &waiting), Some(1.0));

    assert_eq!(app.email.send_due().await.unwrap(), 1);
    app.create_subscriber(json!({"email": "grace@example.com", "lists": [list], "consent": {"email": true}})).await;
    app.tick().await;
    relay.refuse(Some("451 4.3.0 try later"));
    app.email.send_due().await.unwrap();
    let text = scrape(Some("metrics-token-0123456789")).await.text().await.unwrap();
    let relay_label = format!("relay=\"{}\"", relay.address);
    let line =
        |outcome: &str| format!("ownlist_deliveries_total{{channel=\"email\",{relay_label},outcome=\"{outcome}\"}}");
    assert_eq!(sample(&text, &line("sent")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &line("failed")), Some(1.0));
    assert_eq!(
        sample(&text, &format!("ownlist_circuit_open{{{relay_label}}}")),
        Some(1.0),
        "the failing relay's breaker is open"
    );
    assert!(text.contains(&format!("ownlist_delivery_duration_seconds_count{{channel=\"email\",{relay_label}}} 2")));
    assert_eq!(
        sample(&text, "ownlist_outbox_queued{channel=\"email\"}"),
        Some(1.0),
        "the refused one waits for its retry"
    );
    // Withdrawing consent counts, by the page and source the subscriber came from.
    let unsubscribes =
        format!("ownlist_unsubscribes_total{{channel=\"email\",via=\"api\",page=\"{page}\",source=\"instagram\"}}");
    let unsubscribes_before = sample(&text, &unsubscribes).unwrap_or(0.0);
    let found = expect_json(app.get("/api/v1/subscribers?q=ada%40example.com").await, StatusCode::OK).await;
    let ada = found["data"][0]["id"].as_str().unwrap().to_owned();
    let withdrawn = app.patch(&format!("/api/v1/subscribers/{ada}"), &json!({"consent": {"email": false}})).await;
    assert_eq!(withdrawn.status(), StatusCode::OK);
    let after = scrape(Some("metrics-token-0123456789")).await.text().await.unwrap();
    assert_eq!(sample(&after, &unsubscribes), Some(unsubscribes_before + 1.0), "{after}");
}
