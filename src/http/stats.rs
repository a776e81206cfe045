//! `GET /api/v1/stats/funnel?page=&source=&from=&to=`: the landing-page funnel (views, signups,
//! confirmed, first email opened, first link clicked, with the conversion between stages) summed
//! from the daily rollups; `format=csv` gives the same as CSV.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::AppState;
use super::error::ApiResult;
use super::extract::ApiQuery;
use crate::error::{Error, FieldError};
use crate::stats::{self, Filter, Funnel};

pub fn routes() -> Router<AppState> {
    Router::new().route("/stats/funnel", get(funnel))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    /// One landing page's slug (default: all).
    pub page: Option<String>,
    /// One source, such as `instagram` (default: all).
    pub source: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub from: Option<String>,
    /// Last day, inclusive.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn day(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<NaiveDate> {
    let value = value?;
    match NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
        Ok(day) => Some(day),
        Err(_) => {
            errors.push(FieldError::new(field, format!("'{value}' is not a day like 2026-03-01")));
            None
        }
    }
}

/// The funnel of landing pages: views → signups → confirmed → opened → clicked, for a date range.
#[utoipa::path(get, path = "/api/v1/stats/funnel", tag = "stats", security(("bearer" = [])), params(FunnelQuery), responses(
    (status = 200, body = Funnel),
    (status = 422, description = "A bad date or format", body = super::error::Problem),
))]
pub async fn funnel(State(state): State<AppState>, ApiQuery(query): ApiQuery<FunnelQuery>) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let from = day("from", query.from.as_deref(), &mut errors);
    let to = day("to", query.to.as_deref(), &mut errors);
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        errors.push(FieldError::new("to", "is before from"));
    }
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            errors.push(FieldError::new("format", format!("'{other}' is not json or csv")));
            false
        }
    };
    if !errors.is_empty() {
        return Err(Error::Invalid(errors).into());
    }
    let filter = Filter { page: query.page, source: query.source, from, to };
    let funnel = stats::funnel(&state.db, &filter).await?;
    if !csv {
        return Ok(Json(funnel).into_response());
    }
    let mut text = String::from("stage,count,conversion\n");
    for stage in &funnel.stages {
        let conversion = stage.conversion.map(|c| c.to_string()).unwrap_or_default();
        text.push_str(&format!("{},{},{conversion}\n", stage.stage, stage.count));
    }
    text.push_str(&format!("bot_views,{},\n", funnel.bot_views));
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response())
}
