//! Workflow and delivery statistics: counted as things happen, summed per date range, the same
//! as JSON and CSV.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, expect_json, expect_problem, kinds, on_both_databases, with_each_backend};
use crate::smtp_sink::SmtpSink;

on_both_databases!(each_step_counts_who_entered_passed_was_skipped_left_and_what_its_messages_did);
with_each_backend!(delivery_counts_each_relays_sends_failures_and_retries);

const ONBOARD: &str = "name: Onboard
trigger: { subscribed: members }
exit_when: { tag: bought }
steps:
  - id: hello
    email: { subject: Hello, template: emails/guide.html }
  - id: text
    sms: { text: \"Hi from the shop\" }
  - id: pause
    wait: 1d
  - id: later
    email: { subject: Later, template: emails/welcome.html }
";

/// The figures of one step in a stats answer.
fn step<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["steps"].as_array().unwrap().iter().find(|s| s["step"] == id).unwrap_or_else(|| panic!("{id}: {stats}"))
}

/// The first link of `html` at `marker` (the path on), leaving out the hidden one (`…/h`).
pub fn link(html: &str, marker: &str) -> String {
    html.match_indices(marker)
        .map(|(start, _)| html[start..].split(['"', '\'', '<', ' ']).next().unwrap().to_owned())
        .find(|link| !link.ends_with("/h"))
        .unwrap_or_else(|| panic!("no {marker} in {html}"))
}

