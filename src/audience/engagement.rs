//! Opens and clicks: what the tracking pixel and the rewritten links of an email record.
//!
//! Every fetch gets a verdict (see [`crate::audience::machines`]): a person's, or a machine's
//! with its reason. A person's first open of a message (its pixel, or a click before the pixel
//! loaded) is recorded once as `email_opened`; every click a person makes, as `email_clicked`
//! with the link's URL. Machines' opens and clicks are recorded too (the first machine open of a
//! message, every machine click), with `verdict: machine` and the reason, so the timeline shows
//! them and `include_machine` conditions can use them; but the message's `opened_at` and
//! `clicked_at`, the funnel's first open and first click and the step and broadcast figures
//! count people only, machines beside (`opened_by_machine`, `clicked_by_machine`). Each event
//! names the message, and its workflow and step or broadcast, and queues a `changed` trigger so
//! workflow goals are re-checked.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audience::machines::{Fetch, Fetched, Machines, Verdict};
use crate::audience::records::{self, kind, trigger};
use crate::core::error::Result;
use crate::rollups::steps::measure;
use crate::store::Db;
use crate::store::entities::{event, outbox, outbox_body, outbox_dictionary};

/// What a click leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Click {
    /// Redirect here: the URL recorded for that link of that message.
    To(String),
    /// The hidden link: it leads to the site's front page.
    Trap,
    /// No such message or link.
    Unknown,
}

/// Which link of a message was followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The link recorded at this index.
    At(usize),
    /// The hidden link no reader sees.
    Trap,
}

fn about(message: &outbox::Model, verdict: &Verdict) -> Value {
    let mut data = json!({
        "message": message.id,
        "workflow": message.workflow_id,
        "step": message.step_id,
        "broadcast": message.broadcast_id,
        "verdict": verdict.as_str(),
    });
    if let Some(reason) = verdict.reason() {
        data["reason"] = json!(reason);
    }
    data
}

pub use crate::rollups::by_person;

/// What the message's earlier opens and clicks say about a new fetch.
#[derive(Debug, Default)]
struct Before {
    /// Anything opened it, or followed one of its links.
    opened: bool,
    machine_opened: bool,
    machine_clicked: bool,
    /// Different links (URLs) followed in the burst window, and whether the hidden one was.
    recent_links: std::collections::BTreeSet<String>,
    recent_trap: bool,
    /// URLs people followed.
    clicked_by_people: std::collections::BTreeSet<String>,
}

async fn before(
    txn: &sea_orm::DatabaseTransaction,
    message: &outbox::Model,
    machines: &Machines,
    now: DateTime<Utc>,
) -> Result<Before> {
    let events = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(message.subscriber_id))
        .filter(event::Column::Kind.is_in([kind::EMAIL_OPENED, kind::EMAIL_CLICKED]))
        .filter(event::Column::CreatedAt.gte(message.created_at))
        .all(txn)
        .await?;
    let id = message.id.to_string();
    let window = now - machines.burst();
    let mut found = Before { opened: message.opened_at.is_some(), ..Before::default() };
    for e in events.iter().filter(|e| e.data["message"].as_str() == Some(id.as_str())) {
        let person = by_person(&e.data);
        found.opened = true;
        let url = e.data["url"].as_str().unwrap_or_default();
        let trap = e.data["trap"].as_bool() == Some(true);
        match (e.kind.as_str(), person) {
            (kind::EMAIL_OPENED, false) => found.machine_opened = true,
            (kind::EMAIL_CLICKED, false) => found.machine_clicked = true,
            (kind::EMAIL_CLICKED, true) => {
                found.clicked_by_people.insert(url.to_owned());
            }
            _ => {}
        }
        if e.kind == kind::EMAIL_CLICKED && e.created_at >= window {
            if trap {
                found.recent_trap = true;
            } else {
                found.recent_links.insert(url.to_owned());
            }
        }
    }
    Ok(found)
}

