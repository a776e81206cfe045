//! One step of one enrollment: what it does and where the enrollment goes next.

use super::*;
use crate::audience::records::{self, kind, trigger};
use crate::audience::subscribers::{membership_row, tag_row};
use crate::core::error::Result;
use crate::core::timing::{next_cron_tick, next_local_time, zone};
use crate::core::values::OutboxChannel;
use crate::core::values::{Channel, MembershipStatus};
use crate::outbox::compose::Draft;
use crate::store::entities::{list, membership, subscriber_tag};
use crate::workflow::model::{Action, SmsBody, WaitUntil};
use crate::workflow::program::Node;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::{Value, json};

impl Engine {
    pub(super) async fn step(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        node: &Node,
        facts: &mut Facts,
    ) -> Result<Flow> {
        let step = &node.step;
        let now = run.now;
        let workflow = &run.program.workflow;
        let done = |run: &mut Run<'_>, detail: Value| {
            run.note(decision::STEP_DONE, json!({"step": step.id, "detail": detail}));
            Flow::Goto(node.next.clone())
        };
        Ok(match &step.action {
            Action::Wait(length) => match run.row.wait_started_at {
                None => {
                    let until = run.logical + length.as_chrono();
                    run.row.wait_started_at = Some(run.logical);
                    run.note(decision::WAITING, json!({"step": step.id, "until": until, "for": length.to_string()}));
                    Flow::WaitUntil(until)
                }
                Some(started) if started + length.as_chrono() > now => Flow::WaitUntil(started + length.as_chrono()),
                Some(started) => {
                    run.logical = started + length.as_chrono();
                    done(run, json!("waited"))
                }
            },
            Action::WaitUntil(until) => match (run.row.wait_started_at, run.row.next_run_at) {
                (Some(_), Some(target)) if target <= now => {
                    run.logical = target;
                    done(run, json!("the time came"))
                }
                (Some(_), Some(target)) => Flow::WaitUntil(target),
                _ => {
                    let tz = zone(facts.subscriber(txn).await?.timezone.as_deref(), workflow.timezone.as_deref());
                    let target = match until {
                        WaitUntil::Time { weekday, time } => next_local_time(run.logical, tz, *weekday, *time),
                        WaitUntil::Cron(expression) => next_cron_tick(run.logical, tz, expression)
                            .unwrap_or(run.logical + chrono::Duration::days(1)),
                    };
                    run.row.wait_started_at = Some(run.logical);
                    run.note(decision::WAITING, json!({"step": step.id, "until": target, "timezone": tz.name()}));
                    Flow::WaitUntil(target)
                }
            },
            Action::WaitFor { event, timeout, .. } => match run.row.wait_started_at {
                None => {
                    let until = run.logical + timeout.as_chrono();
                    run.row.wait_started_at = Some(run.logical);
                    run.row.waiting_for = Some(event.clone());
                    run.note(decision::WAITING, json!({"step": step.id, "for_event": event, "until": until}));
                    Flow::WaitUntil(until)
                }
                Some(_) if run.row.waiting_for.is_none() => done(run, json!({"event": event})),
                Some(started) if started + timeout.as_chrono() > now => Flow::WaitUntil(started + timeout.as_chrono()),
                Some(started) => {
                    run.logical = started + timeout.as_chrono();
                    run.note(decision::TIMED_OUT, json!({"step": step.id, "event": event}));
                    Flow::Goto(node.timeout_first.clone())
                }
            },
            Action::If { condition, .. } => {
                let holds = self.holds(txn, condition, facts, &run.row.workflow_id, now).await?;
                let branch = if holds { "then" } else { "else" };
                run.note(decision::BRANCH, json!({"step": step.id, "branch": branch, "because": format!("{} is {holds}", describe(condition))}));
                Flow::Goto(if holds { node.then_first.clone() } else { node.else_first.clone() })
            }
            Action::Email { subject, template, .. } => {
                self.message(txn, run, node, facts, Channel::Email, Some(subject), MessageBody::Template(template))
                    .await?
            }
            Action::Sms { body } => {
                let body = match body {
                    SmsBody::Template(t) => MessageBody::Template(t),
                    SmsBody::Text(t) => MessageBody::Inline(t),
                };
                self.message(txn, run, node, facts, Channel::Sms, None, body).await?
            }
            Action::Message(message) => self.message_step(txn, run, node, facts, message).await?,
            Action::AskChannel(wanted) => self.ask_channel(txn, run, node, facts, *wanted).await?,
            Action::Tag(tag) => {
                // The batch holds the write lock and every change to these facts, so a tag not in
                // them is new; it is written with the rest of the batch.
                if facts.tags(txn).await?.insert(tag.clone()) {
                    run.tags.push(tag_row(facts.id, tag, now));
                    // `tag_added` names the step: it is this step's "done" entry too.
                    run.note(kind::TAG_ADDED, json!({"tag": tag, "step": step.id}));
                    if run.listeners.want_tag(tag) {
                        run.triggers.push(records::trigger(facts.id, trigger::TAG_ADDED, tag, json!({}), now));
                    }
                    Flow::Goto(node.next.clone())
                } else {
                    done(run, json!({"tag": tag, "already": true}))
                }
            }
            Action::Untag(tag) => {
                let removed = subscriber_tag::Entity::delete_many()
                    .filter(subscriber_tag::Column::SubscriberId.eq(facts.id))
                    .filter(subscriber_tag::Column::Tag.eq(tag.clone()))
                    .exec(txn)
                    .await?;
                if removed.rows_affected > 0 {
                    facts.tags(txn).await?.remove(tag);
                    run.note(kind::TAG_REMOVED, json!({"tag": tag, "step": step.id}));
                }
                done(run, json!({"untag": tag}))
            }
            Action::Set(values) => {
                let current = facts.subscriber(txn).await?.clone();
                let mut attributes = current.attributes.as_object().cloned().unwrap_or_default();
                for (key, value) in values {
                    attributes.insert(key.clone(), value.clone());
                }
                let mut active = current.into_active_model();
                active.attributes = Set(Value::Object(attributes));
                active.updated_at = Set(now);
                facts.subscriber = Some(active.update(txn).await?);
                run.note(kind::UPDATED, json!({"fields": ["attributes"], "step": step.id}));
                done(run, json!({"set": values.keys().collect::<Vec<_>>()}))
            }
            Action::Join(slug) | Action::Leave(slug) => {
                let joining = matches!(step.action, Action::Join(_));
                self.membership(txn, run, facts, slug, joining).await?;
                done(run, json!({if joining { "join" } else { "leave" }: slug}))
            }
            Action::Webhook { url, secret_env, body } => {
                let payload = json!({
                    "workflow": {"id": workflow.id, "name": workflow.name, "version": run.program.version},
                    "step": step.id,
                    "subscriber": subscriber_json(facts.subscriber(txn).await?),
                    "body": body,
                    "secret_env": secret_env,
                });
                let draft = Draft {
                    channel: OutboxChannel::Webhook,
                    recipient: url.clone(),
                    subject: None,
                    html: None,
                    text: payload.to_string(),
                    list_slug: None,
                };
                self.enqueue(txn, run, step, facts.id, draft, None).await?;
                done(run, json!({"webhook": url}))
            }
            Action::Exit(reason) => {
                Flow::End { status: "exited", reason: format!("exit step '{}': {reason}", step.id) }
            }
        })
    }

    pub(super) async fn membership(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        facts: &mut Facts,
        slug: &str,
        joining: bool,
    ) -> Result<()> {
        let now = run.now;
        let Some(target) = list::Entity::find().filter(list::Column::Slug.eq(slug)).one(txn).await? else {
            run.note(decision::STEP_SKIPPED, json!({"reason": format!("list '{slug}' does not exist")}));
            return Ok(());
        };
        let existing = membership::Entity::find_by_id((facts.id, target.id)).one(txn).await?;
        match (joining, existing) {
            (true, None) => {
                membership_row(facts.id, target.id, MembershipStatus::Confirmed, now).insert(txn).await?;
                facts.lists(txn).await?.insert(slug.to_owned());
                run.note(kind::SUBSCRIBED, json!({"lists": [slug]}));
                run.triggers.push(records::trigger(facts.id, trigger::SUBSCRIBED, slug, json!({}), now));
            }
            (true, Some(m)) if m.status == MembershipStatus::Unsubscribed.as_str() => {
                run.note(
                    decision::STEP_SKIPPED,
                    json!({"reason": format!("they left '{slug}' and are not re-added by a workflow")}),
                );
            }
            (false, Some(m)) if m.status != MembershipStatus::Unsubscribed.as_str() => {
                let mut active = m.into_active_model();
                active.status = Set(MembershipStatus::Unsubscribed.as_str().to_owned());
                active.unsubscribed_at = Set(Some(now));
                active.updated_at = Set(now);
                active.update(txn).await?;
                facts.lists(txn).await?.remove(slug);
                run.note(kind::UNSUBSCRIBED, json!({"list": slug}));
            }
            _ => {}
        }
        Ok(())
    }
}
