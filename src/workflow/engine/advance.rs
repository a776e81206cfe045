//! Due enrollments advanced step by step, in batches, with their effects written at once.

use super::*;
use crate::core::error::Result;
use crate::rollups::steps::measure;
use crate::store::entities::{enrollment, schedule_run};
use crate::workflow::program::{Needs, Program};
use crate::workflow::registry::Status;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

impl Engine {
    /// Advances one batch of due enrollments in one transaction. Steps that have only just come
    /// due go first, then the oldest of the rest: a backlog (a broadcast, a restart after
    /// downtime) drains oldest first with whatever capacity is left, while a step coming due
    /// meanwhile still runs on time instead of queueing behind it.
    ///
    /// Everything is read inside the write transaction, on the one connection that writes: its
    /// page cache stays warm, where another connection's would be dropped after every write.
    pub async fn run_due(&self) -> Result<u64> {
        let now = self.clock.now();
        let paused: Vec<String> =
            self.registry.current().into_iter().filter(|(_, c)| c.status == Status::Paused).map(|(id, _)| id).collect();
        let txn = self.db.begin_write().await?;
        // A step that came due while the previous batch ran is still just due, however long that
        // batch took: it must not fall behind a backlog because a batch was slow.
        let previous = self.last_claim.lock().map_or(None, |mut last| last.replace(now));
        let since = |ms| now - chrono::Duration::milliseconds(ms);
        let fresh_since = previous.map_or(since(ON_TIME_MS), |p| p.clamp(since(ON_TIME_MAX_MS), since(ON_TIME_MS)));
        let due = |just_due: bool| {
            let mut query = enrollment::Entity::find()
                .filter(enrollment::Column::Status.eq("active"))
                .filter(enrollment::Column::NextRunAt.lte(now));
            query = if just_due {
                query.filter(enrollment::Column::NextRunAt.gt(fresh_since))
            } else {
                query.filter(enrollment::Column::NextRunAt.lte(fresh_since))
            };
            if !paused.is_empty() {
                query = query.filter(enrollment::Column::WorkflowId.is_not_in(paused.clone()));
            }
            query
        };
        let mut batch = due(true).order_by_asc(enrollment::Column::NextRunAt).limit(BATCH).all(&txn).await?;
        let room = BATCH - batch.len() as u64;
        if room > 0 {
            // Is more overdue than this batch has room for? (A look `room` entries deep into the due
            // index, reading only what it holds.)
            let big = due(false)
                .select_only()
                .column(enrollment::Column::NextRunAt)
                .offset(room - 1)
                .limit(1)
                .into_tuple::<Option<DateTime<Utc>>>()
                .one(&txn)
                .await?
                .is_some();
            let mut taken: HashSet<Uuid> = batch.iter().map(|row| row.id).collect();
            if big {
                let backlog = self.backlog_in_storage_order(&txn, room, fresh_since, &paused, &taken).await?;
                taken.extend(backlog.iter().map(|row| row.id));
                batch.extend(backlog);
            }
            let room = BATCH - batch.len() as u64;
            if room > 0 {
                let mut oldest = due(false).order_by_asc(enrollment::Column::NextRunAt);
                if big {
                    oldest = oldest.filter(enrollment::Column::Id.is_not_in(taken.iter().copied()));
                }
                batch.extend(oldest.limit(room).all(&txn).await?);
            }
        }
        let due = batch;
        let count = due.len() as u64;
        // Each workflow version's program once, and only the facts these programs may read, for
        // all the batch's subscribers at once.
        let mut programs: HashMap<(String, i32), Option<Arc<Program>>> = HashMap::new();
        let mut wanted: HashMap<Uuid, Needs> = HashMap::new();
        for row in &due {
            let key = (row.workflow_id.clone(), row.version);
            if !programs.contains_key(&key) {
                let program = self.registry.program(&row.workflow_id, row.version).await?;
                programs.insert(key.clone(), program);
            }
            if let Some(Some(program)) = programs.get(&key) {
                let needs = wanted.entry(row.subscriber_id).or_default();
                *needs = needs.union(program.needs());
            }
        }
        let mut facts = load_facts_for(&txn, &wanted).await?;
        let mut writes = Writes::default();
        let listeners = Listeners::of(&self.registry);
        for row in due {
            // The enrollment is read in this write transaction, so its subscriber exists (erasing
            // one deletes their enrollments through the foreign key).
            let f = facts.entry(row.subscriber_id).or_insert_with(|| Facts::unloaded(row.subscriber_id));
            let program = programs.get(&(row.workflow_id.clone(), row.version)).cloned().flatten();
            self.advance(&txn, row, program, f, now, &mut writes, &listeners).await?;
        }
        writes.flush(&txn, self.db.backend(), now).await?;
        txn.commit().await?;
        Ok(count)
    }

