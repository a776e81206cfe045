//! `export --all` / `import --all`: everything out as readable files, and back into an empty
//! instance (of either database), all or nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, expect_json, with_each_backend};
use ownlist::audience::archive;

with_each_backend!(everything_exported_comes_back_whole_into_an_empty_instance,);

const DRIP: &str = "name: Drip\ntrigger: { subscribed: news }\nsteps:\n  - id: hello\n    email: { subject: Hello, template: emails/welcome.html }\n  - id: pause\n    wait: 3d\n";

/// Every table's row count, straight from the database.
async fn counts(app: &TestApp) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (table, _) in archive::TABLES {
        out.push(((*table).to_owned(), app.count(table).await));
    }
    out
}

async fn everything_exported_comes_back_whole_into_an_empty_instance(backend: Backend) {
    // The source is SQLite; the target is `backend`: leaving SQLite for PostgreSQL works too.
    let Some(source) = TestApp::spawn(Backend::Sqlite).await else { return };
    let Some(target) = TestApp::spawn(backend).await else { return };
    source.create_list("news").await;
    source.install_workflow("drip", DRIP).await;
    source.install_workflow("pages", "pages:\n  - slug: join\n    title: Join\n    list: news\n").await;
    let ada = source
        .create_subscriber(json!({"email": "ada@example.com", "first_name": "Ada", "lists": ["news"], "tags": ["vip"],
            "attributes": {"plan": "pro", "n": 3}, "consent": {"email": true, "text": "Yes please."},
            "attribution": {"source": "instagram", "campaign": "spring"}}))
        .await;
    let gone = source.create_subscriber(json!({"email": "gone@example.com", "lists": ["news"]})).await;
    assert_eq!(
        source.delete(&format!("/api/v1/subscribers/{}", gone["id"].as_str().unwrap())).await.status(),
        StatusCode::NO_CONTENT
    );
    source.tick().await;
    source.email.send_due().await.unwrap();
    let broadcast = json!({"list": "news", "subject": "News", "html": "<p>Hi {{ subscriber.first_name }}</p>"});
    expect_json(source.post("/api/v1/broadcasts", &broadcast).await, StatusCode::CREATED).await;
    source.tick().await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    let now = ownlist::core::clock::Clock::now(source.clock.as_ref());
    let manifest = archive::export_all(&source.db, now, &out).await.unwrap();
    let before = counts(&source).await;
    for (table, n) in &before {
        let exported = manifest.counts.iter().find(|(t, _)| t == table).unwrap().1;
        assert_eq!(exported as i64, *n, "{table}");
        let lines = std::fs::read_to_string(out.join(format!("{table}.jsonl"))).unwrap().lines().count();
        assert_eq!(lines as i64, *n, "{table}.jsonl has a line per row");
    }
    assert!(
        before.iter().all(|(t, n)| *n > 0
            || [
                "schedule_runs",
                "pending_triggers",
                "signup_confirmations",
                "page_counts",
                "funnel_daily",
                "step_daily",
                "delivery_daily"
            ]
            .contains(&t.as_str())),
        "{before:?}"
    );
    // Readable without ownlist: JSON objects with the columns as keys, a CSV, a README.
    let first: Value =
        serde_json::from_str(std::fs::read_to_string(out.join("subscribers.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    assert_eq!(first["email"], "ada@example.com");
    assert_eq!(first["attributes"]["plan"], "pro");
    assert!(std::fs::read_to_string(out.join("subscribers.csv")).unwrap().contains("ada@example.com"));
    // Message bodies are stored compressed but exported with their HTML as text.
    let bodies = std::fs::read_to_string(out.join("outbox_bodies.jsonl")).unwrap();
    let body: Value = serde_json::from_str(bodies.lines().find(|l| l.contains("<p>Hi Ada</p>")).unwrap()).unwrap();
    assert!(
        body["html"].as_str().unwrap().starts_with("<!doctype html>"),
        "the message as sent, in its layout: {body}"
    );
    assert!(body.get("html_lz4").is_none() && body["links"].is_array(), "{body}");
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("| `consents.jsonl` | 1 |") || readme.contains("`consents.jsonl`"), "{readme}");
    assert!(archive::export_all(&source.db, now, &out).await.is_err(), "never into a folder that is not empty");

    // A damaged line: nothing is imported, and the problem is located.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for entry in std::fs::read_dir(&out).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
    }
    let events = std::fs::read_to_string(broken.join("events.jsonl")).unwrap();
    let damaged: Vec<String> =
        events.lines().enumerate().map(|(i, l)| if i == 1 { "{\"id\": 12".into() } else { l.to_owned() }).collect();
    std::fs::write(broken.join("events.jsonl"), damaged.join("\n")).unwrap();
    let error = archive::import_all(&target.db, &broken).await.unwrap_err().to_string();
    assert!(error.contains("events.jsonl:2:"), "{error}");
    assert!(counts(&target).await.iter().all(|(_, n)| *n == 0), "all or nothing");

    let restored = archive::import_all(&target.db, &out).await.unwrap();
    assert_eq!(counts(&target).await, before, "every table comes back whole: {restored:?}");
    let id = ada["id"].as_str().unwrap();
    let path = format!("/api/v1/subscribers/{id}/export");
    let (mut was, mut is) = (
        expect_json(source.get(&path).await, StatusCode::OK).await,
        expect_json(target.get(&path).await, StatusCode::OK).await,
    );
    was.as_object_mut().unwrap().remove("exported_at");
    is.as_object_mut().unwrap().remove("exported_at");
    assert_eq!(was, is, "the same person, consents and timeline");
    let id: uuid::Uuid = body["outbox_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        crate::helpers::bodies(&target, id).await,
        crate::helpers::bodies(&source, id).await,
        "bodies come back"
    );
    // The erased address stays suppressed in the new home.
    let again = target.post("/api/v1/subscribers", &json!({"email": "gone@example.com"})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let twice = archive::import_all(&target.db, &out).await.unwrap_err().to_string();
    assert!(twice.contains("not empty"), "{twice}");
}
