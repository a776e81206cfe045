//! What the Rust benchmarks share: a subscriber row to seed with.

use chrono::{DateTime, Utc};
use ownlist::store::entities::subscriber;
use sea_orm::ActiveValue::Set;
use serde_json::json;
use uuid::Uuid;

/// Subscriber number `i` (`user{i}@example.com`, email consent), who came from `source`
/// through the landing page at `landing_page`, if given.
pub fn subscriber_row(
    id: Uuid,
    i: usize,
    at: DateTime<Utc>,
    source: Option<&str>,
    landing_page: Option<String>,
) -> subscriber::ActiveModel {
    subscriber::ActiveModel {
        id: Set(id),
        email: Set(Some(format!("user{i}@example.com"))),
        email_key: Set(Some(format!("user{i}@example.com"))),
        phone: Set(None),
        first_name: Set(None),
        last_name: Set(None),
        timezone: Set(None),
        locale: Set(None),
        attributes: Set(json!({})),
        status: Set("active".into()),
        email_state: Set("subscribed".into()),
        sms_state: Set("none".into()),
        whatsapp_state: Set("none".into()),
        source: Set(source.map(str::to_owned)),
        medium: Set(source.map(|_| "social".to_owned())),
        campaign: Set(None),
        referrer: Set(None),
        landing_page: Set(landing_page),
        content: Set(None),
        term: Set(None),
        click_id: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
}
