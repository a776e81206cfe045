use ownlist::core::clock::Clock;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, expect_json, expect_problem, on_both_databases};

on_both_databases!(
    every_bad_token_gets_the_same_401,
    health_and_openapi_need_no_token,
    a_viewer_reads_an_editor_changes_and_only_an_admin_manages_tokens
);

async fn every_bad_token_gets_the_same_401(app: TestApp) {
    let url = app.url("/api/v1/lists");
    let missing = app.client.get(&url).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let missing = expect_problem(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = app.client.get(&url).bearer_auth("ol_not-a-real-token").send().await.unwrap();
    let wrong = expect_problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let garbage = app.client.get(&url).header("authorization", "Basic abc").send().await.unwrap();
    let garbage = expect_problem(garbage, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let token =
        ownlist::tokens::create(&app.db, app.clock.now(), "short-lived", ownlist::tokens::Role::Admin).await.unwrap();
    expect_json(app.client.get(&url).bearer_auth(&token).send().await.unwrap(), StatusCode::OK).await;
    ownlist::tokens::revoke(&app.db, "short-lived").await.unwrap();
    let revoked = app.client.get(&url).bearer_auth(&token).send().await.unwrap();
    let revoked = expect_problem(revoked, StatusCode::UNAUTHORIZED, "unauthorized").await;

    assert_eq!(missing, wrong);
    assert_eq!(wrong, garbage);
    assert_eq!(garbage, revoked, "a revoked token is indistinguishable from an unknown one");

    let stored: Vec<String> = {
        use sea_orm::EntityTrait;
        ownlist::store::entities::api_token::Entity::find()
            .all(app.db.conn())
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.token_hash)
            .collect()
    };
    assert!(!stored.iter().any(|h| h.contains(&app.token)), "tokens are stored only as hashes");
}

async fn health_and_openapi_need_no_token(app: TestApp) {
    let health = expect_json(app.client.get(app.url("/healthz")).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    let doc: Value =
        expect_json(app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap(), StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/lists",
        "/api/v1/lists/{slug}",
        "/api/v1/subscribers",
        "/api/v1/subscribers/{id}",
        "/api/v1/subscribers/{id}/timeline",
        "/api/v1/subscribers/{id}/export",
        "/api/v1/imports",
        "/api/v1/exports/subscribers.csv",
        "/api/v1/events",
        "/api/v1/workflows",
        "/api/v1/workflows/{id}",
        "/api/v1/workflows/{id}/pause",
        "/api/v1/workflows/{id}/resume",
        "/api/v1/workflows/reload",
        "/healthz",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_bootstrap_admin_token_works_alongside_stored_ones() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.admin_token = Some("bootstrap-token-0123456789".into()))
        .await
        .unwrap();
    let response =
        app.client.get(app.url("/api/v1/lists")).bearer_auth("bootstrap-token-0123456789").send().await.unwrap();
    expect_json(response, StatusCode::OK).await;
    let response =
        app.client.get(app.url("/api/v1/lists")).bearer_auth("bootstrap-token-012345678").send().await.unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    expect_json(app.get("/api/v1/lists").await, StatusCode::OK).await;
}

/// Tokens made through the API with each role: a viewer reads and is refused every change with a
/// 403 naming the role needed (before its body is read, and logged); an editor changes the
/// audience but cannot manage tokens or read the audit log; an admin revokes them.
async fn a_viewer_reads_an_editor_changes_and_only_an_admin_manages_tokens(app: TestApp) {
    let make = |name: &'static str, role: &'static str| {
        let app = &app;
        async move {
            let created = app.post("/api/v1/tokens", &serde_json::json!({"name": name, "role": role})).await;
            let created = expect_json(created, StatusCode::CREATED).await;
            assert_eq!(created["role"], role);
            created["token"].as_str().unwrap().to_owned()
        }
    };
    let viewer = make("reader", "viewer").await;
    let editor = make("marketer", "editor").await;
    let as_ = |token: &str, method: reqwest::Method, path: &str| {
        app.client.request(method, app.url(path)).bearer_auth(token.to_owned())
    };

    expect_json(as_(&viewer, reqwest::Method::GET, "/api/v1/subscribers").send().await.unwrap(), StatusCode::OK).await;
    expect_json(as_(&viewer, reqwest::Method::GET, "/api/v1/broadcasts").send().await.unwrap(), StatusCode::OK).await;
    let refused = as_(&viewer, reqwest::Method::POST, "/api/v1/lists")
        .json(&serde_json::json!({"slug": "news", "name": "News"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(refused, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("needs the editor role"), "{problem}");
    // Refused before the body is read: even a body too large for any route gets the 403.
    let huge = as_(&viewer, reqwest::Method::POST, "/api/v1/imports")
        .header("content-type", "text/csv")
        .body("email\n".repeat(3_000_000))
        .send()
        .await
        .unwrap();
    expect_problem(huge, StatusCode::FORBIDDEN, "forbidden").await;
    let export = as_(&viewer, reqwest::Method::GET, "/api/v1/exports/subscribers.csv").send().await.unwrap();
    expect_problem(export, StatusCode::FORBIDDEN, "forbidden").await;
    let audit = as_(&viewer, reqwest::Method::GET, "/api/v1/audit").send().await.unwrap();
    let problem = expect_problem(audit, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("needs the admin role"), "{problem}");

    let created = as_(&editor, reqwest::Method::POST, "/api/v1/lists")
        .json(&serde_json::json!({"slug": "news", "name": "News"}))
        .send()
        .await
        .unwrap();
    expect_json(created, StatusCode::CREATED).await;
    let export = as_(&editor, reqwest::Method::GET, "/api/v1/exports/subscribers.csv").send().await.unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let promote = as_(&editor, reqwest::Method::POST, "/api/v1/tokens")
        .json(&serde_json::json!({"name": "mine", "role": "admin"}))
        .send()
        .await
        .unwrap();
    expect_problem(promote, StatusCode::FORBIDDEN, "forbidden").await;
    let tokens =
        expect_json(as_(&editor, reqwest::Method::GET, "/api/v1/tokens").send().await.unwrap(), StatusCode::FORBIDDEN)
            .await;
    assert_eq!(tokens["code"], "forbidden");

    // The admin sees who did what, refusals included, and every token's role (never a secret).
    let log = expect_json(app.get("/api/v1/audit").await, StatusCode::OK).await;
    let entries = log["data"].as_array().unwrap();
    let refusal = entries.iter().find(|e| e["actor"] == "token:reader" && e["path"] == "/api/v1/lists").unwrap();
    assert_eq!(refusal["status"], 403, "{refusal}");
    assert!(
        entries.iter().any(|e| e["actor"] == "token:marketer" && e["path"] == "/api/v1/lists" && e["status"] == 201)
    );
    let listed = expect_json(app.get("/api/v1/tokens").await, StatusCode::OK).await;
    let roles: Vec<(String, String)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["role"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        roles.contains(&("reader".into(), "viewer".into())) && roles.contains(&("test".into(), "admin".into())),
        "{roles:?}"
    );
    assert!(!listed.to_string().contains(&viewer), "secrets are never listed");
    let bad_role = app.post("/api/v1/tokens", &serde_json::json!({"name": "x", "role": "owner"})).await;
    assert_eq!(bad_role.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let revoked = app.delete("/api/v1/tokens/reader").await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let gone = as_(&viewer, reqwest::Method::GET, "/api/v1/subscribers").send().await.unwrap();
    expect_problem(gone, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
