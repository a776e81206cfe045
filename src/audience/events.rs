//! Custom events: something a subscriber did elsewhere (`purchased`, `webinar_attended`),
//! reported by an integration. An event goes into the timeline and may start or wake workflows.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Actor;
use super::records::{self, trigger};
use super::subscribers::{Checker, EventView};
use crate::core::error::{Error, FieldError, Reason, Result, reason};
use crate::core::values::MAX_ATTRIBUTES_BYTES;
use crate::store::Db;
use crate::store::entities::subscriber;

/// The timeline kind of a custom event named `name`.
pub fn kind_of(name: &str) -> String {
    format!("event:{name}")
}

/// Event names: 1 to 64 letters, digits, `_`, `-`, `.`.
pub fn validate_name(name: &str) -> std::result::Result<(), Reason> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(reason!("'{name}' is not an event name: use 1 to 64 letters, digits, '_', '-' or '.'"))
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Who it happened to: their id, or their email or phone.
    pub subscriber_id: Option<Uuid>,
    #[schema(schema_with = crate::core::values::schema::email)]
    pub email: Option<String>,
    #[schema(pattern = "^(\\+[1-9][0-9]{6,14})?$")]
    pub phone: Option<String>,
    /// What happened, e.g. `purchased`.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

pub async fn record(db: &Db, now: DateTime<Utc>, actor: &Actor, input: NewEvent) -> Result<EventView> {
    let mut c = Checker::default();
    c.check("name", validate_name(&input.name));
    let email = c.email("email", input.email.as_deref());
    let phone = c.phone("phone", input.phone.as_deref());
    let size = serde_json::to_vec(&input.properties).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_ATTRIBUTES_BYTES {
        c.errors.push(FieldError::new(
            "properties",
            format!("take {size} bytes as JSON; the limit is {MAX_ATTRIBUTES_BYTES}"),
        ));
    }
    if input.subscriber_id.is_none() && input.email.is_none() && input.phone.is_none() {
        c.errors.push(FieldError::new("subscriber_id", "say who: subscriber_id, email or phone"));
    }
    c.finish()?;
    let mut query = subscriber::Entity::find();
    if let Some(id) = input.subscriber_id {
        query = query.filter(subscriber::Column::Id.eq(id));
    }
    if let Some(email) = &email {
        query = query.filter(subscriber::Column::EmailKey.eq(email.key()));
    }
    if let Some(phone) = &phone {
        query = query.filter(subscriber::Column::Phone.eq(phone.as_str()));
    }
    let txn = db.begin_write().await?;
    let found = query.one(&txn).await?.ok_or(Error::NotFound { what: "subscriber" })?;
    let data = json!({"properties": input.properties, "by": actor.label()});
    let event = records::event(found.id, &kind_of(&input.name), data, now).insert(&txn).await?;
    records::trigger(found.id, trigger::EVENT, &input.name, Value::Object(input.properties), now).insert(&txn).await?;
    txn.commit().await?;
    Ok(EventView { id: event.id, kind: event.kind, data: event.data, at: event.created_at })
}
