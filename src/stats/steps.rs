//! Workflow statistics: per workflow, day and step (`step_daily`), counts gathered while the
//! engine advances enrollments and while their messages are delivered, opened, clicked and
//! answered with an unsubscribe, written in the same transaction as what they count.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

use super::{Days, ratio};
use crate::core::error::Result;
use crate::rollups::steps::measure;
use crate::store::Db;
use crate::store::entities::enrollment;
use crate::store::entities::step_day::{self, Column};

/// A skip's reason and how often it happened.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub reason: String,
    pub count: i64,
}

/// One step's counts for a date range, and who is at it now.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct StepStats {
    pub step: String,
    /// The step's kind (email, sms, wait, wait_for, if, tag, …); none for a step no longer in the
    /// workflow's current version.
    pub kind: Option<String>,
    pub entered: i64,
    pub completed: i64,
    pub skipped: i64,
    pub skipped_by_reason: Vec<Reason>,
    /// Left the workflow at this step (its goal held).
    pub exited: i64,
    /// Messages: written to the outbox, accepted by a relay, failed for good, opened, clicked.
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    /// Opened and clicked by people.
    pub opened: i64,
    pub clicked: i64,
    /// Opened and clicked by machines (privacy proxies, link scanners): beside, in no rate.
    pub opened_by_machine: i64,
    pub clicked_by_machine: i64,
    /// Withdrew consent after this step's message.
    pub unsubscribed: i64,
    /// opened / delivered and clicked / delivered.
    pub open_rate: Option<f64>,
    pub click_rate: Option<f64>,
    /// Enrollments at this step now (waiting, or due), whatever the date range.
    pub waiting_now: i64,
}

/// A workflow's statistics for a date range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowStats {
    pub workflow: String,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub enrolled: i64,
    pub completed: i64,
    pub exited: i64,
    /// Enrollments in progress now.
    pub active_now: i64,
    /// The current version's steps in document order, then any step counted in the range that
    /// the current version no longer has.
    pub steps: Vec<StepStats>,
}

/// A workflow's steps in document order, each with its kind.
pub fn steps_of(workflow: &crate::workflow::model::Workflow) -> Vec<(String, Option<String>)> {
    workflow.all_steps().into_iter().map(|step| (step.id.clone(), kind_of(step))).collect()
}

/// A step's kind, as its YAML key names it.
fn kind_of(step: &crate::workflow::model::Step) -> Option<String> {
    match serde_json::to_value(&step.action).ok()? {
        serde_json::Value::Object(map) => map.keys().next().cloned(),
        serde_json::Value::String(name) => Some(name),
        _ => None,
    }
}

/// A workflow's counts for a date range, from the rollups, and who is where now, from the index
/// of live enrollments. `steps` are the current version's steps (id and kind) in order.
pub async fn workflow(db: &Db, id: &str, steps: &[(String, Option<String>)], days: Days) -> Result<WorkflowStats> {
    let mut query = step_day::Entity::find()
        .select_only()
        .column(Column::StepId)
        .column(Column::Measure)
        .column(Column::Detail)
        .expr(super::sum(Column::N))
        .filter(Column::WorkflowId.eq(id))
        .group_by(Column::StepId)
        .group_by(Column::Measure)
        .group_by(Column::Detail);
    let (from, to) = days.keys();
    if let Some(from) = from {
        query = query.filter(Column::Day.gte(from));
    }
    if let Some(to) = to {
        query = query.filter(Column::Day.lte(to));
    }
    let rows: Vec<(String, String, String, i64)> = query.into_tuple().all(db.conn()).await?;
    let live: Vec<(Option<String>, i64)> = enrollment::Entity::find()
        .select_only()
        .column(enrollment::Column::StepId)
        .expr(Expr::cust("COUNT(*)"))
        .filter(enrollment::Column::WorkflowId.eq(id))
        .filter(enrollment::Column::EndedAt.is_null())
        .group_by(enrollment::Column::StepId)
        .into_tuple()
        .all(db.conn())
        .await?;

    let mut by_step: BTreeMap<String, StepStats> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (step, kind) in steps {
        order.push(step.clone());
        by_step.insert(step.clone(), StepStats { step: step.clone(), kind: kind.clone(), ..StepStats::default() });
    }
    let mut stats = WorkflowStats {
        workflow: id.to_owned(),
        from: days.from,
        to: days.to,
        enrolled: 0,
        completed: 0,
        exited: 0,
        active_now: live.iter().map(|(_, n)| n).sum(),
        steps: Vec::new(),
    };
    let mut entry = |step: &str, order: &mut Vec<String>| -> StepStats {
        by_step.remove(step).unwrap_or_else(|| {
            order.push(step.to_owned());
            StepStats { step: step.to_owned(), ..StepStats::default() }
        })
    };
    let mut touched: BTreeMap<String, StepStats> = BTreeMap::new();
    for (step, what, detail, n) in rows {
        if step.is_empty() {
            match what.as_str() {
                measure::ENROLLED => stats.enrolled += n,
                measure::COMPLETED => stats.completed += n,
                measure::EXITED => stats.exited += n,
                _ => {}
            }
            continue;
        }
        let mut s = touched.remove(&step).unwrap_or_else(|| entry(&step, &mut order));
        match what.as_str() {
            measure::ENTERED => s.entered += n,
            measure::COMPLETED => s.completed += n,
            measure::SKIPPED => {
                s.skipped += n;
                s.skipped_by_reason.push(Reason { reason: detail, count: n });
            }
            measure::EXITED => s.exited += n,
            measure::SENT => s.sent += n,
            measure::DELIVERED => s.delivered += n,
            measure::FAILED => s.failed += n,
            measure::OPENED => s.opened += n,
            measure::CLICKED => s.clicked += n,
            measure::UNSUBSCRIBED => s.unsubscribed += n,
            measure::OPENED_BY_MACHINE => s.opened_by_machine += n,
            measure::CLICKED_BY_MACHINE => s.clicked_by_machine += n,
            _ => {}
        }
        touched.insert(step, s);
    }
    for (step, n) in live {
        let step = step.unwrap_or_default();
        let mut s = touched.remove(&step).unwrap_or_else(|| entry(&step, &mut order));
        s.waiting_now += n;
        touched.insert(step, s);
    }
    for step in order {
        let Some(mut s) = touched.remove(&step).or_else(|| by_step.remove(&step)) else { continue };
        s.skipped_by_reason.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        s.open_rate = ratio(s.opened, s.delivered);
        s.click_rate = ratio(s.clicked, s.delivered);
        stats.steps.push(s);
    }
    Ok(stats)
}
