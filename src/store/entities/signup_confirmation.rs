//! The `signup_confirmations` table: double opt-in confirmations waiting for a click or a YES.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "signup_confirmations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub subscriber_id: Uuid,
    pub list_id: Uuid,
    pub page: String,
    pub page_version: String,
    /// `email` (a link) or `sms` (a reply YES).
    pub channel: String,
    /// The consent text shown on the page, recorded again when the signup is confirmed.
    pub consent_text: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub confirmed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
