//! Workflows over HTTP: what runs, how many people are where, pause/resume/reload, and events.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::audience::Actor;
use crate::audience::events::{self, NewEvent};
use crate::audience::subscribers::EventView;
use crate::config::Config;
use crate::core::clock::SharedClock;
use crate::core::error::{Error, FieldError};
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::{ApiResult, Problem};
use crate::web::extract::{ApiJson, ApiPath};
use crate::workflow::engine::Engine;
use crate::workflow::loader::Reloaded;
use crate::workflow::registry::{self, Counts, Status};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/workflows", get(all))
        .route("/workflows/reload", post(reload))
        .route("/workflows/{id}", get(one))
        .route("/workflows/{id}/pause", post(pause))
        .route("/workflows/{id}/resume", post(resume))
        .route("/events", post(record_event))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkflowView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: Status,
    pub version: i32,
    pub enrollments: Counts,
    /// The checked definition (trigger, steps, …) of the current version.
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkflowPage {
    pub data: Vec<WorkflowView>,
    /// What the last load of the workflow folder found wrong (each file named changed nothing:
    /// its workflow runs its last valid version); empty when every file is valid.
    pub problems: Vec<crate::workflow::loader::FileProblem>,
}

async fn view(state: &AppState, id: &str) -> ApiResult<WorkflowView> {
    let current = state.engine.registry().current();
    let found = current.get(id).ok_or(Error::NotFound { what: "workflow" })?;
    let workflow = &found.program.workflow;
    Ok(WorkflowView {
        id: id.to_owned(),
        name: workflow.name.clone(),
        description: workflow.description.clone(),
        status: found.status,
        version: found.version,
        enrollments: registry::counts(&state.db, id).await?,
        definition: serde_json::to_value(workflow).map_err(|e| Error::Other(e.into()))?,
    })
}

/// Every workflow with its status, version and where its enrollments are.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", security(("bearer" = [])), responses((status = 200, body = WorkflowPage)))]
pub async fn all(State(state): State<AppState>) -> ApiResult<Json<WorkflowPage>> {
    let ids: Vec<String> = state.engine.registry().current().into_keys().collect();
    let mut data = Vec::with_capacity(ids.len());
    for id in ids {
        data.push(view(&state, &id).await?);
    }
    Ok(Json(WorkflowPage { data, problems: state.catalog.problems() }))
}

/// One workflow.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = WorkflowView),
    (status = 404, body = Problem),
))]
pub async fn one(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<WorkflowView>> {
    Ok(Json(view(&state, &id).await?))
}

/// Holds everyone where they are until resumed.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/pause", tag = "workflows", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = WorkflowView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn pause(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<WorkflowView>> {
    state.engine.registry().set_paused(state.clock.now(), &id, true).await?;
    Ok(Json(view(&state, &id).await?))
}

/// Lets a paused workflow run again.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/resume", tag = "workflows", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = WorkflowView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn resume(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<WorkflowView>> {
    state.engine.registry().set_paused(state.clock.now(), &id, false).await?;
    Ok(Json(view(&state, &id).await?))
}

/// Re-reads the workflow files: the valid ones are loaded; an invalid file changes nothing (422,
/// every problem listed) and its last valid version keeps running.
#[utoipa::path(post, path = "/api/v1/workflows/reload", tag = "workflows", security(("bearer" = [])), responses(
    (status = 200, body = Reloaded),
    (status = 422, description = "Some files are invalid: they changed nothing (their last valid version keeps running) while the valid ones were loaded; `errors` has one entry per problem, `field` is file:line:column", body = Problem),
))]
pub async fn reload(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(config): State<Arc<Config>>,
    State(engine): State<Arc<Engine>>,
) -> ApiResult<Json<Reloaded>> {
    let reloaded = crate::workflow::loader::reload(&db, &config.load_settings(), &engine, clock.now()).await?;
    if reloaded.problems.is_empty() {
        return Ok(Json(reloaded));
    }
    Err(Error::Invalid(reloaded.problems.iter().map(|p| FieldError::new(p.at.clone(), p.message.clone())).collect())
        .into())
}

/// Records something a subscriber did (by id, email or phone); may start or wake workflows.
#[utoipa::path(post, path = "/api/v1/events", tag = "workflows", request_body = NewEvent, security(("bearer" = [])), responses(
    (status = 201, body = EventView),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn record_event(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    Extension(actor): Extension<Actor>,
    ApiJson(input): ApiJson<NewEvent>,
) -> ApiResult<impl IntoResponse> {
    let event = events::record(&db, clock.now(), &actor, input).await?;
    Ok((StatusCode::CREATED, Json(event)))
}
