//! The dashboard's import and export: a CSV file uploaded through a form (the same import as
//! `POST /api/v1/imports`: every rejected row with its line and reason), and every subscriber as
//! CSV (the same export as the API's). Both are for editors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_util::io::StreamReader;

use super::audience::problem;
use super::{Caller, Shown, failed, refused_form, render};
use crate::audience::import::{self, ImportOptions, ImportReport};
use crate::core::error::Error;
use crate::web::AppState;

async fn page(state: &AppState, status: StatusCode, report: Option<Value>, problem: Option<String>) -> Shown {
    let lists = crate::audience::lists::all(&state.db).await.map_err(failed)?;
    let lists: Vec<Value> = lists.iter().map(|l| json!({"slug": l.slug, "name": l.name})).collect();
    let context = json!({"title": "Import and export", "section": "import", "lists": lists, "report": report,
                         "problem": problem, "limit_mb": state.config.max_import_bytes / 1_000_000});
    Ok(render("import.html", status, context))
}

pub(super) async fn form(State(state): State<AppState>) -> Shown {
    page(&state, StatusCode::OK, None, None).await
}

fn report_context(report: &ImportReport) -> Value {
    json!({
        "imported": report.imported, "updated": report.updated, "skipped": report.skipped,
        "suppressed": report.suppressed, "errors_total": report.errors_total,
        "lists_created": report.lists_created.join(", "),
        "errors": report.errors.iter().map(|e| json!({"row": e.row, "column": e.column, "message": e.message})).collect::<Vec<_>>(),
        "shown": report.errors.len(),
    })
}

/// The upload: the form token and the list come before the file in the form, so the token is
/// checked before a byte of the file is read.
pub(super) async fn upload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut multipart: Multipart,
) -> Shown {
    let mut token = String::new();
    let mut list = String::new();
    let limit = state.config.max_import_bytes;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => {
                return page(&state, StatusCode::BAD_REQUEST, None, Some("The upload did not arrive whole.".into()))
                    .await;
            }
        };
        match field.name().unwrap_or_default() {
            "form_token" => token = field.text().await.unwrap_or_default(),
            "list" => list = field.text().await.unwrap_or_default().trim().to_owned(),
            "file" => {
                if let Some(refused) = refused_form(&caller, &token) {
                    return Err(refused);
                }
                let exceeded = Arc::new(AtomicBool::new(false));
                let flag = exceeded.clone();
                let mut seen: u64 = 0;
                let stream = field.map(move |chunk| {
                    let chunk = chunk.map_err(std::io::Error::other)?;
                    seen += chunk.len() as u64;
                    if seen > limit {
                        flag.store(true, Ordering::SeqCst);
                        return Err(std::io::Error::other("import too large"));
                    }
                    Ok::<Bytes, std::io::Error>(chunk)
                });
                let options =
                    ImportOptions { list: (!list.is_empty()).then_some(list.clone()), actor: caller.actor.clone() };
                let outcome =
                    import::import_csv(&state.db, state.clock.clone(), StreamReader::new(stream), options).await;
                let too_large = || format!("The file is larger than {limit} bytes (max_import_bytes): split it.");
                return match outcome {
                    Ok(report) => page(&state, StatusCode::OK, Some(report_context(&report)), None).await,
                    Err(Error::Interrupted { done, cause }) => {
                        let why = if exceeded.load(Ordering::SeqCst) { too_large() } else { cause.to_string() };
                        let message =
                            format!("The import stopped part way ({why}); what was stored before that: {done}.");
                        page(&state, StatusCode::UNPROCESSABLE_ENTITY, None, Some(message)).await
                    }
                    Err(_) if exceeded.load(Ordering::SeqCst) => {
                        page(&state, StatusCode::PAYLOAD_TOO_LARGE, None, Some(too_large())).await
                    }
                    Err(e) => {
                        let message = problem(e).map_err(failed)?;
                        page(&state, StatusCode::UNPROCESSABLE_ENTITY, None, Some(message)).await
                    }
                };
            }
            _ => {}
        }
    }
    if let Some(refused) = refused_form(&caller, &token) {
        return Err(refused);
    }
    page(&state, StatusCode::UNPROCESSABLE_ENTITY, None, Some("Choose a CSV file to import.".into())).await
}

/// Every subscriber as CSV, streamed (the API's export).
pub(super) async fn export(State(state): State<AppState>) -> Response {
    let stream = crate::audience::export::subscribers_csv(state.db.clone()).map_ok(Bytes::from).inspect_err(|e| {
        tracing::error!(error = %e, "export failed mid-stream");
    });
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"subscribers.csv\""),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    super::secure_headers(response.headers_mut());
    response
}
