//! Date triggers: a yearly date in subscribers' attributes (a birthday) enrolls them in its window.

use super::*;
use crate::core::error::Result;
use crate::core::timing::zone;
use crate::core::timing::{month_day, occurrence_in};
use crate::store::entities::subscriber;
use crate::workflow::model::Trigger;
use crate::workflow::registry::Status;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

impl Engine {
    /// Date triggers: once per window (up to the next UTC midnight), every subscriber whose
    /// yearly date (attribute + offset, at the given local time in their zone) falls inside the
    /// window is enrolled, with the first step due at that moment. Windows follow each other
    /// without gaps or overlaps, so each anniversary enrolls once; progress is stored like a
    /// schedule's, so a crash mid-scan neither skips nor repeats anyone.
    pub(super) async fn run_dates(&self) -> Result<(u64, bool)> {
        let now = self.clock.now();
        let mut enrolled = 0;
        let mut more = false;
        for (id, current) in self.registry.current() {
            let Trigger::Date { attribute, offset, at } = &current.program.workflow.trigger else { continue };
            if current.status == Status::Removed {
                continue;
            }
            let txn = self.db.begin_write().await?;
            let Some(state) = armed_state(&txn, &id, now).await? else {
                txn.commit().await?;
                continue;
            };
            let window_start = state.last_tick;
            let window_end = match state.firing_tick {
                Some(end) => end,
                None => {
                    let next_midnight =
                        (now.date_naive() + chrono::Duration::days(1)).and_time(chrono::NaiveTime::MIN).and_utc();
                    if next_midnight <= window_start {
                        continue;
                    }
                    next_midnight
                }
            };
            let mut query = subscriber::Entity::find().order_by_asc(subscriber::Column::Id).limit(BATCH);
            if let Some(after) = state.after_subscriber {
                query = query.filter(subscriber::Column::Id.gt(after));
            }
            let batch = query.all(&txn).await?;
            let workflow = &current.program.workflow;
            let mut here = 0;
            for s in &batch {
                let Some(anniversary) = s.attributes.get(attribute).and_then(Value::as_str).and_then(month_day) else {
                    continue;
                };
                let tz = zone(s.timezone.as_deref(), workflow.timezone.as_deref());
                if let Some(moment) = occurrence_in(anniversary, *offset, *at, tz, window_start, window_end)
                    && self.enroll_at(&txn, &id, &current.program, s.id, now, moment).await?
                {
                    here += 1;
                }
            }
            count_enrolled(&txn, &id, here, now).await?;
            enrolled += here;
            more |= save_progress(txn, state, window_end, batch.len(), batch.last().map(|s| s.id), now).await?;
        }
        Ok((enrolled, more))
    }
}
