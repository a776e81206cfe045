//! The landing-page funnel: daily rollups per page and traffic source (`funnel_daily`),
//! incremented as things happen. Views are counted server-side, with no cookie and no script;
//! views by crawlers, link previewers (the requests social networks make to draw a link's card)
//! and HEAD requests are counted apart.

use chrono::NaiveDate;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use super::{Days, ratio, sum};
use crate::core::error::Result;
use crate::store::Db;
use crate::store::entities::funnel_day::{self, Column};

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
    /// Subscribers reachable on one channel who confirmed a second (not a stage: it can come at
    /// any point after confirming).
    pub second_channel: i64,
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
        self.second_channel += other.second_channel;
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

type Sums = (i64, i64, i64, i64, i64, i64, i64, i64);

fn counts((views, signups, confirmed, opened, clicked, goals, bot_views, second_channel): Sums) -> Counts {
    Counts { views, signups, confirmed, opened, clicked, goals, bot_views, second_channel }
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
        Column::SecondChannel,
    ]
    .into_iter()
    .fold(query, |q, column| q.expr(sum(column)))
}

/// Sums the rollups a filter selects, in the database, in two small answers however many rows a
/// year of traffic left: per day, and per page, source, medium and campaign.
pub async fn funnel(db: &Db, filter: &Filter) -> Result<Funnel> {
    type DayRow = (String, i64, i64, i64, i64, i64, i64, i64, i64);
    type KeyRow = (String, String, String, String, i64, i64, i64, i64, i64, i64, i64, i64);
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
        days.into_iter().map(|(day, a, b, c, d, e, f, g, h)| (day, counts((a, b, c, d, e, f, g, h)))).collect();
    type ByKey = std::collections::HashMap<String, Counts>;
    let (mut by_page, mut by_source, mut by_medium, mut by_campaign) =
        (ByKey::new(), ByKey::new(), ByKey::new(), ByKey::new());
    for (page, source, medium, campaign, a, b, c, d, e, f, g, h) in keyed_rows {
        let sums = counts((a, b, c, d, e, f, g, h));
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
