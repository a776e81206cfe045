//! Reading subscribers: one, a page of them, their timeline and everything held about them.

use super::*;
use crate::audience::lists;
use crate::core::error::{Error, Result};
use crate::core::values::{
    Channel, ChannelState, ConsentMethod, EmailAddress, MembershipStatus, SubscriberStatus, decode_cursor,
    encode_cursor, page_limit, stored,
};
use crate::store::Db;
use crate::store::entities::{consent, event, list, membership, subscriber, subscriber_tag};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, Query};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> Result<subscriber::Model> {
    subscriber::Entity::find_by_id(id).one(conn).await?.ok_or(Error::NotFound { what: "subscriber" })
}

pub async fn get(db: &Db, id: Uuid) -> Result<SubscriberView> {
    let model = find(db.conn(), id).await?;
    let mut views = views(db.conn(), vec![model]).await?;
    views.pop().ok_or(Error::NotFound { what: "subscriber" })
}

/// Builds the API shape for a page of subscribers with two extra queries (lists, tags).
pub async fn views(conn: &impl ConnectionTrait, models: Vec<subscriber::Model>) -> Result<Vec<SubscriberView>> {
    let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
    let (mut memberships, mut tags) = memberships_and_tags(conn, &ids).await?;
    Ok(models
        .into_iter()
        .map(|m| {
            let lists = memberships.remove(&m.id).unwrap_or_default();
            let tags = tags.remove(&m.id).unwrap_or_default();
            view(m, lists, tags)
        })
        .collect())
}

pub(super) type MembershipsById = HashMap<Uuid, Vec<MembershipView>>;

pub(super) type TagsById = HashMap<Uuid, Vec<String>>;

pub async fn memberships_and_tags(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<(MembershipsById, TagsById)> {
    Ok((memberships_of(conn, ids).await?, tags_of(conn, ids).await?))
}

/// The lists these subscribers are or were on, each subscriber's sorted by slug.
pub async fn memberships_of(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<MembershipsById> {
    let mut memberships: MembershipsById = HashMap::new();
    if ids.is_empty() {
        return Ok(memberships);
    }
    let rows = membership::Entity::find()
        .filter(membership::Column::SubscriberId.is_in(ids.iter().copied()))
        .all(conn)
        .await?;
    let list_ids: BTreeSet<Uuid> = rows.iter().map(|r| r.list_id).collect();
    let slugs: HashMap<Uuid, String> = list::Entity::find()
        .filter(list::Column::Id.is_in(list_ids))
        .all(conn)
        .await?
        .into_iter()
        .map(|l| (l.id, l.slug))
        .collect();
    for row in rows {
        let Some(slug) = slugs.get(&row.list_id) else {
            continue;
        };
        memberships.entry(row.subscriber_id).or_default().push(MembershipView {
            list: slug.clone(),
            status: stored(&row.status, MembershipStatus::Pending),
            joined_at: row.created_at,
            confirmed_at: row.confirmed_at,
            unsubscribed_at: row.unsubscribed_at,
        });
    }
    for entries in memberships.values_mut() {
        entries.sort_by(|a, b| a.list.cmp(&b.list));
    }
    Ok(memberships)
}

/// These subscribers' tags, each subscriber's sorted.
pub async fn tags_of(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<TagsById> {
    let mut tags: TagsById = HashMap::new();
    if ids.is_empty() {
        return Ok(tags);
    }
    let tag_rows = subscriber_tag::Entity::find()
        .filter(subscriber_tag::Column::SubscriberId.is_in(ids.iter().copied()))
        .order_by_asc(subscriber_tag::Column::Tag)
        .all(conn)
        .await?;
    for row in tag_rows {
        tags.entry(row.subscriber_id).or_default().push(row.tag);
    }
    Ok(tags)
}

pub(super) fn view(m: subscriber::Model, lists: Vec<MembershipView>, tags: Vec<String>) -> SubscriberView {
    SubscriberView {
        id: m.id,
        email: m.email,
        phone: m.phone,
        first_name: m.first_name,
        last_name: m.last_name,
        timezone: m.timezone,
        locale: m.locale,
        attributes: m.attributes,
        status: stored(&m.status, SubscriberStatus::Active),
        channels: ChannelStates {
            email: stored(&m.email_state, ChannelState::None),
            sms: stored(&m.sms_state, ChannelState::None),
            whatsapp: stored(&m.whatsapp_state, ChannelState::None),
        },
        attribution: Attribution {
            source: m.source,
            medium: m.medium,
            campaign: m.campaign,
            referrer: m.referrer,
            landing_page: m.landing_page,
            content: m.content,
            term: m.term,
            click_id: m.click_id,
        },
        lists,
        tags,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

pub(super) fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Lists subscribers in creation order (oldest first), so a cursor stays valid under inserts.
pub async fn list(db: &Db, filter: SubscriberFilter) -> Result<Page<SubscriberView>> {
    let limit = page_limit(filter.limit)?;
    let mut condition = Condition::all();
    if let Some(cursor) = filter.cursor.as_ref().filter(|c| !c.is_empty()) {
        condition = condition.add(subscriber::Column::Id.gt(decode_cursor(cursor)?));
    }
    if let Some(slug) = filter.list.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let found = lists::find(db.conn(), slug).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::field("list", format!("unknown list '{slug}'")),
            other => other,
        })?;
        let members = Query::select()
            .column(membership::Column::SubscriberId)
            .from(membership::Entity)
            .and_where(membership::Column::ListId.eq(found.id))
            .and_where(membership::Column::Status.ne(MembershipStatus::Unsubscribed.as_str()))
            .to_owned();
        condition = condition.add(subscriber::Column::Id.in_subquery(members));
    }
    if let Some(tag) = filter.tag.as_deref().filter(|t| !t.trim().is_empty()) {
        let tagged = Query::select()
            .column(subscriber_tag::Column::SubscriberId)
            .from(subscriber_tag::Entity)
            .and_where(subscriber_tag::Column::Tag.eq(tag.trim()))
            .to_owned();
        condition = condition.add(subscriber::Column::Id.in_subquery(tagged));
    }
    if let Some(status) = filter.status {
        condition = condition.add(subscriber::Column::Status.eq(status.as_str()));
    }
    if let Some(state) = filter.email {
        condition = condition.add(subscriber::Column::EmailState.eq(state.as_str()));
    }
    if let Some(state) = filter.sms {
        condition = condition.add(subscriber::Column::SmsState.eq(state.as_str()));
    }
    if let Some(source) = filter.source.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        if source.chars().count() > 100 {
            return Err(Error::field("source", "100 characters at most"));
        }
        condition = condition.add(subscriber::Column::Source.eq(source));
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let pattern = escape_like(&q.to_lowercase());
        let like = || LikeExpr::new(pattern.clone()).escape('\\');
        let lower = |column: subscriber::Column| Expr::expr(Func::lower(Expr::col((subscriber::Entity, column))));
        condition = condition.add(
            Condition::any()
                .add(subscriber::Column::EmailKey.like(like()))
                .add(subscriber::Column::Phone.like(like()))
                .add(lower(subscriber::Column::FirstName).like(like()))
                .add(lower(subscriber::Column::LastName).like(like())),
        );
    }
    let mut models = subscriber::Entity::find()
        .filter(condition)
        .order_by_asc(subscriber::Column::Id)
        .limit(limit + 1)
        .all(db.conn())
        .await?;
    let next_cursor = next_cursor(&mut models, limit, |m| m.id);
    Ok(Page { data: views(db.conn(), models).await?, next_cursor })
}

/// Trims the one extra row fetched and returns the cursor to continue after the last kept row.
pub(super) fn next_cursor<T>(rows: &mut Vec<T>, limit: u64, id: impl Fn(&T) -> Uuid) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| encode_cursor(id(r)))
    } else {
        None
    }
}

