//! Open and click tracking: signed links that lead only where the message said, recorded once
//! per open and on every click, feeding `opened:`/`clicked:` in workflows.

use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::helpers::{TestApp, expect_json, kinds, on_both_databases, timeline};
use ownlist::core::clock::Clock;
use ownlist::core::links::{Purpose, Signer};
use ownlist::store::entities::outbox;

on_both_databases!(
    a_click_redirects_only_to_the_recorded_link_and_feeds_the_clicked_branch,
    an_open_is_recorded_once_and_feeds_the_opened_branch,
    tracking_can_be_turned_off_per_workflow_and_per_step,
    a_broadcast_click_leads_where_its_dictionary_says,
    a_privacy_proxy_open_is_a_machines_and_counts_only_where_a_workflow_says_so,
    a_link_scanner_on_arrival_is_a_machine_and_the_reader_after_it_a_person,
);

/// Apple Mail Privacy Protection loads the pixel on arrival: the open is kept with its verdict
/// and reason, but `opened:` is about people, unless the condition says `include_machine`.
async fn a_privacy_proxy_open_is_a_machines_and_counts_only_where_a_workflow_says_so(app: TestApp) {
    const TWO_TESTS: &str = "name: Guide\ntrigger: { subscribed: guide-leads }\nsteps:\n  - id: deliver\n    email: { subject: Your guide, template: emails/guide.html }\n  - id: pause\n    wait: 1d\n  - id: people\n    if: { opened: deliver }\n    then:\n      - id: read\n        tag: read\n  - id: anyone\n    if: { opened: { step: deliver, include_machine: true } }\n    then:\n      - id: fetched\n        tag: fetched\n";
    let (ada, _) = ada_in_workflow(&app, TWO_TESTS).await;
    app.email.send_due().await.unwrap();
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
    let pixel = local_path(&links_to(&html, "http://127.0.0.1:8080/t/o/")[0]);
    app.clock.advance(chrono::Duration::seconds(2));
    for _ in 0..2 {
        let answer = no_redirects().get(app.url(&pixel)).header("user-agent", "Mozilla/5.0").send().await.unwrap();
        assert_eq!(answer.headers()["content-type"], "image/gif", "a pixel all the same");
    }
    let opened: Vec<_> = timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "email_opened").collect();
    assert_eq!(opened.len(), 1, "the first machine open only: {opened:?}");
    assert_eq!(opened[0]["data"]["verdict"], "machine");
    assert_eq!(opened[0]["data"]["reason"], "privacy proxy: Apple Mail Privacy Protection");
    let stored = outbox::Entity::find_by_id(message.id).one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!(stored.opened_at, None, "not opened by a person");
    app.advance(chrono::Duration::days(1)).await;
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(person["tags"], json!(["fetched"]), "opened: is people's; include_machine counts the proxy");
    let stats = expect_json(app.get("/api/v1/stats/workflows/guide").await, StatusCode::OK).await;
    let deliver = stats["steps"].as_array().unwrap().iter().find(|s| s["step"] == "deliver").unwrap().clone();
    assert_eq!((deliver["opened"].as_i64(), deliver["opened_by_machine"].as_i64()), (Some(0), Some(1)));
    assert_eq!(deliver["open_rate"], 0.0, "rates are people's");
}

