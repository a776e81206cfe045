//! The workflows in force: every checked version stored in the database, the current one per
//! workflow held in memory, and live enrollments moved onto a new version by step id.
//!
//! Versions live in the database, so every instance runs the same one, and an enrollment always
//! names the version it runs. Loading files that did not change stores nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};
use serde::Serialize;
use serde_json::json;

use super::model::{Action, Workflow};
use super::program::Program;
use crate::audience::records;
use crate::core::error::{Error, Result};
use crate::core::values::sha256_hex;
use crate::store::Db;
use crate::store::entities::{enrollment, workflow, workflow_version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Enrolling and advancing.
    Active,
    /// Holding everyone where they are (newcomers enroll and wait at the first step).
    Paused,
    /// The file was removed: no new enrollments; live ones finish on their version.
    Removed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Removed => "removed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "paused" => Status::Paused,
            "removed" => Status::Removed,
            _ => Status::Active,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Current {
    pub version: i32,
    pub status: Status,
    pub program: Arc<Program>,
}

/// Where a group of live enrollments goes when a new version is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub workflow: String,
    pub from_version: i32,
    pub step: Option<String>,
    pub enrollments: u64,
    /// The step they continue at in the new version; `None`: they complete.
    pub to_step: Option<String>,
    /// A wait whose length changed: recomputed from when the wait began.
    pub wait_changed: bool,
}

#[derive(Debug)]
pub struct Registry {
    db: Db,
    current: RwLock<BTreeMap<String, Current>>,
    versions: Mutex<HashMap<(String, i32), Arc<Program>>>,
}

fn digest(workflow: &Workflow) -> String {
    sha256_hex(&serde_json::to_string(workflow).unwrap_or_default())
}

impl Registry {
    /// Loads the current version of every stored workflow.
    pub async fn open(db: Db) -> Result<Self> {
        let registry = Self { db, current: RwLock::new(BTreeMap::new()), versions: Mutex::new(HashMap::new()) };
        registry.refresh().await?;
        Ok(registry)
    }

    /// Re-reads which version of each workflow is current (another instance may have loaded one).
    pub async fn refresh(&self) -> Result<()> {
        let rows = workflow::Entity::find().all(self.db.conn()).await?;
        let mut current = BTreeMap::new();
        for row in rows {
            if let Some(program) = self.program(&row.id, row.current_version).await? {
                current.insert(
                    row.id.clone(),
                    Current { version: row.current_version, status: Status::parse(&row.status), program },
                );
            }
        }
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = current;
        Ok(())
    }