/// The subscriber's timeline, newest first.
pub async fn timeline(db: &Db, id: Uuid, page: PageRequest) -> Result<Page<EventView>> {
    find(db.conn(), id).await?;
    let limit = page_limit(page.limit)?;
    let mut query = event::Entity::find().filter(event::Column::SubscriberId.eq(id));
    if let Some(cursor) = page.cursor.as_ref().filter(|c| !c.is_empty()) {
        query = query.filter(event::Column::Id.lt(decode_cursor(cursor)?));
    }
    let mut rows = query.order_by_desc(event::Column::Id).limit(limit + 1).all(db.conn()).await?;
    let next_cursor = next_cursor(&mut rows, limit, |e| e.id);
    Ok(Page { data: rows.into_iter().map(event_view).collect(), next_cursor })
}

pub(super) fn event_view(e: event::Model) -> EventView {
    EventView { id: e.id, kind: e.kind, data: e.data, at: e.created_at }
}

/// Every grant and withdrawal of consent of a subscriber, oldest first, with its proof.
pub async fn consents(db: &Db, id: Uuid) -> Result<Vec<ConsentView>> {
    Ok(consent::Entity::find()
        .filter(consent::Column::SubscriberId.eq(id))
        .order_by_asc(consent::Column::Id)
        .all(db.conn())
        .await?
        .into_iter()
        .map(|c| ConsentView {
            id: c.id,
            channel: stored(&c.channel, Channel::Email),
            granted: c.granted,
            method: stored(&c.method, ConsentMethod::Api),
            text: c.consent_text,
            text_hash: c.text_hash,
            text_version: c.text_version,
            source: c.source,
            ip: c.ip,
            user_agent: c.user_agent,
            page: c.page,
            page_version: c.page_version,
            at: c.created_at,
        })
        .collect())
}

/// Everything stored about one subscriber.
pub async fn personal_data(db: &Db, now: DateTime<Utc>, id: Uuid) -> Result<PersonalData> {
    let subscriber = get(db, id).await?;
    let consents = consents(db, id).await?;
    let events = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(id))
        .order_by_asc(event::Column::Id)
        .all(db.conn())
        .await?
        .into_iter()
        .map(event_view)
        .collect();
    Ok(PersonalData { subscriber, consents, events, exported_at: now })
}

/// The subscriber with this email address (compared case-insensitively), if any.
pub async fn id_by_email(conn: &impl ConnectionTrait, email: &EmailAddress) -> Result<Option<Uuid>> {
    let found = subscriber::Entity::find()
        .filter(subscriber::Column::EmailKey.eq(email.key()))
        .select_only()
        .column(subscriber::Column::Id)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(found)
}
