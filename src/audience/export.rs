//! Exporting every subscriber as CSV, streamed page by page (never the whole table in memory).
//!
//! The columns are the ones [`super::import`] reads, so an export imported into an empty
//! instance gives the same subscribers back.

use futures_util::Stream;
use futures_util::stream;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::subscribers::{MembershipView, memberships_and_tags};
use crate::core::error::{Error, Result};
use crate::store::Db;
use crate::store::entities::subscriber;

/// The export's header, in order.
pub const COLUMNS: &[&str] = &[
    "id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "timezone",
    "locale",
    "status",
    "email_state",
    "sms_state",
    "whatsapp_state",
    "lists",
    "tags",
    "attributes",
    "source",
    "medium",
    "campaign",
    "referrer",
    "landing_page",
    "content",
    "term",
    "click_id",
    "created_at",
    "updated_at",
];

const PAGE: u64 = 1000;

struct Cursor {
    db: Db,
    after: Option<Uuid>,
    header_sent: bool,
    done: bool,
}

/// The CSV export as a stream of chunks: the header, then one chunk per page of subscribers.
pub fn subscribers_csv(db: Db) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
    let start = Cursor { db, after: None, header_sent: false, done: false };
    stream::try_unfold(start, |mut cursor| async move {
        if cursor.done {
            return Ok(None);
        }
        if !cursor.header_sent {
            cursor.header_sent = true;
            let chunk = write_rows(|w| w.write_record(COLUMNS))?;
            return Ok(Some((chunk, cursor)));
        }
        let mut query = subscriber::Entity::find().order_by_asc(subscriber::Column::Id).limit(PAGE);
        if let Some(after) = cursor.after {
            query = query.filter(subscriber::Column::Id.gt(after));
        }
        let page = query.all(cursor.db.conn()).await?;
        if page.is_empty() {
            return Ok(None);
        }
        cursor.done = (page.len() as u64) < PAGE;
        cursor.after = page.last().map(|s| s.id);
        let ids: Vec<Uuid> = page.iter().map(|s| s.id).collect();
        let (mut memberships, mut tags) = memberships_and_tags(cursor.db.conn(), &ids).await?;
        let chunk = write_rows(|w| {
            for s in &page {
                let lists = memberships.remove(&s.id).unwrap_or_default();
                let tags = tags.remove(&s.id).unwrap_or_default();
                w.write_record(row(s, &lists, &tags))?;
            }
            Ok(())
        })?;
        Ok(Some((chunk, cursor)))
    })
}

fn write_rows(f: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
    f(&mut writer).map_err(|e| Error::Other(e.into()))?;
    writer.into_inner().map_err(|e| Error::Other(anyhow::anyhow!("writing CSV: {e}")))
}

fn row(s: &subscriber::Model, lists: &[MembershipView], tags: &[String]) -> Vec<String> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let lists = lists.iter().map(|m| format!("{}:{}", m.list, m.status)).collect::<Vec<_>>().join(";");
    let attributes = match s.attributes.as_object() {
        Some(map) if !map.is_empty() => s.attributes.to_string(),
        _ => String::new(),
    };
    vec![
        s.id.to_string(),
        text(&s.email),
        text(&s.phone),
        text(&s.first_name),
        text(&s.last_name),
        text(&s.timezone),
        text(&s.locale),
        s.status.clone(),
        s.email_state.clone(),
        s.sms_state.clone(),
        s.whatsapp_state.clone(),
        lists,
        tags.join(";"),
        attributes,
        text(&s.source),
        text(&s.medium),
        text(&s.campaign),
        text(&s.referrer),
        text(&s.landing_page),
        text(&s.content),
        text(&s.term),
        text(&s.click_id),
        s.created_at.to_rfc3339(),
        s.updated_at.to_rfc3339(),
    ]
}