    /// Up to `room` overdue enrollments, taken in storage (id) order from where the previous batch
    /// stopped: neighbouring rows share pages, so a batch writes a few hundred pages instead of a
    /// few thousand scattered ones. Reads at most `WINDOWS` windows of `room` enrollments; a pass
    /// wraps around at the end, so no overdue enrollment waits longer than one pass.
    pub(super) async fn backlog_in_storage_order(
        &self,
        txn: &DatabaseTransaction,
        room: u64,
        overdue_since: DateTime<Utc>,
        paused: &[String],
        taken: &HashSet<Uuid>,
    ) -> Result<Vec<enrollment::Model>> {
        let mut cursor = self.backlog_cursor.lock().map_or(None, |cursor| *cursor);
        let mut rows = Vec::new();
        for _ in 0..WINDOWS {
            // Ended enrollments are skipped inside the database (SQLite still walks the id index).
            let mut window = enrollment::Entity::find()
                .filter(enrollment::Column::EndedAt.is_null())
                .order_by_asc(enrollment::Column::Id)
                .limit(room);
            if let Some(cursor) = cursor {
                window = window.filter(enrollment::Column::Id.gt(cursor));
            }
            let window = window.all(txn).await?;
            let full = window.len() as u64 == room;
            cursor = window.last().map(|row| row.id);
            for row in window {
                let overdue = row.next_run_at.is_some_and(|due| due <= overdue_since);
                if row.status == "active" && overdue && !paused.contains(&row.workflow_id) && !taken.contains(&row.id) {
                    let id = row.id;
                    rows.push(row);
                    if rows.len() as u64 == room {
                        cursor = Some(id);
                        break;
                    }
                }
            }
            if rows.len() as u64 == room {
                break;
            }
            if !full {
                cursor = None; // the end, all read: the next pass starts over
                break;
            }
        }
        if let Ok(mut stored) = self.backlog_cursor.lock() {
            *stored = cursor;
        }
        Ok(rows)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn advance(
        &self,
        txn: &DatabaseTransaction,
        row: enrollment::Model,
        program: Option<Arc<Program>>,
        facts: &mut Facts,
        now: DateTime<Utc>,
        writes: &mut Writes,
        listeners: &Listeners,
    ) -> Result<()> {
        let Some(program) = program else {
            let mut active = row.into_active_model();
            active.status = Set("failed".into());
            active.ended_at = Set(Some(now));
            active.end_reason = Set(Some("its workflow version is missing".into()));
            active.update(txn).await?;
            return Ok(());
        };
        let logical = row.next_run_at.filter(|due| *due <= now).unwrap_or(now);
        let mut run = Run {
            row,
            program: &program,
            events: Vec::new(),
            triggers: Vec::new(),
            tags: Vec::new(),
            listeners,
            now,
            logical,
            tally: Vec::new(),
            skipped: None,
        };
        let mut flow = Flow::Goto(run.row.step_id.clone());
        for _ in 0..MAX_STEPS_PER_RUN {
            // A step is entered when first reached: a wait (or a held message) that resumes has
            // its start recorded and is not entered again.
            let arriving = run.row.step_id.clone().filter(|_| run.row.wait_started_at.is_none());
            if let Some(step) = &arriving {
                run.count(step, measure::ENTERED, String::new());
            }
            if let Some(goal) = &program.workflow.exit_when
                && self.holds(txn, goal, facts, &run.row.workflow_id, now).await?
            {
                if let Some(step) = run.row.step_id.clone() {
                    run.count(&step, measure::EXITED, String::new());
                }
                writes
                    .goals
                    .push((run.row.subscriber_id, json!({"workflow": run.row.workflow_id, "goal": describe(goal)})));
                flow = Flow::End { status: "exited", reason: format!("goal reached: {}", describe(goal)) };
                break;
            }
            let Some(node) = run.row.step_id.clone().and_then(|id| program.node(&id).cloned()) else {
                flow = Flow::End { status: "completed", reason: "all steps done".into() };
                break;
            };
            flow = self.step(txn, &mut run, &node, facts).await?;
            match &flow {
                Flow::Goto(next) => {
                    match run.skipped.take() {
                        Some(reason) => run.count(&node.step.id, measure::SKIPPED, reason),
                        None => run.count(&node.step.id, measure::COMPLETED, String::new()),
                    }
                    run.row.step_id.clone_from(next);
                    run.row.wait_started_at = None;
                    run.row.waiting_for = None;
                }
                Flow::End { .. } => {
                    run.count(&node.step.id, measure::COMPLETED, String::new());
                    break;
                }
                Flow::WaitUntil(_) => break,
            }
        }
        let mut row = run.row.clone();
        match flow {
            Flow::WaitUntil(at) => row.next_run_at = Some(at),
            Flow::End { status, reason } => {
                let kind = if status == "completed" { decision::COMPLETED } else { decision::EXITED };
                run.count("", if status == "completed" { measure::COMPLETED } else { measure::EXITED }, String::new());
                run.note(kind, json!({"reason": reason}));
                row.status = status.to_owned();
                row.step_id = None;
                row.next_run_at = None;
                row.wait_started_at = None;
                row.waiting_for = None;
                row.ended_at = Some(now);
                row.end_reason = Some(reason);
            }
            Flow::Goto(_) => row.next_run_at = Some(now),
        }
        row.updated_at = now;
        writes.enrollments.push(row.into_active_model().reset_all());
        writes.events.append(&mut run.events);
        writes.triggers.append(&mut run.triggers);
        writes.tags.append(&mut run.tags);
        for (step, what, detail) in &run.tally {
            writes.steps.add(now.date_naive(), &run.row.workflow_id, step, what, detail);
        }
        Ok(())
    }
}

impl Writes {
    pub(super) async fn flush(
        self,
        txn: &DatabaseTransaction,
        backend: sea_orm::DbBackend,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use crate::store::bulk::{OnDuplicate, insert_statement, update_statement};
        let mut seen = HashSet::new();
        for (subscriber, how) in self.goals {
            if seen.insert(subscriber) {
                crate::audience::goals::goal_reached(txn, subscriber, how, now).await?;
            }
        }
        self.steps.flush(txn).await?;
        let mut statements = Vec::new();
        for part in self.tags.chunks(2000) {
            statements.extend(insert_statement(backend, part.to_vec(), OnDuplicate::Ignore));
        }
        // Only the columns a run changes are written: the indexes on who is enrolled where stay
        // untouched, and the one on live enrollments only for those that ended.
        use enrollment::Column as E;
        let moving = [E::Status, E::StepId, E::NextRunAt, E::WaitStartedAt, E::WaitingFor, E::UpdatedAt];
        let ending = [&moving[..], &[E::EndReason, E::EndedAt]].concat();
        let (ended, live): (Vec<_>, Vec<_>) =
            self.enrollments.into_iter().partition(|e| matches!(&e.ended_at, Set(Some(_))));
        for part in live.chunks(1000) {
            statements.extend(update_statement(backend, part.to_vec(), &moving));
        }
        for part in ended.chunks(1000) {
            statements.extend(update_statement(backend, part.to_vec(), &ending));
        }
        // Fresh ids never collide; Ignore only spares SQLite a statement journal.
        for part in self.events.chunks(2000) {
            statements.extend(insert_statement(backend, part.to_vec(), OnDuplicate::Ignore));
        }
        for part in self.triggers.chunks(2000) {
            statements.extend(insert_statement(backend, part.to_vec(), OnDuplicate::Fail));
        }
        for statement in statements {
            crate::store::bulk::execute(txn, statement).await?;
        }
        Ok(())
    }
}

/// Ends one batch of a schedule's or date trigger's pass: a full batch stores the last subscriber
/// reached, a short one marks the tick done; then commits. Returns whether the pass goes on.
pub(super) async fn save_progress(
    txn: DatabaseTransaction,
    state: schedule_run::Model,
    firing: DateTime<Utc>,
    batch_len: usize,
    last: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut active = state.into_active_model();
    let more = match last {
        Some(last) if batch_len as u64 >= BATCH => {
            active.firing_tick = Set(Some(firing));
            active.after_subscriber = Set(Some(last));
            true
        }
        _ => {
            active.last_tick = Set(firing);
            active.firing_tick = Set(None);
            active.after_subscriber = Set(None);
            false
        }
    };
    active.updated_at = Set(now);
    active.update(&txn).await?;
    txn.commit().await?;
    Ok(more)
}
