//! Goals: what a subscriber reaching one records.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::core::error::Result;
use crate::rollups::funnel::{Count, first_engagement};

/// A subscriber reached a goal: a workflow's `exit_when` held, or the event their landing page
/// names as its `goal` came in. The first time in their life, a `goal_reached` entry goes into
/// their timeline and the goal counts in the funnel of the page and source they first came from
/// (when they came through a landing page). Returns whether it was the first time.
pub async fn goal_reached(
    txn: &sea_orm::DatabaseTransaction,
    subscriber_id: uuid::Uuid,
    how: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    use crate::audience::records::{self, kind};
    use sea_orm::ActiveModelTrait;
    let before = crate::store::entities::event::Entity::find()
        .filter(crate::store::entities::event::Column::SubscriberId.eq(subscriber_id))
        .filter(crate::store::entities::event::Column::Kind.eq(kind::GOAL_REACHED))
        .one(txn)
        .await?;
    if before.is_some() {
        return Ok(false);
    }
    first_engagement(txn, subscriber_id, kind::GOAL_REACHED, Count::Goal, now.date_naive()).await?;
    records::event(subscriber_id, kind::GOAL_REACHED, how, now).insert(txn).await?;
    Ok(true)
}
