//! The `delivery_daily` table: attempts per relay or provider and day.

use sea_orm::entity::prelude::*;

use crate::core::values::OutboxChannel;

/// One relay's or provider's attempts on one day (`delivery_daily`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "delivery_daily")]
pub struct Model {
    /// `YYYY-MM-DD` (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel: OutboxChannel,
    /// The relay's or provider's name (`file` for the file transport).
    #[sea_orm(primary_key, auto_increment = false)]
    pub relay: String,
    /// Messages it accepted.
    pub sent: i64,
    /// Messages it refused for good.
    pub failed: i64,
    /// Attempts that failed for now (the message went to the next relay or waits for a retry).
    pub retried: i64,
    /// Every attempt (sent + failed + retried), and their total duration.
    pub attempts: i64,
    pub latency_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
