//! Opens and clicks: what the tracking pixel and the rewritten links of an email record.
//!
//! The first open of a message (its pixel, or a click before the pixel loaded) is recorded once
//! as `email_opened`; every click is recorded as `email_clicked` with the link's URL. Both name
//! the message, and its workflow and step or broadcast, so `opened:`/`clicked:` conditions and
//! the timeline see them, and both queue a `changed` trigger so workflow goals are re-checked.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audience::records::{self, kind, trigger};
use crate::core::error::Result;
use crate::store::Db;
use crate::store::entities::{outbox, outbox_body, outbox_dictionary};

/// What a click leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Click {
    /// Redirect here: the URL recorded for that link of that message.
    To(String),
    /// No such message or link.
    Unknown,
}

fn about(message: &outbox::Model) -> Value {
    json!({
        "message": message.id,
        "workflow": message.workflow_id,
        "step": message.step_id,
        "broadcast": message.broadcast_id,
    })
}

/// Records an open of message `id`; false when there is no such message.
pub async fn record_open(db: &Db, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let txn = db.begin_write().await?;
    let Some(message) = outbox::Entity::find_by_id(id).one(&txn).await? else { return Ok(false) };
    first_open(&txn, &message, now).await?;
    txn.commit().await?;
    Ok(true)
}

/// Records a click on link `index` of message `id` and says where it leads.
pub async fn record_click(db: &Db, id: Uuid, index: usize, now: DateTime<Utc>) -> Result<Click> {
    let txn = db.begin_write().await?;
    let Some(message) = outbox::Entity::find_by_id(id).one(&txn).await? else { return Ok(Click::Unknown) };
    let body = outbox_body::Entity::find_by_id(id).one(&txn).await?;
    let dictionary = match body.as_ref().and_then(|body| body.dictionary_id) {
        Some(dictionary) => outbox_dictionary::Entity::find_by_id(dictionary).one(&txn).await?,
        None => None,
    };
    let target = body
        .as_ref()
        .and_then(|body| body.links(dictionary.as_ref()).ok().flatten())
        .and_then(|links| links.get(index))
        .and_then(Value::as_str)
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .map(str::to_owned);
    let Some(url) = target else { return Ok(Click::Unknown) };
    first_open(&txn, &message, now).await?;
    let marked = outbox::Entity::update_many()
        .col_expr(outbox::Column::ClickedAt, Expr::value(now))
        .filter(outbox::Column::Id.eq(id))
        .filter(outbox::Column::ClickedAt.is_null())
        .exec(&txn)
        .await?;
    let day = now.date_naive();
    // The funnel's row before the step's, as everywhere (one lock order, no deadlock).
    crate::rollups::funnel::first_engagement(
        &txn,
        message.subscriber_id,
        kind::EMAIL_CLICKED,
        crate::rollups::funnel::Count::Clicked,
        day,
    )
    .await?;
    if marked.rows_affected == 1 {
        crate::rollups::steps::message_step(&txn, &message, day, crate::rollups::steps::measure::CLICKED).await?;
    }
    if message.broadcast_id.is_some() {
        // A broadcast's report counts every click per link, and the messages in which each
        // link was followed (the first click on it).
        use crate::rollups::steps::measure::{CLICKS, LINK_CLICKED};
        let mut tally = crate::rollups::steps::Tally::default();
        tally.message(day, &message, CLICKS, &url);
        if marked.rows_affected == 1 || !clicked_before(&txn, &message, &url).await? {
            tally.message(day, &message, LINK_CLICKED, &url);
        }
        tally.flush(&txn).await?;
    }
    let mut data = about(&message);
    data["url"] = json!(url);
    records::event(message.subscriber_id, kind::EMAIL_CLICKED, data, now).insert(&txn).await?;
    records::trigger(message.subscriber_id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
    txn.commit().await?;
    Ok(Click::To(url))
}

/// Whether the link `url` of `message` was followed before (its timeline has the click).
async fn clicked_before(txn: &sea_orm::DatabaseTransaction, message: &outbox::Model, url: &str) -> Result<bool> {
    let clicks = crate::store::entities::event::Entity::find()
        .filter(crate::store::entities::event::Column::SubscriberId.eq(message.subscriber_id))
        .filter(crate::store::entities::event::Column::Kind.eq(kind::EMAIL_CLICKED))
        .filter(crate::store::entities::event::Column::CreatedAt.gte(message.created_at))
        .all(txn)
        .await?;
    let id = message.id.to_string();
    Ok(clicks.iter().any(|e| e.data["message"].as_str() == Some(id.as_str()) && e.data["url"].as_str() == Some(url)))
}

/// Marks the message opened and records it, unless it was already.
async fn first_open(txn: &sea_orm::DatabaseTransaction, message: &outbox::Model, now: DateTime<Utc>) -> Result<()> {
    let marked = outbox::Entity::update_many()
        .col_expr(outbox::Column::OpenedAt, Expr::value(now))
        .filter(outbox::Column::Id.eq(message.id))
        .filter(outbox::Column::OpenedAt.is_null())
        .exec(txn)
        .await?;
    if marked.rows_affected == 1 {
        let (opened, day) = (crate::rollups::funnel::Count::Opened, now.date_naive());
        crate::rollups::funnel::first_engagement(txn, message.subscriber_id, kind::EMAIL_OPENED, opened, day).await?;
        crate::rollups::steps::message_step(txn, message, day, crate::rollups::steps::measure::OPENED).await?;
        records::event(message.subscriber_id, kind::EMAIL_OPENED, about(message), now).insert(txn).await?;
        records::trigger(message.subscriber_id, trigger::CHANGED, "", json!({}), now).insert(txn).await?;
    }
    Ok(())
}
