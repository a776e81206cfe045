//! Statistics, summed from the daily rollups (never from a scan of the timeline):
//!
//! - `GET /api/v1/stats/funnel?page=&source=&from=&to=`: the landing-page funnel (views, signups,
//!   confirmed, first email opened, first link clicked, goal reached, with the conversion between
//!   stages), and the same counts by day, page and source;
//! - `GET /api/v1/stats/workflows/{id}?from=&to=`: each step's flow and messages;
//! - `GET /api/v1/stats/delivery?from=&to=`: each relay's and provider's sends.
//!
//! Days are UTC, `YYYY-MM-DD`, both ends inclusive; `format=csv` gives any of them as CSV.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::core::error::{Error, FieldError};
use crate::stats::delivery::DeliveryStats;
use crate::stats::funnel::{Counts, Keyed};
use crate::stats::steps::WorkflowStats;
use crate::stats::{self, Days, Filter, Funnel};
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::ApiResult;
use crate::web::extract::ApiQuery;
use crate::workflow::engine::Engine;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stats/funnel", get(funnel))
        .route("/stats/workflows/{id}", get(workflow))
        .route("/stats/delivery", get(delivery))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    /// One landing page's slug (default: all).
    pub page: Option<String>,
    /// One source, such as `instagram` (default: all).
    pub source: Option<String>,
    /// One medium (`utm_medium`), such as `social`.
    pub medium: Option<String>,
    /// One campaign (`utm_campaign`).
    pub campaign: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    #[param(pattern = "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")]
    pub from: Option<String>,
    /// Last day, inclusive.
    #[param(pattern = "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")]
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(schema_with = report_format)]
    pub format: Option<String>,
    /// With `format=csv`: a row per `stage` (default), `day`, `page`, `source`, `medium` or `campaign`.
    #[param(schema_with = funnel_rows)]
    pub by: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    #[param(pattern = "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")]
    pub from: Option<String>,
    /// Last day, inclusive.
    #[param(pattern = "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")]
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(schema_with = report_format)]
    pub format: Option<String>,
}

/// The words a closed query parameter takes, for the OpenAPI document.
fn words(words: &[&str]) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(words.iter().copied())).build()
}

fn report_format() -> utoipa::openapi::Object {
    words(&["", "json", "csv"])
}

fn funnel_rows() -> utoipa::openapi::Object {
    words(&FUNNEL_ROWS)
}

const FUNNEL_ROWS: [&str; 7] = ["", "stage", "day", "page", "source", "medium", "campaign"];

fn day(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<NaiveDate> {
    // `?from=` (empty) is as good as leaving it out.
    let value = value.filter(|v| !v.trim().is_empty())?;
    match NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
        Ok(day) => Some(day),
        Err(_) => {
            errors.push(FieldError::new(field, format!("'{value}' is not a day like 2026-03-01")));
            None
        }
    }
}

/// The date range and whether CSV was asked for; every problem is collected in `errors`.
fn range(from: Option<&str>, to: Option<&str>, format: Option<&str>, errors: &mut Vec<FieldError>) -> (Days, bool) {
    let from = day("from", from, errors);
    let to = day("to", to, errors);
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        errors.push(FieldError::new("to", "is before from"));
    }
    let csv = match format.map(str::trim).filter(|f| !f.is_empty()) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            errors.push(FieldError::new("format", format!("'{other}' is not json or csv")));
            false
        }
    };
    (Days { from, to }, csv)
}

fn csv_response(name: &str, text: String) -> Response {
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], text)
        .into_response()
}

fn number(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

const COUNT_COLUMNS: [&str; 9] =
    ["views", "signups", "confirmed", "opened", "clicked", "goal_reached", "bot_views", "second_channel", "conversion"];

fn counts_row(key: &str, c: &Counts, conversion: Option<f64>) -> Vec<String> {
    let mut row = vec![key.to_owned()];
    row.extend(
        [c.views, c.signups, c.confirmed, c.opened, c.clicked, c.goals, c.bot_views, c.second_channel]
            .map(|n| n.to_string()),
    );
    row.push(number(conversion));
    row
}

/// The funnel of landing pages: views → signups → confirmed → opened → clicked → goal reached.
#[utoipa::path(get, path = "/api/v1/stats/funnel", tag = "stats", security(("bearer" = [])), params(FunnelQuery), responses(
    (status = 200, description = "The funnel; with `format=csv`, `text/csv`", content((Funnel = "application/json"), (String = "text/csv"))),
    (status = 422, description = "A bad date, format or grouping", body = crate::web::error::Problem),
))]
pub async fn funnel(State(db): State<Db>, ApiQuery(query): ApiQuery<FunnelQuery>) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let (days, csv) = range(query.from.as_deref(), query.to.as_deref(), query.format.as_deref(), &mut errors);
    let by = query.by.as_deref().map(str::trim).filter(|b| !b.is_empty()).unwrap_or("stage");
    if !FUNNEL_ROWS.contains(&by) {
        errors.push(FieldError::new("by", format!("'{by}' is not stage, day, page, source, medium or campaign")));
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors).into());
    }
    // An empty value (as a form sends for a field left blank) filters nothing.
    let given = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let filter = Filter {
        page: given(query.page),
        source: given(query.source),
        medium: given(query.medium),
        campaign: given(query.campaign),
        days,
    };
    let funnel = stats::funnel::funnel(&db, &filter).await?;
    if !csv {
        return Ok(Json(funnel).into_response());
    }
    let keyed = |header: &str, rows: &[Keyed]| {
        let mut columns = vec![header];
        columns.extend(COUNT_COLUMNS);
        stats::csv(&columns, rows.iter().map(|k| counts_row(&k.key, &k.counts, k.conversion)))
    };
    let text = match by {
        "day" => keyed("day", &funnel.by_day),
        "page" => keyed("page", &funnel.by_page),
        "source" => keyed("source", &funnel.by_source),
        "medium" => keyed("medium", &funnel.by_medium),
        "campaign" => keyed("campaign", &funnel.by_campaign),
        _ => stats::csv(
            &["stage", "count", "conversion"],
            funnel
                .stages
                .iter()
                .map(|s| vec![s.stage.clone(), s.count.to_string(), number(s.conversion)])
                .chain(std::iter::once(vec!["bot_views".to_owned(), funnel.bot_views.to_string(), String::new()])),
        ),
    };
    Ok(csv_response(&format!("funnel-by-{by}"), text))
}

