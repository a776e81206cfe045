use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, expect_json, expect_problem, on_both_databases};

on_both_databases!(
    lists_are_created_read_changed_and_deleted,
    invalid_lists_are_refused_with_the_field_named,
    malformed_bodies_get_clear_4xx,
);

async fn lists_are_created_read_changed_and_deleted(app: TestApp) {
    let response = app
        .post("/api/v1/lists", &json!({"slug": "guide-leads", "name": "Guide leads", "description": "From Instagram"}))
        .await;
    assert_eq!(response.headers()["location"], "/api/v1/lists/guide-leads");
    let created = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(created["slug"], "guide-leads");
    assert_eq!(created["double_opt_in"], true, "double opt-in is the safe default");
    assert_eq!(created["members"]["confirmed"], 0);

    app.create_subscriber(json!({"email": "a@example.com", "lists": ["guide-leads"]})).await;
    let one = expect_json(app.get("/api/v1/lists/guide-leads").await, StatusCode::OK).await;
    assert_eq!(one["members"]["confirmed"], 1);

    let changed = expect_json(
        app.patch("/api/v1/lists/guide-leads", &json!({"name": "Guide", "description": null, "double_opt_in": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["name"], "Guide");
    assert_eq!(changed["description"], serde_json::Value::Null);
    assert_eq!(changed["double_opt_in"], false);

    let renamed =
        expect_json(app.patch("/api/v1/lists/guide-leads", &json!({"slug": "guide"})).await, StatusCode::OK).await;
    assert_eq!(renamed["slug"], "guide");
    expect_problem(app.get("/api/v1/lists/guide-leads").await, StatusCode::NOT_FOUND, "list_not_found").await;

    app.create_list("news").await;
    let all = expect_json(app.get("/api/v1/lists").await, StatusCode::OK).await;
    let slugs: Vec<&str> = all["data"].as_array().unwrap().iter().map(|l| l["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["guide", "news"]);

    let response = app.delete("/api/v1/lists/guide").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_problem(app.get("/api/v1/lists/guide").await, StatusCode::NOT_FOUND, "list_not_found").await;
    expect_problem(app.delete("/api/v1/lists/guide").await, StatusCode::NOT_FOUND, "list_not_found").await;
    assert_eq!(app.count("memberships").await, 0, "deleting a list deletes its memberships");
    assert_eq!(app.count("subscribers").await, 1, "…but not its subscribers");
}

async fn invalid_lists_are_refused_with_the_field_named(app: TestApp) {
    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "Guide Leads", "name": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "slug");

    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "ok", "name": "  "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "name");

    app.create_list("taken").await;
    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "taken", "name": "again"})).await,
        StatusCode::CONFLICT,
        "list_exists",
    )
    .await;
    assert_eq!(problem["field"], "slug");
    app.create_list("other").await;
    expect_problem(
        app.patch("/api/v1/lists/other", &json!({"slug": "taken"})).await,
        StatusCode::CONFLICT,
        "list_exists",
    )
    .await;
    assert_eq!(app.count("lists").await, 2);
}

async fn malformed_bodies_get_clear_4xx(app: TestApp) {
    let response = app
        .request(reqwest::Method::POST, "/api/v1/lists")
        .header("content-type", "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;

    let response = app.request(reqwest::Method::POST, "/api/v1/lists").body("slug=x").send().await.unwrap();
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "x", "name": "x", "colour": "red"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");

    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "x", "name": 7})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(problem["field"], "name");

    let huge = "x".repeat(2 * 1024 * 1024);
    let response = app.post("/api/v1/lists", &json!({"slug": "x", "name": huge})).await;
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    expect_problem(app.get("/api/v1/nowhere").await, StatusCode::NOT_FOUND, "route_not_found").await;
    let response = app.request(reqwest::Method::PUT, "/api/v1/lists").send().await.unwrap();
    expect_problem(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_eq!(app.count("lists").await, 0, "nothing was written by a bad request");
}
