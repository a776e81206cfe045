//! Daily rollups, each bumped in the transaction of what it counts, so that a stats request sums
//! a few rows per day instead of scanning the timeline or the outbox (the read side is
//! [`crate::stats`]):
//!
//! - [`funnel`]: landing pages (`funnel_daily`), per day, page and traffic source;
//! - [`steps`]: workflows (`step_daily`), per day, workflow and step;
//! - [`delivery`]: relays and providers (`delivery_daily`).
//!
//! Days are UTC days, stored as `YYYY-MM-DD`. A transaction that bumps several rollups bumps the
//! funnel's rows first, then the steps', then the relays', each in key order: on PostgreSQL,
//! instances then take the rows' locks in one order and cannot deadlock on them.

pub mod delivery;
pub mod funnel;
pub mod steps;

use chrono::NaiveDate;

/// The key a rollup row has for a day.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Whether an `email_opened`/`email_clicked` event (its data) is a person's, not a machine's
/// (events recorded before verdicts existed count as people's).
pub fn by_person(data: &serde_json::Value) -> bool {
    data.get("verdict").and_then(serde_json::Value::as_str) != Some("machine")
}
