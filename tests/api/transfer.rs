use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, expect_json, expect_problem, on_both_databases};

on_both_databases!(
    an_import_upserts_good_rows_and_reports_bad_ones_by_line_and_column,
    an_import_never_resubscribes_someone_who_left,
    unusable_imports_are_refused_whole,
    export_then_import_into_an_empty_instance_round_trips,
    a_large_import_streams_in_batches,
);

async fn an_import_upserts_good_rows_and_reports_bad_ones_by_line_and_column(app: TestApp) {
    app.create_list("leads").await;
    let existing =
        app.create_subscriber(json!({"email": "known@example.com", "first_name": "Old", "tags": ["a"]})).await;
    let csv = "\u{feff}Email,phone,first_name,last_name,tags,favourite colour\n\
        ada@example.com,+14155552671,Ada,Lovelace,vip;early,blue\n\
        not-an-email,,Bad,Row,,\n\
        KNOWN@example.com,,New,,b,green\n\
        grace@example.com,555,Grace,,,\n\
        only,two\n\
        ,+442071838750,Phone,Only,,\n\
        ada@example.com,,Ada B.,,late,\n\
        \n\
        comma@example.com,,\"Comma, \"\"Quoted\"\" Person\",,,\n";
    let report = expect_json(app.post_csv("/api/v1/imports?list=leads", csv).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 3, "{report}");
    assert_eq!(report["updated"], 2, "the known subscriber and ada's second row: {report}");
    assert_eq!(report["skipped"], 3, "{report}");
    assert_eq!(report["suppressed"], 0);
    let errors: Vec<(u64, Option<String>)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["column"].as_str().map(str::to_owned)))
        .collect();
    assert_eq!(errors, [(3, Some("email".into())), (5, Some("phone".into())), (6, None)], "{report}");
    assert!(report["errors"][2]["message"].as_str().unwrap().contains("fields"), "{report}");

    let page = expect_json(app.get("/api/v1/subscribers?q=ada@").await, StatusCode::OK).await;
    let ada = &page["data"][0];
    assert_eq!(ada["first_name"], "Ada B.", "a later row for the same address updates it");
    assert_eq!(ada["phone"], "+14155552671");
    assert_eq!(ada["tags"], json!(["early", "late", "vip"]));
    assert_eq!(ada["attributes"], json!({"favourite colour": "blue"}));
    assert_eq!(ada["channels"]["email"], "subscribed");
    assert_eq!(ada["lists"][0]["list"], "leads");

    let known = expect_json(
        app.get(&format!("/api/v1/subscribers/{}", existing["id"].as_str().unwrap())).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(known["email"], "known@example.com", "matched case-insensitively, address kept");
    assert_eq!(known["first_name"], "New");
    assert_eq!(known["tags"], json!(["a", "b"]), "import adds tags, never removes them");
    assert_eq!(known["attributes"], json!({"favourite colour": "green"}));

    let quoted = expect_json(app.get("/api/v1/subscribers?q=comma").await, StatusCode::OK).await;
    assert_eq!(quoted["data"][0]["first_name"], "Comma, \"Quoted\" Person");
    let phone_only = expect_json(app.get("/api/v1/subscribers?q=%2B4420").await, StatusCode::OK).await;
    assert_eq!(phone_only["data"][0]["channels"], json!({"email": "none", "sms": "subscribed", "whatsapp": "none"}));

    let data = expect_json(
        app.get(&format!("/api/v1/subscribers/{}/export", ada["id"].as_str().unwrap())).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(data["consents"][0]["method"], "import");
    assert_eq!(data["events"][0]["kind"], "imported");
    assert_eq!(app.count("subscribers").await, 4);
}

async fn an_import_never_resubscribes_someone_who_left(app: TestApp) {
    app.create_list("leads").await;
    let left = app
        .create_subscriber(json!({"email": "left@example.com", "lists": ["leads"], "consent": {"email": true}}))
        .await;
    let path = format!("/api/v1/subscribers/{}", left["id"].as_str().unwrap());
    expect_json(app.patch(&path, &json!({"status": "unsubscribed"})).await, StatusCode::OK).await;
    let erased = app.create_subscriber(json!({"email": "gone@example.com"})).await;
    app.delete(&format!("/api/v1/subscribers/{}", erased["id"].as_str().unwrap())).await;

    let report = expect_json(
        app.post_csv(
            "/api/v1/imports?list=leads",
            "email,email_state\nleft@example.com,subscribed\nGONE@example.com,\n",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(report["updated"], 1);
    assert_eq!(report["suppressed"], 1, "an erased address is skipped: {report}");
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["errors"], json!([]));
    let after = expect_json(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(after["status"], "unsubscribed");
    assert_eq!(after["channels"]["email"], "unsubscribed");
    assert_eq!(after["lists"][0]["status"], "unsubscribed");
    assert_eq!(app.count("subscribers").await, 1);
}

async fn unusable_imports_are_refused_whole(app: TestApp) {
    let problem = expect_problem(
        app.post_csv("/api/v1/imports?list=nope", "email\na@example.com\n").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "list");
    let problem = expect_problem(
        app.post_csv("/api/v1/imports", "first_name,last_name\nA,B\n").await,
        StatusCode::BAD_REQUEST,
        "invalid_csv_header",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("email"), "{problem}");
    expect_problem(
        app.post_csv("/api/v1/imports", "email,Email\n").await,
        StatusCode::BAD_REQUEST,
        "invalid_csv_header",
    )
    .await;
    expect_problem(app.post_csv("/api/v1/imports", "").await, StatusCode::BAD_REQUEST, "invalid_csv_header").await;
    let response = app
        .request(reqwest::Method::POST, "/api/v1/imports")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

    let mut bytes = b"email,first_name\na@example.com,".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\nb@example.com,Bea\n");
    let report = expect_json(app.post_csv("/api/v1/imports", bytes).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 1);
    assert_eq!(report["errors"][0]["row"], 2);
    assert_eq!(report["errors"][0]["column"], "first_name");
    assert_eq!(app.count("subscribers").await, 1, "the row with bad bytes was not half-written");
}

async fn export_then_import_into_an_empty_instance_round_trips(app: TestApp) {
    app.create_list("news").await;
    app.create_list("vip").await;
    app.create_subscriber(json!({
        "email": "ada@example.com", "phone": "+14155552671", "first_name": "Ada", "last_name": "O'Lovelace, \"Countess\"",
        "timezone": "Europe/London", "locale": "en-GB", "attributes": {"plan": "pro", "n": 3, "nested": {"a": [1, 2]}},
        "lists": ["news", "vip"], "tags": ["early", "with space"], "consent": {"email": true, "sms": true},
        "attribution": {"source": "instagram", "medium": "social", "campaign": "launch", "referrer": "https://l.instagram.com/", "landing_page": "/p/guide"}
    }))
    .await;
    let grace = app
        .create_subscriber(json!({"email": "grace@example.com", "lists": ["news"], "consent": {"email": true}}))
        .await;
    app.patch(&format!("/api/v1/subscribers/{}", grace["id"].as_str().unwrap()), &json!({"status": "unsubscribed"}))
        .await;
    app.create_subscriber(json!({"phone": "+442071838750", "first_name": "Ünïcödé 名前"})).await;

    let response = app.get("/api/v1/exports/subscribers.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let exported = response.text().await.unwrap();
    assert_eq!(exported.lines().count(), 4, "{exported}");

    let empty = TestApp::spawn(app.backend).await.unwrap();
    let report = expect_json(empty.post_csv("/api/v1/imports", exported.clone()).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 3, "{report}");
    assert_eq!(report["errors"], json!([]));
    assert_eq!(report["lists_created"], json!(["news", "vip"]));
    let again = empty.get("/api/v1/exports/subscribers.csv").await.text().await.unwrap();
    assert_eq!(without_updated_at(&again), without_updated_at(&exported));

    let original = expect_json(app.get("/api/v1/subscribers").await, StatusCode::OK).await;
    let restored = expect_json(empty.get("/api/v1/subscribers").await, StatusCode::OK).await;
    assert_eq!(strip_times(&original), strip_times(&restored));
}

fn without_updated_at(csv: &str) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let skip = header.iter().position(|h| h == "updated_at").unwrap();
    reader
        .records()
        .map(|r| r.unwrap().iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, v)| v.to_owned()).collect())
        .collect()
}

fn strip_times(page: &Value) -> Value {
    let mut page = page.clone();
    for s in page["data"].as_array_mut().unwrap() {
        let s = s.as_object_mut().unwrap();
        s.remove("updated_at");
        for m in s["lists"].as_array_mut().unwrap() {
            let m = m.as_object_mut().unwrap();
            m.remove("joined_at");
            m.remove("confirmed_at");
            m.remove("unsubscribed_at");
        }
    }
    page
}

async fn a_large_import_streams_in_batches(app: TestApp) {
    let mut csv = String::from("email,first_name,tags,city\n");
    for n in 0..2500 {
        csv.push_str(&format!("user{n}@example.com,User {n},t{},Rome\n", n % 7));
    }
    csv.push_str("user7@example.com,Again,,\n");
    let report = expect_json(app.post_csv("/api/v1/imports", csv).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 2500);
    assert_eq!(report["updated"], 1, "a duplicate in a later batch updates the earlier one");
    assert_eq!(app.count("subscribers").await, 2500);
    assert_eq!(app.count("subscriber_tags").await, 2500);
    let page = expect_json(app.get("/api/v1/subscribers?tag=t3&limit=1000").await, StatusCode::OK).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 357);
}

#[tokio::test]
async fn an_import_larger_than_the_limit_is_413() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.max_import_bytes = 1000).await.unwrap();
    let mut csv = String::from("email\n");
    for n in 0..200 {
        csv.push_str(&format!("user{n}@example.com\n"));
    }
    expect_problem(
        app.post_csv("/api/v1/imports", csv.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let chunks: Vec<Result<String, std::io::Error>> = csv.lines().map(|l| Ok(format!("{l}\n"))).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    expect_problem(app.post_csv("/api/v1/imports", streamed).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        .await;
}
