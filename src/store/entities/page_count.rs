//! The `page_counts` table: other counts per landing page and day, by kind (e.g.
//! `rejected_honeypot`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "page_counts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub page: String,
    /// `YYYY-MM-DD` (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    /// What was counted, e.g. `rejected_honeypot`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: String,
    pub n: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
