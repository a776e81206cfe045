//! The `message:` step: one message on several channels in order. With `reach: first` (the
//! default) each person gets it once, on the first channel that reaches them now; the messages
//! for the other channels that reach them are written with it and kept back (`standby`), each
//! sent only if the one before fails for good (see [`crate::audience::reach::fallback`]). With
//! `reach: all` it goes on every channel that reaches them.

use sea_orm::ActiveValue::Set;
use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::message::{dress, held_by_window, reachable};
use super::*;
use crate::audience::reach::fallback;
use crate::core::error::Result;
use crate::core::values::{Channel, OutboxStatus};
use crate::outbox::compose::{self, Draft, NewMessage};
use crate::rollups::steps::measure;
use crate::workflow::model::{MessageAction, Trigger};
use crate::workflow::program::Node;

impl Engine {
    pub(super) async fn message_step(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        node: &Node,
        facts: &mut Facts,
        message: &MessageAction,
    ) -> Result<Flow> {
        let step = &node.step;
        let now = run.now;
        let s = facts.subscriber(txn).await?.clone();
        if let Some(held) = held_by_window(run, step, &s) {
            return Ok(held);
        }
        let workflow = &run.program.workflow;
        let context = self.render_context(workflow, &s, now);
        let templates = self.templates();
        let list_slug = match &workflow.trigger {
            Trigger::Subscribed { list } => Some(list.clone()),
            _ => None,
        };
        let mut drafts = Vec::new();
        let mut passed_over = Vec::new();
        // `reach: first`: a channel failing for longer than `fallback_after` is tried last.
        let (ordered, tried_last) = if message.reach_first {
            super::order_for_reach(&message.channels, &self.channels_down(now))
        } else {
            (message.channels.clone(), Vec::new())
        };
        for channel in &ordered {
            let address = match reachable(&s, *channel) {
                Ok(address) => address,
                Err(why) => {
                    passed_over.push(json!({"channel": channel, "reason": why.to_string()}));
                    continue;
                }
            };
            let rendered = match channel {
                Channel::Email => render(
                    &templates,
                    &context,
                    message.subject.as_ref(),
                    &MessageBody::Template(message.template.as_deref().unwrap_or_default()),
                )
                .and_then(|rendered| dress(&templates, &context, rendered)),
                Channel::Sms | Channel::Whatsapp => {
                    let text = message.text.as_deref().unwrap_or_default();
                    render(&templates, &context, None, &MessageBody::Inline(text)).map(|mut rendered| {
                        if *channel == Channel::Whatsapp {
                            rendered.subject = message.whatsapp_template.clone();
                        }
                        rendered
                    })
                }
            };
            match rendered {
                Ok(rendered) => drafts.push(Draft {
                    channel: (*channel).into(),
                    recipient: address,
                    subject: rendered.subject,
                    html: rendered.html,
                    text: rendered.text,
                    list_slug: list_slug.clone(),
                }),
                Err(problem) => passed_over.push(
                    json!({"channel": channel, "reason": format!("the message could not be rendered: {problem}")}),
                ),
            }
        }
        if drafts.is_empty() {
            let reasons: Vec<String> = passed_over
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p["channel"].as_str().unwrap_or_default(),
                        p["reason"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            run.note(
                decision::STEP_SKIPPED,
                json!({"step": step.id, "reason": format!("no channel reaches them ({})", reasons.join("; "))}),
            );
            return Ok(Flow::Goto(node.next.clone()));
        }
        let tracked = self.tracking.as_ref().filter(|_| message.tracking.unwrap_or(workflow.tracking));
        let mut rows = Vec::new();
        for draft in drafts {
            let key = format!("{}:{}:{}", run.row.id, step.id, draft.channel);
            let (mut row, body) = NewMessage::new(key, s.id, draft).tracked(tracked).rows(now);
            row.enrollment_id = Set(Some(run.row.id));
            row.workflow_id = Set(Some(run.row.workflow_id.clone()));
            row.step_id = Set(Some(step.id.clone()));
            rows.push((row, body));
        }
        if message.reach_first {
            chain(&mut rows);
            let chosen: Vec<_> = rows.iter().filter_map(|(m, _)| m.channel.clone().take()).collect();
            run.note(
                fallback::REACH_CHOSEN,
                json!({"step": step.id, "channel": chosen.first(), "passed_over": passed_over, "then": &chosen[1..],
                       "tried_last": tried_last}),
            );
        }
        let first = rows.first().and_then(|(m, _)| m.id.clone().take());
        let channels: Vec<_> =
            rows.iter().filter_map(|(m, _)| Some((m.id.clone().take()?, m.channel.clone().take()?))).collect();
        let written = compose::insert(txn, rows).await?;
        for id in &written {
            let queued = !message.reach_first || Some(*id) == first;
            if queued {
                let channel = channels.iter().find(|(i, _)| i == id).map(|(_, c)| *c);
                run.note(decision::MESSAGE_QUEUED, json!({"step": step.id, "channel": channel, "message": id}));
                run.count(&step.id, measure::SENT, String::new());
            }
        }
        run.note(decision::STEP_DONE, json!({"step": step.id}));
        Ok(Flow::Goto(node.next.clone()))
    }
}

/// `reach: first`: a person's messages in the order of their channels, the first queued, each
/// of the others kept back (`standby`) behind the one before it.
pub(super) fn chain(
    messages: &mut [(crate::store::entities::outbox::ActiveModel, crate::store::entities::outbox_body::ActiveModel)],
) {
    let ids: Vec<Option<uuid::Uuid>> = messages.iter().map(|(m, _)| m.id.clone().take()).collect();
    for (i, (message, _)) in messages.iter_mut().enumerate() {
        if i > 0 {
            message.status = Set(OutboxStatus::Standby);
        }
        message.fallback_id = Set(ids.get(i + 1).copied().flatten());
    }
}
