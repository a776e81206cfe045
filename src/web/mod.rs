//! The web layer (axum): the admin API under `/api/v1` ([`api`]), the public side ([`public`]:
//! landing pages, links, webhooks, health, metrics) and the dashboard ([`admin`]).
//!
//! Handlers are thin: they extract, call [`crate::audience`], and shape the response. Status
//! codes for domain errors are decided in [`error`] alone.

pub mod admin;
mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
mod public;
pub mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::core::clock::SharedClock;
use crate::store::Db;
use error::ApiError;

/// What handlers share. Cheap to clone. A handler takes only the parts it needs (`State<Db>`,
/// `State<SharedClock>`, `State<Arc<Config>>`, `State<Arc<Catalog>>`, `State<Signer>`, …); the
/// rate limits are taken with the whole state.
#[derive(Clone, axum::extract::FromRef)]
pub struct AppState {
    pub db: Db,
    pub clock: SharedClock,
    pub config: Arc<Config>,
    pub engine: Arc<crate::workflow::engine::Engine>,
    /// The templates and landing pages in force (the engine's).
    pub catalog: Arc<crate::workflow::catalog::Catalog>,
    /// Signs and checks public links (confirmation, preferences, form tokens).
    pub signer: crate::core::links::Signer,
    /// Landing-page signups per client address (per process).
    #[from_ref(skip)]
    pub signup_limit: Arc<crate::pages::guard::RateLimit>,
    /// Failed dashboard logins per client address (per process).
    #[from_ref(skip)]
    pub login_limit: Arc<crate::pages::guard::RateLimit>,
}

/// The largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .merge(api::lists::routes())
        .merge(api::subscribers::routes())
        .merge(api::transfer::routes(state.config.max_import_bytes))
        .merge(api::workflows::routes())
        .merge(api::broadcasts::routes())
        .merge(api::audit::routes())
        .merge(api::stats::routes())
        .merge(api::reach::routes())
        .merge(api::tokens::routes())
        // Layers wrap what is above them: authentication runs first, then the audit log, then
        // the role check (so a refusal is logged), all before a body is read.
        .route_layer(middleware::from_fn(auth::require_role))
        .route_layer(middleware::from_fn_with_state(state.clone(), api::audit::record))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let api = Router::new().merge(admin).merge(openapi::routes());
    Router::new()
        .nest("/api/v1", api)
        .merge(public::health::routes())
        .merge(public::metrics::routes())
        .merge(public::unsubscribe::routes())
        .merge(public::pages::routes())
        .merge(public::preferences::routes())
        .merge(public::add_channel::routes())
        .merge(public::tracking::routes())
        .merge(public::bounces::routes())
        .merge(public::sms::routes())
        .merge(admin::routes(state.clone()))
        // After routing, so requests are labelled by their route, never by their raw path.
        .route_layer(middleware::from_fn(public::metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "something went wrong on our side; it has been logged",
            ))
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// No route here: a browser asking for a page gets the "page not found" page in its language,
/// anything else (the API, a script) the JSON problem.
async fn not_found(
    axum::extract::State(face): axum::extract::State<public::face::Face>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let wants_page = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_page && !uri.path().starts_with("/api/") {
        return face.not_found(&face.language(&[], &headers), "page");
    }
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such endpoint; see /api/v1/openapi.json")
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not accept that method")
}