/// A gateway follows the link three seconds after the message was sent (Safe Links, from
/// Microsoft's network): a machine. Ada clicks an hour later: a person, and the branch is taken.
async fn a_link_scanner_on_arrival_is_a_machine_and_the_reader_after_it_a_person(app: TestApp) {
    let (ada, _) = guide_for_ada(&app, "clicked").await;
    app.email.send_due().await.unwrap();
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
    let click = local_path(&links_to(&html, "http://127.0.0.1:8080/t/c/")[0]);
    let client = no_redirects();
    app.clock.advance(chrono::Duration::seconds(3));
    let scanned = client.get(app.url(&click)).send().await.unwrap();
    assert_eq!(scanned.status(), StatusCode::FOUND, "a scanner is answered as anyone");
    let head = client.head(app.url(&click)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    let verdicts = |events: Vec<serde_json::Value>| -> Vec<(String, String)> {
        events
            .into_iter()
            .filter(|e| e["kind"] == "email_clicked")
            .map(|e| {
                (
                    e["data"]["verdict"].as_str().unwrap().to_owned(),
                    e["data"]["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        verdicts(timeline(&app, &ada).await),
        [
            ("machine".to_owned(), "followed 3 s after the message was sent".to_owned()),
            ("machine".to_owned(), "a HEAD request, which checks a link without reading it".to_owned()),
        ]
    );
    assert_eq!(outbox::Entity::find_by_id(message.id).one(app.db.conn()).await.unwrap().unwrap().clicked_at, None);
    app.clock.advance(chrono::Duration::hours(1));
    assert_eq!(client.get(app.url(&click)).send().await.unwrap().status(), StatusCode::FOUND);
    assert_eq!(verdicts(timeline(&app, &ada).await).last().unwrap().0, "human");
    app.advance(chrono::Duration::days(1)).await;
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(person["tags"], json!(["engaged"]), "her click, not the scanner's, took the clicked: branch");
    let stats = expect_json(app.get("/api/v1/stats/workflows/guide").await, StatusCode::OK).await;
    let deliver = stats["steps"].as_array().unwrap().iter().find(|s| s["step"] == "deliver").unwrap().clone();
    assert_eq!((deliver["clicked"].as_i64(), deliver["clicked_by_machine"].as_i64()), (Some(1), Some(1)));
}

const FOLLOW_UP: &str = "name: Guide\ntrigger: { subscribed: guide-leads }\nsteps:\n  - id: deliver\n    email: { subject: Your guide, template: emails/guide.html }\n  - id: pause\n    wait: 1d\n  - id: check\n    if: { CONDITION: deliver }\n    then:\n      - id: yes\n        tag: engaged\n    else:\n      - id: no\n        tag: cold\n";

/// Ada joins, the guide is queued; returns her id and the queued message.
async fn guide_for_ada(app: &TestApp, condition: &str) -> (String, outbox::Model) {
    ada_in_workflow(app, &FOLLOW_UP.replace("CONDITION", condition)).await
}

/// Ada joins the list that starts `workflow` (installed as `guide`); returns her id and the first
/// message queued.
async fn ada_in_workflow(app: &TestApp, workflow: &str) -> (String, outbox::Model) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", workflow).await;
    let ada = app
        .create_subscriber(json!({"email": "ada@example.com", "lists": ["guide-leads"], "consent": {"email": true}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.tick().await;
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    (ada, message)
}

/// The path (and query) of a link the message points at `http://127.0.0.1:8080/…`.
fn local_path(url: &str) -> String {
    url.strip_prefix("http://127.0.0.1:8080").unwrap_or_else(|| panic!("{url} is not ours")).to_owned()
}

fn links_to(html: &str, prefix: &str) -> Vec<String> {
    // The hidden link (`…/h`) is no reader's: left out here.
    html.split(['"', '\''])
        .filter(|part| part.starts_with(prefix) && !part.ends_with("/h"))
        .map(str::to_owned)
        .collect()
}

fn no_redirects() -> reqwest::Client {
    crate::helpers::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn a_click_redirects_only_to_the_recorded_link_and_feeds_the_clicked_branch(app: TestApp) {
    let (ada, message) = guide_for_ada(&app, "clicked").await;
    assert_eq!(crate::helpers::tracked_links(&app, message.id).await, Some(json!(["https://example.com/guide.pdf"])));
    let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
    let clicks = links_to(&html, "http://127.0.0.1:8080/t/c/");
    assert_eq!(clicks.len(), 1, "{html}");
    let click = local_path(&clicks[0]);
    let client = no_redirects();

    let answer = client.get(app.url(&click)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    assert_eq!(answer.headers()["location"], "https://example.com/guide.pdf");
    assert_eq!(answer.headers()["referrer-policy"], "no-referrer");
    client.get(app.url(&click)).send().await.unwrap();
    let seen = kinds(&app, &ada).await;
    assert_eq!(seen.iter().filter(|k| *k == "email_clicked").count(), 2, "every click: {seen:?}");
    assert_eq!(seen.iter().filter(|k| *k == "email_opened").count(), 1, "a click is an open, once: {seen:?}");
    let clicked = timeline(&app, &ada).await.into_iter().find(|e| e["kind"] == "email_clicked").unwrap();
    assert_eq!(clicked["data"]["url"], "https://example.com/guide.pdf");
    assert_eq!(
        (clicked["data"]["workflow"].as_str(), clicked["data"]["step"].as_str()),
        (Some("guide"), Some("deliver"))
    );

    // Nothing else is reachable through it: another index, a forged or re-purposed token.
    let (token, _) = click.trim_start_matches("/t/c/").split_once('/').unwrap();
    for path in [
        format!("/t/c/{token}/1"),
        format!("/t/c/{token}/-1"),
        format!("/t/c/{token}/https:%2F%2Fevil.example"),
        format!("/t/c/{}x/0", token),
        format!(
            "/t/c/{}/0",
            Signer::new("another-secret-another-secret-00").sign(
                Purpose::Track,
                message.id,
                app.clock.now() + chrono::Duration::days(1)
            )
        ),
        format!(
            "/t/c/{}/0",
            Signer::new(&secret(&app)).sign(
                Purpose::Unsubscribe,
                message.id,
                app.clock.now() + chrono::Duration::days(1)
            )
        ),
    ] {
        let answer = client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(answer.headers().get("location").is_none());
    }
    assert_eq!(
        kinds(&app, &ada).await.iter().filter(|k| *k == "email_clicked").count(),
        2,
        "refused clicks record nothing"
    );

    app.advance(chrono::Duration::days(1)).await;
    let seen = kinds(&app, &ada).await;
    assert!(seen.contains(&"tag_added".to_owned()), "{seen:?}");
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(person["tags"], json!(["engaged"]), "the clicked: branch was taken");
}

/// The secret the app generated for itself (tests do not set one).
fn secret(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.join("secret")).unwrap().trim().to_owned()
}

async fn an_open_is_recorded_once_and_feeds_the_opened_branch(app: TestApp) {
    let (ada, message) = guide_for_ada(&app, "opened").await;
    let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
    let pixels = links_to(&html, "http://127.0.0.1:8080/t/o/");
    assert_eq!(pixels.len(), 1, "one pixel: {html}");
    for _ in 0..3 {
        let answer = no_redirects().get(app.url(&local_path(&pixels[0]))).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()["content-type"], "image/gif");
        assert_eq!(answer.headers()["cache-control"], "no-store, private");
        assert_eq!(&answer.bytes().await.unwrap()[..6], b"GIF89a");
    }
    let forged = reqwest::get(app.url("/t/o/not-a-token")).await.unwrap();
    assert_eq!(forged.status(), StatusCode::OK, "a mail client gets a pixel either way");
    let seen = kinds(&app, &ada).await;
    assert_eq!(seen.iter().filter(|k| *k == "email_opened").count(), 1, "{seen:?}");
    let stored = outbox::Entity::find_by_id(message.id).one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!(stored.opened_at, Some(app.clock.now()));
    app.advance(chrono::Duration::days(1)).await;
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(person["tags"], json!(["engaged"]), "the opened: branch was taken");
}

async fn tracking_can_be_turned_off_per_workflow_and_per_step(app: TestApp) {
    app.create_list("guide-leads").await;
    let off = FOLLOW_UP.replace("CONDITION", "opened").replace("steps:\n", "tracking: false\nsteps:\n");
    app.install_workflow("guide", &off).await;
    let step_off = "name: Second\ntrigger: { subscribed: guide-leads }\nsteps:\n  - id: deliver\n    email: { subject: Hi, template: emails/guide.html, tracking: false }\n  - id: tracked\n    email: { subject: Again, template: emails/guide.html }\n";
    app.install_workflow("second", step_off).await;
    let ada = app
        .create_subscriber(json!({"email": "ada@example.com", "lists": ["guide-leads"], "consent": {"email": true}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.tick().await;
    let messages = outbox::Entity::find().all(app.db.conn()).await.unwrap();
    assert_eq!(messages.len(), 3);
    for m in &messages {
        let html = crate::helpers::bodies(&app, m.id).await.0.unwrap();
        let tracked = m.step_id.as_deref() == Some("tracked");
        assert_eq!(html.contains("/t/o/"), tracked, "{:?}: {html}", m.step_id);
        assert_eq!(html.contains("https://example.com/guide.pdf"), !tracked, "{:?}", m.step_id);
    }
    app.advance(chrono::Duration::days(1)).await;
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(person["tags"], json!(["cold"]), "untracked mail never counts as opened");
}

#[tokio::test]
async fn tracking_can_be_turned_off_for_everything() {
    for backend in [crate::helpers::Backend::Sqlite, crate::helpers::Backend::Postgres] {
        let Some(app) = TestApp::spawn_with(backend, |c| c.tracking = false).await else { continue };
        let (_, message) = guide_for_ada(&app, "opened").await;
        let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
        assert!(!html.contains("/t/o/") && html.contains("https://example.com/guide.pdf"), "{html}");
        assert_eq!(crate::helpers::tracked_links(&app, message.id).await, None);
    }
}

/// A broadcast's messages keep their shared links once, with the dictionary their bodies are
/// stored against: a click still leads where that message's link did, and nowhere else.
async fn a_broadcast_click_leads_where_its_dictionary_says(app: TestApp) {
    app.create_list("news").await;
    let ada = app.join("ada@example.com", "news").await;
    let html = "<p>Hi {{ subscriber.email }}: <a href=\"https://shop.example/a\">a</a> <a href=\"https://shop.example/b\">b</a></p>";
    let body = json!({"list": "news", "subject": "News", "html": html});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    assert!(crate::helpers::stored_body(&app, message.id).await.links.is_none(), "the links are the dictionary's");
    let html = crate::helpers::bodies(&app, message.id).await.0.unwrap();
    let clicks = links_to(&html, "http://127.0.0.1:8080/t/c/");
    assert_eq!(clicks.len(), 2, "{html}");
    let client = no_redirects();
    for (click, target) in clicks.iter().zip(["https://shop.example/a", "https://shop.example/b"]) {
        let answer = client.get(app.url(&local_path(click))).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::FOUND);
        assert_eq!(answer.headers()["location"], target);
    }
    let first = local_path(&clicks[0]);
    let (token, _) = first.trim_start_matches("/t/c/").split_once('/').unwrap();
    let answer = client.get(app.url(&format!("/t/c/{token}/2"))).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "no third link");
    assert_eq!(kinds(&app, &ada).await.iter().filter(|k| *k == "email_clicked").count(), 2);
}
