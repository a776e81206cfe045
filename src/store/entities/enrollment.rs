//! The `enrollments` table: a subscriber's way through one workflow.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "enrollments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workflow_id: String,
    pub version: i32,
    pub subscriber_id: Uuid,
    pub status: String,
    pub step_id: Option<String>,
    pub next_run_at: Option<DateTimeUtc>,
    pub wait_started_at: Option<DateTimeUtc>,
    pub waiting_for: Option<String>,
    pub end_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
