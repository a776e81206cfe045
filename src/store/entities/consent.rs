//! The `consents` table: every grant and withdrawal of consent, with its proof.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "consents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub subscriber_id: Uuid,
    pub channel: String,
    pub granted: bool,
    pub method: String,
    pub consent_text: Option<String>,
    pub text_hash: Option<String>,
    pub text_version: Option<String>,
    pub source: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The landing page the consent was given on, and that page's version.
    pub page: Option<String>,
    pub page_version: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
