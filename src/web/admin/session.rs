//! Dashboard sessions: a login with an admin token opens one for `admin_session_ttl`. The
//! browser keeps a random secret in an HttpOnly, SameSite=Strict cookie (Secure when ownlist is
//! served over HTTPS); the database keeps only its SHA-256, who logged in, and when it ends.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};

use subtle::ConstantTimeEq;

use crate::audience::Actor;
use crate::core::error::Result;
use crate::core::values::sha256_hex;
use crate::store::Db;
use crate::store::entities::admin_session;
use crate::tokens::Role;

/// The cookie's name.
pub const COOKIE: &str = "ownlist_admin";

/// Opens a session for `actor` and returns the secret for the cookie. A login with the
/// bootstrap token (`bootstrap`, the configured `admin_token`) is tied to that token. Sessions
/// that have ended are cleared on the way.
pub async fn open(
    db: &Db,
    actor: &Actor,
    bootstrap: Option<&str>,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    admin_session::Entity::delete_many().filter(admin_session::Column::ExpiresAt.lte(now)).exec(db.conn()).await?;
    admin_session::ActiveModel {
        id: Set(sha256_hex(&secret)),
        actor: Set(actor.label()),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        token_digest: Set(match actor {
            Actor::Bootstrap => bootstrap.map(sha256_hex),
            _ => None,
        }),
    }
    .insert(db.conn())
    .await?;
    Ok(secret)
}

/// A session found: who logged in, and what their token may do now.
#[derive(Debug, Clone)]
pub struct Session {
    pub row: admin_session::Model,
    /// The token's role as it is now (a change of role applies to open sessions at once).
    pub role: Role,
}

/// Who a cookie's secret belongs to: a session that has not ended, opened with a token that has
/// not been revoked since (for the bootstrap token: that is still `bootstrap`, the configured one).
pub async fn find(db: &Db, secret: &str, bootstrap: Option<&str>, now: DateTime<Utc>) -> Result<Option<Session>> {
    let Some(session) = admin_session::Entity::find_by_id(sha256_hex(secret)).one(db.conn()).await? else {
        return Ok(None);
    };
    if session.expires_at <= now {
        return Ok(None);
    }
    if session.actor == Actor::Bootstrap.label() {
        let same = match (&session.token_digest, bootstrap) {
            (Some(digest), Some(token)) => bool::from(digest.as_bytes().ct_eq(sha256_hex(token).as_bytes())),
            _ => false,
        };
        return Ok(same.then_some(Session { row: session, role: Role::Admin }));
    }
    let Some(name) = session.actor.strip_prefix("token:") else { return Ok(None) };
    Ok(crate::tokens::role_of(db, name).await?.map(|role| Session { row: session, role }))
}

/// The token every form of a session carries (CSRF): an HMAC of the session's id under the
/// server's secret, so only a page served to that session can know it.
pub fn form_token(server_secret: &str, session_id: &str) -> String {
    use hmac::Mac;
    let mut mac = crate::core::hmac::hmac_sha256(server_secret.as_bytes());
    mac.update(b"dashboard form:");
    mac.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether a form's token is the session's, in constant time.
pub fn same_form_token(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// Ends the session a cookie's secret belongs to.
pub async fn close(db: &Db, secret: &str) -> Result<()> {
    admin_session::Entity::delete_by_id(sha256_hex(secret)).exec(db.conn()).await?;
    Ok(())
}

/// The `Set-Cookie` value that holds `secret` for `ttl`, or (`None`) that removes the cookie.
pub fn cookie(secret: Option<&str>, ttl: chrono::Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match secret {
        Some(secret) => {
            format!("{COOKIE}={secret}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}", ttl.num_seconds())
        }
        None => format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// The session secret a request's `Cookie` header carries, if any.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let set = cookie(Some("abc"), chrono::Duration::hours(12), true);
        assert_eq!(set, "ownlist_admin=abc; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=43200; Secure");
        assert!(!cookie(Some("abc"), chrono::Duration::hours(1), false).contains("Secure"));
        assert!(cookie(None, chrono::Duration::hours(1), false).contains("Max-Age=0"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, "theme=dark; ownlist_admin=s3cret".parse().unwrap());
        assert_eq!(from_headers(&headers).as_deref(), Some("s3cret"));
    }
}
