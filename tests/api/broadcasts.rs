//! Broadcasts: checked when created, fanned out through the outbox in batches, followed to the end.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_json, expect_problem, kinds, on_both_databases};
use ownlist::core::clock::Clock;
use ownlist::store::entities::outbox;

on_both_databases!(
    a_broadcast_reaches_every_consenting_member_once_and_reports_progress,
    a_broadcast_is_checked_before_it_is_stored,
    a_scheduled_broadcast_waits_for_its_time_and_can_be_cancelled,
    a_tag_or_condition_narrows_a_broadcast,
    a_big_broadcast_sent_while_it_is_still_being_written_arrives_once_each,
    messages_whose_keys_are_taken_are_left_out_with_their_bodies,
    messages_read_column_by_column_are_the_messages_sea_orm_reads,
    a_broadcast_reports_what_became_of_its_messages_per_link_and_day,
);

async fn member(app: &TestApp, email: &str, extra: Value) -> String {
    let mut body = json!({"email": email, "first_name": "Ada", "lists": ["news"], "consent": {"email": true}});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    app.create_subscriber(body).await["id"].as_str().unwrap().to_owned()
}

async fn broadcast(app: &TestApp, body: Value) -> Value {
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await
}

async fn progress(app: &TestApp, id: &str) -> Value {
    expect_json(app.get(&format!("/api/v1/broadcasts/{id}")).await, StatusCode::OK).await
}

const NEWS: &str = "<p>Hello {{ subscriber.first_name }}, we moved: <a href=\"https://shop.example/new\">our new shop</a>.</p>\
    <p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>";

async fn a_broadcast_reaches_every_consenting_member_once_and_reports_progress(app: TestApp) {
    app.create_list("news").await;
    app.create_list("other").await;
    let ada = member(&app, "ada@example.com", json!({})).await;
    member(&app, "bob@example.com", json!({"first_name": "<b>Bob</b>"})).await;
    member(&app, "no-consent@example.com", json!({"consent": {"email": false}})).await;
    member(&app, "elsewhere@example.com", json!({"lists": ["other"]})).await;
    let left = member(&app, "left@example.com", json!({})).await;
    let path = format!("/api/v1/subscribers/{left}");
    expect_json(app.patch(&path, &json!({"status": "unsubscribed"})).await, StatusCode::OK).await;

    let created =
        broadcast(&app, json!({"list": "news", "subject": "We moved, {{ subscriber.first_name }}", "html": NEWS}))
            .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["status"], "scheduled");
    assert_eq!(created["channels"], json!(["email"]));
    assert_eq!(created["tracking"], true);

    let report = app.tick().await;
    assert_eq!(report.broadcast_to, 3, "the three members still on news were considered");
    let after_fan_out = progress(&app, id).await;
    assert_eq!(after_fan_out["status"], "sending");
    assert_eq!(after_fan_out["messages"], 2, "Ada and Bob: {after_fan_out}");
    assert_eq!(after_fan_out["skipped"], 1, "the member without email consent: {after_fan_out}");
    assert_eq!(after_fan_out["progress"]["email"]["queued"], 2);

    let messages = outbox::Entity::find().all(app.db.conn()).await.unwrap();
    let bob = messages.iter().find(|m| m.recipient == "bob@example.com").unwrap();
    assert_eq!(bob.subject.as_deref(), Some("We moved, <b>Bob</b>"), "subjects are text, not HTML");
    let (html, text) = crate::helpers::bodies(&app, bob.id).await;
    let html = html.unwrap();
    assert!(
        html.contains("Hello &lt;b&gt;Bob&lt;&#x2F;b&gt;") || html.contains("Hello &lt;b&gt;Bob&lt;/b&gt;"),
        "{html}"
    );
    assert!(!html.contains("https://shop.example/new"), "the link is tracked: {html}");
    assert!(html.contains("/t/c/") && html.contains("/t/o/"), "{html}");
    assert!(html.contains("http://127.0.0.1:8080/u/"), "the unsubscribe link is not rewritten: {html}");
    assert_eq!(crate::helpers::tracked_links(&app, bob.id).await, Some(json!(["https://shop.example/new"])));
    let stored = crate::helpers::stored_body(&app, bob.id).await;
    let packed = stored.html_lz4.as_ref().map_or(usize::MAX, Vec::len);
    assert!(stored.html.is_none() && packed < html.len(), "the HTML is stored compressed: {packed} bytes");
    // Compressed against the broadcast's dictionary: its HTML rendered for a sample subscriber
    // (no one's data), which also holds the links every message shares.
    let dictionary = crate::helpers::stored_dictionary(&app, bob.id).await.expect("a dictionary");
    assert_eq!(dictionary.id.to_string(), id, "a broadcast's dictionary has its id");
    assert!(dictionary.html.contains("Hello Sample,") && dictionary.html.contains("/t/c/"), "{}", dictionary.html);
    assert!(!dictionary.html.contains("Bob") && !dictionary.html.contains("Ada"), "{}", dictionary.html);
    assert_eq!(dictionary.links, Some(json!(["https://shop.example/new"])));
    assert!(stored.links.is_none(), "the shared links are stored once, with the dictionary");
    let ada_message = messages.iter().find(|m| m.recipient == "ada@example.com").unwrap();
    assert_eq!(crate::helpers::stored_body(&app, ada_message.id).await.dictionary_id, Some(dictionary.id));
    assert_eq!(bob.list_slug.as_deref(), Some("news"));
    assert_eq!(text, "", "the plain part is derived from the HTML when sent, not stored twice");

    assert_eq!(app.email.send_due().await.unwrap(), 2);
    let text = crate::helpers::sent_text(&app, bob.id);
    assert!(text.contains("our new shop (https://shop.example/new)"), "the link as written, not tracked: {text}");
    let done = progress(&app, id).await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["progress"]["email"], json!({"queued": 0, "sent": 2, "failed": 0, "cancelled": 0}));
    assert!(kinds(&app, &ada).await.contains(&"email_sent".to_owned()));
    let raw = std::fs::read_to_string(app.data_dir.join("mail").join(format!("{}.eml", bob.id))).unwrap();
    assert!(raw.contains("List-Id: <news.localhost>"), "{raw}");

    // Running the engine again writes nothing more: each member and channel once.
    app.tick().await;
    assert_eq!(app.count("outbox").await, 2);
    let all = expect_json(app.get("/api/v1/broadcasts").await, StatusCode::OK).await;
    assert_eq!(all["data"][0]["id"], id);
}

