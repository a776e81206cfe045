//! What conditions are tested against: a subscriber's facts, loaded once per batch, and the tests.

use super::*;
use crate::audience::events::kind_of;
use crate::audience::subscribers::{memberships_of, tags_of};
use crate::core::error::Result;
use crate::core::values::{Channel, MembershipStatus};
use crate::store::entities::{event, subscriber};
use crate::workflow::model::{AttributeTest, Condition};
use crate::workflow::program::Needs;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use serde_json::Value;
use uuid::Uuid;

impl Engine {
    /// Whether a condition holds for a subscriber now.
    pub(super) fn holds<'a>(
        &'a self,
        conn: &'a DatabaseTransaction,
        condition: &'a Condition,
        facts: &'a mut Facts,
        workflow_id: &'a str,
        now: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>> {
        Box::pin(async move {
            let id = facts.id;
            Ok(match condition {
                Condition::Tag(tag) => facts.tags(conn).await?.contains(tag),
                Condition::List(slug) => facts.lists(conn).await?.contains(slug),
                Condition::Has(Channel::Email) => facts.subscriber(conn).await?.email.is_some(),
                Condition::Has(Channel::Sms) => facts.subscriber(conn).await?.phone.is_some(),
                // A phone number is no WhatsApp account: consent to it says there is one.
                Condition::Has(Channel::Whatsapp) => {
                    let s = facts.subscriber(conn).await?;
                    s.phone.is_some() && s.whatsapp_state == crate::core::values::ChannelState::Subscribed.as_str()
                }
                Condition::Source(v) => matches_text(facts.subscriber(conn).await?.source.as_deref(), v),
                Condition::Medium(v) => matches_text(facts.subscriber(conn).await?.medium.as_deref(), v),
                Condition::Campaign(v) => matches_text(facts.subscriber(conn).await?.campaign.as_deref(), v),
                Condition::Attribute { name, test } => {
                    let value = facts.subscriber(conn).await?.attributes.get(name);
                    match test {
                        AttributeTest::Exists(exists) => value.is_some_and(|v| !v.is_null()) == *exists,
                        AttributeTest::Equals(expected) => value.is_some_and(|v| loosely_equal(v, expected)),
                        AttributeTest::In(options) => {
                            value.is_some_and(|v| options.iter().any(|o| loosely_equal(v, o)))
                        }
                    }
                }
                Condition::Event { name, within } => {
                    let mut query = event::Entity::find()
                        .filter(event::Column::SubscriberId.eq(id))
                        .filter(event::Column::Kind.eq(kind_of(name)));
                    if let Some(span) = within {
                        query = query.filter(event::Column::CreatedAt.gte(now - span.as_chrono()));
                    }
                    query.one(conn).await?.is_some()
                }
                Condition::Opened(wanted_step) | Condition::Clicked(wanted_step) => {
                    let wanted =
                        if matches!(condition, Condition::Opened(_)) { "email_opened" } else { "email_clicked" };
                    let found = event::Entity::find()
                        .filter(event::Column::SubscriberId.eq(id))
                        .filter(event::Column::Kind.eq(wanted))
                        .all(conn)
                        .await?;
                    // People's opens and clicks only, unless the condition counts machines'.
                    found.iter().any(|e| {
                        e.data.get("step").and_then(Value::as_str) == Some(wanted_step.step.as_str())
                            && e.data.get("workflow").and_then(Value::as_str) == Some(workflow_id)
                            && (wanted_step.include_machine || crate::audience::engagement::by_person(&e.data))
                    })
                }
                Condition::All(items) => {
                    for item in items {
                        if !self.holds(conn, item, &mut *facts, workflow_id, now).await? {
                            return Ok(false);
                        }
                    }
                    true
                }
                Condition::Any(items) => {
                    for item in items {
                        if self.holds(conn, item, &mut *facts, workflow_id, now).await? {
                            return Ok(true);
                        }
                    }
                    false
                }
                Condition::Not(inner) => !self.holds(conn, inner, facts, workflow_id, now).await?,
            })
        })
    }
}

impl Facts {
    pub(super) fn unloaded(id: Uuid) -> Self {
        Self { id, subscriber: None, tags: None, lists: None }
    }

    pub(super) async fn subscriber(&mut self, conn: &impl ConnectionTrait) -> Result<&subscriber::Model> {
        if self.subscriber.is_none() {
            self.subscriber = subscriber::Entity::find_by_id(self.id).one(conn).await?;
        }
        self.subscriber.as_ref().ok_or(crate::core::error::Error::NotFound { what: "subscriber" })
    }

    pub(super) async fn tags(&mut self, conn: &impl ConnectionTrait) -> Result<&mut HashSet<String>> {
        if self.tags.is_none() {
            let mut found = tags_of(conn, &[self.id]).await?;
            self.tags = Some(found.remove(&self.id).unwrap_or_default().into_iter().collect());
        }
        Ok(self.tags.get_or_insert_default())
    }