/// A workflow's steps: entered, completed, skipped (by reason), exited, messages sent,
/// delivered, failed, opened, clicked, unsubscribes after the step, and who waits there now.
#[utoipa::path(get, path = "/api/v1/stats/workflows/{id}", tag = "stats", security(("bearer" = [])),
    params(("id" = String, Path, description = "The workflow's id (its file name)"), RangeQuery), responses(
    (status = 200, description = "The workflow's figures; with `format=csv`, a row per step", content((WorkflowStats = "application/json"), (String = "text/csv"))),
    (status = 404, description = "No such workflow", body = crate::web::error::Problem),
    (status = 422, description = "A bad date or format", body = crate::web::error::Problem),
))]
pub async fn workflow(
    State(db): State<Db>,
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let (days, csv) = range(query.from.as_deref(), query.to.as_deref(), query.format.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors).into());
    }
    let current = engine.registry().current();
    let found = current.get(&id).ok_or(Error::NotFound { what: "workflow" })?;
    let steps = stats::steps::steps_of(&found.program.workflow);
    let figures = stats::steps::workflow(&db, &id, &steps, days).await?;
    if !csv {
        return Ok(Json(figures).into_response());
    }
    let header = [
        "step",
        "kind",
        "entered",
        "completed",
        "skipped",
        "exited",
        "sent",
        "delivered",
        "failed",
        "opened",
        "clicked",
        "opened_by_machine",
        "clicked_by_machine",
        "unsubscribed",
        "waiting_now",
        "skipped_by_reason",
    ];
    let rows = figures.steps.iter().map(|s| {
        let mut row = vec![s.step.clone(), s.kind.clone().unwrap_or_default()];
        row.extend(
            [
                s.entered,
                s.completed,
                s.skipped,
                s.exited,
                s.sent,
                s.delivered,
                s.failed,
                s.opened,
                s.clicked,
                s.opened_by_machine,
                s.clicked_by_machine,
                s.unsubscribed,
                s.waiting_now,
            ]
            .map(|n| n.to_string()),
        );
        let reasons: Vec<String> = s.skipped_by_reason.iter().map(|r| format!("{}: {}", r.reason, r.count)).collect();
        row.push(reasons.join("; "));
        row
    });
    Ok(csv_response(&format!("workflow-{id}"), stats::csv(&header, rows)))
}

/// Each relay's and provider's attempts: sent, failed for good, failed for now (retried), mean
/// latency; and all of them by day.
#[utoipa::path(get, path = "/api/v1/stats/delivery", tag = "stats", security(("bearer" = [])), params(RangeQuery), responses(
    (status = 200, description = "The figures; with `format=csv`, a row per relay or provider", content((DeliveryStats = "application/json"), (String = "text/csv"))),
    (status = 422, description = "A bad date or format", body = crate::web::error::Problem),
))]
pub async fn delivery(State(db): State<Db>, ApiQuery(query): ApiQuery<RangeQuery>) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let (days, csv) = range(query.from.as_deref(), query.to.as_deref(), query.format.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors).into());
    }
    let figures = stats::delivery::delivery(&db, days).await?;
    if !csv {
        return Ok(Json(figures).into_response());
    }
    let header = ["channel", "relay", "sent", "failed", "retried", "attempts", "mean_latency_ms", "success_rate"];
    let rows = figures.relays.iter().map(|r| {
        let mut row = vec![r.channel.as_str().to_owned(), r.relay.clone()];
        row.extend([r.sent, r.failed, r.retried, r.attempts].map(|n| n.to_string()));
        row.extend([number(r.mean_latency_ms), number(r.success_rate)]);
        row
    });
    Ok(csv_response("delivery", stats::csv(&header, rows)))
}
