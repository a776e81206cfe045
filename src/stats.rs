//! Funnel analytics: daily rollups per landing page and traffic source (`funnel_daily`),
//! incremented as things happen, so any stats request sums a few rows per day instead of
//! scanning the timeline. Views are counted server-side, with no cookie and no script; views by
//! crawlers, link previewers (the requests social networks make to draw a link's card) and HEAD
//! requests are counted apart.

use chrono::NaiveDate;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use crate::error::Result;
use crate::store::Db;
use crate::store::entities::funnel_day::{self, Column};

/// What a rollup row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    View,
    BotView,
    Signup,
    Confirmed,
    /// A subscriber's first email opened.
    Opened,
    /// A subscriber's first link clicked.
    Clicked,
}

impl Count {
    fn column(self) -> Column {
        match self {
            Count::View => Column::Views,
            Count::BotView => Column::BotViews,
            Count::Signup => Column::Signups,
            Count::Confirmed => Column::Confirmed,
            Count::Opened => Column::Opened,
            Count::Clicked => Column::Clicked,
        }
    }
}

/// Where a visit came from, as the rollups key it (empty for unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub source: String,
    pub medium: String,
    pub campaign: String,
}

impl Source {
    pub fn of(source: Option<&str>, medium: Option<&str>, campaign: Option<&str>) -> Self {
        let cut = |v: Option<&str>| v.unwrap_or_default().chars().take(100).collect::<String>();
        Self { source: cut(source), medium: cut(medium), campaign: cut(campaign) }
    }
}

/// User agents of crawlers and link previewers (lower-case fragments).
const BOTS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "facebookexternalhit",
    "facebookcatalog",
    "meta-externalagent",
    "whatsapp",
    "telegram",
    "discord",
    "skypeuripreview",
    "embedly",
    "quora link preview",
    "vkshare",
    "preview",
    "headlesschrome",
    "curl/",
    "wget/",
    "python-requests",
    "go-http-client",
];

/// Whether a request is a machine's rather than a person's: a HEAD request, no user agent, or
/// one of a known crawler or link previewer.
pub fn is_bot(head: bool, user_agent: Option<&str>) -> bool {
    if head {
        return true;
    }
    let Some(agent) = user_agent.map(str::to_ascii_lowercase).filter(|a| !a.trim().is_empty()) else { return true };
    BOTS.iter().any(|b| agent.contains(b))
}

/// Adds one to a day's count for a page and source, in its own transaction.
pub async fn record(db: &Db, day: NaiveDate, page: &str, from: &Source, what: Count) -> Result<()> {
    let txn = db.begin_write().await?;
    bump(&txn, day, page, from, what).await?;
    txn.commit().await?;
    Ok(())
}

/// Adds one to a day's count for a page and source, within the caller's transaction.
pub async fn bump(
    conn: &impl sea_orm::ConnectionTrait,
    day: NaiveDate,
    page: &str,
    from: &Source,
    what: Count,
) -> Result<()> {
    use sea_orm::ActiveValue::Set;
    let column = what.column();
    let row = funnel_day::ActiveModel {
        day: Set(day.format("%Y-%m-%d").to_string()),
        page: Set(page.to_owned()),
        source: Set(from.source.clone()),
        medium: Set(from.medium.clone()),
        campaign: Set(from.campaign.clone()),
        views: Set(i64::from(what == Count::View)),
        bot_views: Set(i64::from(what == Count::BotView)),
        signups: Set(i64::from(what == Count::Signup)),
        confirmed: Set(i64::from(what == Count::Confirmed)),
        opened: Set(i64::from(what == Count::Opened)),
        clicked: Set(i64::from(what == Count::Clicked)),
    };
    funnel_day::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::Day, Column::Page, Column::Source, Column::Medium, Column::Campaign])
                .value(column, Expr::col((funnel_day::Entity, column)).add(Expr::val(1)))
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// The landing page of a subscriber's first touch (`…/p/SLUG…`), if they came through one.
pub fn first_touch_page(landing_page: Option<&str>) -> Option<String> {
    let rest = landing_page?.split("/p/").nth(1)?;
    let slug = rest.split(['/', '?', '#']).next().unwrap_or_default();
    (!slug.is_empty()).then(|| slug.to_owned())
}

