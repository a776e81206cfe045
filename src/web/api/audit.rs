//! The audit log of admin API changes: who (which token), what (method, path, query), when, and
//! how it ended (status). Every admin request that may change something (anything but GET and
//! HEAD) is written before it runs and completed after it, so a change cut short by a crash still
//! leaves its trace. `GET /api/v1/audit` reads it, newest first. Bodies are not kept (they hold
//! personal data); the path names the resource.

use axum::extract::{OriginalUri, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audience::Actor;
use crate::core::values::{decode_cursor, encode_cursor, page_limit};
use crate::store::Db;
use crate::store::entities::audit_entry;
use crate::web::AppState;
use crate::web::error::ApiResult;
use crate::web::extract::ApiQuery;
use crate::web::extract::ClientAddress;

pub fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

/// Records a changing admin request around its handling (runs after authentication).
pub async fn record(
    State(state): State<AppState>,
    ClientAddress(ip): ClientAddress,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let actor = request.extensions().get::<Actor>().map_or_else(|| "unknown".to_owned(), Actor::label);
    let uri = request.extensions().get::<OriginalUri>().map_or_else(|| request.uri().clone(), |o| o.0.clone());
    let entry = audit_entry::ActiveModel {
        id: Set(Uuid::now_v7()),
        at: Set(state.clock.now()),
        actor: Set(actor),
        method: Set(request.method().as_str().to_owned()),
        path: Set(uri.path().chars().take(500).collect()),
        query: Set(uri.query().map(|q| q.chars().take(500).collect())),
        status: Set(None),
        request_id: Set(request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)),
        ip: Set(ip.map(|ip| ip.to_string())),
    };
    let id = match write(&state, entry).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(error = %e, "the audit log could not be written");
            None
        }
    };
    let response = next.run(request).await;
    if let Some(id) = id {
        let done = audit_entry::ActiveModel {
            id: Set(id),
            status: Set(Some(i32::from(response.status().as_u16()))),
            ..Default::default()
        };
        if let Err(e) = done.update(state.db.conn()).await {
            tracing::error!(error = %e, "the audit log entry could not be completed");
        }
    }
    response
}

async fn write(state: &AppState, entry: audit_entry::ActiveModel) -> crate::core::error::Result<Uuid> {
    let txn = state.db.begin_write().await?;
    let row = entry.insert(&txn).await?;
    txn.commit().await?;
    Ok(row.id)
}

/// Paging through the audit log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Pass the `next_cursor` of the page before.
    #[param(pattern = "^([A-Za-z0-9_-]{21}[AQgw])?$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// `token:NAME` or `token:bootstrap`.
    pub actor: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Empty while the request runs, or if the process stopped during it.
    pub status: Option<i32>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Admin API changes, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "operations", security(("bearer" = [])), params(AuditQuery), responses(
    (status = 200, body = AuditPage),
))]
pub async fn list(State(db): State<Db>, ApiQuery(query): ApiQuery<AuditQuery>) -> ApiResult<Json<AuditPage>> {
    Ok(Json(page(&db, &query).await?))
}

/// A page of the audit log, newest first (the API's and the dashboard's).
pub async fn page(db: &Db, query: &AuditQuery) -> crate::core::error::Result<AuditPage> {
    let limit = page_limit(query.limit)?;
    let mut find = audit_entry::Entity::find().order_by_desc(audit_entry::Column::Id).limit(limit + 1);
    if let Some(cursor) = query.cursor.as_ref().filter(|c| !c.is_empty()) {
        find = find.filter(audit_entry::Column::Id.lt(decode_cursor(cursor)?));
    }
    let mut rows = find.all(db.conn()).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|r| encode_cursor(r.id)) } else { None };
    let data = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: r.at,
            actor: r.actor,
            method: r.method,
            path: r.path,
            query: r.query,
            status: r.status,
            request_id: r.request_id,
            ip: r.ip,
        })
        .collect();
    Ok(AuditPage { data, next_cursor })
}
