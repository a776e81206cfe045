use ownlist::core::clock::Clock;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, expect_json, expect_problem, on_both_databases};

on_both_databases!(every_bad_token_gets_the_same_401, health_and_openapi_need_no_token);

async fn every_bad_token_gets_the_same_401(app: TestApp) {
    let url = app.url("/api/v1/lists");
    let missing = app.client.get(&url).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let missing = expect_problem(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = app.client.get(&url).bearer_auth("ol_not-a-real-token").send().await.unwrap();
    let wrong = expect_problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let garbage = app.client.get(&url).header("authorization", "Basic abc").send().await.unwrap();
    let garbage = expect_problem(garbage, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let token = ownlist::tokens::create(&app.db, app.clock.now(), "short-lived").await.unwrap();
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