async fn a_broadcast_is_checked_before_it_is_stored(app: TestApp) {
    app.create_list("news").await;
    let cases = [
        (json!({"list": "nope", "subject": "s", "html": "x"}), "list"),
        (json!({"list": "news", "html": "x"}), "subject"),
        (json!({"list": "news", "subject": "s"}), "template"),
        (json!({"list": "news", "subject": "s", "template": "emails/nope.html"}), "template"),
        (json!({"list": "news", "subject": "s", "html": "{% if %}"}), "html"),
        (json!({"list": "news", "subject": "s", "html": "{{ workflow.name }}"}), "html"),
        (json!({"list": "news", "subject": "s", "html": "x", "channels": ["fax"]}), "channels[0]"),
        (json!({"list": "news", "channels": ["sms"]}), "sms_text"),
        (json!({"list": "news", "subject": "s", "html": "x", "condition": {"opened": "welcome"}}), "condition"),
        (json!({"list": "news", "subject": "s", "html": "x", "tag": "a;b"}), "tag"),
    ];
    for (body, field) in cases {
        let problem = expect_problem(
            app.post("/api/v1/broadcasts", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{body} should be refused for {field}: {problem}");
    }
    let problem = expect_problem(
        app.post("/api/v1/broadcasts", &json!({"list": "news", "subject": "s", "html": "x", "colour": "red"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");
    // JSON that parses but is no condition is a 422 naming the field, not a 400 "malformed".
    let problem = expect_problem(
        app.post("/api/v1/broadcasts", &json!({"list": "news", "subject": "s", "html": "x", "condition": {}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(problem["field"], "condition", "{problem}");
    assert_eq!(app.count("broadcasts").await, 0, "nothing stored for a refused broadcast");
    let missing = app.get(&format!("/api/v1/broadcasts/{}", uuid::Uuid::now_v7())).await;
    expect_problem(missing, StatusCode::NOT_FOUND, "broadcast_not_found").await;
    let template = broadcast(&app, json!({"list": "news", "subject": "Guide", "template": "emails/guide.html"})).await;
    assert_eq!(template["template"], "emails/guide.html");
}

async fn a_scheduled_broadcast_waits_for_its_time_and_can_be_cancelled(app: TestApp) {
    app.create_list("news").await;
    member(&app, "ada@example.com", json!({})).await;
    let send_at = app.clock.now() + chrono::Duration::hours(2);
    let later = broadcast(&app, json!({"list": "news", "subject": "s", "html": NEWS, "send_at": send_at})).await;
    let id = later["id"].as_str().unwrap();
    app.advance(chrono::Duration::minutes(119)).await;
    assert_eq!(progress(&app, id).await["status"], "scheduled");
    assert_eq!(app.count("outbox").await, 0);
    app.advance(chrono::Duration::minutes(1)).await;
    assert_eq!(progress(&app, id).await["status"], "sending");

    let cancelled =
        expect_json(app.post(&format!("/api/v1/broadcasts/{id}/cancel"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["progress"]["email"]["cancelled"], 1);
    assert_eq!(app.email.send_due().await.unwrap(), 0, "a cancelled message is not sent");
    let never = broadcast(
        &app,
        json!({"list": "news", "subject": "s", "html": NEWS, "send_at": send_at + chrono::Duration::days(1)}),
    )
    .await;
    let never_id = never["id"].as_str().unwrap();
    expect_json(app.post(&format!("/api/v1/broadcasts/{never_id}/cancel"), &json!({})).await, StatusCode::OK).await;
    app.advance(chrono::Duration::days(2)).await;
    assert_eq!(progress(&app, never_id).await["messages"], 0, "a broadcast cancelled before its time writes nothing");
}

async fn a_tag_or_condition_narrows_a_broadcast(app: TestApp) {
    app.create_list("news").await;
    member(&app, "vip-pro@example.com", json!({"tags": ["vip"], "attributes": {"plan": "pro"}})).await;
    member(&app, "vip-free@example.com", json!({"tags": ["vip"], "attributes": {"plan": "free"}})).await;
    member(&app, "pro@example.com", json!({"attributes": {"plan": "pro"}})).await;
    let tagged = broadcast(&app, json!({"list": "news", "tag": "vip", "subject": "s", "html": "x"})).await;
    let pro = broadcast(
        &app,
        json!({"list": "news", "subject": "s", "html": "x",
               "condition": {"attribute": {"name": "plan", "test": {"equals": "pro"}}}}),
    )
    .await;
    app.tick().await;
    let recipients = |id: &str| {
        let id: uuid::Uuid = id.parse().unwrap();
        let db = app.db.clone();
        async move {
            let rows = outbox::Entity::find().filter(outbox::Column::BroadcastId.eq(id)).all(db.conn()).await.unwrap();
            let mut to: Vec<String> = rows.into_iter().map(|m| m.recipient).collect();
            to.sort();
            to
        }
    };
    assert_eq!(recipients(tagged["id"].as_str().unwrap()).await, ["vip-free@example.com", "vip-pro@example.com"]);
    assert_eq!(recipients(pro["id"].as_str().unwrap()).await, ["pro@example.com", "vip-pro@example.com"]);
    assert_eq!(progress(&app, pro["id"].as_str().unwrap()).await["skipped"], 1);
}

async fn a_big_broadcast_sent_while_it_is_still_being_written_arrives_once_each(app: TestApp) {
    app.create_list("news").await;
    let csv: String = std::iter::once("email,email_state\n".to_owned())
        .chain((0..1200).map(|i| format!("reader{i:04}@example.com,subscribed\n")))
        .collect();
    let report = expect_json(app.post_csv("/api/v1/imports?list=news", csv).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 1200, "{report}");
    let big = broadcast(&app, json!({"list": "news", "subject": "s", "html": NEWS, "tracking": false})).await;
    let id = big["id"].as_str().unwrap();
    // The email worker sends while the engine is still writing: it finds the first batch queued.
    let engine = app.engine.clone();
    let fan_out = tokio::spawn(async move { engine.tick().await.unwrap() });
    let mut sent = 0;
    loop {
        // Whether the writing had finished *before* this look: then a look that finds nothing
        // has seen every batch.
        let finished = fan_out.is_finished();
        let n = app.email.send_due().await.unwrap();
        sent += n;
        if n == 0 && finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(sent, 1200);
    assert_eq!(fan_out.await.unwrap().broadcast_to, 1200);
    let done = progress(&app, id).await;
    assert_eq!(done["messages"], 1200);
    assert_eq!(done["progress"]["email"]["sent"], 1200, "{done}");
    assert_eq!(done["status"], "done");
    let one = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    let html = crate::helpers::bodies(&app, one.id).await.0.unwrap();
    let links = crate::helpers::tracked_links(&app, one.id).await;
    assert!(links.is_none() && !html.contains("/t/o/"), "tracking off for this broadcast");
    assert_eq!(std::fs::read_dir(app.data_dir.join("mail")).unwrap().count(), 1200);
}

/// Writing messages (as a step or a broadcast batch does) whose idempotency keys are taken
/// writes only the others, and no body for those left out: on SQLite every INSERT goes in one
/// call and the ids written are then read back; on PostgreSQL chunk by chunk.
async fn messages_whose_keys_are_taken_are_left_out_with_their_bodies(app: TestApp) {
    use ownlist::outbox::compose::{self, Draft};
    let now = chrono::Utc::now();
    let rows = |keys: std::ops::Range<usize>| -> Vec<_> {
        keys.map(|n| {
            let draft = Draft {
                channel: ownlist::core::values::OutboxChannel::Email,
                recipient: format!("reader{n}@example.com"),
                subject: Some("Hi".into()),
                html: Some(format!("<p>Message {n}</p>")),
                text: String::new(),
                list_slug: None,
            };
            compose::NewMessage::new(format!("test:{n}"), uuid::Uuid::now_v7(), draft).rows(now)
        })
        .collect()
    };
    let txn = app.db.begin_write().await.unwrap();
    assert_eq!(compose::insert(&txn, rows(0..150)).await.unwrap().len(), 150);
    txn.commit().await.unwrap();
    // 50 keys taken (in the first chunk of 100), 100 new ones across both chunks.
    let again = rows(100..250);
    let new: Vec<uuid::Uuid> = again.iter().skip(50).map(|(message, _)| message.id.clone().unwrap()).collect();
    let txn = app.db.begin_write().await.unwrap();
    assert_eq!(compose::insert(&txn, again).await.unwrap(), new, "only the new ones, in order");
    txn.commit().await.unwrap();
    assert_eq!(app.count("outbox").await, 250);
    assert_eq!(app.count("outbox_bodies").await, 250, "no body for a message left out");
    let orphans =
        outbox::Entity::find().filter(outbox::Column::Id.is_in(new.clone())).all(app.db.conn()).await.unwrap();
    assert_eq!(orphans.len(), 100);
    for id in &new[..3] {
        let (html, _) = crate::helpers::bodies(&app, *id).await;
        assert!(html.is_some_and(|h| h.starts_with("<p>Message ")), "each written message has its body");
    }
}

/// The delivery workers read their claims by column position (`outbox::all_with_bodies`):
/// the same messages and bodies as sea-orm's reading by name, sent or queued, with bodies or
/// without.
async fn messages_read_column_by_column_are_the_messages_sea_orm_reads(app: TestApp) {
    use sea_orm::QueryOrder;
    app.create_list("news").await;
    member(&app, "ada@example.com", json!({})).await;
    member(&app, "bob@example.com", json!({"first_name": "Bob"})).await;
    broadcast(&app, json!({"list": "news", "subject": "Sent", "html": NEWS})).await;
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 2);
    broadcast(
        &app,
        json!({"list": "news", "subject": "Queued", "html": NEWS, "text": "Plain {{ subscriber.first_name }}"}),
    )
    .await;
    app.tick().await;
    let queued = outbox::Entity::find().filter(outbox::Column::Status.eq("queued")).one(app.db.conn()).await.unwrap();
    let lost = queued.expect("a queued message").id;
    ownlist::store::entities::outbox_body::Entity::delete_by_id(lost).exec(app.db.conn()).await.unwrap();

    let query = || outbox::with_bodies().order_by_asc(outbox::Column::Id);
    let by_position = outbox::all_with_bodies(query(), app.db.conn()).await.unwrap();
    let by_name = query().all(app.db.conn()).await.unwrap();
    assert_eq!(by_position.len(), 4);
    assert_eq!(by_position, by_name);
    assert!(by_position.iter().any(|(m, _)| m.sent_at.is_some() && m.status == "sent"), "{by_position:?}");
    assert!(by_position.iter().any(|(m, body)| m.id == lost && body.is_none()), "{by_position:?}");
    assert!(by_position.iter().any(|(_, body)| body.as_ref().is_some_and(|b| b.dictionary_id.is_some())));
}

/// The business set once in the settings is `business` in every message's templates, and the
/// default sender is the business on `base_url`'s domain.
#[tokio::test]
async fn every_message_names_the_business_set_once() {
    for backend in [crate::helpers::Backend::Sqlite, crate::helpers::Backend::Postgres] {
        let Some(app) = TestApp::spawn_with(backend, |c| {
            c.business.name = "Bottega Rossi".into();
            c.business.postal_address = Some("Via Roma 1, 20121 Milano".into());
            c.business.accent_color = "#c0392b".into();
        })
        .await
        else {
            continue;
        };
        app.create_list("news").await;
        member(&app, "ada@example.com", json!({})).await;
        let html = "<p style=\"color: {{ business.accent_color }}\">Hi {{ subscriber.first_name }}</p>\
            <p>{{ business.name }}, {{ business.postal_address }}</p><p>[{{ business.support_email }}]</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>";
        broadcast(&app, json!({"list": "news", "subject": "News from {{ business.name }}", "html": html})).await;
        app.tick().await;
        let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
        assert_eq!(message.subject.as_deref(), Some("News from Bottega Rossi"));
        let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
        assert!(html.contains("Bottega Rossi, Via Roma 1, 20121 Milano"), "{html}");
        assert!(html.contains("color: #c0392b"), "{html}");
        assert!(html.contains("<p>[]</p>"), "a setting not set is empty: {html}");
    }
}

/// Sent on one day, read the next: the report counts opens and clicks once per message, every
/// click per link, an unsubscribe through the list's one-click link and a bounce reported later
/// (not twice when reported twice), with rates and day by day. Machines' opens and clicks (Apple
/// Mail Privacy Protection's pixel load, a scanner following the hidden link) are counted beside
/// and in no rate.
async fn a_broadcast_reports_what_became_of_its_messages_per_link_and_day(app: TestApp) {
    app.create_list("news").await;
    for who in ["ada", "bob", "cy", "dee"] {
        member(&app, &format!("{who}@example.com"), json!({})).await;
    }
    let html = "<p>Hi {{ subscriber.first_name }}: <a href=\"https://shop.example/a\">A</a> \
        <a href=\"https://shop.example/b\">B</a></p>";
    let created = broadcast(&app, json!({"list": "news", "subject": "Two links", "html": html})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 4);
    app.clock.advance(chrono::Duration::days(1));

    let messages = outbox::Entity::find().all(app.db.conn()).await.unwrap();
    let of = |email: &str| messages.iter().find(|m| m.recipient == email).unwrap().id;
    let links = |html: &str, prefix: &str| -> Vec<String> {
        html.split(['"', '\'', '(', ')'])
            .filter(|part| part.starts_with(prefix) && !part.ends_with("/h"))
            .map(|url| url.trim_start_matches("http://127.0.0.1:8080").to_owned())
            .collect()
    };
    let client = crate::helpers::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let visit = |path: String| {
        let client = client.clone();
        let url = app.url(&path);
        async move { assert!(client.get(url).send().await.unwrap().status().as_u16() < 400, "{path}") }
    };
    let ada = crate::helpers::bodies(&app, of("ada@example.com")).await.0.unwrap();
    let pixel = links(&ada, "http://127.0.0.1:8080/t/o/");
    assert_eq!(pixel.len(), 1, "{ada}");
    visit(pixel[0].clone()).await;
    visit(pixel[0].clone()).await;
    let ada_links = links(&ada, "http://127.0.0.1:8080/t/c/");
    visit(ada_links[0].clone()).await;
    visit(ada_links[0].clone()).await;
    let bob = crate::helpers::bodies(&app, of("bob@example.com")).await.0.unwrap();
    visit(links(&bob, "http://127.0.0.1:8080/t/c/")[1].clone()).await;
    // Cy's pixel loaded by Apple's privacy proxy (a bare `Mozilla/5.0`), twice; and a scanner
    // following her message's hidden link, then its first link: machines, all of it.
    let cy = crate::helpers::bodies(&app, of("cy@example.com")).await.0.unwrap();
    let cy_pixel = app.url(&links(&cy, "http://127.0.0.1:8080/t/o/")[0]);
    for _ in 0..2 {
        assert_eq!(client.get(&cy_pixel).header("user-agent", "Mozilla/5.0").send().await.unwrap().status(), 200);
    }
    let trap = cy.split('"').find(|p| p.starts_with("http://127.0.0.1:8080/t/c/") && p.ends_with("/h")).unwrap();
    let followed = client.get(trap.replace("http://127.0.0.1:8080", &app.base)).send().await.unwrap();
    assert_eq!(followed.headers()["location"], "http://127.0.0.1:8080/", "the hidden link leads to the front page");
    visit(links(&cy, "http://127.0.0.1:8080/t/c/")[0].clone()).await;

    let raw = std::fs::read_to_string(app.data_dir.join("mail").join(format!("{}.eml", of("cy@example.com")))).unwrap();
    let header = raw.lines().find(|l| l.starts_with("List-Unsubscribe:")).unwrap();
    let one_click = header.split(['<', '>']).find(|p| p.starts_with("http")).unwrap();
    assert!(one_click.ends_with("?list=news"), "{header}");
    let left = client
        .post(one_click.replace("http://127.0.0.1:8080", &app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(left.status().is_success(), "{}", left.status());
    let bounce = json!([{"address": "dee@example.com", "type": "hard", "reason": "550 no such user"}]);
    for _ in 0..2 {
        let answer = client
            .post(app.url("/webhooks/bounces"))
            .bearer_auth(crate::helpers::BOUNCE_SECRET)
            .json(&bounce)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    let report = expect_json(app.get(&format!("/api/v1/broadcasts/{id}/report")).await, StatusCode::OK).await;
    assert_eq!(report["broadcast"]["id"], id.as_str());
    assert_eq!(report["broadcast"]["status"], "done");
    assert_eq!(
        report["totals"],
        json!({"sent": 4, "delivered": 3, "failed": 0, "bounced": 1, "complained": 0, "opened": 2,
               "clicked": 2, "clicks": 3, "unsubscribed": 1, "opened_by_machine": 1, "clicked_by_machine": 1}),
        "{report}"
    );
    assert_eq!(
        report["rates"],
        json!({"delivery_rate": 0.75, "bounce_rate": 0.25, "open_rate": 0.6667, "click_rate": 0.6667,
               "click_to_open_rate": 1.0, "unsubscribe_rate": 0.3333, "complaint_rate": 0.0})
    );
    assert_eq!(
        report["links"],
        json!([{"url": "https://shop.example/a", "clicks": 2, "unique": 1},
               {"url": "https://shop.example/b", "clicks": 1, "unique": 1}])
    );
    let days = report["by_day"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{days:?}");
    assert_eq!(
        (days[0]["day"].as_str(), days[0]["sent"].as_i64(), days[0]["opened"].as_i64()),
        (Some("2026-03-02"), Some(4), Some(0))
    );
    assert_eq!(
        (days[1]["day"].as_str(), days[1]["opened"].as_i64(), days[1]["bounced"].as_i64()),
        (Some("2026-03-03"), Some(2), Some(1))
    );

    let missing = app.get(&format!("/api/v1/broadcasts/{}/report", uuid::Uuid::now_v7())).await;
    expect_problem(missing, StatusCode::NOT_FOUND, "broadcast_not_found").await;
}
