//! The OpenAPI 3 document of the admin API, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ownlist admin API", description = "Subscribers, lists, consent, import and export, workflows and broadcasts. Every error is application/problem+json with a stable `code`."),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::audit::list,
        super::stats::funnel,
        super::stats::workflow,
        super::stats::delivery,
        super::lists::create,
        super::lists::all,
        super::lists::one,
        super::lists::update,
        super::lists::remove,
        super::subscribers::create,
        super::subscribers::list,
        super::subscribers::one,
        super::subscribers::update,
        super::subscribers::erase,
        super::subscribers::timeline,
        super::subscribers::export,
        super::transfer::import_csv,
        super::transfer::export_csv,
        super::workflows::all,
        super::workflows::one,
        super::workflows::pause,
        super::workflows::resume,
        super::workflows::reload,
        super::workflows::record_event,
        super::broadcasts::create,
        super::broadcasts::all,
        super::broadcasts::one,
        super::broadcasts::cancel,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "lists", description = "Named audiences with their opt-in rule"),
        (name = "subscribers", description = "The people you own a way to reach"),
        (name = "import and export", description = "CSV in and out; export then import round-trips"),
        (name = "workflows", description = "Drip workflows in force, their enrollments, and events that drive them"),
        (name = "broadcasts", description = "One-off messages to a list, through the same outbox as workflows"),
        (name = "stats", description = "Funnel, workflow and delivery figures from daily rollups; any of them as CSV"),
        (name = "operations", description = "Health"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token from `ownlist tokens create NAME`"))
                    .build(),
            ),
        );
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
