//! The `audit_log` table: who changed what through the API.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub at: DateTimeUtc,
    /// Who: `token:NAME` or `token:bootstrap`.
    pub actor: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The response's status; empty while the request runs (or if the process died during it).
    pub status: Option<i32>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
