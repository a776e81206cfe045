//! The preference page behind every message's signed link: the lists a person is on and the
//! channels they gave consent for, each on or off. Every change is the person's own and is
//! recorded like one (consent records for channels, timeline entries for lists).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::audience::records::{self, ConsentOrigin, kind, trigger};
use crate::audience::subscribers::change_channel;
use crate::core::error::Result;
use crate::core::values::{Channel, ChannelState, ConsentMethod, MembershipStatus, stored};
use crate::store::Db;
use crate::store::entities::{list, membership, subscriber};

/// One list on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChoice {
    pub slug: String,
    pub name: String,
    /// Confirmed or pending: the box is ticked.
    pub on: bool,
}

/// One channel on the page (only those with an address and a consent history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelChoice {
    pub channel: Channel,
    pub address: String,
    pub state: ChannelState,
    /// Switched off, but confirmed when it was: it may be switched back on here.
    pub reopenable: bool,
}

impl ChannelChoice {
    pub fn on(&self) -> bool {
        matches!(self.state, ChannelState::Subscribed | ChannelState::Pending)
    }

    /// Whether the person can switch it here: off when it is on; back on only when it was
    /// confirmed before it was switched off (never a channel whose owner did not confirm it, nor
    /// a bounced or complained address).
    pub fn switchable(&self) -> bool {
        self.on() || self.reopenable
    }
}

/// Whether `channel` was confirmed (subscribed) when it was last withdrawn: only such a channel
/// may be switched back on from the preference page. One withdrawn while it was still pending
/// (its owner never confirmed it) needs a new signup and its confirmation.
async fn reopenable(conn: &impl sea_orm::ConnectionTrait, id: Uuid, channel: Channel) -> Result<bool> {
    use sea_orm::{QueryOrder, QuerySelect};
    let withdrawals = crate::store::entities::event::Entity::find()
        .filter(crate::store::entities::event::Column::SubscriberId.eq(id))
        .filter(crate::store::entities::event::Column::Kind.eq(kind::CONSENT_REVOKED))
        .order_by_desc(crate::store::entities::event::Column::Id)
        .limit(50)
        .all(conn)
        .await?;
    let last = withdrawals.iter().find(|e| e.data["channel"].as_str() == Some(channel.as_str()));
    Ok(last.is_some_and(|e| e.data["from"].as_str() == Some(ChannelState::Subscribed.as_str())))
}

/// What the page shows.
#[derive(Debug, Clone)]
pub struct Choices {
    pub first_name: Option<String>,
    /// The subscriber's language, when known: the page speaks it.
    pub locale: Option<String>,
    pub lists: Vec<ListChoice>,
    pub channels: Vec<ChannelChoice>,
}

/// The choices of a subscriber, or `None` when they no longer exist (erased).
pub async fn choices(db: &Db, id: Uuid) -> Result<Option<Choices>> {
    let conn = db.conn();
    let Some(person) = subscriber::Entity::find_by_id(id).one(conn).await? else { return Ok(None) };
    let rows = membership::Entity::find().filter(membership::Column::SubscriberId.eq(id)).all(conn).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.list_id).collect();
    let names = list::Entity::find().filter(list::Column::Id.is_in(ids)).all(conn).await?;
    let mut lists: Vec<ListChoice> = rows
        .iter()
        .filter_map(|m| {
            names.iter().find(|l| l.id == m.list_id).map(|l| ListChoice {
                slug: l.slug.clone(),
                name: l.name.clone(),
                on: m.status != MembershipStatus::Unsubscribed.as_str(),
            })
        })
        .collect();
    lists.sort_by(|a, b| a.name.cmp(&b.name));
    let mut channels = Vec::new();
    for channel in Channel::ALL.iter().copied() {
        let (address, state) = (person.address_of(channel).map(str::to_owned), person.state_of(channel));
        let state = stored(state, ChannelState::None);
        if let Some(address) = address
            && state != ChannelState::None
        {
            let reopenable = state == ChannelState::Unsubscribed && reopenable(conn, id, channel).await?;
            channels.push(ChannelChoice { channel, address, state, reopenable });
        }
    }
    Ok(Some(Choices { first_name: person.first_name, locale: person.locale, lists, channels }))
}

/// Takes a membership off its list (`list`: its slug; `by`: how, for the timeline).
async fn off_list(
    txn: &sea_orm::DatabaseTransaction,
    now: DateTime<Utc>,
    id: Uuid,
    mut m: membership::ActiveModel,
    list: &str,
    by: &str,
) -> Result<()> {
    m.status = Set(MembershipStatus::Unsubscribed.as_str().to_owned());
    m.unsubscribed_at = Set(Some(now));
    m.updated_at = Set(now);
    m.update(txn).await?;
    records::event(id, kind::UNSUBSCRIBED, json!({"list": list, "by": by}), now).insert(txn).await?;
    crate::rollups::steps::left_list(txn, id, list, now.date_naive()).await?;
    Ok(())
}

