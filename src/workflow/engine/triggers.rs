//! Pending triggers (subscribed, tag added, events) into enrollments; goals that end enrollments.

use super::*;
use crate::audience::records::{self, trigger};
use crate::core::error::Result;
use crate::rollups::steps::{Tally, measure};
use crate::store::entities::{enrollment, pending_trigger, subscriber};
use crate::workflow::model::{Reentry, Trigger};
use crate::workflow::program::{Needs, Program};
use crate::workflow::registry::{Registry, Status};
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

impl Engine {
    /// Takes a batch of pending triggers: enrolls, and wakes enrollments waiting for an event.
    pub(super) async fn process_triggers(&self) -> Result<(u64, u64)> {
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let batch =
            pending_trigger::Entity::find().order_by_asc(pending_trigger::Column::Id).limit(BATCH).all(&txn).await?;
        if batch.is_empty() {
            return Ok((0, 0));
        }
        let workflows = self.registry.current();
        let mut enrolled = 0;
        let mut tally = Tally::default();
        let touched: Vec<Uuid> = batch.iter().map(|t| t.subscriber_id).collect::<HashSet<_>>().into_iter().collect();
        self.check_goals(&txn, touched, now, &mut tally).await?;
        for t in &batch {
            if t.kind == trigger::SUNSET {
                self.ask_still_interested(&txn, t.subscriber_id, now).await?;
                continue;
            }
            if t.kind == trigger::EVENT {
                self.wake(&txn, t, now).await?;
                self.page_goal(&txn, t, now).await?;
            }
            for (id, current) in &workflows {
                if current.status == Status::Removed || !matches_trigger(&current.program.workflow.trigger, t) {
                    continue;
                }
                if self.enroll(&txn, id, &current.program, t.subscriber_id, now).await? {
                    tally.add(now.date_naive(), id, "", measure::ENROLLED, "");
                    enrolled += 1;
                }
            }
        }
        tally.flush(&txn).await?;
        let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
        pending_trigger::Entity::delete_many().filter(pending_trigger::Column::Id.is_in(ids)).exec(&txn).await?;
        txn.commit().await?;
        Ok((batch.len() as u64, enrolled))
    }

    /// Something changed for this subscriber: any live enrollment whose `exit_when` now holds
    /// ends at once, not at its next step.
    pub(super) async fn check_goals(
        &self,
        txn: &DatabaseTransaction,
        subscribers: Vec<Uuid>,
        now: DateTime<Utc>,
        tally: &mut Tally,
    ) -> Result<()> {
        let mut live = Vec::new();
        for chunk in subscribers.chunks(1000) {
            let found = enrollment::Entity::find()
                .filter(enrollment::Column::SubscriberId.is_in(chunk.iter().copied()))
                .filter(enrollment::Column::EndedAt.is_null())
                .all(txn)
                .await?;
            live.extend(found);
        }
        // Only enrollments whose workflow has a goal need the subscriber's facts.
        let mut with_goals = Vec::new();
        for e in live {
            if let Some(program) = self.registry.program(&e.workflow_id, e.version).await?
                && program.workflow.exit_when.is_some()
            {
                with_goals.push((e, program));
            }
        }
        if with_goals.is_empty() {
            return Ok(());
        }
        let ids = with_goals.iter().map(|(e, _)| e.subscriber_id).collect();
        let needs = with_goals.iter().map(|(_, p)| p.needs()).fold(Needs::default(), Needs::union);
        let mut facts = load_facts_batch(txn, ids, needs).await?;
        for (e, program) in with_goals {
            let Some(goal) = &program.workflow.exit_when else { continue };
            let Some(facts) = facts.get_mut(&e.subscriber_id) else { continue };
            if !self.holds(txn, goal, facts, &e.workflow_id, now).await? {
                continue;
            }
            let subscriber_id = e.subscriber_id;
            let day = now.date_naive();
            if let Some(step) = &e.step_id {
                if e.wait_started_at.is_none() {
                    tally.add(day, &e.workflow_id, step, measure::ENTERED, "");
                }
                tally.add(day, &e.workflow_id, step, measure::EXITED, "");
            }
            tally.add(day, &e.workflow_id, "", measure::EXITED, "");
            let how = json!({"workflow": e.workflow_id, "goal": describe(goal)});
            crate::audience::goals::goal_reached(txn, subscriber_id, how, now).await?;
            let reason = format!("goal reached: {}", describe(goal));
            let data = json!({"workflow": e.workflow_id, "version": e.version, "step": e.step_id, "reason": reason});
            let mut active = e.into_active_model();
            active.status = Set("exited".into());
            active.step_id = Set(None);
            active.next_run_at = Set(None);
            active.wait_started_at = Set(None);
            active.waiting_for = Set(None);
            active.ended_at = Set(Some(now));
            active.end_reason = Set(Some(reason));
            active.updated_at = Set(now);
            active.update(txn).await?;
            records::event(subscriber_id, decision::EXITED, data, now).insert(txn).await?;
        }
        Ok(())
    }

