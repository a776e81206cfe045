//! Bearer-token authentication for the admin API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::config::Config;
use crate::store::Db;
use crate::tokens;

/// Lets a request through only with a valid admin token, and records who it is as an `Actor`.
/// Every failure gives the same 401, whether the token is missing, unknown or revoked.
pub async fn require_token(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(request.headers()).ok_or_else(ApiError::unauthorized)?;
    let actor = tokens::authenticate(&db, config.admin_token.as_deref(), presented)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    request.extensions_mut().insert(actor);
    Ok(next.run(request).await)
}

/// The token of an `Authorization: Bearer TOKEN` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