/// What an unsubscribe link's page needs to know of its subscriber: their language, and the list
/// the message came from when they are on it (or were).
#[derive(Debug, Clone)]
pub struct Unsubscribing {
    pub locale: Option<String>,
    pub list: Option<ListChoice>,
}

/// The subscriber behind an unsubscribe link and its list (`None`: erased).
pub async fn unsubscribing(db: &Db, id: Uuid, list_slug: Option<&str>) -> Result<Option<Unsubscribing>> {
    let conn = db.conn();
    let Some(person) = subscriber::Entity::find_by_id(id).one(conn).await? else { return Ok(None) };
    let mut list_choice = None;
    if let Some(slug) = list_slug
        && let Some(l) = list::Entity::find().filter(list::Column::Slug.eq(slug)).one(conn).await?
        && let Some(m) = membership::Entity::find_by_id((id, l.id)).one(conn).await?
    {
        let on = m.status != MembershipStatus::Unsubscribed.as_str();
        list_choice = Some(ListChoice { slug: l.slug, name: l.name, on });
    }
    Ok(Some(Unsubscribing { locale: person.locale, list: list_choice }))
}

/// Takes a subscriber off one list, as an unsubscribe link of that list's mail asks (`by`: the
/// page's button, or a mail client's one-click request). Returns whether anything changed (not
/// when already off it, or never on it).
pub async fn leave_list(db: &Db, now: DateTime<Utc>, id: Uuid, slug: &str, by: &str) -> Result<bool> {
    let txn = db.begin_write().await?;
    let Some(l) = list::Entity::find().filter(list::Column::Slug.eq(slug)).one(&txn).await? else { return Ok(false) };
    let Some(m) = membership::Entity::find_by_id((id, l.id)).one(&txn).await? else { return Ok(false) };
    if m.status == MembershipStatus::Unsubscribed.as_str() {
        return Ok(false);
    }
    off_list(&txn, now, id, m.into_active_model(), &l.slug, by).await?;
    records::trigger(id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
    txn.commit().await?;
    Ok(true)
}

/// Applies the page as submitted: the lists and channels left ticked (`lists_on`, `channels_on`);
/// everything else shown on the page is switched off. Returns how many things changed.
pub async fn save(
    db: &Db,
    now: DateTime<Utc>,
    id: Uuid,
    lists_on: &BTreeSet<String>,
    channels_on: &BTreeSet<Channel>,
    origin: &ConsentOrigin,
) -> Result<usize> {
    let origin = ConsentOrigin { method: ConsentMethod::Preferences, ..origin.clone() };
    let txn = db.begin_write().await?;
    let mut changed = 0;
    let rows = membership::Entity::find().filter(membership::Column::SubscriberId.eq(id)).all(&txn).await?;
    for row in rows {
        let Some(list) = list::Entity::find_by_id(row.list_id).one(&txn).await? else { continue };
        let on = row.status != MembershipStatus::Unsubscribed.as_str();
        let wanted = lists_on.contains(&list.slug);
        if on == wanted {
            continue;
        }
        let mut m = row.into_active_model();
        if wanted {
            m.status = Set(MembershipStatus::Confirmed.as_str().to_owned());
            m.confirmed_at = Set(Some(now));
            m.unsubscribed_at = Set(None);
            records::trigger(id, trigger::SUBSCRIBED, &list.slug, json!({"by": "preferences"}), now)
                .insert(&txn)
                .await?;
            records::event(id, kind::SUBSCRIBED, json!({"lists": [list.slug], "by": "preferences"}), now)
                .insert(&txn)
                .await?;
            m.updated_at = Set(now);
            m.update(&txn).await?;
        } else {
            off_list(&txn, now, id, m, &list.slug, "preferences").await?;
        }
        changed += 1;
    }
    for channel in Channel::ALL.iter().copied() {
        let Some(person) = subscriber::Entity::find_by_id(id).one(&txn).await? else { break };
        let state = stored(person.state_of(channel), ChannelState::None);
        let on = matches!(state, ChannelState::Subscribed | ChannelState::Pending);
        let wanted = channels_on.contains(&channel);
        // Off: a subscribed channel, or a pending one (its request withdrawn). Back on: only one
        // that was confirmed when it was switched off; a pending double opt-in still needs its
        // own confirmation, whoever ticks its box here.
        let to = match (on, wanted, state) {
            (true, false, _) => ChannelState::Unsubscribed,
            (false, true, ChannelState::Unsubscribed) if reopenable(&txn, id, channel).await? => {
                ChannelState::Subscribed
            }
            _ => continue,
        };
        if change_channel(&txn, now, person, channel, to, &origin).await? {
            changed += 1;
        }
    }
    if changed > 0 {
        records::trigger(id, trigger::CHANGED, "", json!({}), now).insert(&txn).await?;
    }
    txn.commit().await?;
    Ok(changed)
}
