//! The send policy: frequency caps and the sending calendar hold marketing (workflow steps and
//! broadcasts alike) in the outbox, say why in the timeline, and let it go when they allow.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use crate::helpers::{Backend, TestApp, expect_json, timeline, with_each_backend};
use ownlist::core::clock::Clock;
use ownlist::store::entities::outbox;

with_each_backend!(
    a_capped_subscriber_gets_the_second_message_the_next_day,
    marketing_waits_out_the_days_it_may_not_go,
    the_unengaged_are_asked_once_then_get_no_more_marketing,
    with_sunset_stop_the_unengaged_are_not_asked,
);

/// `sunset_after = 30d` (asking first, the default): a month after their first marketing email,
/// Ada (never opened) and Cy (only Apple's privacy proxy loaded the pixel) are asked, once,
/// whether they still want email, and get no marketing meanwhile; Bob, who opened it himself
/// three weeks in, gets it. Ada follows the question's link: her marketing resumes; Cy, who never
/// answers, gets no more, and is not asked again.
async fn the_unengaged_are_asked_once_then_get_no_more_marketing(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.sunset_after = Some(chrono::Duration::days(30))).await else {
        return;
    };
    app.create_list("news").await;
    let mut ids = Vec::new();
    for email in ["ada@example.com", "bob@example.com", "cy@example.com"] {
        ids.push(app.join(email, "news").await);
    }
    broadcast(&app, "First").await;
    assert_eq!(app.email.send_due().await.unwrap(), 3);
    app.clock.advance(chrono::Duration::days(21));
    let client = crate::helpers::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (email, agent) in [("bob@example.com", crate::helpers::BROWSER), ("cy@example.com", "Mozilla/5.0")] {
        let html = crate::helpers::bodies(&app, messages(&app, email).await[0].id).await.0.unwrap();
        let pixel = crate::stats::link(&html, "/t/o/");
        client.get(app.url(&pixel)).header("user-agent", agent).send().await.unwrap();
    }
    app.clock.advance(chrono::Duration::days(10));
    broadcast(&app, "Second").await;
    app.email.send_due().await.unwrap();
    let status = |m: &outbox::Model| m.status.as_str().to_owned();
    assert_eq!(status(&messages(&app, "ada@example.com").await[1]), "cancelled");
    assert_eq!(status(&messages(&app, "bob@example.com").await[1]), "sent", "he opened it himself");
    assert_eq!(status(&messages(&app, "cy@example.com").await[1]), "cancelled", "a proxy's open is no person's");
    let asked = timeline(&app, &ids[0]).await.into_iter().find(|e| e["kind"] == "sunset_asked").unwrap();
    assert_eq!(
        asked["data"]["reason"],
        "no open or click by a person in 30 days: asked whether they still want email (sunset_after)"
    );

    // The question goes out (it is no marketing: nothing holds it), in the email layout.
    app.tick().await;
    app.clock.advance(chrono::Duration::minutes(5));
    app.email.send_due().await.unwrap();
    let question = messages(&app, "ada@example.com").await.into_iter().find(|m| m.broadcast_id.is_none()).unwrap();
    assert_eq!(question.subject.as_deref(), Some("Do you still want our emails?"));
    assert_eq!(status(&question), "sent");

    // Another broadcast: still nothing for either, and no second question.
    broadcast(&app, "Third").await;
    app.email.send_due().await.unwrap();
    app.tick().await;
    for email in ["ada@example.com", "cy@example.com"] {
        let all = messages(&app, email).await;
        assert_eq!(all.iter().filter(|m| m.broadcast_id.is_none()).count(), 1, "asked once: {email}");
        assert_eq!(status(all.iter().rev().find(|m| m.subject.as_deref() == Some("Third")).unwrap()), "cancelled");
    }
    let reason = timeline(&app, &ids[2]).await.into_iter().rev().find(|e| e["kind"] == "email_cancelled").unwrap();
    assert!(reason["data"]["reason"].as_str().unwrap().contains("nor an answer when asked on"), "{reason}");

    // Ada says yes, an hour after the question came: her marketing resumes.
    app.clock.advance(chrono::Duration::hours(1));
    let html = crate::helpers::bodies(&app, question.id).await.0.unwrap();
    assert!(html.contains("Yes, keep them coming"), "{html}");
    let yes = crate::stats::link(&html, "/t/c/");
    let answer = client.get(app.url(&yes)).send().await.unwrap();
    assert_eq!(answer.headers()["location"], "http://127.0.0.1:8080/kept");
    let kept = client.get(app.url("/kept")).send().await.unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    assert!(kept.text().await.unwrap().contains("You will keep getting our emails."));
    broadcast(&app, "Fourth").await;
    app.email.send_due().await.unwrap();
    let fourth = |all: Vec<outbox::Model>| all.into_iter().find(|m| m.subject.as_deref() == Some("Fourth")).unwrap();
    assert_eq!(status(&fourth(messages(&app, "ada@example.com").await)), "sent", "she answered");
    assert_eq!(status(&fourth(messages(&app, "cy@example.com").await)), "cancelled", "no answer, no more");
}

