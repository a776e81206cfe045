//! `POST /webhooks/bounces`: bounces and complaints reported by a mail provider or a bounce
//! processor, as generic JSON, authenticated by a shared secret (`bounce_secret`, sent as
//! `Authorization: Bearer SECRET`; compared in constant time).
//!
//! Body: one report or an array of up to 1,000: `{"address": "ada@example.com", "type": "hard" |
//! "soft" | "complaint", "reason": "…"}`. A hard bounce marks the address bounced; a complaint
//! withdraws email consent at once (state `complained`); a soft bounce is noted in the timeline
//! only. Every report is checked before any is applied, and a batch is applied in one
//! transaction (all of it or, on an error, none); applying one twice changes nothing more.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audience::subscribers::{Bounce, apply_bounce, id_by_email};
use crate::core::values::EmailAddress;
use crate::web::AppState;
use crate::web::error::{ApiError, ApiResult};

const MAX_REPORTS: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/bounces", post(bounces))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Hard,
    Soft,
    Complaint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    address: String,
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reports {
    Many(Vec<Report>),
    One(Report),
}

fn authorised(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(secret) = state.config.bounce_secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "the bounce webhook is off: set OWNLIST_BOUNCE_SECRET to turn it on",
        ));
    };
    let presented = crate::web::auth::bearer(headers).unwrap_or_default();
    if crate::tokens::same_secret(presented, secret) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// The largest batch of reports read (1,000 reports of a few hundred bytes each).
const MAX_BODY_BYTES: usize = 1024 * 1024;

async fn bounces(State(state): State<AppState>, request: Request) -> ApiResult<Json<Value>> {
    // The secret is checked from the headers before a byte of the body is read.
    authorised(&state, request.headers())?;
    let body = crate::web::extract::body_at_most(request, MAX_BODY_BYTES).await?;
    let reports = match serde_json::from_slice::<Reports>(&body) {
        Ok(Reports::Many(reports)) => reports,
        Ok(Reports::One(report)) => vec![report],
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "expected {\"address\", \"type\": \"hard\" | \"soft\" | \"complaint\", \"reason\"?} or an array of them",
            ));
        }
    };
    if reports.len() > MAX_REPORTS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_reports",
            format!("at most {MAX_REPORTS} reports per request"),
        ));
    }
    let mut checked = Vec::with_capacity(reports.len());
    for (i, report) in reports.into_iter().enumerate() {
        let address = EmailAddress::parse(&report.address).map_err(|problem| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_address", problem)
                .with_field(format!("[{i}].address"))
        })?;
        checked.push((address, report));
    }
    let now = state.clock.now();
    let (mut applied, mut unknown) = (0u64, 0u64);
    // The whole batch in one transaction: all of it is applied, or (on an error) none of it.
    let txn = state.db.begin_write().await.map_err(crate::core::error::Error::from)?;
    for (address, report) in checked {
        let Some(id) = id_by_email(&txn, &address).await? else {
            unknown += 1;
            continue;
        };
        let kind = match report.kind {
            Kind::Hard => Bounce::Hard,
            Kind::Soft => Bounce::Soft,
            Kind::Complaint => Bounce::Complaint,
        };
        apply_bounce(&txn, now, id, kind, report.reason.as_deref().unwrap_or_default()).await?;
        applied += 1;
    }
    txn.commit().await.map_err(crate::core::error::Error::from)?;
    Ok(Json(json!({"applied": applied, "unknown_addresses": unknown})))
}
