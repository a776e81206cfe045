//! The dashboard's import and export: a CSV file uploaded through a form (the same import as
//! `POST /api/v1/imports`: every rejected row with its line and reason), and every subscriber as
//! CSV (the same export as the API's). Both are for editors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Extension;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::audience::problem;
use super::{Caller, Shown, failed, refused_form, render};
use crate::audience::import::{self, ImportOptions, ImportReport};
use crate::core::error::Error;
use crate::web::AppState;

async fn page(state: &AppState, status: StatusCode, report: Option<Value>, problem: Option<String>) -> Shown {
    let lists = crate::audience::lists::all(&state.db).await.map_err(failed)?;
    let lists: Vec<Value> = lists.iter().map(|l| json!({"slug": l.slug, "name": l.name})).collect();
    let context = json!({"title": "Import and export", "section": "import", "lists": lists, "report": report,
                         "problem": problem, "limit_mb": state.config.max_import_bytes / 1_000_000, "running": false});
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

/// An import under way or done, in this process: the file's size, how much of it is read, and
/// when it is done, its report (or why it stopped).
struct Job {
    total: u64,
    read: Arc<AtomicU64>,
    started: chrono::DateTime<chrono::Utc>,
    outcome: std::sync::Mutex<Option<Ended>>,
}

/// How an import ended: the page's status, its report or what went wrong.
type Ended = (StatusCode, Option<Value>, Option<String>);

/// The imports of this process, by id (those done more than an hour ago are forgotten).
static JOBS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<Job>>>> =
    std::sync::LazyLock::new(Default::default);

fn jobs() -> std::sync::MutexGuard<'static, std::collections::HashMap<uuid::Uuid, Arc<Job>>> {
    JOBS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A reader that counts what was read through it (the import's progress).
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let added = buf.filled().len().saturating_sub(before) as u64;
        self.read.fetch_add(added, Ordering::Relaxed);
        polled
    }
}

/// The upload: the form token and the list come before the file in the form, so the token is
/// checked before a byte of the file is read. The file is kept (bounded by `max_import_bytes`)
/// and imported in the background; the answer leads to the import's page, which shows how far
/// it has got and, once done, what it did.
pub(super) async fn upload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut multipart: Multipart,
) -> Shown {
    let mut token = String::new();
    let mut list = String::new();
    let limit = state.config.max_import_bytes;
    let broken = || Some("The upload did not arrive whole.".to_owned());
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return page(&state, StatusCode::BAD_REQUEST, None, broken()).await,
        };
        match field.name().unwrap_or_default() {
            "form_token" => token = field.text().await.unwrap_or_default(),
            "list" => list = field.text().await.unwrap_or_default().trim().to_owned(),
            "file" => {
                if let Some(refused) = refused_form(&caller, &token) {
                    return Err(refused);
                }
                let dir = state.config.data_dir.join("imports");
                let id = uuid::Uuid::now_v7();
                let path = dir.join(format!("{id}.csv"));
                let kept = async {
                    tokio::fs::create_dir_all(&dir).await?;
                    let mut file = tokio::fs::File::create(&path).await?;
                    let mut total: u64 = 0;
                    while let Some(chunk) = field
                        .chunk()
                        .await
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e))?
                    {
                        total += chunk.len() as u64;
                        if total > limit {
                            return Ok(None);
                        }
                        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
                    }
                    tokio::io::AsyncWriteExt::flush(&mut file).await?;
                    Ok::<Option<u64>, std::io::Error>(Some(total))
                }
                .await;
                let total = match kept {
                    Ok(Some(total)) => total,
                    Ok(None) => {
                        let _ = tokio::fs::remove_file(&path).await;
                        let message = format!("The file is larger than {limit} bytes (max_import_bytes): split it.");
                        return page(&state, StatusCode::PAYLOAD_TOO_LARGE, None, Some(message)).await;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                        let _ = tokio::fs::remove_file(&path).await;
                        return page(&state, StatusCode::BAD_REQUEST, None, broken()).await;
                    }
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&path).await;
                        tracing::error!(error = %e, "an uploaded import could not be kept");
                        return page(
                            &state,
                            StatusCode::INSUFFICIENT_STORAGE,
                            None,
                            Some(
                                "The file could not be kept for its import (is the disk full?). Nothing was imported."
                                    .into(),
                            ),
                        )
                        .await;
                    }
                };
                start(state.clone(), caller.actor.clone(), id, path, total, list.clone());
                return Ok(Redirect::to(&format!("/admin/import/{id}")).into_response());
            }
            _ => {}
        }
    }
    if let Some(refused) = refused_form(&caller, &token) {
        return Err(refused);
    }
    page(&state, StatusCode::UNPROCESSABLE_ENTITY, None, Some("Choose a CSV file to import.".into())).await
}