    /// The current workflows (a snapshot).
    pub fn current(&self) -> BTreeMap<String, Current> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A stored version, parsed once and cached.
    pub async fn program(&self, id: &str, version: i32) -> Result<Option<Arc<Program>>> {
        let key = (id.to_owned(), version);
        if let Some(found) = self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Ok(Some(found.clone()));
        }
        let Some(row) = workflow_version::Entity::find_by_id((id.to_owned(), version)).one(self.db.conn()).await?
        else {
            return Ok(None);
        };
        let workflow: Workflow = serde_json::from_value(row.definition).map_err(|e| {
            Error::Other(anyhow::anyhow!("stored version {version} of workflow '{id}' is unreadable: {e}"))
        })?;
        let program = Arc::new(Program::new(workflow, version));
        self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, program.clone());
        Ok(Some(program))
    }

    /// What loading `workflows` would do to live enrollments, without doing it.
    pub async fn plan(&self, workflows: &[Workflow]) -> Result<Vec<Move>> {
        let mut moves = Vec::new();
        let current = self.current();
        for w in workflows {
            let Some(existing) = current.get(&w.id) else { continue };
            if digest(&existing.program.workflow) == digest(w) {
                continue;
            }
            let next = Program::new(w.clone(), existing.version + 1);
            moves.extend(self.moves(self.db.conn(), &w.id, &next).await?);
        }
        Ok(moves)
    }

    async fn moves(&self, conn: &impl ConnectionTrait, id: &str, next: &Program) -> Result<Vec<Move>> {
        let live = enrollment::Entity::find()
            .filter(enrollment::Column::WorkflowId.eq(id))
            .filter(enrollment::Column::EndedAt.is_null())
            .order_by_asc(enrollment::Column::Id)
            .all(conn)
            .await?;
        let mut groups: BTreeMap<(i32, Option<String>), u64> = BTreeMap::new();
        for e in &live {
            *groups.entry((e.version, e.step_id.clone())).or_default() += 1;
        }
        let mut moves = Vec::new();
        for ((version, step), count) in groups {
            let Some(old) = self.program(id, version).await? else { continue };
            let to_step = step.as_deref().and_then(|s| old.map_step_to(s, next));
            let wait_changed = match (&step, &to_step) {
                (Some(from), Some(to)) if from == to => {
                    let before = old.node(from).map(|n| &n.step.action);
                    let after = next.node(to).map(|n| &n.step.action);
                    matches!((before, after), (Some(Action::Wait(a)), Some(Action::Wait(b))) if a != b)
                }
                _ => false,
            };
            moves.push(Move {
                workflow: id.to_owned(),
                from_version: version,
                step,
                enrollments: count,
                to_step,
                wait_changed,
            });
        }
        Ok(moves)
    }

    /// Stores what changed: a new version for each changed workflow (live enrollments move onto
    /// it), `removed` for workflows whose file is gone. Returns the moves made.
    pub async fn sync(&self, now: DateTime<Utc>, workflows: &[Workflow]) -> Result<Vec<Move>> {
        let txn = self.db.begin_write().await?;
        let moves = self.store(&txn, now, workflows, &BTreeSet::new()).await?;
        txn.commit().await?;
        self.refresh().await?;
        Ok(moves)
    }

    /// [`Self::sync`] inside the caller's transaction (the caller refreshes after committing).
    /// Workflows named in `keep` (their file is there but invalid) keep the version they have.
    pub async fn store(
        &self,
        txn: &DatabaseTransaction,
        now: DateTime<Utc>,
        workflows: &[Workflow],
        keep: &BTreeSet<String>,
    ) -> Result<Vec<Move>> {
        let stored: HashMap<String, workflow::Model> =
            workflow::Entity::find().all(txn).await?.into_iter().map(|w| (w.id.clone(), w)).collect();
        let mut all_moves = Vec::new();
        for w in workflows {
            let hash = digest(w);
            let version = match stored.get(&w.id) {
                None => {
                    workflow::ActiveModel {
                        id: Set(w.id.clone()),
                        current_version: Set(1),
                        status: Set(Status::Active.as_str().to_owned()),
                        created_at: Set(now),
                        updated_at: Set(now),
                    }
                    .insert(txn)
                    .await?;
                    1
                }
                Some(row) => {
                    let current =
                        workflow_version::Entity::find_by_id((w.id.clone(), row.current_version)).one(txn).await?;
                    let unchanged = current.is_some_and(|v| v.digest == hash);
                    let mut active = row.clone().into_active_model();
                    if row.status == Status::Removed.as_str() {
                        active.status = Set(Status::Active.as_str().to_owned());
                    }
                    if unchanged {
                        if row.status == Status::Removed.as_str() {
                            active.updated_at = Set(now);
                            active.update(txn).await?;
                        }
                        continue;
                    }
                    active.current_version = Set(row.current_version + 1);
                    active.updated_at = Set(now);
                    active.update(txn).await?;
                    row.current_version + 1
                }
            };
            workflow_version::ActiveModel {
                workflow_id: Set(w.id.clone()),
                version: Set(version),
                definition: Set(serde_json::to_value(w).map_err(|e| Error::Other(e.into()))?),
                digest: Set(hash),
                created_at: Set(now),
            }
            .insert(txn)
            .await?;
            if version > 1 {
                let next = Program::new(w.clone(), version);
                let moves = self.moves(txn, &w.id, &next).await?;
                self.apply_moves(txn, now, &next, &moves).await?;
                all_moves.extend(moves);
            }
        }
        for (id, row) in &stored {
            if row.status != Status::Removed.as_str() && !keep.contains(id) && !workflows.iter().any(|w| &w.id == id) {
                let mut active = row.clone().into_active_model();
                active.status = Set(Status::Removed.as_str().to_owned());
                active.updated_at = Set(now);
                active.update(txn).await?;
            }
        }
        Ok(all_moves)
    }

    async fn apply_moves(
        &self,
        txn: &impl ConnectionTrait,
        now: DateTime<Utc>,
        next: &Program,
        moves: &[Move],
    ) -> Result<()> {
        for m in moves {
            let mut query = enrollment::Entity::find()
                .filter(enrollment::Column::WorkflowId.eq(m.workflow.clone()))
                .filter(enrollment::Column::Version.eq(m.from_version))
                .filter(enrollment::Column::EndedAt.is_null());
            query = match &m.step {
                Some(step) => query.filter(enrollment::Column::StepId.eq(step.clone())),
                None => query.filter(enrollment::Column::StepId.is_null()),
            };
            for e in query.all(txn).await? {
                let subscriber = e.subscriber_id;
                let from = e.step_id.clone();
                let mut active = e.clone().into_active_model();
                active.version = Set(next.version);
                active.updated_at = Set(now);
                match &m.to_step {
                    None => {
                        active.status = Set("completed".to_owned());
                        active.step_id = Set(None);
                        active.next_run_at = Set(None);
                        active.ended_at = Set(Some(now));
                        active.end_reason = Set(Some(format!("its step was removed in version {}", next.version)));
                    }
                    Some(to) => {
                        if to != from.as_deref().unwrap_or_default() {
                            active.step_id = Set(Some(to.clone()));
                            active.wait_started_at = Set(None);
                            active.waiting_for = Set(None);
                            active.next_run_at = Set(Some(now));
                        } else if m.wait_changed
                            && let (Some(started), Some(Action::Wait(length))) =
                                (e.wait_started_at, next.node(to).map(|n| &n.step.action))
                        {
                            active.next_run_at = Set(Some(started + length.as_chrono()));
                        }
                    }
                }
                active.update(txn).await?;
                let data = json!({
                    "workflow": m.workflow, "from_version": m.from_version, "to_version": next.version,
                    "from_step": from, "to_step": m.to_step, "wait_recomputed": m.wait_changed,
                });
                records::event(subscriber, "workflow_updated", data, now).insert(txn).await?;
            }
        }
        Ok(())
    }

    /// Pauses or resumes a workflow.
    pub async fn set_paused(&self, now: DateTime<Utc>, id: &str, paused: bool) -> Result<()> {
        let row = workflow::Entity::find_by_id(id.to_owned())
            .one(self.db.conn())
            .await?
            .ok_or(Error::NotFound { what: "workflow" })?;
        if row.status == Status::Removed.as_str() {
            return Err(Error::Conflict {
                code: "workflow_removed",
                detail: format!("workflow '{id}' has no file any more; it cannot be paused or resumed"),
                existing_id: None,
                field: None,
            });
        }
        let mut active = row.into_active_model();
        active.status = Set(if paused { Status::Paused } else { Status::Active }.as_str().to_owned());
        active.updated_at = Set(now);
        active.update(self.db.conn()).await?;
        self.refresh().await
    }
}

