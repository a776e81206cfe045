//! Writing planned batches, one transaction each, re-planned row by row when refused.

use super::*;
use crate::audience::records::{self, ConsentOrigin, ConsentWording, kind};
use crate::audience::subscribers::new_subscriber_row;
use crate::core::error::{Error, Result};
use crate::core::values::{Channel, ChannelState, ConsentMethod};
use crate::store::bulk::{OnDuplicate, insert_statement};
use crate::store::entities::list;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use sea_orm::{DatabaseTransaction, DbBackend};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

impl Planner {
    pub(super) async fn prepare(&mut self, rows: Vec<Row>) -> Result<Prepared> {
        self.ensure_lists(&rows).await?;
        let now = self.clock.now();
        let mut plan = plan_batch(self.db.conn(), &rows, &self.context, now).await?;
        let writes = render_writes(&mut plan, &self.context, self.db.backend(), now);
        Ok(Prepared { rows, plan, writes, context: self.context.clone() })
    }

    /// Creates the lists a `lists` column names that do not exist yet.
    pub(super) async fn ensure_lists(&mut self, rows: &[Row]) -> Result<()> {
        let wanted: BTreeSet<&str> = rows
            .iter()
            .flat_map(|r| r.lists.iter().map(|(slug, _)| slug.as_str()))
            .filter(|slug| !self.context.list_ids.contains_key(*slug))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found =
            list::Entity::find().filter(list::Column::Slug.is_in(wanted.iter().copied())).all(self.db.conn()).await?;
        let context = Arc::make_mut(&mut self.context);
        for l in found {
            context.list_ids.insert(l.slug, l.id);
        }
        let now = self.clock.now();
        let missing: Vec<String> =
            wanted.into_iter().filter(|s| !context.list_ids.contains_key(*s)).map(str::to_owned).collect();
        for slug in missing {
            let model = list::ActiveModel {
                id: Set(Uuid::now_v7()),
                slug: Set(slug.clone()),
                name: Set(slug),
                description: Set(None),
                double_opt_in: Set(true),
                created_at: Set(now),
                updated_at: Set(now),
            };
            let created = model.insert(self.db.conn()).await?;
            self.lists_created.push(created.slug.clone());
            context.list_ids.insert(created.slug, created.id);
        }
        Ok(())
    }
}

