//! The landing-page funnel: daily rollups per page and traffic source (`funnel_daily`),
//! incremented as things happen. Views are counted server-side, with no cookie and no script;
//! views by crawlers, link previewers (the requests social networks make to draw a link's card)
//! and HEAD requests are counted apart.

use chrono::NaiveDate;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use super::{Days, day_key, ratio, sum};
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
    /// A subscriber's first goal reached.
    Goal,
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
            Count::Goal => Column::Goals,
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

/// Distinct sources (source, medium and campaign together) counted apart per page and day; the
/// rest are counted as [`OTHER`]. Visitors choose UTM values freely: without a budget, made-up
/// values would each add a row, and the dashboard would list them all.
pub const SOURCES_PER_PAGE_AND_DAY: u64 = 100;

/// Where sources past the day's budget are counted.
pub const OTHER: &str = "other";

/// Adds one to a day's count for a page and source, within the caller's transaction.
pub async fn bump(
    conn: &impl sea_orm::ConnectionTrait,
    day: NaiveDate,
    page: &str,
    from: &Source,
    what: Count,
) -> Result<()> {
    use sea_orm::ActiveValue::Set;
    use sea_orm::{PaginatorTrait, QueryFilter};
    let column = what.column();
    // A source already counted today is counted on in one statement; a new one is added only
    // within the day's budget.
    let bumped = funnel_day::Entity::update_many()
        .col_expr(column, Expr::col((funnel_day::Entity, column)).add(Expr::val(1)))
        .filter(Column::Day.eq(day_key(day)))
        .filter(Column::Page.eq(page))
        .filter(Column::Source.eq(from.source.as_str()))
        .filter(Column::Medium.eq(from.medium.as_str()))
        .filter(Column::Campaign.eq(from.campaign.as_str()))
        .exec(conn)
        .await?;
    if bumped.rows_affected > 0 {
        return Ok(());
    }
    let today = funnel_day::Entity::find()
        .filter(Column::Day.eq(day_key(day)))
        .filter(Column::Page.eq(page))
        .count(conn)
        .await?;
    let folded;
    let from = if today >= SOURCES_PER_PAGE_AND_DAY {
        folded = Source { source: OTHER.into(), medium: OTHER.into(), campaign: OTHER.into() };
        &folded
    } else {
        from
    };
    let row = funnel_day::ActiveModel {
        day: Set(day_key(day)),
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
        goals: Set(i64::from(what == Count::Goal)),
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

/// A subscriber reached a goal: a workflow's `exit_when` held, or the event their landing page
/// names as its `goal` came in. The first time in their life, a `goal_reached` entry goes into
/// their timeline and the goal counts in the funnel of the page and source they first came from
/// (when they came through a landing page). Returns whether it was the first time.
pub async fn goal_reached(
    txn: &sea_orm::DatabaseTransaction,
    subscriber_id: uuid::Uuid,
    how: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    use crate::audience::records::{self, kind};
    use sea_orm::ActiveModelTrait;
    let before = crate::store::entities::event::Entity::find()
        .filter(crate::store::entities::event::Column::SubscriberId.eq(subscriber_id))
        .filter(crate::store::entities::event::Column::Kind.eq(kind::GOAL_REACHED))
        .one(txn)
        .await?;
    if before.is_some() {
        return Ok(false);
    }
    first_engagement(txn, subscriber_id, kind::GOAL_REACHED, Count::Goal, now.date_naive()).await?;
    records::event(subscriber_id, kind::GOAL_REACHED, how, now).insert(txn).await?;
    Ok(true)
}

/// Which rollups a stats request sums.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub page: Option<String>,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub days: Days,
}

/// One stage of the funnel and the share of the stage before it that reached it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stage {
    pub stage: String,
    pub count: i64,
    /// `count` over the previous stage's count (none for the first stage, or after zero).
    pub conversion: Option<f64>,
}

/// The funnel's counts for one day, page or source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = FunnelCounts)]
pub struct Counts {
    pub views: i64,
    pub signups: i64,
    pub confirmed: i64,
    pub opened: i64,
    pub clicked: i64,
    pub goals: i64,
    pub bot_views: i64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.views += other.views;
        self.signups += other.signups;
        self.confirmed += other.confirmed;
        self.opened += other.opened;
        self.clicked += other.clicked;
        self.goals += other.goals;
        self.bot_views += other.bot_views;
    }

    /// The stages in order, with their names.
    pub fn stages(&self) -> [(&'static str, i64); 6] {
        [
            ("views", self.views),
            ("signups", self.signups),
            ("confirmed", self.confirmed),
            ("opened", self.opened),
            ("clicked", self.clicked),
            ("goal_reached", self.goals),
        ]
    }
}

/// Counts under a key (a day, a page or a source).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Keyed {
    pub key: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Confirmed subscribers per view by a person.
    pub conversion: Option<f64>,
}