    pub(super) async fn lists(&mut self, conn: &impl ConnectionTrait) -> Result<&mut HashSet<String>> {
        if self.lists.is_none() {
            let mut found = memberships_of(conn, &[self.id]).await?;
            self.lists = Some(current_lists(found.remove(&self.id).unwrap_or_default()));
        }
        Ok(self.lists.get_or_insert_default())
    }
}

/// A stored attribution value equals `expected`, ignoring case.
pub(super) fn matches_text(stored: Option<&str>, expected: &str) -> bool {
    stored.is_some_and(|x| x.eq_ignore_ascii_case(expected))
}

/// The slugs of the lists a subscriber is on (not those they left).
pub(super) fn current_lists(memberships: Vec<crate::audience::subscribers::MembershipView>) -> HashSet<String> {
    memberships.into_iter().filter(|m| m.status != MembershipStatus::Unsubscribed).map(|m| m.list).collect()
}

pub(super) fn loosely_equal(actual: &Value, expected: &Value) -> bool {
    actual == expected
        || match (actual, expected) {
            (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => a == &b.to_string(),
            (Value::String(a), Value::Bool(b)) | (Value::Bool(b), Value::String(a)) => a == &b.to_string(),
            _ => false,
        }
}

fn machines_too(engaged: &crate::workflow::model::Engaged) -> &'static str {
    if engaged.include_machine { " (machines too)" } else { "" }
}

/// A condition in words, for the timeline.
pub fn describe(condition: &Condition) -> String {
    match condition {
        Condition::Opened(e) => format!("opened '{}'{}", e.step, machines_too(e)),
        Condition::Clicked(e) => format!("clicked in '{}'{}", e.step, machines_too(e)),
        Condition::Tag(t) => format!("tag '{t}'"),
        Condition::List(l) => format!("member of '{l}'"),
        Condition::Has(Channel::Email) => "has an email address".into(),
        Condition::Has(Channel::Sms) => "has a phone number".into(),
        Condition::Has(Channel::Whatsapp) => "takes WhatsApp messages".into(),
        Condition::Attribute { name, test } => match test {
            AttributeTest::Equals(v) => format!("attribute {name} = {v}"),
            AttributeTest::In(vs) => format!("attribute {name} in {}", Value::Array(vs.clone())),
            AttributeTest::Exists(true) => format!("attribute {name} exists"),
            AttributeTest::Exists(false) => format!("attribute {name} is absent"),
        },
        Condition::Event { name, within: Some(w) } => format!("event '{name}' within {w}"),
        Condition::Event { name, within: None } => format!("event '{name}'"),
        Condition::Source(v) => format!("source {v}"),
        Condition::Medium(v) => format!("medium {v}"),
        Condition::Campaign(v) => format!("campaign {v}"),
        Condition::All(items) => format!("all of ({})", items.iter().map(describe).collect::<Vec<_>>().join(", ")),
        Condition::Any(items) => format!("any of ({})", items.iter().map(describe).collect::<Vec<_>>().join(", ")),
        Condition::Not(inner) => format!("not {}", describe(inner)),
    }
}

pub(super) async fn load_facts(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Facts>> {
    let everything = Needs { subscriber: true, tags: true, lists: true };
    Ok(load_facts_batch(conn, vec![id], everything).await?.remove(&id).filter(|f| f.subscriber.is_some()))
}

/// The `needs` part of many subscribers' facts in a query or two per part; the rest loads on use.
pub(super) async fn load_facts_batch(
    conn: &impl ConnectionTrait,
    ids: Vec<Uuid>,
    needs: Needs,
) -> Result<HashMap<Uuid, Facts>> {
    let wanted = ids.into_iter().map(|id| (id, needs)).collect();
    load_facts_for(conn, &wanted).await
}

/// Each subscriber's facts with the parts their own `Needs` name loaded.
pub(super) async fn load_facts_for(
    conn: &impl ConnectionTrait,
    wanted: &HashMap<Uuid, Needs>,
) -> Result<HashMap<Uuid, Facts>> {
    let mut facts: HashMap<Uuid, Facts> = wanted.keys().map(|id| (*id, Facts::unloaded(*id))).collect();
    let ids = |part: fn(&Needs) -> bool| -> Vec<Uuid> {
        wanted.iter().filter(|(_, needs)| part(needs)).map(|(id, _)| *id).collect()
    };
    let rows = ids(|n| n.subscriber);
    if !rows.is_empty() {
        for s in subscriber::Entity::find().filter(subscriber::Column::Id.is_in(rows)).all(conn).await? {
            if let Some(f) = facts.get_mut(&s.id) {
                f.subscriber = Some(s);
            }
        }
    }
    let tagged = ids(|n| n.tags);
    let mut tags = tags_of(conn, &tagged).await?;
    for id in tagged {
        if let Some(f) = facts.get_mut(&id) {
            f.tags = Some(tags.remove(&id).unwrap_or_default().into_iter().collect());
        }
    }
    let listed = ids(|n| n.lists);
    let mut memberships = memberships_of(conn, &listed).await?;
    for id in listed {
        if let Some(f) = facts.get_mut(&id) {
            f.lists = Some(current_lists(memberships.remove(&id).unwrap_or_default()));
        }
    }
    Ok(facts)
}