fn seconds_since(sent: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<f64> {
    sent.map(|sent| (now - sent).num_milliseconds().max(0) as f64 / 1000.0)
}

/// Records an open of message `id` as `fetch` shows it; false when there is no such message.
pub async fn record_open(db: &Db, id: Uuid, mut fetch: Fetch, machines: &Machines, now: DateTime<Utc>) -> Result<bool> {
    let txn = db.begin_write().await?;
    let Some(message) = outbox::Entity::find_by_id(id).one(&txn).await? else { return Ok(false) };
    fetch.fetched = Some(Fetched::Open);
    fetch.seconds_after_sending = seconds_since(message.sent_at, now);
    match machines.judge(&fetch) {
        Verdict::Human => first_open(&txn, &message, now).await?,
        machine => {
            if !before(&txn, &message, machines, now).await?.machine_opened {
                let day = now.date_naive();
                crate::rollups::steps::message_step(&txn, &message, day, measure::OPENED_BY_MACHINE).await?;
                records::event(message.subscriber_id, kind::EMAIL_OPENED, about(&message, &machine), now)
                    .insert(&txn)
                    .await?;
                records::trigger(message.subscriber_id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
            }
        }
    }
    txn.commit().await?;
    Ok(true)
}

/// The URL recorded for link `index` of a message.
async fn target(txn: &sea_orm::DatabaseTransaction, id: Uuid, index: usize) -> Result<Option<String>> {
    let body = outbox_body::Entity::find_by_id(id).one(txn).await?;
    let dictionary = match body.as_ref().and_then(|body| body.dictionary_id) {
        Some(dictionary) => outbox_dictionary::Entity::find_by_id(dictionary).one(txn).await?,
        None => None,
    };
    Ok(body
        .as_ref()
        .and_then(|body| body.links(dictionary.as_ref()).ok().flatten())
        .and_then(|links| links.get(index))
        .and_then(Value::as_str)
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .map(str::to_owned))
}

/// Records that `link` of message `id` was followed, as `fetch` shows it, and says where it
/// leads.
pub async fn record_click(
    db: &Db,
    id: Uuid,
    link: Link,
    mut fetch: Fetch,
    machines: &Machines,
    now: DateTime<Utc>,
) -> Result<Click> {
    let txn = db.begin_write().await?;
    let Some(message) = outbox::Entity::find_by_id(id).one(&txn).await? else { return Ok(Click::Unknown) };
    let url = match link {
        Link::At(index) => match target(&txn, id, index).await? {
            Some(url) => url,
            None => return Ok(Click::Unknown),
        },
        Link::Trap => String::new(),
    };
    let earlier = before(&txn, &message, machines, now).await?;
    fetch.fetched = Some(if link == Link::Trap { Fetched::Trap } else { Fetched::Click });
    fetch.seconds_after_sending = seconds_since(message.sent_at, now);
    fetch.opened_before = earlier.opened;
    fetch.trap_just_before = earlier.recent_trap;
    fetch.other_links_just_before = earlier.recent_links.iter().filter(|u| **u != url).count() as u32;
    let verdict = machines.judge(&fetch);
    let day = now.date_naive();
    if verdict.is_human() {
        first_open(&txn, &message, now).await?;
        let marked = outbox::Entity::update_many()
            .col_expr(outbox::Column::ClickedAt, Expr::value(now))
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::ClickedAt.is_null())
            .exec(&txn)
            .await?;
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
            crate::rollups::steps::message_step(&txn, &message, day, measure::CLICKED).await?;
        }
        if message.broadcast_id.is_some() {
            // A broadcast's report counts every click per link, and the messages in which each
            // link was followed (the first click on it).
            let mut tally = crate::rollups::steps::Tally::default();
            tally.message(day, &message, measure::CLICKS, &url);
            if !earlier.clicked_by_people.contains(&url) {
                tally.message(day, &message, measure::LINK_CLICKED, &url);
            }
            tally.flush(&txn).await?;
        }
    } else if !earlier.machine_clicked {
        crate::rollups::steps::message_step(&txn, &message, day, measure::CLICKED_BY_MACHINE).await?;
    }
    let mut data = about(&message, &verdict);
    data["url"] = json!(url);
    if link == Link::Trap {
        data["trap"] = json!(true);
    }
    records::event(message.subscriber_id, kind::EMAIL_CLICKED, data, now).insert(&txn).await?;
    records::trigger(message.subscriber_id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
    txn.commit().await?;
    Ok(if link == Link::Trap { Click::Trap } else { Click::To(url) })
}

/// Marks the message opened by a person and records it, unless it was already.
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
        crate::rollups::steps::message_step(txn, message, day, measure::OPENED).await?;
        records::event(message.subscriber_id, kind::EMAIL_OPENED, about(message, &Verdict::Human), now)
            .insert(txn)
            .await?;
        records::trigger(message.subscriber_id, trigger::CHANGED, "", json!({}), now).insert(txn).await?;
    }
    Ok(())
}
