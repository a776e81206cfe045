//! Analytics from daily rollups, each updated in the transaction of what it counts, so a stats
//! request sums a few rows per day instead of scanning the timeline or the outbox:
//!
//! - [`funnel`]: landing pages (`funnel_daily`): views, signups, confirmations, first opens and
//!   clicks, goals, per day, page and traffic source;
//! - [`steps`]: workflows (`step_daily`): per step, who entered, completed, was skipped (and
//!   why), exited, and the messages the step produced and what became of them;
//! - [`delivery`]: relays and providers (`delivery_daily`): sent, failed, retried, latency.
//!
//! Days are UTC days, stored as `YYYY-MM-DD`. A transaction that bumps several rollups bumps the
//! funnel's rows first, then the steps', then the relays', each in key order: on PostgreSQL,
//! instances then take the rows' locks in one order and cannot deadlock on them.

pub mod delivery;
pub mod funnel;
pub mod steps;

use chrono::NaiveDate;

pub use funnel::{
    Count, Filter, Funnel, Source, bump, first_engagement, first_touch_page, goal_reached, is_bot, record,
};

/// The key a rollup row has for a day.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// A range of days, both ends inclusive and optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Days {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Days {
    /// The range's ends as rollup keys.
    fn keys(&self) -> (Option<String>, Option<String>) {
        (self.from.map(day_key), self.to.map(day_key))
    }
}

/// `CAST(SUM(column) AS BIGINT)`: PostgreSQL sums BIGINTs as NUMERIC, which is not an `i64`.
fn sum(column: impl sea_orm::IdenStatic) -> sea_orm::sea_query::SimpleExpr {
    sea_orm::sea_query::Expr::cust(format!("CAST(SUM({}) AS BIGINT)", column.as_str()))
}

/// A share rounded to four decimals; none when there is nothing to divide by.
pub fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// Rows as CSV, a header first. Writing to memory cannot fail; should it, the text so far is kept.
pub fn csv(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    let _ = out.write_record(header);
    for row in rows {
        let _ = out.write_record(&row);
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}
