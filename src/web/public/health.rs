//! Liveness (`/healthz`) and readiness (`/readyz`: the database answers and takes writes,
//! migrations are applied).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::core::clock::SharedClock;
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::{ApiError, ApiResult};
use crate::workflow::catalog::Catalog;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// Liveness: 200 when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The database answers"),
    (status = 503, description = "The database does not answer", body = crate::web::error::Problem),
))]
pub async fn healthz(State(db): State<Db>) -> ApiResult<Json<Value>> {
    match db.ping().await {
        Ok(()) => Ok(Json(json!({"status": "ok"}))),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database does not answer"))
        }
    }
}

/// Readiness: 200 when the database answers and every migration this build knows is applied
/// (a process started on an older schema, or before `ownlist migrate`, is not ready).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready: the database answers and its schema is current; `workflow_problems` lists what the last load of the workflow files found wrong"),
    (status = 503, description = "Not ready", body = crate::web::error::Problem),
))]
pub async fn readyz(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(catalog): State<Arc<Catalog>>,
) -> ApiResult<Json<Value>> {
    use migration::MigratorTrait;
    if let Err(e) = db.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer",
        ));
    }
    if let Some(free) = db.disk_free()
        && free < crate::store::DISK_FREE_MIN
    {
        tracing::warn!(free, "readiness: the database's disk is nearly full");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "disk_full",
            format!("{free} bytes are free where the database lives: writes fail or are about to"),
        ));
    }
    // A full disk or a read-only file system leaves reads working: only a write tells.
    if let Err(e) = db.probe_write(clock.now()).await {
        tracing::warn!(error = %e, "readiness: the database refuses writes");
        crate::store::count_error(&e);
        let detail = if crate::store::is_storage_full(&e) {
            "the database's disk is full: nothing can be stored".to_owned()
        } else {
            format!("the database refuses writes: {e}")
        };
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "writes_failing", detail));
    }
    match migration::Migrator::get_pending_migrations_read_only(db.conn()).await {
        Ok(pending) if pending.is_empty() => {
            // Problems in workflow files do not make the service unready (pages, links and the
            // last valid workflows keep working), but they are said here for monitoring.
            Ok(Json(json!({"status": "ready", "workflow_problems": catalog.problems()})))
        }
        Ok(pending) => {
            let names: Vec<String> = pending.iter().map(|m| m.name().to_owned()).collect();
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "migrations_pending",
                format!("the schema is not current; pending: {}", names.join(", ")),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: cannot read the migrations");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the schema cannot be read"))
        }
    }
}