/// Enrollments of a workflow: live ones per step, ended ones per outcome.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = EnrollmentCounts)]
pub struct Counts {
    /// Live enrollments by the step they are at.
    pub at_step: BTreeMap<String, u64>,
    /// All enrollments by status: active, completed, exited, failed.
    pub by_status: BTreeMap<String, u64>,
}

#[derive(Debug, sea_orm::FromQueryResult)]
struct CountRow {
    status: String,
    step_id: Option<String>,
    count: i64,
}

/// Counts enrollments of workflow `id` with one grouped query.
pub async fn counts(db: &Db, id: &str) -> Result<Counts> {
    use sea_orm::QuerySelect;
    let rows = enrollment::Entity::find()
        .select_only()
        .column(enrollment::Column::Status)
        .column(enrollment::Column::StepId)
        .column_as(enrollment::Column::Id.count(), "count")
        .filter(enrollment::Column::WorkflowId.eq(id))
        .group_by(enrollment::Column::Status)
        .group_by(enrollment::Column::StepId)
        .into_model::<CountRow>()
        .all(db.conn())
        .await?;
    let mut counts = Counts::default();
    for row in rows {
        let n = u64::try_from(row.count).unwrap_or(0);
        *counts.by_status.entry(row.status.clone()).or_default() += n;
        if row.status == "active" {
            *counts.at_step.entry(row.step_id.unwrap_or_else(|| "(start)".into())).or_default() += n;
        }
    }
    Ok(counts)
}