impl Executor {
    pub(super) async fn execute(&mut self, prepared: Prepared) -> Result<()> {
        let Prepared { rows, plan, writes, context } = prepared;
        match self.apply(writes).await {
            Ok(()) => {
                self.record(plan);
                return Ok(());
            }
            Err(Error::Database(_)) => {}
            Err(other) => return Err(other),
        }
        match self.write_carefully(&rows, &context).await {
            Ok(plan) => {
                self.record(plan);
                return Ok(());
            }
            Err(Error::Database(_)) if rows.len() > 1 => {}
            Err(other) => return Err(other),
        }
        for row in rows {
            match self.write_carefully(std::slice::from_ref(&row), &context).await {
                Ok(plan) => self.record(plan),
                Err(Error::Database(e)) if e.sql_err().is_some() => {
                    self.report.skipped += 1;
                    self.report.reject(row.line, None, format!("could not be stored: {e}"));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    pub(super) async fn apply(&self, writes: Writes) -> Result<()> {
        let txn = self.db.begin_write().await?;
        run_writes(&txn, writes).await?;
        txn.commit().await?;
        Ok(())
    }

    pub(super) async fn write_carefully(&self, rows: &[Row], context: &Context) -> Result<Plan> {
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let mut plan = plan_batch(&txn, rows, context, now).await?;
        let writes = render_writes(&mut plan, context, self.db.backend(), now);
        run_writes(&txn, writes).await?;
        txn.commit().await?;
        Ok(plan)
    }

    pub(super) fn record(&mut self, plan: Plan) {
        self.report.imported += plan.imported;
        self.report.updated += plan.updated;
        self.report.suppressed += plan.suppressed;
        self.report.skipped += plan.suppressed + plan.rejected.len() as u64;
        for (line, message) in plan.rejected {
            self.report.reject(line, None, message);
        }
    }
}

pub(super) async fn run_writes(txn: &DatabaseTransaction, writes: Writes) -> Result<()> {
    for update in writes.updates {
        update.update(txn).await?;
    }
    for statement in writes.statements {
        crate::store::bulk::execute(txn, statement).await?;
    }
    Ok(())
}

/// Splits `rows` into owned chunks of at most `size`, without copying the rows.
pub(super) fn chunks<T>(mut rows: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut parts = Vec::with_capacity(rows.len().div_ceil(size));
    while rows.len() > size {
        let rest = rows.split_off(size);
        parts.push(std::mem::replace(&mut rows, rest));
    }
    if !rows.is_empty() {
        parts.push(rows);
    }
    parts
}

/// Renders a plan's inserts as multi-row statements, plus the updates of existing subscribers.
pub(super) fn render_writes(plan: &mut Plan, context: &Context, backend: DbBackend, now: DateTime<Utc>) -> Writes {
    let by = context.actor.label();
    let list_slug = context.default_list.as_ref().map(|(slug, _)| slug.clone());
    let origin = ConsentOrigin { method: ConsentMethod::Import, source: Some(by.clone()), ip: None, user_agent: None };
    let wording = ConsentWording::default();
    let mut subscribers = Vec::with_capacity(plan.new.len());
    let mut consents = Vec::with_capacity(plan.new.len());
    let mut events = Vec::with_capacity(plan.new.len() + plan.existing.len());
    let mut writes = Writes::default();
    for n in &plan.new {
        let created_at = n.created_at.unwrap_or(now);
        let state = |channel: Channel| match channel {
            Channel::Email => n.email_state,
            Channel::Sms => n.sms_state,
            Channel::Whatsapp => n.whatsapp_state,
        };
        subscribers.push(new_subscriber_row(n.id, &n.profile, n.status, state, created_at, now));
        for (channel, state) in Channel::ALL.iter().map(|c| (*c, state(*c))) {
            if state == ChannelState::Subscribed {
                consents.push(records::consent(n.id, channel, true, &origin, &wording, now));
            }
        }
        events.push(records::event(n.id, kind::IMPORTED, json!({"by": by, "list": list_slug}), now));
    }
    for (model, dirty, fields) in plan.existing.values() {
        if !*dirty {
            continue;
        }
        let mut active = model.clone().into_active_model().reset_all();
        active.id = sea_orm::ActiveValue::Unchanged(model.id);
        active.updated_at = Set(now);
        writes.updates.push(active);
        events.push(records::event(model.id, kind::UPDATED, json!({"by": by, "fields": fields, "via": "import"}), now));
        for (channel, state) in Channel::ALL.iter().map(|c| (*c, model.state_of(*c))) {
            if fields.contains(&channel_state_field(channel)) && state == ChannelState::Subscribed.as_str() {
                consents.push(records::consent(model.id, channel, true, &origin, &wording, now));
            }
        }
    }
    let statements = chunks(subscribers, 1000)
        .into_iter()
        .map(|part| insert_statement(backend, part, OnDuplicate::Fail))
        .chain(
            chunks(std::mem::take(&mut plan.memberships), 2000)
                .into_iter()
                .map(|part| insert_statement(backend, part, OnDuplicate::Ignore)),
        )
        .chain(
            chunks(std::mem::take(&mut plan.tags), 3000)
                .into_iter()
                .map(|part| insert_statement(backend, part, OnDuplicate::Ignore)),
        )
        .chain(chunks(consents, 1000).into_iter().map(|part| insert_statement(backend, part, OnDuplicate::Fail)))
        .chain(chunks(events, 3000).into_iter().map(|part| insert_statement(backend, part, OnDuplicate::Fail)));
    writes.statements.extend(statements.flatten());
    writes
}