/// Imports a kept file in the background, as job `id`.
fn start(
    state: AppState,
    actor: crate::audience::Actor,
    id: uuid::Uuid,
    path: std::path::PathBuf,
    total: u64,
    list: String,
) {
    let now = state.clock.now();
    let job = Arc::new(Job { total, read: Arc::new(AtomicU64::new(0)), started: now, outcome: Default::default() });
    {
        let mut all = jobs();
        all.retain(|_, j| {
            j.outcome.lock().map_or(true, |o| o.is_none()) || now - j.started < chrono::Duration::hours(1)
        });
        all.insert(id, job.clone());
    }
    tokio::spawn(async move {
        let outcome = match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let reader = Counting { inner: tokio::io::BufReader::new(file), read: job.read.clone() };
                let options = ImportOptions { list: (!list.is_empty()).then_some(list), actor };
                match import::import_csv(&state.db, state.clock.clone(), reader, options).await {
                    Ok(report) => (StatusCode::OK, Some(report_context(&report)), None),
                    Err(Error::Interrupted { done, cause }) => {
                        let message =
                            format!("The import stopped part way ({cause}); what was stored before that: {done}.");
                        (StatusCode::UNPROCESSABLE_ENTITY, None, Some(message))
                    }
                    Err(e) => match problem(e) {
                        Ok(message) => (StatusCode::UNPROCESSABLE_ENTITY, None, Some(message)),
                        Err(e) => {
                            tracing::error!(error = %e, "an import from the dashboard failed");
                            (StatusCode::SERVICE_UNAVAILABLE, None, Some("The database did not answer; what was imported before that is stored. Try again: rows already there are matched, not doubled.".into()))
                        }
                    },
                }
            }
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, None, Some(format!("The kept file could not be read: {e}"))),
        };
        let _ = tokio::fs::remove_file(&path).await;
        if let Ok(mut slot) = job.outcome.lock() {
            *slot = Some(outcome);
        }
    });
}

/// An import's page: how far it has got, or what it did.
pub(super) async fn progress(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Shown {
    let job = id.parse::<uuid::Uuid>().ok().and_then(|id| jobs().get(&id).cloned());
    let Some(job) = job else {
        return Err(super::error_page(
            StatusCode::NOT_FOUND,
            "No such import (imports are kept an hour after they end, until a restart).",
        ));
    };
    let outcome = job.outcome.lock().map(|o| o.clone()).unwrap_or(None);
    match outcome {
        Some((status, report, problem)) => page(&state, status, report, problem).await,
        None => {
            let read = job.read.load(Ordering::Relaxed).min(job.total);
            let percent = (read * 100).checked_div(job.total).unwrap_or(100);
            let lists = json!([]);
            let context = json!({"title": "Importing", "section": "import", "running": true, "read": read,
                                 "total": job.total, "percent": percent, "lists": lists, "report": null,
                                 "problem": null, "limit_mb": state.config.max_import_bytes / 1_000_000});
            Ok(render("import.html", StatusCode::OK, context))
        }
    }
}

/// Every subscriber as CSV, streamed (the API's export).
pub(super) async fn export(State(state): State<AppState>) -> Response {
    let mut response = crate::web::api::transfer::subscribers_csv(&state.db);
    super::secure_headers(response.headers_mut());
    response
}