/// Counts a subscriber's first open or click (once in their life) for the page and source they
/// first came from, when they came through a landing page.
pub async fn first_engagement(
    txn: &sea_orm::DatabaseTransaction,
    subscriber_id: uuid::Uuid,
    kind: &str,
    what: Count,
    day: NaiveDate,
) -> Result<()> {
    use crate::store::entities::{event, subscriber};
    let before = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(subscriber_id))
        .filter(event::Column::Kind.eq(kind))
        .one(txn)
        .await?;
    if before.is_some() {
        return Ok(());
    }
    let Some(person) = subscriber::Entity::find_by_id(subscriber_id).one(txn).await? else { return Ok(()) };
    let Some(page) = first_touch_page(person.landing_page.as_deref()) else { return Ok(()) };
    let from = Source::of(person.source.as_deref(), person.medium.as_deref(), person.campaign.as_deref());
    bump(txn, day, &page, &from, what).await
}

/// Which rollups a stats request sums.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub page: Option<String>,
    pub source: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// One stage of the funnel and the share of the stage before it that reached it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stage {
    pub stage: String,
    pub count: i64,
    /// `count` over the previous stage's count (none for the first stage, or after zero).
    pub conversion: Option<f64>,
}

/// The funnel for a filter, and the views machines made (not part of it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    pub page: Option<String>,
    pub source: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub stages: Vec<Stage>,
    pub bot_views: i64,
}

/// Sums the rollups a filter selects.
pub async fn funnel(db: &Db, filter: &Filter) -> Result<Funnel> {
    let mut query = funnel_day::Entity::find();
    if let Some(page) = &filter.page {
        query = query.filter(Column::Page.eq(page.as_str()));
    }
    if let Some(source) = &filter.source {
        query = query.filter(Column::Source.eq(source.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(Column::Day.gte(from.format("%Y-%m-%d").to_string()));
    }
    if let Some(to) = filter.to {
        query = query.filter(Column::Day.lte(to.format("%Y-%m-%d").to_string()));
    }
    let rows = query.order_by_asc(Column::Day).all(db.conn()).await?;
    let sum = |f: fn(&funnel_day::Model) -> i64| rows.iter().map(f).sum::<i64>();
    let counts = [
        ("views", sum(|r| r.views)),
        ("signups", sum(|r| r.signups)),
        ("confirmed", sum(|r| r.confirmed)),
        ("opened", sum(|r| r.opened)),
        ("clicked", sum(|r| r.clicked)),
    ];
    let mut stages = Vec::new();
    let mut previous: Option<i64> = None;
    for (name, count) in counts {
        let conversion = previous.filter(|p| *p > 0).map(|p| (count as f64 / p as f64 * 10_000.0).round() / 10_000.0);
        stages.push(Stage { stage: name.to_owned(), count, conversion });
        previous = Some(count);
    }
    Ok(Funnel {
        page: filter.page.clone(),
        source: filter.source.clone(),
        from: filter.from,
        to: filter.to,
        stages,
        bot_views: sum(|r| r.bot_views),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_previewers_crawlers_and_head_requests_are_bots() {
        let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Instagram 300.0";
        assert!(!is_bot(false, Some(phone)));
        assert!(is_bot(true, Some(phone)), "HEAD");
        assert!(is_bot(false, Some("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)")));
        assert!(is_bot(false, Some("Mozilla/5.0 (compatible; Googlebot/2.1)")));
        assert!(is_bot(false, Some("WhatsApp/2.23.20.0")));
        assert!(is_bot(false, None) && is_bot(false, Some(" ")));
    }
}
