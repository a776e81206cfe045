//! Subscribers over HTTP: create, find, read, change, unsubscribe, erase, and their timeline.

use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use uuid::Uuid;

use crate::audience::Actor;
use crate::audience::subscribers::{
    self, EventView, NewSubscriber, Page, PageRequest, PersonalData, SubscriberFilter, SubscriberPatch, SubscriberView,
};
use crate::core::clock::SharedClock;
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::{ApiResult, Problem};
use crate::web::extract::{ApiJson, ApiPath, ApiQuery};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/subscribers", get(list).post(create))
        .route("/subscribers/{id}", get(one).patch(update).delete(erase))
        .route("/subscribers/{id}/timeline", get(timeline))
        .route("/subscribers/{id}/export", get(export))
}

/// Adds a subscriber with lists, tags and consent.
#[utoipa::path(post, path = "/api/v1/subscribers", tag = "subscribers", request_body = NewSubscriber, security(("bearer" = [])), responses(
    (status = 201, body = SubscriberView),
    (status = 409, description = "The address belongs to a subscriber (`existing_id`) or was erased", body = Problem),
    (status = 422, description = "Invalid fields", body = Problem),
))]
pub async fn create(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    Extension(actor): Extension<Actor>,
    ApiJson(input): ApiJson<NewSubscriber>,
) -> ApiResult<impl IntoResponse> {
    let created = subscribers::create(&db, clock.now(), &actor, input).await?;
    let location = format!("/api/v1/subscribers/{}", created.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)))
}

/// Lists subscribers, oldest first, with cursor pagination.
#[utoipa::path(get, path = "/api/v1/subscribers", tag = "subscribers", params(SubscriberFilter), security(("bearer" = [])), responses(
    (status = 200, body = Page<SubscriberView>),
    (status = 400, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn list(
    State(db): State<Db>,
    ApiQuery(filter): ApiQuery<SubscriberFilter>,
) -> ApiResult<Json<Page<SubscriberView>>> {
    Ok(Json(subscribers::list(&db, filter).await?))
}

/// One subscriber.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 200, body = SubscriberView),
    (status = 404, body = Problem),
))]
pub async fn one(State(db): State<Db>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<SubscriberView>> {
    Ok(Json(subscribers::get(&db, id).await?))
}

/// Changes a subscriber: profile fields, attributes (merged), tags and lists (full sets), consent.
#[utoipa::path(patch, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = Uuid, Path)), request_body = SubscriberPatch, security(("bearer" = [])), responses(
    (status = 200, body = SubscriberView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn update(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<SubscriberPatch>,
) -> ApiResult<Json<SubscriberView>> {
    Ok(Json(subscribers::update(&db, clock.now(), &actor, id, patch).await?))
}

/// Erases a subscriber's personal data (GDPR); only a hash of each address remains, as a suppression.
#[utoipa::path(delete, path = "/api/v1/subscribers/{id}", tag = "subscribers", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 204),
    (status = 404, body = Problem),
))]
pub async fn erase(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    subscribers::erase(&db, clock.now(), &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What happened to this subscriber, newest first.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/timeline", tag = "subscribers", params(("id" = Uuid, Path), PageRequest), security(("bearer" = [])), responses(
    (status = 200, body = Page<EventView>),
    (status = 404, body = Problem),
))]
pub async fn timeline(
    State(db): State<Db>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<Page<EventView>>> {
    Ok(Json(subscribers::timeline(&db, id, page).await?))
}

/// Everything stored about this subscriber (a data-access request).
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/export", tag = "subscribers", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 200, body = PersonalData),
    (status = 404, body = Problem),
))]
pub async fn export(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<impl IntoResponse> {
    let data = subscribers::personal_data(&db, clock.now(), id).await?;
    let disposition = format!("attachment; filename=\"subscriber-{id}.json\"");
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(data)))
}
