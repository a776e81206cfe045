//! Admin API tokens: 32 random bytes shown once, stored only as their SHA-256, each with a
//! [`Role`]: a viewer reads, an editor changes the audience and sends, an admin also manages
//! tokens and reads the audit log. The bootstrap token (`admin_token`) and the command line are
//! admins.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::audience::Actor;
use crate::core::error::{Error, Result};
use crate::store::entities::api_token;
use crate::store::{Db, is_unique_violation};

const PREFIX: &str = "ol_";

/// What a token (and a dashboard session opened with it) may do. Each role can do everything the
/// ones before it can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything but the audit log and bulk exports.
    Viewer,
    /// Also changes the audience (lists, subscribers, imports), workflows and broadcasts.
    Editor,
    /// Also manages tokens and reads the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// A stored role; anything unknown is read as the least one.
    pub fn from_stored(text: &str) -> Role {
        match text {
            "admin" => Role::Admin,
            "editor" => Role::Editor,
            _ => Role::Viewer,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token named `name` with `role` and returns its secret text, which is never stored.
pub async fn create(db: &Db, now: DateTime<Utc>, name: &str, role: Role) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Error::field("name", "use 1 to 64 printable characters"));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let model = api_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        token_hash: Set(hash(&token)),
        created_at: Set(now),
        role: Set(role.as_str().to_owned()),
    };
    model.insert(db.conn()).await.map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict {
                code: "token_exists",
                detail: format!("a token named '{name}' exists; revoke it first or choose another name"),
                existing_id: None,
                field: Some("name"),
            }
        } else {
            Error::Database(e)
        }
    })?;
    Ok(token)
}

/// Names, roles and creation times of every token (never the tokens).
pub async fn list(db: &Db) -> Result<Vec<TokenInfo>> {
    let rows = api_token::Entity::find().order_by_asc(api_token::Column::Name).all(db.conn()).await?;
    Ok(rows
        .into_iter()
        .map(|t| TokenInfo { role: Role::from_stored(&t.role), name: t.name, created_at: t.created_at })
        .collect())
}

/// The role of the token named `name`, if it still exists.
pub async fn role_of(db: &Db, name: &str) -> Result<Option<Role>> {
    let found = api_token::Entity::find().filter(api_token::Column::Name.eq(name)).one(db.conn()).await?;
    Ok(found.map(|t| Role::from_stored(&t.role)))
}

/// Deletes the token named `name`; requests with it fail from now on.
pub async fn revoke(db: &Db, name: &str) -> Result<()> {
    let result = api_token::Entity::delete_many().filter(api_token::Column::Name.eq(name)).exec(db.conn()).await?;
    if result.rows_affected == 0 {
        return Err(Error::NotFound { what: "token" });
    }
    Ok(())
}

pub async fn any_exist(db: &Db) -> Result<bool> {
    Ok(api_token::Entity::find().one(db.conn()).await?.is_some())
}

/// Whether a presented secret is the configured one, in constant time (hashing first, so the
/// time does not depend on either length).
pub fn same_secret(presented: &str, configured: &str) -> bool {
    bool::from(Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(configured.as_bytes())))
}

/// Who a presented token belongs to, if anyone, and what they may do. Comparisons are
/// constant-time.
pub async fn authenticate(db: &Db, bootstrap: Option<&str>, presented: &str) -> Result<Option<(Actor, Role)>> {
    if let Some(bootstrap) = bootstrap
        && same_secret(presented, bootstrap)
    {
        return Ok(Some((Actor::Bootstrap, Role::Admin)));
    }
    if !presented.starts_with(PREFIX) {
        return Ok(None);
    }
    let wanted = hash(presented);
    let found =
        api_token::Entity::find().filter(api_token::Column::TokenHash.eq(wanted.clone())).one(db.conn()).await?;
    Ok(found
        .filter(|t| bool::from(t.token_hash.as_bytes().ct_eq(wanted.as_bytes())))
        .map(|t| (Actor::Token(t.name), Role::from_stored(&t.role))))
}
