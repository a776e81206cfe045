//! What this process's delivery workers know of each channel right now: since when its
//! relays or providers have been failing, without a message getting through since. The engine
//! reads it when it chooses a channel for `reach: first`: a channel down for longer than
//! `fallback_after` is tried last rather than first. Kept in memory, per process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

/// Since when each channel (by its outbox name) has been failing.
#[derive(Debug, Default)]
pub struct Health(Mutex<BTreeMap<String, DateTime<Utc>>>);

pub type SharedHealth = Arc<Health>;

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DateTime<Utc>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message on `channel` failed for now (its relays or providers): failing since then,
    /// unless it was already.
    pub fn failed(&self, channel: &str, now: DateTime<Utc>) {
        self.lock().entry(channel.to_owned()).or_insert(now);
    }

    /// A message on `channel` got through: it works.
    pub fn worked(&self, channel: &str) {
        self.lock().remove(channel);
    }

    /// How long `channel` has been failing, if it is.
    pub fn down_for(&self, channel: &str, now: DateTime<Utc>) -> Option<Duration> {
        self.lock().get(channel).map(|since| now - *since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_down_from_its_first_failure_until_a_message_gets_through() {
        let health = Health::default();
        let t0 = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 9, 0, 0).unwrap();
        assert_eq!(health.down_for("sms", t0), None);
        health.failed("sms", t0);
        health.failed("sms", t0 + Duration::minutes(5));
        assert_eq!(health.down_for("sms", t0 + Duration::minutes(12)), Some(Duration::minutes(12)));
        assert_eq!(health.down_for("email", t0), None);
        health.worked("sms");
        assert_eq!(health.down_for("sms", t0 + Duration::minutes(13)), None);
    }
}
