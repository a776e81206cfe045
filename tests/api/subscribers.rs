use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_json, expect_problem, on_both_databases};

on_both_databases!(
    a_subscriber_is_created_with_lists_tags_and_proven_consent,
    a_duplicate_address_is_a_conflict_naming_the_existing_subscriber,
    invalid_subscribers_are_refused_and_nothing_is_written,
    listing_filters_and_pages_stably_under_inserts,
    bad_listing_parameters_are_4xx,
    a_patch_changes_fields_tags_lists_and_records_each_change,
    withdrawing_consent_and_unsubscribing_take_effect_at_once,
    patch_errors_leave_the_subscriber_unchanged,
    erasure_leaves_only_a_suppression_hash,
    a_data_access_export_holds_everything_stored,
);

async fn a_subscriber_is_created_with_lists_tags_and_proven_consent(app: TestApp) {
    app.create_list("guide-leads").await;
    let response = app
        .post(
            "/api/v1/subscribers",
            &json!({
                "email": " Ada@Example.COM ",
                "phone": "+1 415 555 2671",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "timezone": "Europe/Rome",
                "locale": "it",
                "attributes": {"plan": "pro", "visits": 3},
                "lists": ["guide-leads"],
                "tags": ["vip", " early "],
                "consent": {"email": true, "sms": true, "text": "Send me the guide.", "version": "v1"},
                "attribution": {"source": "instagram", "medium": "social", "campaign": "spring"}
            }),
        )
        .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = expect_json(response, StatusCode::CREATED).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/subscribers/{id}"));
    assert_eq!(created["email"], "Ada@Example.COM");
    assert_eq!(created["phone"], "+14155552671", "phones are stored in E.164");
    assert_eq!(created["timezone"], "Europe/Rome");
    assert_eq!(created["attributes"], json!({"plan": "pro", "visits": 3}));
    assert_eq!(created["status"], "active");
    assert_eq!(created["channels"], json!({"email": "subscribed", "sms": "subscribed", "whatsapp": "none"}));
    assert_eq!(created["attribution"]["source"], "instagram");
    assert_eq!(created["tags"], json!(["early", "vip"]));
    assert_eq!(created["lists"][0]["list"], "guide-leads");
    assert_eq!(created["lists"][0]["status"], "confirmed");

    let fetched = expect_json(app.get(&location).await, StatusCode::OK).await;
    assert_eq!(fetched, created);

    let data = expect_json(app.get(&format!("{location}/export")).await, StatusCode::OK).await;
    let consents = data["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 2);
    for consent in consents {
        assert_eq!(consent["granted"], true);
        assert_eq!(consent["method"], "api");
        assert_eq!(consent["text"], "Send me the guide.");
        assert_eq!(consent["text_version"], "v1");
        assert_eq!(consent["source"], "token:test");
        assert_eq!(consent["text_hash"].as_str().unwrap().len(), 64);
    }
    let timeline = expect_json(app.get(&format!("{location}/timeline")).await, StatusCode::OK).await;
    assert_eq!(timeline["data"][0]["kind"], "subscribed");
    assert_eq!(timeline["data"][0]["data"]["lists"], json!(["guide-leads"]));

    let without_consent = app.create_subscriber(json!({"email": "b@example.com"})).await;
    assert_eq!(without_consent["channels"]["email"], "none", "no consent, no marketing");
}

async fn a_duplicate_address_is_a_conflict_naming_the_existing_subscriber(app: TestApp) {
    let first = app.create_subscriber(json!({"email": "ada@example.com", "phone": "+442071838750"})).await;
    let id = first["id"].clone();
    let problem = expect_problem(
        app.post("/api/v1/subscribers", &json!({"email": "ADA@example.com"})).await,
        StatusCode::CONFLICT,
        "subscriber_exists",
    )
    .await;
    assert_eq!(problem["existing_id"], id);
    assert_eq!(problem["field"], "email");
    let problem = expect_problem(
        app.post("/api/v1/subscribers", &json!({"email": "other@example.com", "phone": "+44 20 7183 8750"})).await,
        StatusCode::CONFLICT,
        "subscriber_exists",
    )
    .await;
    assert_eq!(problem["existing_id"], id);
    assert_eq!(problem["field"], "phone");
    assert_eq!(app.count("subscribers").await, 1);
}

async fn invalid_subscribers_are_refused_and_nothing_is_written(app: TestApp) {
    app.create_list("news").await;
    let cases = [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"phone": "555-1234"}), "phone"),
        (json!({"phone": "+1 555"}), "phone"),
        (json!({"first_name": "Nobody"}), "email"),
        (json!({"email": "a@example.com", "lists": ["no-such-list"]}), "lists"),
        (json!({"email": "a@example.com", "timezone": "Mars/Olympus"}), "timezone"),
        (json!({"email": "a@example.com", "locale": "klingon!"}), "locale"),
        (json!({"email": "a@example.com", "tags": ["a;b"]}), "tags"),
        (json!({"email": "a@example.com", "consent": {"sms": true}}), "consent.sms"),
        (json!({"email": "a@example.com", "first_name": "x".repeat(201)}), "first_name"),
        (json!({"email": "a@example.com", "attributes": {"": 1}}), "attributes"),
        (json!({"email": "a@example.com", "attributes": {"blob": "x".repeat(20_000)}}), "attributes"),
    ];
    for (body, field) in cases {
        let problem = expect_problem(
            app.post("/api/v1/subscribers", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["field"], field, "for {body}: {problem}");
        assert!(problem["errors"].as_array().is_some_and(|e| !e.is_empty()));
    }
    let problem = expect_problem(
        app.post("/api/v1/subscribers", &json!({"email": "bad", "phone": "bad"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "every invalid field is reported at once");
    for table in ["subscribers", "memberships", "subscriber_tags", "consents", "events"] {
        assert_eq!(app.count(table).await, 0, "{table} was written by an invalid request");
    }
}

async fn ids_of(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|s| s["email"].as_str().unwrap_or("").to_owned()).collect()
}

async fn listing_filters_and_pages_stably_under_inserts(app: TestApp) {
    app.create_list("news").await;
    app.create_list("vip").await;
    for (n, lists, tags) in [
        (1, vec!["news"], vec!["instagram"]),
        (2, vec!["news", "vip"], vec![]),
        (3, vec![], vec!["instagram"]),
        (4, vec!["vip"], vec!["tiktok"]),
        (5, vec!["news"], vec![]),
    ] {
        app.create_subscriber(json!({
            "email": format!("person{n}@example.com"),
            "first_name": if n == 3 { "Grace_Hopper" } else { "Someone" },
            "lists": lists,
            "tags": tags,
        }))
        .await;
    }
    let page = expect_json(app.get("/api/v1/subscribers?list=news").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person1@example.com", "person2@example.com", "person5@example.com"]);
    let page = expect_json(app.get("/api/v1/subscribers?tag=instagram").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person1@example.com", "person3@example.com"]);
    let page = expect_json(app.get("/api/v1/subscribers?list=vip&tag=tiktok").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person4@example.com"]);
    let page = expect_json(app.get("/api/v1/subscribers?q=PERSON4").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person4@example.com"]);
    let page = expect_json(app.get("/api/v1/subscribers?q=hopper").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person3@example.com"]);
    let page = expect_json(app.get("/api/v1/subscribers?q=_").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person3@example.com"], "LIKE wildcards in q are literal");

    let person2 = &expect_json(app.get("/api/v1/subscribers?q=person2").await, StatusCode::OK).await["data"][0];
    let path = format!("/api/v1/subscribers/{}", person2["id"].as_str().unwrap());
    expect_json(app.patch(&path, &json!({"status": "unsubscribed"})).await, StatusCode::OK).await;
    let page = expect_json(app.get("/api/v1/subscribers?status=unsubscribed").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person2@example.com"]);
    let page = expect_json(app.get("/api/v1/subscribers?list=news").await, StatusCode::OK).await;
    assert_eq!(ids_of(&page).await, ["person1@example.com", "person5@example.com"], "left lists are not listed");

    // Page through with a limit of 2 while new subscribers arrive: nobody is seen twice or missed.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/subscribers?limit=2&cursor={c}"),
            None => "/api/v1/subscribers?limit=2".to_owned(),
        };
        let page = expect_json(app.get(&path).await, StatusCode::OK).await;
        seen.extend(ids_of(&page).await);
        if added < 2 {
            added += 1;
            app.create_subscriber(json!({"email": format!("late{added}@example.com")})).await;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates while paging: {seen:?}");
    assert_eq!(seen.len(), 7, "everyone, including late arrivals, appears once: {seen:?}");
}

async fn bad_listing_parameters_are_4xx(app: TestApp) {
    let problem = expect_problem(
        app.get("/api/v1/subscribers?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "limit");
    let problem = expect_problem(
        app.get("/api/v1/subscribers?cursor=garbage").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "cursor");
    expect_problem(app.get("/api/v1/subscribers?status=sleepy").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    expect_problem(app.get("/api/v1/subscribers?limit=many").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    expect_problem(app.get("/api/v1/subscribers?colour=red").await, StatusCode::BAD_REQUEST, "invalid_query").await;
    let problem = expect_problem(
        app.get("/api/v1/subscribers?list=nope").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "list");
    expect_problem(app.get("/api/v1/subscribers/not-a-uuid").await, StatusCode::BAD_REQUEST, "invalid_path").await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/v1/subscribers/{unknown}"),
        format!("/api/v1/subscribers/{unknown}/timeline"),
        format!("/api/v1/subscribers/{unknown}/export"),
    ] {
        expect_problem(app.get(&path).await, StatusCode::NOT_FOUND, "subscriber_not_found").await;
    }
    expect_problem(
        app.patch(&format!("/api/v1/subscribers/{unknown}"), &json!({"first_name": "x"})).await,
        StatusCode::NOT_FOUND,
        "subscriber_not_found",
    )
    .await;
    expect_problem(
        app.delete(&format!("/api/v1/subscribers/{unknown}")).await,
        StatusCode::NOT_FOUND,
        "subscriber_not_found",
    )
    .await;
}

fn kinds(timeline: &Value) -> Vec<String> {
    timeline["data"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

async fn a_patch_changes_fields_tags_lists_and_records_each_change(app: TestApp) {
    app.create_list("news").await;
    app.create_list("offers").await;
    let created = app
        .create_subscriber(json!({
            "email": "ada@example.com", "first_name": "Ada", "attributes": {"plan": "free", "old": true},
            "tags": ["a", "b"], "lists": ["news"], "consent": {"email": true}
        }))
        .await;
    let path = format!("/api/v1/subscribers/{}", created["id"].as_str().unwrap());
    let updated = expect_json(
        app.patch(
            &path,
            &json!({
                "first_name": "Augusta", "last_name": "King", "timezone": "America/New_York",
                "phone": "+14155552671",
                "attributes": {"plan": "pro", "old": null},
                "tags": ["b", "c"], "lists": ["offers"]
            }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["first_name"], "Augusta");
    assert_eq!(updated["last_name"], "King");
    assert_eq!(updated["phone"], "+14155552671");
    assert_eq!(updated["attributes"], json!({"plan": "pro"}));
    assert_eq!(updated["tags"], json!(["b", "c"]));
    let lists: Vec<(String, String)> = updated["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["list"].as_str().unwrap().to_owned(), m["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(lists, [("news".into(), "unsubscribed".into()), ("offers".into(), "confirmed".into())]);
    assert_eq!(updated["channels"]["sms"], "none", "adding a phone does not invent SMS consent");

    let timeline = expect_json(app.get(&format!("{path}/timeline")).await, StatusCode::OK).await;
    let kinds = kinds(&timeline);
    for expected in ["tag_added", "tag_removed", "subscribed", "unsubscribed", "updated"] {
        assert!(kinds.contains(&expected.to_owned()), "{expected} missing from {kinds:?}");
    }
    let update = timeline["data"].as_array().unwrap().iter().find(|e| e["kind"] == "updated").unwrap();
    let fields: BTreeSet<&str> =
        update["data"]["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(fields, BTreeSet::from(["first_name", "last_name", "timezone", "phone", "attributes"]));

    let page = expect_json(app.get(&format!("{path}/timeline?limit=2")).await, StatusCode::OK).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = expect_json(app.get(&format!("{path}/timeline?limit=100&cursor={next}")).await, StatusCode::OK).await;
    assert_eq!(rest["data"].as_array().unwrap().len() + 2, timeline["data"].as_array().unwrap().len());

    let unchanged = expect_json(app.patch(&path, &json!({})).await, StatusCode::OK).await;
    assert_eq!(unchanged["first_name"], "Augusta");
}

async fn withdrawing_consent_and_unsubscribing_take_effect_at_once(app: TestApp) {
    app.create_list("news").await;
    let created = app
        .create_subscriber(json!({
            "email": "ada@example.com", "phone": "+14155552671", "lists": ["news"],
            "consent": {"email": true, "sms": true}
        }))
        .await;
    let path = format!("/api/v1/subscribers/{}", created["id"].as_str().unwrap());
    let after = expect_json(app.patch(&path, &json!({"consent": {"sms": false}})).await, StatusCode::OK).await;
    assert_eq!(after["channels"], json!({"email": "subscribed", "sms": "unsubscribed", "whatsapp": "none"}));
    assert_eq!(after["status"], "active");

    let after = expect_json(app.patch(&path, &json!({"status": "unsubscribed"})).await, StatusCode::OK).await;
    assert_eq!(after["status"], "unsubscribed");
    assert_eq!(after["channels"], json!({"email": "unsubscribed", "sms": "unsubscribed", "whatsapp": "none"}));
    assert_eq!(after["lists"][0]["status"], "unsubscribed");
    assert!(after["lists"][0]["unsubscribed_at"].is_string());

    let data = expect_json(app.get(&format!("{path}/export")).await, StatusCode::OK).await;
    let withdrawals: Vec<&Value> =
        data["consents"].as_array().unwrap().iter().filter(|c| c["granted"] == false).collect();
    assert_eq!(withdrawals.len(), 2, "each withdrawal is a consent record: {data}");

    let problem = expect_problem(
        app.patch(&path, &json!({"status": "active"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "status");
    let back =
        expect_json(app.patch(&path, &json!({"consent": {"email": true, "text": "Yes, again"}})).await, StatusCode::OK)
            .await;
    assert_eq!(back["status"], "active");
    assert_eq!(back["channels"]["email"], "subscribed");
}

async fn patch_errors_leave_the_subscriber_unchanged(app: TestApp) {
    let other = app.create_subscriber(json!({"email": "taken@example.com"})).await;
    let created = app.create_subscriber(json!({"email": "ada@example.com", "first_name": "Ada"})).await;
    let path = format!("/api/v1/subscribers/{}", created["id"].as_str().unwrap());
    let problem = expect_problem(
        app.patch(&path, &json!({"email": "TAKEN@example.com", "first_name": "Changed"})).await,
        StatusCode::CONFLICT,
        "subscriber_exists",
    )
    .await;
    assert_eq!(problem["existing_id"], other["id"]);
    expect_problem(
        app.patch(&path, &json!({"email": "nope", "first_name": "Changed"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let problem = expect_problem(
        app.patch(&path, &json!({"email": null})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "email");
    expect_problem(
        app.patch(&path, &json!({"lists": ["missing"], "first_name": "Changed"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_problem(
        app.patch(&path, &json!({"consent": {"sms": true}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let now = expect_json(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(now, created, "failed patches changed nothing");
}

async fn erasure_leaves_only_a_suppression_hash(app: TestApp) {
    app.create_list("news").await;
    let created = app
        .create_subscriber(json!({
            "email": "Erase.Me@example.com", "phone": "+14155552671", "first_name": "Eve",
            "lists": ["news"], "tags": ["x"], "consent": {"email": true, "text": "ok"}
        }))
        .await;
    let keep = app.create_subscriber(json!({"email": "keep@example.com", "tags": ["x"]})).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/subscribers/{id}");
    assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
    expect_problem(app.get(&path).await, StatusCode::NOT_FOUND, "subscriber_not_found").await;
    expect_problem(app.get(&format!("{path}/timeline")).await, StatusCode::NOT_FOUND, "subscriber_not_found").await;

    assert_eq!(app.count("subscribers").await, 1);
    assert_eq!(app.count("memberships").await, 0);
    assert_eq!(app.count("subscriber_tags").await, 1);
    assert_eq!(app.count("consents").await, 0);
    assert_eq!(app.count("suppressions").await, 2, "one hash per address");

    // Nothing personal remains anywhere: dump every text column of every table and look.
    let export = app.get("/api/v1/exports/subscribers.csv").await.text().await.unwrap();
    assert!(!export.to_lowercase().contains("erase.me"));
    {
        use ownlist::store::entities::{event, suppression};
        use sea_orm::EntityTrait;
        let events = event::Entity::find().all(app.db.conn()).await.unwrap();
        let erased: Vec<_> = events.iter().filter(|e| e.subscriber_id.to_string() == id).collect();
        assert_eq!(erased.len(), 1, "only the erased event remains for this id");
        assert_eq!(erased[0].kind, "erased");
        let text = serde_json::to_string(&erased[0].data).unwrap();
        assert!(!text.contains("Eve") && !text.to_lowercase().contains("erase.me"), "{text}");
        for s in suppression::Entity::find().all(app.db.conn()).await.unwrap() {
            assert_eq!(s.hash.len(), 64);
            assert!(!s.hash.contains('@'));
        }
    }

    let problem = expect_problem(
        app.post("/api/v1/subscribers", &json!({"email": "erase.me@EXAMPLE.com"})).await,
        StatusCode::CONFLICT,
        "address_suppressed",
    )
    .await;
    assert_eq!(problem["field"], "email");
    expect_problem(
        app.post("/api/v1/subscribers", &json!({"phone": "+1 415 555 2671"})).await,
        StatusCode::CONFLICT,
        "address_suppressed",
    )
    .await;
    let keep_path = format!("/api/v1/subscribers/{}", keep["id"].as_str().unwrap());
    expect_problem(
        app.patch(&keep_path, &json!({"email": "erase.me@example.com"})).await,
        StatusCode::CONFLICT,
        "address_suppressed",
    )
    .await;
    expect_problem(app.delete(&path).await, StatusCode::NOT_FOUND, "subscriber_not_found").await;
}

async fn a_data_access_export_holds_everything_stored(app: TestApp) {
    app.create_list("news").await;
    let created = app
        .create_subscriber(json!({
            "email": "ada@example.com", "lists": ["news"], "tags": ["t"], "attributes": {"k": "v"},
            "consent": {"email": true, "text": "Tips, monthly."}
        }))
        .await;
    let path = format!("/api/v1/subscribers/{}", created["id"].as_str().unwrap());
    app.patch(&path, &json!({"tags": ["t", "u"]})).await;
    let response = app.get(&format!("{path}/export")).await;
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let data = expect_json(response, StatusCode::OK).await;
    assert_eq!(data["subscriber"]["email"], "ada@example.com");
    assert_eq!(data["subscriber"]["tags"], json!(["t", "u"]));
    assert_eq!(data["subscriber"]["attributes"], json!({"k": "v"}));
    assert_eq!(data["consents"][0]["text"], "Tips, monthly.");
    let kinds: Vec<&str> = data["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["subscribed", "tag_added"], "events oldest first");
    assert!(data["exported_at"].is_string());
}
