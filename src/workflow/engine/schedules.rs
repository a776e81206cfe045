//! Schedule triggers: a cron schedule's due run enrolls the audience it names, once per tick.

use super::*;
use crate::core::error::Result;
use crate::core::timing::{next_cron_tick, zone};
use crate::core::values::MembershipStatus;
use crate::store::entities::{list, membership, schedule_run};
use crate::workflow::model::Trigger;
use crate::workflow::registry::Status;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

impl Engine {
    /// Fires due cron ticks of `schedule` workflows: every current member of the list is
    /// enrolled, a batch per transaction, with progress stored alongside. A tick missed while
    /// ownlist was down fires once, late; older missed ticks are not replayed.
    pub(super) async fn run_schedules(&self) -> Result<(u64, bool)> {
        let now = self.clock.now();
        let mut enrolled = 0;
        let mut more = false;
        for (id, current) in self.registry.current() {
            let Trigger::Schedule { cron, timezone, list: slug } = &current.program.workflow.trigger else { continue };
            if current.status == Status::Removed {
                continue;
            }
            let tz = zone(timezone.as_deref(), current.program.workflow.timezone.as_deref());
            let txn = self.db.begin_write().await?;
            let Some(state) = armed_state(&txn, &id, now).await? else {
                txn.commit().await?;
                continue;
            };
            let firing = match state.firing_tick {
                Some(tick) => tick,
                None => {
                    let mut latest = None;
                    let mut cursor = state.last_tick;
                    while let Some(tick) = next_cron_tick(cursor, tz, cron).filter(|t| *t <= now) {
                        latest = Some(tick);
                        cursor = tick;
                    }
                    match latest {
                        Some(tick) => tick,
                        None => continue,
                    }
                }
            };
            let Some(target) = list::Entity::find().filter(list::Column::Slug.eq(slug.clone())).one(&txn).await? else {
                continue;
            };
            let mut members = membership::Entity::find()
                .filter(membership::Column::ListId.eq(target.id))
                .filter(membership::Column::Status.ne(MembershipStatus::Unsubscribed.as_str()))
                .order_by_asc(membership::Column::SubscriberId)
                .limit(BATCH);
            if let Some(after) = state.after_subscriber {
                members = members.filter(membership::Column::SubscriberId.gt(after));
            }
            let batch = members.all(&txn).await?;
            let mut here = 0;
            for m in &batch {
                if self.enroll(&txn, &id, &current.program, m.subscriber_id, now).await? {
                    here += 1;
                }
            }
            count_enrolled(&txn, &id, here, now).await?;
            enrolled += here;
            more |= save_progress(txn, state, firing, batch.len(), batch.last().map(|m| m.subscriber_id), now).await?;
        }
        Ok((enrolled, more))
    }
}

/// The progress row of a schedule or date trigger; `None` when it was just created ("armed"
/// from now: nothing fires retroactively).
pub(super) async fn armed_state(
    txn: &DatabaseTransaction,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<schedule_run::Model>> {
    if let Some(state) = schedule_run::Entity::find_by_id(id.to_owned()).one(txn).await? {
        return Ok(Some(state));
    }
    schedule_run::ActiveModel {
        workflow_id: Set(id.to_owned()),
        last_tick: Set(now),
        firing_tick: Set(None),
        after_subscriber: Set(None),
        updated_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(None)
}
