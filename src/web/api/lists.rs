//! Lists over HTTP: create, read, rename, delete (refused while a page or workflow uses one).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::audience::lists::{self, ListPatch, ListView, NewList};
use crate::core::clock::SharedClock;
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::{ApiResult, Problem};
use crate::web::extract::{ApiJson, ApiPath};

pub fn routes() -> Router<AppState> {
    Router::new().route("/lists", get(all).post(create)).route("/lists/{slug}", get(one).patch(update).delete(remove))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ListPage {
    pub data: Vec<ListView>,
}

/// Creates a list.
#[utoipa::path(post, path = "/api/v1/lists", tag = "lists", request_body = NewList, security(("bearer" = [])), responses(
    (status = 201, body = ListView),
    (status = 409, description = "The slug is taken", body = Problem),
    (status = 422, description = "Invalid fields", body = Problem),
))]
pub async fn create(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    ApiJson(input): ApiJson<NewList>,
) -> ApiResult<impl IntoResponse> {
    let list = lists::create(&db, clock.now(), input).await?;
    let location = format!("/api/v1/lists/{}", list.slug);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(list)))
}

/// Lists every list with its member counts and its growth over the last 30 days.
#[utoipa::path(get, path = "/api/v1/lists", tag = "lists", security(("bearer" = [])), responses((status = 200, body = ListPage)))]
pub async fn all(State(db): State<Db>, State(clock): State<SharedClock>) -> ApiResult<Json<ListPage>> {
    Ok(Json(ListPage { data: lists::all_with_growth(&db, clock.now()).await? }))
}

/// One list.
#[utoipa::path(get, path = "/api/v1/lists/{slug}", tag = "lists", security(("bearer" = [])), params(("slug" = String, Path)), responses(
    (status = 200, body = ListView),
    (status = 404, body = Problem),
))]
pub async fn one(State(db): State<Db>, ApiPath(slug): ApiPath<String>) -> ApiResult<Json<ListView>> {
    Ok(Json(lists::get(&db, &slug).await?))
}

/// Changes a list's slug, name, description or opt-in rule.
#[utoipa::path(patch, path = "/api/v1/lists/{slug}", tag = "lists", security(("bearer" = [])), params(("slug" = String, Path)), request_body = ListPatch, responses(
    (status = 200, body = ListView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn update(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(patch): ApiJson<ListPatch>,
) -> ApiResult<Json<ListView>> {
    Ok(Json(lists::update(&db, clock.now(), &slug, patch).await?))
}

/// Deletes a list and its memberships (the subscribers stay); refused while a landing page or a
/// workflow uses it.
#[utoipa::path(delete, path = "/api/v1/lists/{slug}", tag = "lists", security(("bearer" = [])), params(("slug" = String, Path)), responses(
    (status = 204),
    (status = 404, body = Problem),
    (status = 409, description = "`list_in_use`: pages or workflows use it (named in `detail`)", body = Problem),
))]
pub async fn remove(State(state): State<AppState>, ApiPath(slug): ApiPath<String>) -> ApiResult<StatusCode> {
    let users = users_of(&state, &slug);
    if !users.is_empty() {
        return Err(crate::core::error::Error::Conflict {
            code: "list_in_use",
            detail: format!("list '{slug}' is used by {}: change those files first, then delete it", users.join(", ")),
            existing_id: None,
            field: None,
        }
        .into());
    }
    lists::delete(&state.db, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The landing pages and workflows in force that name the list `slug`.
pub(crate) fn users_of(state: &AppState, slug: &str) -> Vec<String> {
    let pages =
        state.catalog.pages().all().into_iter().filter(|p| p.list == slug).map(|p| format!("page '{}'", p.slug));
    let workflows = state
        .engine
        .registry()
        .current()
        .into_iter()
        .filter(|(_, w)| w.status != crate::workflow::registry::Status::Removed)
        .filter(|(_, w)| w.program.workflow.lists().contains(slug))
        .map(|(id, _)| format!("workflow '{id}'"));
    pages.chain(workflows).collect()
}
