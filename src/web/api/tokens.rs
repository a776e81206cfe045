//! Admin tokens over HTTP, for admins: list them (never their secrets), create one with a role
//! (its secret is in the answer, once), revoke one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::core::clock::SharedClock;
use crate::store::Db;
use crate::tokens::{self, Role, TokenInfo};
use crate::web::AppState;
use crate::web::error::{ApiResult, Problem};
use crate::web::extract::{ApiJson, ApiPath};

pub fn routes() -> Router<AppState> {
    Router::new().route("/tokens", get(all).post(create)).route("/tokens/{name}", delete(revoke))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenPage {
    pub data: Vec<TokenInfo>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 printable characters, unique.
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    /// The secret, shown only in this answer: send it as `Authorization: Bearer TOKEN`.
    pub token: String,
}

/// Every token with its role (admins only).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), responses(
    (status = 200, body = TokenPage),
    (status = 403, description = "`forbidden`: not an admin token", body = Problem),
))]
pub async fn all(State(db): State<Db>) -> ApiResult<Json<TokenPage>> {
    Ok(Json(TokenPage { data: tokens::list(&db).await? }))
}

/// Creates a token with a role (admins only); its secret is in the answer and nowhere else.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken, security(("bearer" = [])), responses(
    (status = 201, body = CreatedToken),
    (status = 403, description = "`forbidden`: not an admin token", body = Problem),
    (status = 409, description = "`token_exists`: the name is taken", body = Problem),
    (status = 422, description = "Invalid fields", body = Problem),
))]
pub async fn create(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    ApiJson(input): ApiJson<NewToken>,
) -> ApiResult<impl IntoResponse> {
    let token = tokens::create(&db, clock.now(), &input.name, input.role).await?;
    let created = CreatedToken { name: input.name.trim().to_owned(), role: input.role, token };
    Ok((StatusCode::CREATED, [(axum::http::header::CACHE_CONTROL, "no-store")], Json(created)))
}

/// Revokes a token by name (admins only): requests and dashboard sessions with it fail from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", security(("bearer" = [])), params(("name" = String, Path)), responses(
    (status = 204),
    (status = 403, description = "`forbidden`: not an admin token", body = Problem),
    (status = 404, body = Problem),
))]
pub async fn revoke(State(db): State<Db>, ApiPath(name): ApiPath<String>) -> ApiResult<StatusCode> {
    tokens::revoke(&db, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
