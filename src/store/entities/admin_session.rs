//! The `admin_sessions` table: dashboard logins.

use sea_orm::entity::prelude::*;

/// A dashboard login (`admin_sessions`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "admin_sessions")]
pub struct Model {
    /// SHA-256 (hex) of the secret in the browser's cookie; the secret itself is never stored.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Who logged in: `token:NAME`, or `token:bootstrap` for the configured bootstrap token.
    pub actor: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// For a bootstrap-token login: SHA-256 (hex) of that token; the session ends when it changes.
    pub token_digest: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