    /// An event named as the `goal` of the landing page the subscriber first came through: they
    /// reached their goal.
    pub(super) async fn page_goal(
        &self,
        txn: &DatabaseTransaction,
        t: &pending_trigger::Model,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.catalog.pages().all().iter().any(|p| p.goal.as_deref() == Some(t.name.as_str())) {
            return Ok(());
        }
        let Some(person) = subscriber::Entity::find_by_id(t.subscriber_id).one(txn).await? else { return Ok(()) };
        let Some(slug) = crate::rollups::funnel::first_touch_page(person.landing_page.as_deref()) else {
            return Ok(());
        };
        if self.catalog.pages().get(&slug).is_some_and(|p| p.goal.as_deref() == Some(t.name.as_str())) {
            crate::audience::goals::goal_reached(txn, t.subscriber_id, json!({"page": slug, "event": t.name}), now)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn wake(
        &self,
        txn: &DatabaseTransaction,
        t: &pending_trigger::Model,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let waiting = enrollment::Entity::find()
            .filter(enrollment::Column::SubscriberId.eq(t.subscriber_id))
            .filter(enrollment::Column::WaitingFor.eq(t.name.clone()))
            .filter(enrollment::Column::EndedAt.is_null())
            .all(txn)
            .await?;
        for e in waiting {
            let data = json!({"workflow": e.workflow_id, "step": e.step_id, "event": t.name});
            let mut active = e.into_active_model();
            active.waiting_for = Set(None);
            active.next_run_at = Set(Some(now));
            active.updated_at = Set(now);
            let saved = active.update(txn).await?;
            records::event(saved.subscriber_id, decision::EVENT_RECEIVED, data, now).insert(txn).await?;
        }
        Ok(())
    }

    /// Enrolls a subscriber if the filter and the re-entry rule allow; records why not otherwise.
    pub(super) async fn enroll(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        program: &Program,
        subscriber_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.enroll_at(txn, id, program, subscriber_id, now, now).await
    }

    /// Enrolls with the first step due at `start` (later than `now` for date triggers).
    pub(super) async fn enroll_at(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        program: &Program,
        subscriber_id: Uuid,
        now: DateTime<Utc>,
        start: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(mut facts) = load_facts(txn, subscriber_id).await? else { return Ok(false) };
        let workflow = &program.workflow;
        let not_entered = |reason: String| {
            records::event(subscriber_id, decision::NOT_ENTERED, json!({"workflow": id, "reason": reason}), now)
        };
        if let Some(filter) = &workflow.filter
            && !self.holds(txn, filter, &mut facts, id, now).await?
        {
            not_entered(format!("the trigger's filter does not hold: {}", describe(filter))).insert(txn).await?;
            return Ok(false);
        }
        let past = enrollment::Entity::find()
            .filter(enrollment::Column::WorkflowId.eq(id))
            .filter(enrollment::Column::SubscriberId.eq(subscriber_id))
            .order_by_desc(enrollment::Column::CreatedAt)
            .all(txn)
            .await?;
        if let Some(live) = past.iter().find(|e| e.ended_at.is_none()) {
            let at = live.step_id.clone().unwrap_or_default();
            not_entered(format!("already in this workflow (at step '{at}')")).insert(txn).await?;
            return Ok(false);
        }
        if let Some(last) = past.first() {
            let refused = match workflow.reentry {
                Reentry::Never => Some("re-entry is `never` and they went through it before".to_owned()),
                Reentry::Always => None,
                Reentry::After(span) if last.created_at + span.as_chrono() > now => {
                    Some(format!("re-entry is allowed {span} after the last entry"))
                }
                Reentry::After(_) => None,
            };
            if let Some(reason) = refused {
                not_entered(reason).insert(txn).await?;
                return Ok(false);
            }
        }
        let current = self.registry.current();
        let version = current.get(id).map_or(program.version, |c| c.version);
        enrollment::ActiveModel {
            id: Set(Uuid::now_v7()),
            workflow_id: Set(id.to_owned()),
            version: Set(version),
            subscriber_id: Set(subscriber_id),
            status: Set("active".into()),
            step_id: Set(program.first().map(str::to_owned)),
            next_run_at: Set(Some(start)),
            wait_started_at: Set(None),
            waiting_for: Set(None),
            end_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ended_at: Set(None),
        }
        .insert(txn)
        .await?;
        records::event(subscriber_id, decision::ENTERED, json!({"workflow": id, "version": version}), now)
            .insert(txn)
            .await?;
        Ok(true)
    }
}

impl Listeners {
    pub(super) fn of(registry: &Registry) -> Self {
        let current = registry.current();
        let tags = current
            .values()
            .filter_map(|c| match &c.program.workflow.trigger {
                Trigger::TagAdded { tag } => Some(tag.clone()),
                _ => None,
            })
            .collect();
        let goals = current.values().any(|c| c.program.workflow.exit_when.is_some());
        Self { tags, goals }
    }

    pub(super) fn want_tag(&self, tag: &str) -> bool {
        self.goals || self.tags.contains(tag)
    }
}

/// Counts enrollments a transaction made in a workflow, in its step statistics.
pub(super) async fn count_enrolled(
    txn: &DatabaseTransaction,
    workflow: &str,
    n: u64,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tally = Tally::default();
    if n > 0 {
        tally.add_n(now.date_naive(), workflow, "", measure::ENROLLED, "", i64::try_from(n).unwrap_or(i64::MAX));
    }
    tally.flush(txn).await
}

pub(super) fn matches_trigger(trigger: &Trigger, pending: &pending_trigger::Model) -> bool {
    match trigger {
        Trigger::Subscribed { list } => pending.kind == trigger::SUBSCRIBED && &pending.name == list,
        Trigger::TagAdded { tag } => pending.kind == trigger::TAG_ADDED && &pending.name == tag,
        Trigger::Event { name } => pending.kind == trigger::EVENT && &pending.name == name,
        Trigger::Date { .. } | Trigger::Schedule { .. } => false,
    }
}
