//! Analytics: the read side of the daily rollups ([`crate::rollups`]), summed per range of days:
//!
//! - [`funnel`]: landing pages (`funnel_daily`): views, signups, confirmations, first opens and
//!   clicks, goals, per day, page and traffic source;
//! - [`steps`]: workflows (`step_daily`): per step, who entered, completed, was skipped (and
//!   why), exited, and the messages the step produced and what became of them;
//! - [`delivery`]: relays and providers (`delivery_daily`): sent, failed, retried, latency;
//! - [`broadcasts`]: a broadcast's report (`step_daily` under `broadcast:ID`).
//!
//! Days are UTC days, stored as `YYYY-MM-DD`.

pub mod broadcasts;
pub mod delivery;
pub mod funnel;
pub mod steps;

use chrono::NaiveDate;

pub use crate::rollups::day_key;
pub use funnel::{Filter, Funnel};

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
