//! The `leases` table: which instance holds a role (the engine) until when.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "leases")]
pub struct Model {
    /// What is held, e.g. `engine`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The process holding it (a random id per process).
    pub owner: String,
    pub until: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
