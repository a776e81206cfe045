//! A broadcast's report: what became of its messages, day by day and per link, from the
//! rollups kept as things happen (`step_daily` under the key `broadcast:ID`).
//!
//! - `sent`: accepted by a relay or provider; `failed`: refused for good (an address refused
//!   when sent is also `bounced`); `delivered`: sent and not reported bounced afterwards;
//! - `bounced`: hard bounces, when sent or reported later by a bounce webhook about the last
//!   message the address got; `complained`: spam complaints, likewise;
//! - `opened`, `clicked`: messages opened and messages with a link followed (each once);
//!   `clicks`: every click; per link, `clicks` and `unique` (messages in which it was followed);
//! - `unsubscribed`: withdrawals (of the channel, or of the broadcast's list) by people whose
//!   last message on it was this broadcast's.
//!
//! Rates are of `delivered`, except `bounce_rate` (of sent and failed) and `click_to_open_rate`
//! (of opened).

use std::collections::{BTreeMap, HashMap};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use super::{ratio, sum};
use crate::core::error::Result;
use crate::rollups::steps::{broadcast_key, measure};
use crate::store::Db;
use crate::store::entities::step_day::{self, Column};

/// A broadcast's counts, over its whole life or one day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    pub bounced: i64,
    pub complained: i64,
    /// Messages a person opened, and in which a person followed a link.
    pub opened: i64,
    pub clicked: i64,
    /// Every click by a person.
    pub clicks: i64,
    pub unsubscribed: i64,
    /// Messages whose pixel only a machine loaded first (a privacy proxy, a scanner), and in which
    /// a machine followed a link: beside the people's figures, in none of the rates.
    pub opened_by_machine: i64,
    pub clicked_by_machine: i64,
}

/// Shares, rounded to four decimals; `null` when there is nothing to divide by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rates {
    /// delivered / (sent + failed)
    pub delivery_rate: Option<f64>,
    /// bounced / (sent + failed)
    pub bounce_rate: Option<f64>,
    /// opened / delivered
    pub open_rate: Option<f64>,
    /// clicked / delivered
    pub click_rate: Option<f64>,
    /// clicked / opened
    pub click_to_open_rate: Option<f64>,
    /// unsubscribed / delivered
    pub unsubscribe_rate: Option<f64>,
    /// complained / delivered
    pub complaint_rate: Option<f64>,
}

/// One link of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LinkFigures {
    pub url: String,
    /// Every click on it.
    pub clicks: i64,
    /// Messages in which it was followed.
    pub unique: i64,
}

/// One day of a broadcast (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayFigures {
    pub day: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A broadcast's figures: totals, rates, per link (most clicked first), by day (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub totals: Figures,
    pub rates: Rates,
    pub links: Vec<LinkFigures>,
    pub by_day: Vec<DayFigures>,
}

impl Figures {
    fn add(&mut self, what: &str, detail: &str, n: i64) {
        match what {
            measure::DELIVERED => self.sent += n,
            measure::FAILED => self.failed += n,
            measure::BOUNCED => self.bounced += n,
            measure::COMPLAINED => self.complained += n,
            measure::OPENED => self.opened += n,
            measure::CLICKED => self.clicked += n,
            measure::CLICKS => self.clicks += n,
            measure::UNSUBSCRIBED => self.unsubscribed += n,
            measure::OPENED_BY_MACHINE => self.opened_by_machine += n,
            measure::CLICKED_BY_MACHINE => self.clicked_by_machine += n,
            _ => {}
        }
        // Reported after it was accepted: no longer counted as delivered.
        if what == measure::BOUNCED && detail == "reported" {
            self.delivered -= n;
        }
        if what == measure::DELIVERED {
            self.delivered += n;
        }
    }

    pub fn rates(&self) -> Rates {
        let attempted = self.sent + self.failed;
        Rates {
            delivery_rate: ratio(self.delivered, attempted),
            bounce_rate: ratio(self.bounced, attempted),
            open_rate: ratio(self.opened, self.delivered),
            click_rate: ratio(self.clicked, self.delivered),
            click_to_open_rate: ratio(self.clicked, self.opened),
            unsubscribe_rate: ratio(self.unsubscribed, self.delivered),
            complaint_rate: ratio(self.complained, self.delivered),
        }
    }
}

/// The report of one broadcast.
pub async fn report(db: &Db, id: Uuid) -> Result<Report> {
    let rows: Vec<(String, String, String, i64)> = step_day::Entity::find()
        .select_only()
        .column(Column::Day)
        .column(Column::Measure)
        .column(Column::Detail)
        .expr(sum(Column::N))
        .filter(Column::WorkflowId.eq(broadcast_key(id)))
        .group_by(Column::Day)
        .group_by(Column::Measure)
        .group_by(Column::Detail)
        .into_tuple()
        .all(db.conn())
        .await?;
    let mut totals = Figures::default();
    let mut days: BTreeMap<String, Figures> = BTreeMap::new();
    let mut links: HashMap<String, LinkFigures> = HashMap::new();
    for (day, what, detail, n) in rows {
        match what.as_str() {
            measure::CLICKS | measure::LINK_CLICKED => {
                let link = links.entry(detail.clone()).or_insert_with(|| LinkFigures {
                    url: detail.clone(),
                    clicks: 0,
                    unique: 0,
                });
                if what == measure::LINK_CLICKED {
                    link.unique += n;
                } else {
                    link.clicks += n;
                }
            }
            _ => {}
        }
        totals.add(&what, &detail, n);
        days.entry(day).or_default().add(&what, &detail, n);
    }
    let mut links: Vec<LinkFigures> = links.into_values().collect();
    links.sort_by(|a, b| b.clicks.cmp(&a.clicks).then_with(|| a.url.cmp(&b.url)));
    Ok(Report {
        rates: totals.rates(),
        totals,
        links,
        by_day: days.into_iter().map(|(day, figures)| DayFigures { day, figures }).collect(),
    })
}

/// The totals of several broadcasts at once (for a list of them).
pub async fn totals(db: &Db, ids: &[Uuid]) -> Result<HashMap<Uuid, Figures>> {
    let keys: Vec<String> = ids.iter().map(|id| broadcast_key(*id)).collect();
    let mut out: HashMap<Uuid, Figures> = ids.iter().map(|id| (*id, Figures::default())).collect();
    for chunk in keys.chunks(500) {
        let rows: Vec<(String, String, String, i64)> = step_day::Entity::find()
            .select_only()
            .column(Column::WorkflowId)
            .column(Column::Measure)
            .column(Column::Detail)
            .expr(sum(Column::N))
            .filter(Column::WorkflowId.is_in(chunk.to_vec()))
            .group_by(Column::WorkflowId)
            .group_by(Column::Measure)
            .group_by(Column::Detail)
            .into_tuple()
            .all(db.conn())
            .await?;
        for (key, what, detail, n) in rows {
            let id = key.strip_prefix("broadcast:").and_then(|id| Uuid::parse_str(id).ok());
            if let Some(figures) = id.and_then(|id| out.get_mut(&id)) {
                figures.add(&what, &detail, n);
            }
        }
    }
    Ok(out)
}