/// The funnel for a filter: its stages, the views machines made (not part of it), and the same
/// counts by day, by page, source, medium and campaign (most viewed first; unknown is empty).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    pub page: Option<String>,
    pub source: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub stages: Vec<Stage>,
    pub bot_views: i64,
    pub totals: Counts,
    pub by_day: Vec<Keyed>,
    pub by_page: Vec<Keyed>,
    pub by_source: Vec<Keyed>,
    pub by_medium: Vec<Keyed>,
    pub by_campaign: Vec<Keyed>,
}

type Sums = (i64, i64, i64, i64, i64, i64, i64);

fn counts((views, signups, confirmed, opened, clicked, goals, bot_views): Sums) -> Counts {
    Counts { views, signups, confirmed, opened, clicked, goals, bot_views }
}

/// The rollups a filter selects, with the sums of every count (after the columns a caller adds).
fn selected(filter: &Filter) -> sea_orm::Select<funnel_day::Entity> {
    let mut query = funnel_day::Entity::find().select_only();
    if let Some(page) = &filter.page {
        query = query.filter(Column::Page.eq(page.as_str()));
    }
    if let Some(source) = &filter.source {
        query = query.filter(Column::Source.eq(source.as_str()));
    }
    if let Some(medium) = &filter.medium {
        query = query.filter(Column::Medium.eq(medium.as_str()));
    }
    if let Some(campaign) = &filter.campaign {
        query = query.filter(Column::Campaign.eq(campaign.as_str()));
    }
    let (from, to) = filter.days.keys();
    if let Some(from) = from {
        query = query.filter(Column::Day.gte(from));
    }
    if let Some(to) = to {
        query = query.filter(Column::Day.lte(to));
    }
    query
}

fn with_sums(query: sea_orm::Select<funnel_day::Entity>) -> sea_orm::Select<funnel_day::Entity> {
    [
        Column::Views,
        Column::Signups,
        Column::Confirmed,
        Column::Opened,
        Column::Clicked,
        Column::Goals,
        Column::BotViews,
    ]
    .into_iter()
    .fold(query, |q, column| q.expr(sum(column)))
}

/// Sums the rollups a filter selects, in the database, in two small answers however many rows a
/// year of traffic left: per day, and per page, source, medium and campaign.
pub async fn funnel(db: &Db, filter: &Filter) -> Result<Funnel> {
    type DayRow = (String, i64, i64, i64, i64, i64, i64, i64);
    type KeyRow = (String, String, String, String, i64, i64, i64, i64, i64, i64, i64);
    let days: Vec<DayRow> = with_sums(selected(filter).column(Column::Day))
        .group_by(Column::Day)
        .order_by_asc(Column::Day)
        .into_tuple()
        .all(db.conn())
        .await?;
    let keys = [Column::Page, Column::Source, Column::Medium, Column::Campaign];
    let keyed_rows: Vec<KeyRow> = with_sums(keys.into_iter().fold(selected(filter), |q, c| q.column(c)))
        .group_by(Column::Page)
        .group_by(Column::Source)
        .group_by(Column::Medium)
        .group_by(Column::Campaign)
        .into_tuple()
        .all(db.conn())
        .await?;
    let by_day: Vec<(String, Counts)> =
        days.into_iter().map(|(day, a, b, c, d, e, f, g)| (day, counts((a, b, c, d, e, f, g)))).collect();
    type ByKey = std::collections::HashMap<String, Counts>;
    let (mut by_page, mut by_source, mut by_medium, mut by_campaign) =
        (ByKey::new(), ByKey::new(), ByKey::new(), ByKey::new());
    for (page, source, medium, campaign, a, b, c, d, e, f, g) in keyed_rows {
        let sums = counts((a, b, c, d, e, f, g));
        by_page.entry(page).or_default().add(&sums);
        by_source.entry(source).or_default().add(&sums);
        by_medium.entry(medium).or_default().add(&sums);
        by_campaign.entry(campaign).or_default().add(&sums);
    }
    let mut totals = Counts::default();
    for (_, counts) in &by_day {
        totals.add(counts);
    }
    let keyed =
        |(key, counts): (String, Counts)| Keyed { key, conversion: ratio(counts.confirmed, counts.views), counts };
    let ranked = |rows: std::collections::HashMap<String, Counts>| {
        let mut list: Vec<Keyed> = rows.into_iter().map(keyed).collect();
        list.sort_by(|a, b| b.counts.views.cmp(&a.counts.views).then_with(|| a.key.cmp(&b.key)));
        list
    };
    let mut stages = Vec::new();
    let mut previous: Option<i64> = None;
    for (name, count) in totals.stages() {
        stages.push(Stage { stage: name.to_owned(), count, conversion: previous.and_then(|p| ratio(count, p)) });
        previous = Some(count);
    }
    Ok(Funnel {
        page: filter.page.clone(),
        source: filter.source.clone(),
        from: filter.days.from,
        to: filter.days.to,
        stages,
        bot_views: totals.bot_views,
        totals,
        by_day: by_day.into_iter().map(keyed).collect(),
        by_page: ranked(by_page),
        by_source: ranked(by_source),
        by_medium: ranked(by_medium),
        by_campaign: ranked(by_campaign),
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
