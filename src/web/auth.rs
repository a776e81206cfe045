//! Bearer-token authentication for the admin API, and what each role may do there.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::config::Config;
use crate::store::Db;
use crate::tokens::{self, Role};

/// Lets a request through only with a valid admin token, and records who it is as an `Actor`.
/// Every failure gives the same 401, whether the token is missing, unknown or revoked.
pub async fn require_token(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(request.headers()).ok_or_else(ApiError::unauthorized)?;
    let (actor, role) = tokens::authenticate(&db, config.admin_token.as_deref(), presented)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    request.extensions_mut().insert(actor);
    request.extensions_mut().insert(role);
    Ok(next.run(request).await)
}

/// Lets a request through only when its token's role may make it (runs after authentication
/// and the audit log, so a refusal is logged too, and before the body is read).
pub async fn require_role(request: Request, next: Next) -> Result<Response, ApiError> {
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |o| o.0.path().to_owned());
    let needed = needed_role(request.method(), &path);
    let held = request.extensions().get::<Role>().copied().unwrap_or(Role::Viewer);
    if held < needed {
        return Err(forbidden(needed, held));
    }
    Ok(next.run(request).await)
}

/// The 403 for a role that is not enough, naming the role needed.
pub fn forbidden(needed: Role, held: Role) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "forbidden",
        format!("this needs the {needed} role; this token is a{} {held}", if held == Role::Admin { "n" } else { "" }),
    )
}

/// The least role that may make a request to the admin API: the token routes and the audit log
/// are for admins; bulk exports of personal data and every change for editors; the rest, reads,
/// for viewers.
pub fn needed_role(method: &axum::http::Method, path: &str) -> Role {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if under("/tokens") || under("/audit") {
        return Role::Admin;
    }
    let reads = matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
    let exports = under("/exports") || (path.starts_with("/subscribers/") && path.ends_with("/export"));
    if !reads || exports { Role::Editor } else { Role::Viewer }
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

#[cfg(test)]
mod tests {
    use super::{Role, needed_role};
    use axum::http::Method;

    #[test]
    fn reads_are_for_viewers_changes_for_editors_tokens_and_the_audit_log_for_admins() {
        assert_eq!(needed_role(&Method::GET, "/api/v1/subscribers"), Role::Viewer);
        assert_eq!(needed_role(&Method::GET, "/api/v1/broadcasts/x"), Role::Viewer);
        assert_eq!(needed_role(&Method::POST, "/api/v1/broadcasts"), Role::Editor);
        assert_eq!(needed_role(&Method::DELETE, "/api/v1/subscribers/x"), Role::Editor);
        assert_eq!(needed_role(&Method::GET, "/api/v1/exports/subscribers.csv"), Role::Editor);
        assert_eq!(needed_role(&Method::GET, "/api/v1/subscribers/x/export"), Role::Editor);
        assert_eq!(needed_role(&Method::GET, "/api/v1/tokens"), Role::Admin);
        assert_eq!(needed_role(&Method::DELETE, "/api/v1/tokens/ci"), Role::Admin);
        assert_eq!(needed_role(&Method::GET, "/api/v1/audit"), Role::Admin);
        assert_eq!(needed_role(&Method::GET, "/api/v1/tokensmith"), Role::Viewer);
    }
}
