//! The dashboard's broadcasts and audit pages: every broadcast with its figures, one
//! broadcast's report (the same figures as `GET /api/v1/broadcasts/{id}/report`) with a cancel
//! button for editors, and the audit log for admins.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Caller, Shown, charts, error_page, failed, percent, refused_form, render};
use crate::stats::broadcasts::{Figures, Rates};
use crate::web::AppState;

/// How many broadcasts the list shows (the latest).
const LATEST: u64 = 100;

fn figures_context(f: &Figures, rates: &Rates) -> Value {
    json!({
        "sent": f.sent, "delivered": f.delivered, "failed": f.failed, "bounced": f.bounced,
        "complained": f.complained, "opened": f.opened, "clicked": f.clicked, "clicks": f.clicks,
        "unsubscribed": f.unsubscribed,
        "opened_by_machine": f.opened_by_machine, "clicked_by_machine": f.clicked_by_machine,
        "delivery_rate": percent(rates.delivery_rate), "bounce_rate": percent(rates.bounce_rate),
        "open_rate": percent(rates.open_rate), "click_rate": percent(rates.click_rate),
        "click_to_open_rate": percent(rates.click_to_open_rate),
        "unsubscribe_rate": percent(rates.unsubscribe_rate), "complaint_rate": percent(rates.complaint_rate),
    })
}

/// What a broadcast's status means, in words.
fn status_words(status: &str) -> &'static str {
    match status {
        "scheduled" => "Scheduled",
        "queueing" => "Being written",
        "sending" => "Sending",
        "done" => "Sent",
        "cancelled" => "Cancelled",
        _ => "Unknown",
    }
}

fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(super) async fn broadcasts(State(state): State<AppState>) -> Shown {
    let all = state.engine.broadcasts(LATEST).await.map_err(failed)?;
    let ids: Vec<Uuid> = all.iter().map(|b| b.id).collect();
    let totals = crate::stats::broadcasts::totals(&state.db, &ids).await.map_err(failed)?;
    let rows: Vec<Value> = all
        .iter()
        .map(|b| {
            let f = totals.get(&b.id).cloned().unwrap_or_default();
            json!({
                "id": b.id, "subject": b.subject.clone().unwrap_or_else(|| "(text message)".into()),
                "list": b.list, "status": b.status, "status_words": status_words(&b.status),
                "send_at": when(b.send_at), "messages": b.messages, "figures": figures_context(&f, &f.rates()),
            })
        })
        .collect();
    let context = json!({"title": "Broadcasts", "section": "broadcasts", "broadcasts": rows});
    Ok(render("broadcasts.html", StatusCode::OK, context))
}

pub(super) async fn broadcast(State(state): State<AppState>, Path(id): Path<String>) -> Shown {
    let Ok(id) = id.parse::<Uuid>() else { return Err(error_page(StatusCode::NOT_FOUND, "No such broadcast.")) };
    let view = state.engine.broadcast(id).await.map_err(failed)?;
    let report = crate::stats::broadcasts::report(&state.db, id).await.map_err(failed)?;
    let labels: Vec<String> = report.by_day.iter().map(|d| d.day.clone()).collect();
    let series = |pick: fn(&Figures) -> i64| -> Vec<i64> { report.by_day.iter().map(|d| pick(&d.figures)).collect() };
    let chart = (labels.len() > 1).then(|| {
        charts::lines(
            "daily",
            "Delivered, opened and clicked per day",
            &labels,
            &[
                ("delivered", series(|f| f.delivered)),
                ("opened", series(|f| f.opened)),
                ("clicked", series(|f| f.clicked)),
            ],
        )
    });
    let days: Vec<Value> = report
        .by_day
        .iter()
        .map(|d| json!({"day": d.day, "figures": figures_context(&d.figures, &d.figures.rates())}))
        .collect();
    let queued: u64 = view.progress.values().map(|p| p.queued).sum();
    let cancellable = matches!(view.status.as_str(), "scheduled" | "queueing" | "sending");
    let context = json!({
        "title": format!("Broadcast: {}", view.subject.clone().unwrap_or_else(|| "(text message)".into())),
        "section": "broadcasts",
        "b": {
            "id": view.id, "subject": view.subject, "list": view.list, "tag": view.tag,
            "channels": view.channels.join(", "), "status": view.status, "status_words": status_words(&view.status),
            "send_at": when(view.send_at), "messages": view.messages, "skipped": view.skipped, "queued": queued,
            "tracking": view.tracking, "template": view.template,
        },
        "cancellable": cancellable,
        "figures": figures_context(&report.totals, &report.rates),
        "links": report.links,
        "days": days,
        "chart": chart,
    });
    Ok(render("broadcast.html", StatusCode::OK, context))
}

/// A form that carries only the session's form token (a button).
#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenOnly {
    #[serde(default)]
    form_token: String,
}

impl TokenOnly {
    pub(super) fn token(&self) -> &str {
        &self.form_token
    }
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<TokenOnly>,
) -> Result<Response, Response> {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let Ok(id) = id.parse::<Uuid>() else { return Err(error_page(StatusCode::NOT_FOUND, "No such broadcast.")) };
    state.engine.cancel_broadcast(id).await.map_err(failed)?;
    Ok(Redirect::to(&format!("/admin/broadcasts/{id}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    cursor: Option<String>,
}

pub(super) async fn audit(State(state): State<AppState>, Query(query): Query<AuditQuery>) -> Shown {
    let cursor = query.cursor.filter(|c| !c.trim().is_empty());
    let asked = crate::web::api::audit::AuditQuery { limit: Some(100), cursor };
    let page = crate::web::api::audit::page(&state.db, &asked)
        .await
        .map_err(|_| error_page(StatusCode::BAD_REQUEST, "That page of the log does not exist."))?;
    let rows: Vec<Value> = page
        .data
        .iter()
        .map(|e| {
            json!({
                "at": e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(), "who": e.actor, "method": e.method,
                "path": e.path, "query": e.query, "status": e.status, "ip": e.ip,
                "refused": e.status.is_some_and(|s| s >= 400),
            })
        })
        .collect();
    let context = json!({"title": "Audit log", "section": "audit", "entries": rows, "next": page.next_cursor});
    Ok(render("audit.html", StatusCode::OK, context))
}
