//! `GET /metrics`: Prometheus text format. In-memory counters of this process (HTTP, signups,
//! deliveries, circuit breakers) and, read from the database at each scrape, the outbox's depth
//! and the age of its oldest due message, and the enrollments in progress per workflow and step.
//! Open like `/healthz` unless `metrics_token` is set (then `Authorization: Bearer` it).

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::core::metrics::{self, Sampled};
use crate::store::entities::enrollment;
use crate::web::AppState;
use crate::web::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Counts each routed request and times it, labelled by its route (never the raw path).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::inc("ownlist_http_requests_total", &[("method", &method), ("route", &route), ("status", &status)]);
    metrics::observe(
        "ownlist_http_request_duration_seconds",
        &[("method", &method), ("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn scrape(State(state): State<AppState>, request: Request) -> Response {
    if let Some(expected) = &state.config.metrics_token {
        let presented = crate::web::auth::bearer(request.headers()).unwrap_or_default();
        if !crate::tokens::same_secret(presented, expected) {
            return ApiError::unauthorized().into_response();
        }
    }
    match sampled(&state).await {
        Ok(sampled) => {
            let body = metrics::render(&sampled);
            let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database does not answer")
                .into_response()
        }
    }
}

async fn sampled(state: &AppState) -> crate::core::error::Result<Vec<Sampled>> {
    let conn = state.db.conn();
    let now = state.clock.now();
    let mut out = Vec::new();
    for depth in crate::stats::delivery::outbox(&state.db, now).await? {
        let labels = vec![("channel", depth.channel.as_str().to_owned())];
        out.push(Sampled { name: "ownlist_outbox_queued", labels: labels.clone(), value: depth.queued as f64 });
        out.push(Sampled { name: "ownlist_outbox_due", labels: labels.clone(), value: depth.due as f64 });
        out.push(Sampled { name: "ownlist_outbox_oldest_due_seconds", labels, value: depth.oldest_due_seconds });
    }
    let enrollments: Vec<(String, Option<String>, i64)> = enrollment::Entity::find()
        .select_only()
        .column(enrollment::Column::WorkflowId)
        .column(enrollment::Column::StepId)
        .column_as(Expr::cust("COUNT(*)"), "n")
        .filter(enrollment::Column::Status.eq("active"))
        .group_by(enrollment::Column::WorkflowId)
        .group_by(enrollment::Column::StepId)
        .into_tuple()
        .all(conn)
        .await?;
    for (workflow, step, n) in enrollments {
        out.push(Sampled {
            name: "ownlist_enrollments_active",
            labels: vec![("workflow", workflow), ("step", step.unwrap_or_default())],
            value: n as f64,
        });
    }
    Ok(out)
}