/// `sunset = "stop"`: no question, the marketing simply stops.
async fn with_sunset_stop_the_unengaged_are_not_asked(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.sunset_after = Some(chrono::Duration::days(30));
        c.sunset_asks = false;
    })
    .await
    else {
        return;
    };
    app.create_list("news").await;
    let ada = app.join("ada@example.com", "news").await;
    broadcast(&app, "First").await;
    app.email.send_due().await.unwrap();
    app.clock.advance(chrono::Duration::days(31));
    broadcast(&app, "Second").await;
    app.email.send_due().await.unwrap();
    app.tick().await;
    let all = messages(&app, "ada@example.com").await;
    assert_eq!(all.len(), 2, "no question");
    assert_eq!(all[1].status.as_str(), "cancelled");
    let why = timeline(&app, &ada).await.into_iter().find(|e| e["kind"] == "email_cancelled").unwrap();
    assert_eq!(
        why["data"]["reason"],
        "no open or click by a person in 30 days: no more marketing email (sunset_after)"
    );
}

async fn broadcast(app: &TestApp, subject: &str) {
    let body = json!({"list": "news", "subject": subject, "html": "<p>Hello</p>"});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
}

async fn messages(app: &TestApp, email: &str) -> Vec<outbox::Model> {
    outbox::Entity::find()
        .filter(outbox::Column::Recipient.eq(email))
        .order_by_asc(outbox::Column::CreatedAt)
        .all(app.db.conn())
        .await
        .unwrap()
}

/// At most one marketing email a day: Ada's second broadcast (and a workflow's email) wait until
/// a day after the first went; Bob, who got nothing yet, is not held.
async fn a_capped_subscriber_gets_the_second_message_the_next_day(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.email_per_day = Some(1);
        c.email_per_week = Some(3);
    })
    .await
    else {
        return;
    };
    app.create_list("news").await;
    let ada = app.join("ada@example.com", "news").await;
    broadcast(&app, "First").await;
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let first_sent = messages(&app, "ada@example.com").await[0].sent_at.unwrap();

    app.clock.advance(chrono::Duration::hours(2));
    app.join("bob@example.com", "news").await;
    broadcast(&app, "Second").await;
    app.email.send_due().await.unwrap();
    let ada_messages = messages(&app, "ada@example.com").await;
    let second = &ada_messages[1];
    assert_eq!(second.status.as_str(), "queued", "held, not dropped");
    assert_eq!(second.due_at, first_sent + chrono::Duration::days(1), "until the first leaves the day");
    assert_eq!(second.attempts, 0, "a hold is no attempt");
    let bob = messages(&app, "bob@example.com").await;
    assert_eq!(bob[0].status.as_str(), "sent", "Bob got nothing before: not held");
    let held: Vec<_> = timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "email_held").collect();
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0]["data"]["reason"],
        format!(
            "at most 1 marketing email a day: held until {}",
            (first_sent + chrono::Duration::days(1)).format("%Y-%m-%d %H:%M UTC")
        )
    );

    // Later the same day: still held. The next day: it goes.
    app.clock.advance(chrono::Duration::hours(12));
    app.email.send_due().await.unwrap();
    assert_eq!(messages(&app, "ada@example.com").await[1].status.as_str(), "queued");
    app.clock.set(first_sent + chrono::Duration::days(1));
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let ada_messages = messages(&app, "ada@example.com").await;
    assert_eq!(ada_messages[1].status.as_str(), "sent");
    assert_eq!(ada_messages[1].sent_at, Some(app.clock.now()));
    assert_eq!(ada_messages[1].subject.as_deref(), Some("Second"));
}

/// Monday to Friday, 09:00 to 18:00, and not on Christmas: a broadcast due on a Saturday (in the
/// subscriber's zone) waits for Monday; once Monday begins, for 09:00 there.
async fn marketing_waits_out_the_days_it_may_not_go(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.send_days = ownlist::delivery::policy::parse_days("mon-fri").unwrap();
        c.holidays = vec![ownlist::delivery::policy::Holiday::parse("12-25").unwrap()];
        c.email_hours = Some(ownlist::delivery::sms::SendingHours::parse("09:00-18:00").unwrap());
    })
    .await
    else {
        return;
    };
    app.create_list("news").await;
    let ada = app
        .create_subscriber(json!({"email": "ada@example.com", "lists": ["news"], "consent": {"email": true},
            "timezone": "Europe/Rome"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Saturday 7 March 2026, 10:00 in Rome.
    app.clock.set(chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 7, 9, 0, 0).unwrap());
    broadcast(&app, "Weekend sale").await;
    app.email.send_due().await.unwrap();
    let held = &messages(&app, "ada@example.com").await[0];
    assert_eq!(held.status.as_str(), "queued");
    assert_eq!(
        held.due_at,
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 8, 23, 0, 0).unwrap(),
        "Monday 00:00 in Rome"
    );
    let reason =
        timeline(&app, &ada).await.into_iter().find(|e| e["kind"] == "email_held").unwrap()["data"]["reason"].clone();
    assert_eq!(reason, "no marketing on Saturdays: held until 2026-03-09");
    app.clock.set(held.due_at);
    app.email.send_due().await.unwrap();
    let held = &messages(&app, "ada@example.com").await[0];
    assert_eq!(held.status.as_str(), "queued", "midnight is outside the hours");
    assert_eq!(
        held.due_at,
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 9, 8, 0, 0).unwrap(),
        "09:00 in Rome"
    );
    let reasons: Vec<_> = timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "email_held").collect();
    assert_eq!(
        reasons[1]["data"]["reason"],
        "outside the hours marketing email may arrive (09:00-18:00 where they are): held until 2026-03-09 08:00 UTC"
    );
    app.clock.set(held.due_at);
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    assert_eq!(messages(&app, "ada@example.com").await[0].status.as_str(), "sent", "Monday at nine, it goes");
}
