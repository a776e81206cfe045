//! The landing-page funnel's daily rollups (`funnel_daily`) per page and traffic source,
//! bumped as things happen. Views are counted server-side, with no cookie and no script; views by
//! crawlers, link previewers (the requests social networks make to draw a link's card) and HEAD
//! requests are counted apart.

use chrono::NaiveDate;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::day_key;
use crate::core::error::Result;
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
    /// A subscriber on one channel confirmed a second.
    SecondChannel,
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
            Count::SecondChannel => Column::SecondChannel,
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

/// Referrer hosts (or their parents) and the source they mean.
pub const HOSTS: &[(&str, &str)] = &[
    ("instagram.com", "instagram"),
    ("facebook.com", "facebook"),
    ("fb.com", "facebook"),
    ("fb.me", "facebook"),
    ("messenger.com", "facebook"),
    ("whatsapp.com", "whatsapp"),
    ("tiktok.com", "tiktok"),
    ("t.co", "x"),
    ("twitter.com", "x"),
    ("x.com", "x"),
    ("youtube.com", "youtube"),
    ("youtu.be", "youtube"),
    ("linkedin.com", "linkedin"),
    ("lnkd.in", "linkedin"),
    ("pinterest.com", "pinterest"),
    ("reddit.com", "reddit"),
    ("threads.net", "threads"),
    ("google.com", "google"),
    ("bing.com", "bing"),
    ("duckduckgo.com", "duckduckgo"),
];

/// A source as a metric label: one of the known networks, `direct`, `email`, or `other`. A
/// visitor chooses `utm_source` freely (an email address typed into a link, say): metrics, open
/// to scraping and kept by monitoring for months, carry no value a visitor wrote.
pub fn source_label(source: Option<&str>) -> &'static str {
    let Some(source) = source.map(str::trim).filter(|s| !s.is_empty()) else { return "direct" };
    let lower = source.to_ascii_lowercase();
    let known = HOSTS.iter().map(|(_, name)| *name).chain(["direct", "email", "sms"]);
    for name in known {
        if lower == name {
            return name;
        }
    }
    "other"
}

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
        second_channel: Set(i64::from(what == Count::SecondChannel)),
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
    // A person's first: opens and clicks by machines (kept as events too) do not count.
    let before = event::Entity::find()
        .filter(event::Column::SubscriberId.eq(subscriber_id))
        .filter(event::Column::Kind.eq(kind))
        .all(txn)
        .await?;
    if before.iter().any(|e| super::by_person(&e.data)) {
        return Ok(());
    }
    let Some(person) = subscriber::Entity::find_by_id(subscriber_id).one(txn).await? else { return Ok(()) };
    let Some(page) = first_touch_page(person.landing_page.as_deref()) else { return Ok(()) };
    let from = Source::of(person.source.as_deref(), person.medium.as_deref(), person.campaign.as_deref());
    bump(txn, day, &page, &from, what).await
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

    #[test]
    fn metric_labels_are_known_sources_or_other() {
        assert_eq!(source_label(Some("instagram")), "instagram");
        assert_eq!(source_label(Some("Instagram")), "instagram");
        assert_eq!(source_label(None), "direct");
        assert_eq!(source_label(Some("ada@example.com")), "other");
        assert_eq!(source_label(Some("l.instagram.com")), "other");
    }
}
