//! The `subscribers` table: a person, their addresses and channel states.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "subscribers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub email: Option<String>,
    #[sea_orm(unique)]
    pub email_key: Option<String>,
    #[sea_orm(unique)]
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub attributes: Json,
    pub status: String,
    pub email_state: String,
    pub sms_state: String,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub referrer: Option<String>,
    pub landing_page: Option<String>,
    /// utm_content and utm_term of the first touch.
    pub content: Option<String>,
    pub term: Option<String>,
    /// The click id a network added to the first touch's link, as `fbclid=…`.
    pub click_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
