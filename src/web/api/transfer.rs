//! CSV in and out: `POST /imports`, `GET /exports/subscribers.csv`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio_util::io::StreamReader;

use crate::audience::Actor;
use crate::audience::export;
use crate::audience::import::{self, ImportOptions, ImportReport};
use crate::core::clock::SharedClock;
use crate::core::error::Error;
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::{ApiError, ApiResult, Problem};
use crate::web::extract::ApiQuery;

pub fn routes(max_import_bytes: u64) -> Router<AppState> {
    Router::new()
        .route("/imports", post(import_csv).layer(DefaultBodyLimit::disable()))
        .route("/exports/subscribers.csv", get(export_csv))
        .layer(Extension(ImportLimit(max_import_bytes)))
}

#[derive(Clone, Copy)]
pub struct ImportLimit(u64);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Every imported subscriber joins this list (its slug).
    #[param(pattern = "^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$", max_length = 64)]
    pub list: Option<String>,
}

/// Imports subscribers from a CSV body, streamed; upserts by email, then phone.
#[utoipa::path(post, path = "/api/v1/imports", tag = "import and export", params(ImportQuery), security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv", description = "Columns: email, phone, first_name, last_name, tags, and any other column as an attribute"),
    responses(
        (status = 200, body = ImportReport),
        (status = 400, description = "Unreadable CSV header", body = Problem),
        (status = 413, body = Problem),
        (status = 415, body = Problem),
        (status = 422, description = "Unknown list", body = Problem),
    ))]
pub async fn import_csv(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    Extension(actor): Extension<Actor>,
    Extension(ImportLimit(limit)): Extension<ImportLimit>,
    ApiQuery(query): ApiQuery<ImportQuery>,
    request: Request,
) -> ApiResult<Json<ImportReport>> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !matches!(essence.as_str(), "text/csv" | "application/csv" | "text/plain") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV with 'Content-Type: text/csv'",
        ));
    }
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen: u64 = 0;
    let stream = request.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limit {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("import body too large"));
        }
        Ok::<Bytes, std::io::Error>(chunk)
    });
    let reader = StreamReader::new(stream);
    let options = ImportOptions { list: query.list, actor };
    match import::import_csv(&db, clock.clone(), reader, options).await {
        Ok(report) => Ok(Json(report)),
        Err(Error::Malformed { .. }) if exceeded.load(Ordering::SeqCst) => Err(too_large(limit)),
        Err(Error::Interrupted { done, .. }) if exceeded.load(Ordering::SeqCst) => Err(too_large(limit).stored(done)),
        Err(e) => Err(e.into()),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the import is larger than {limit} bytes (OWNLIST_MAX_IMPORT_BYTES); split it or raise the limit"),
    )
}

/// Every subscriber with lists, tags, attributes and consent state, as CSV (streamed).
#[utoipa::path(get, path = "/api/v1/exports/subscribers.csv", tag = "import and export", security(("bearer" = [])), responses(
    (status = 200, content_type = "text/csv", body = String),
))]
pub async fn export_csv(State(db): State<Db>) -> axum::response::Response {
    subscribers_csv(&db)
}

/// Every subscriber as a streamed CSV download (the API's export and the dashboard's).
pub(crate) fn subscribers_csv(db: &Db) -> axum::response::Response {
    let stream = export::subscribers_csv(db.clone()).map_ok(Bytes::from).inspect_err(|e| {
        tracing::error!(error = %e, "export failed mid-stream");
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"subscribers.csv\""),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