async fn each_step_counts_who_entered_passed_was_skipped_left_and_what_its_messages_did(app: TestApp) {
    app.create_list("members").await;
    app.install_workflow("onboard", ONBOARD).await;
    let mut ids = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let body = json!({"email": format!("{name}@example.com"), "lists": ["members"], "consent": {"email": true}});
        ids.push(app.create_subscriber(body).await["id"].as_str().unwrap().to_owned());
    }
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 3);

    // Ada opens her hello and follows its link; Bob buys (the goal); Cy unsubscribes.
    use ownlist::store::entities::outbox;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let ada_id: uuid::Uuid = ids[0].parse().unwrap();
    let hello = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(ada_id))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    let html = crate::helpers::bodies(&app, hello.id).await.0.unwrap();
    let (pixel, click) = (link(&html, "/t/o/"), link(&html, "/t/c/"));
    let browser = crate::helpers::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // Ada reads it a few minutes after it was sent (a link followed seconds after sending is a
    // gateway's scanner, not her).
    app.clock.advance(chrono::Duration::minutes(5));
    for path in [&pixel, &pixel, &click, &click] {
        assert!(browser.get(app.url(path)).send().await.unwrap().status().is_success() || path == &click);
    }
    let tagged = app.patch(&format!("/api/v1/subscribers/{}", ids[1]), &json!({"tags": ["bought"]})).await;
    assert_eq!(tagged.status(), StatusCode::OK);
    let left = app.patch(&format!("/api/v1/subscribers/{}", ids[2]), &json!({"consent": {"email": false}})).await;
    assert_eq!(left.status(), StatusCode::OK);
    app.tick().await;
    assert!(kinds(&app, &ids[1]).await.contains(&"goal_reached".to_owned()));

    // A day later the two left finish: Ada gets the last email, Cy (unsubscribed) is skipped.
    app.advance(chrono::Duration::days(1)).await;
    assert_eq!(app.email.send_due().await.unwrap(), 1);

    let stats = expect_json(app.get("/api/v1/stats/workflows/onboard").await, StatusCode::OK).await;
    assert_eq!(
        (stats["enrolled"].as_i64(), stats["completed"].as_i64(), stats["exited"].as_i64()),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(stats["active_now"], 0);
    let order: Vec<&str> = stats["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(order, ["hello", "text", "pause", "later"], "in the workflow's order");
    let hello = step(&stats, "hello");
    assert_eq!(hello["kind"], "email");
    let figures = |s: &Value, names: &[&str]| -> Vec<i64> { names.iter().map(|n| s[*n].as_i64().unwrap()).collect() };
    let all = [
        "entered",
        "completed",
        "skipped",
        "exited",
        "sent",
        "delivered",
        "failed",
        "opened",
        "clicked",
        "unsubscribed",
    ];
    assert_eq!(figures(hello, &all), [3, 3, 0, 0, 3, 3, 0, 1, 1, 1], "{hello}");
    assert_eq!(hello["open_rate"], 0.3333);
    let text = step(&stats, "text");
    assert_eq!(figures(text, &["entered", "completed", "skipped", "sent"]), [3, 0, 3, 0], "{text}");
    let reasons = text["skipped_by_reason"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{text}");
    assert_eq!(reasons[0]["count"], 3);
    assert_eq!(reasons[0]["reason"], "they have no phone number");
    let pause = step(&stats, "pause");
    assert_eq!(
        figures(pause, &["entered", "completed", "exited", "waiting_now"]),
        [3, 2, 1, 0],
        "bob left while waiting"
    );
    let later = step(&stats, "later");
    assert_eq!(figures(later, &["entered", "completed", "skipped", "sent", "delivered"]), [2, 1, 1, 1, 1], "{later}");

    // A date range: the second day only.
    let second =
        expect_json(app.get("/api/v1/stats/workflows/onboard?from=2026-03-03&to=2026-03-03").await, StatusCode::OK)
            .await;
    assert_eq!(second["enrolled"], 0);
    assert_eq!(figures(step(&second, "hello"), &["entered", "sent"]), [0, 0]);
    assert_eq!(figures(step(&second, "pause"), &["entered", "completed"]), [0, 2]);
    assert_eq!(figures(step(&second, "later"), &["entered", "delivered"]), [2, 1]);

    let csv = app.get("/api/v1/stats/workflows/onboard?format=csv").await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "step,kind,entered,completed,skipped,exited,sent,delivered,failed,opened,clicked,opened_by_machine,clicked_by_machine,unsubscribed,waiting_now,skipped_by_reason"
    );
    assert_eq!(lines[1], "hello,email,3,3,0,0,3,3,0,1,1,0,0,1,0,");
    assert_eq!(lines.len(), 5);

    expect_problem(app.get("/api/v1/stats/workflows/nope").await, StatusCode::NOT_FOUND, "workflow_not_found").await;
    let bad = app.get("/api/v1/stats/workflows/onboard?from=2026-03-03&to=2026-03-01").await;
    let problem = expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "to");
    let unknown = app.get("/api/v1/stats/delivery?format=xml").await;
    expect_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

async fn delivery_counts_each_relays_sends_failures_and_retries(backend: Backend) {
    let (first, second) = (SmtpSink::start().await, SmtpSink::start().await);
    first.refuse(Some("421 4.3.2 shutting down"));
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_relays = vec![first.url(), second.url()]).await else {
        return;
    };
    app.create_list("members").await;
    app.install_workflow("hello", "name: Hello\ntrigger: { subscribed: members }\nsteps:\n  - id: hello\n    email: { subject: Hello, template: emails/guide.html }\n").await;
    for name in ["ada", "bob"] {
        let body = json!({"email": format!("{name}@example.com"), "lists": ["members"], "consent": {"email": true}});
        app.create_subscriber(body).await;
    }
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 2);
    assert_eq!(second.taken().len(), 2);

    let stats = expect_json(app.get("/api/v1/stats/delivery").await, StatusCode::OK).await;
    let relay = |address: &str| -> Value {
        stats["relays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["relay"] == address)
            .cloned()
            .unwrap_or_else(|| panic!("{stats}"))
    };
    // Both messages went out at once: each may have tried the first relay before its breaker opened.
    let failing = relay(&first.address);
    let retried = failing["retried"].as_i64().unwrap();
    assert!((1..=2).contains(&retried), "{failing}");
    assert_eq!((failing["sent"].as_i64(), failing["attempts"].as_i64()), (Some(0), Some(retried)), "{failing}");
    assert_eq!(failing["success_rate"], 0.0);
    let working = relay(&second.address);
    assert_eq!(
        (working["channel"].as_str(), working["sent"].as_i64(), working["failed"].as_i64()),
        (Some("email"), Some(2), Some(0))
    );
    assert_eq!(working["success_rate"], 1.0);
    assert!(working["mean_latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert_eq!(stats["by_day"], json!([{"day": "2026-03-02", "sent": 2, "failed": 0, "retried": retried}]));
    let none = expect_json(app.get("/api/v1/stats/delivery?from=2026-03-03").await, StatusCode::OK).await;
    assert_eq!(none["relays"], json!([]));

    let csv = app.get("/api/v1/stats/delivery?format=csv").await.text().await.unwrap();
    assert!(csv.starts_with("channel,relay,sent,failed,retried,attempts,mean_latency_ms,success_rate\n"), "{csv}");
    assert!(csv.contains(&format!("email,{},2,0,0,2,", second.address)), "{csv}");
    // The per-step view sees the same deliveries.
    let steps = expect_json(app.get("/api/v1/stats/workflows/hello").await, StatusCode::OK).await;
    assert_eq!(step(&steps, "hello")["delivered"], 2);

    // A refusal for good counts as failed, for the relay and for the step.
    second.refuse(Some("554 5.7.1 message rejected"));
    let body = json!({"email": "cy@example.com", "lists": ["members"], "consent": {"email": true}});
    app.create_subscriber(body).await;
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let stats = expect_json(app.get("/api/v1/stats/delivery").await, StatusCode::OK).await;
    let refusing = stats["relays"].as_array().unwrap().iter().find(|r| r["relay"] == second.address).unwrap().clone();
    assert_eq!((refusing["sent"].as_i64(), refusing["failed"].as_i64()), (Some(2), Some(1)), "{refusing}");
    let steps = expect_json(app.get("/api/v1/stats/workflows/hello").await, StatusCode::OK).await;
    assert_eq!(
        (step(&steps, "hello")["delivered"].as_i64(), step(&steps, "hello")["failed"].as_i64()),
        (Some(2), Some(1))
    );
}
