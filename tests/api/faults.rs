//! Faults the operating system deals: a disk that fills up under the database.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, expect_json, expect_problem};
use crate::small_disk::SmallDisk;

fn csv(rows: std::ops::Range<u32>) -> String {
    let mut text = String::from("email,first_name,city\n");
    for i in rows {
        text.push_str(&format!("reader{i}@example.com,Reader {i},A city with a name long enough to take room {i}\n"));
    }
    text
}

/// The disk fills during an import: the answer says what was stored (and nothing was said stored
/// that is not), writes fail while the disk is full, and once there is room again the instance
/// writes at once, with no restart; the import sent again converges without duplicates.
#[tokio::test]
async fn a_full_disk_acknowledges_only_what_is_stored_and_heals_without_a_restart() {
    let test = "a_full_disk_acknowledges_only_what_is_stored_and_heals_without_a_restart";
    let root = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(test, &root.path().join("disk"), 48) else { return };
    let url = format!("sqlite://{}?mode=rwc", disk.0.join("ownlist.db").display());
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.database_url = url).await.unwrap();
    app.create_list("before").await;
    disk.fill(256 * 1024);

    let rows = 20_000;
    let answer = app.post_csv("/api/v1/imports", csv(0..rows)).await;
    let status = answer.status();
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{problem}");
    let stored = app.count("subscribers").await;
    let said = problem["stored"]["imported"].as_i64().unwrap_or(0);
    assert_eq!(said, stored, "every row said stored is stored, and no other: {problem}");
    assert!(stored < i64::from(rows));

    // While the disk is full, readiness says so; another write either fits in room the database
    // already has or is refused as such (never a 500, never a wait on a stuck lock).
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    expect_problem(ready, StatusCode::SERVICE_UNAVAILABLE, "disk_full").await;
    let during = app.post("/api/v1/lists", &json!({"slug": "during", "name": "During"})).await;
    let during_stored = match during.status() {
        StatusCode::CREATED => 1,
        StatusCode::INSUFFICIENT_STORAGE => 0,
        other => panic!("{other}: {}", during.text().await.unwrap()),
    };

    // Room again: the next write works, with the same process.
    disk.free();
    app.create_list("after").await;
    expect_json(app.client.get(app.url("/readyz")).send().await.unwrap(), StatusCode::OK).await;
    let report = expect_json(app.post_csv("/api/v1/imports", csv(0..rows)).await, StatusCode::OK).await;
    assert_eq!(report["imported"].as_i64().unwrap() + report["updated"].as_i64().unwrap(), i64::from(rows));
    assert_eq!(app.count("subscribers").await, i64::from(rows), "no duplicates, nothing missing");
    assert_eq!(app.count("lists").await, 2 + during_stored);
}
