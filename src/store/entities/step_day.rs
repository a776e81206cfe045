//! The `step_daily` table: counts per workflow step and day.

use sea_orm::entity::prelude::*;

/// One count of one workflow step on one day (`step_daily`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "step_daily")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workflow_id: String,
    /// `YYYY-MM-DD` (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    /// The step's id; empty for the workflow as a whole (enrolled, completed, exited).
    #[sea_orm(primary_key, auto_increment = false)]
    pub step_id: String,
    /// entered, completed, skipped, exited, sent, delivered, failed, opened, clicked,
    /// unsubscribed; for the workflow: enrolled, completed, exited.
    #[sea_orm(primary_key, auto_increment = false)]
    pub measure: String,
    /// A skip's reason; empty otherwise.
    #[sea_orm(primary_key, auto_increment = false)]
    pub detail: String,
    pub n: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
