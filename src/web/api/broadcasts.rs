//! Broadcasts over HTTP: create one, follow its progress, cancel it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use uuid::Uuid;

use crate::web::AppState;
use crate::web::error::{ApiResult, Problem};
use crate::web::extract::{ApiJson, ApiPath};
use crate::workflow::engine::Engine;
use crate::workflow::engine::{BroadcastView, NewBroadcast};

/// How many broadcasts `GET /broadcasts` returns (the latest).
const PAGE: u64 = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/broadcasts", get(all).post(create))
        .route("/broadcasts/{id}", get(one))
        .route("/broadcasts/{id}/report", get(report))
        .route("/broadcasts/{id}/cancel", post(cancel))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BroadcastPage {
    pub data: Vec<BroadcastView>,
}

/// Sends a one-off message to a list (from `send_at`, default now), through the outbox.
#[utoipa::path(post, path = "/api/v1/broadcasts", tag = "broadcasts", request_body = NewBroadcast, security(("bearer" = [])), responses(
    (status = 201, body = BroadcastView),
    (status = 422, description = "Invalid fields (an unknown list, a template that does not render, …)", body = Problem),
))]
pub async fn create(
    State(engine): State<Arc<Engine>>,
    ApiJson(input): ApiJson<NewBroadcast>,
) -> ApiResult<impl IntoResponse> {
    let created = engine.create_broadcast(input).await?;
    let location = format!("/api/v1/broadcasts/{}", created.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)))
}

/// The latest broadcasts (up to 100), newest first, each with its progress.
#[utoipa::path(get, path = "/api/v1/broadcasts", tag = "broadcasts", security(("bearer" = [])), responses((status = 200, body = BroadcastPage)))]
pub async fn all(State(engine): State<Arc<Engine>>) -> ApiResult<Json<BroadcastPage>> {
    Ok(Json(BroadcastPage { data: engine.broadcasts(PAGE).await? }))
}

/// One broadcast: status and messages queued, sent and failed per channel.
#[utoipa::path(get, path = "/api/v1/broadcasts/{id}", tag = "broadcasts", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = BroadcastView),
    (status = 404, body = Problem),
))]
pub async fn one(State(engine): State<Arc<Engine>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<BroadcastView>> {
    Ok(Json(engine.broadcast(id).await?))
}

/// A broadcast with its report.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BroadcastReport {
    pub broadcast: BroadcastView,
    #[serde(flatten)]
    pub report: crate::stats::broadcasts::Report,
}

/// A broadcast's report: sent, delivered, failed, bounced, complained, opened, clicked (and
/// every click), unsubscribed, with rates, per link and day by day (UTC).
#[utoipa::path(get, path = "/api/v1/broadcasts/{id}/report", tag = "broadcasts", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = BroadcastReport),
    (status = 404, body = Problem),
))]
pub async fn report(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<BroadcastReport>> {
    let broadcast = state.engine.broadcast(id).await?;
    let report = crate::stats::broadcasts::report(&state.db, id).await?;
    Ok(Json(BroadcastReport { broadcast, report }))
}

/// Stops a broadcast: no further messages are written and unsent ones are cancelled.
#[utoipa::path(post, path = "/api/v1/broadcasts/{id}/cancel", tag = "broadcasts", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = BroadcastView),
    (status = 404, body = Problem),
))]
pub async fn cancel(State(engine): State<Arc<Engine>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<BroadcastView>> {
    Ok(Json(engine.cancel_broadcast(id).await?))
}
