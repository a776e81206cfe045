//! The `pages` table: the landing pages in force, as last loaded.

use sea_orm::entity::prelude::*;

/// A landing page of the last valid version of its workflow file (`pages`).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "pages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub slug: String,
    /// The file that declares it, inside the workflow folder (`guide.yaml`).
    pub file: String,
    /// The checked page, as JSON.
    pub definition: Json,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
