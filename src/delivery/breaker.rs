//! The circuit breaker per relay or provider: closed, open for a cool-down, then one probe.

use super::*;
use chrono::{DateTime, Utc};

impl BreakerState {
    /// When an attempt may go through, if not now: after the cool-down, or while a probe is
    /// under way, a moment later.
    pub(super) fn closed_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.open_until, self.probing_since) {
            (None, _) => None,
            (Some(until), _) if now < until => Some(until),
            (Some(_), Some(since)) if now - since < PROBE_AT_MOST => Some(now + WHILE_PROBING),
            (Some(_), _) => None,
        }
    }
}

/// When the first of these breakers lets an attempt through, if none does now (`None` also when
/// there are none: a message then fails as having nowhere to go).
pub fn all_closed_until<'a>(breakers: impl Iterator<Item = &'a Breaker>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut earliest: Option<DateTime<Utc>> = None;
    for breaker in breakers {
        let until = breaker.closed_until(now)?;
        earliest = Some(earliest.map_or(until, |e| e.min(until)));
    }
    earliest
}

impl Skipped {
    pub fn until(&mut self, until: DateTime<Utc>) {
        self.0 = Some(self.0.map_or(until, |earliest| earliest.min(until)));
    }

    /// The answer once every relay was tried or skipped: if none was tried (all cooling down),
    /// the message waits for the first to reopen, which is no attempt (no backoff, no timeline
    /// entry); otherwise it is retried later.
    pub fn answer(self, failures: Vec<String>, none_configured: &str) -> Answer {
        match (failures.is_empty(), self.0) {
            (true, Some(until)) => Answer::Hold(until),
            (true, None) => Answer::Retry(none_configured.to_owned()),
            (false, _) => Answer::Retry(failures.join("; ")),
        }
    }
}

impl Breaker {
    pub fn new(cooldown: chrono::Duration) -> Self {
        Self {
            cooldown,
            state: std::sync::Mutex::new(BreakerState::default()),
            shown: std::sync::atomic::AtomicBool::new(false),
            recoveries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether to try it now. After a cool-down one attempt (the probe) goes through and decides
    /// for the others, which are skipped meanwhile: a relay that still fails, or that never
    /// answers, costs one attempt per cool-down, not a whole window of them.
    pub fn admit(&self, now: DateTime<Utc>) -> Admit {
        let mut state = self.lock();
        match state.closed_until(now) {
            Some(until) => Admit::Skip(until),
            None => {
                // Open, its cool-down over: this attempt is the probe.
                if state.open_until.is_some() {
                    state.probing_since = Some(now);
                }
                Admit::Go
            }
        }
    }

    /// How many times it has worked again after failing.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When it may be tried again, if not now (without starting a probe).
    pub fn closed_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.lock().closed_until(now)
    }

    pub fn failed(&self, name: &str, now: DateTime<Utc>) {
        let mut state = self.lock();
        if state.open_until.is_none() || !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::core::metrics::set("ownlist_circuit_open", &[("relay", name)], 1.0);
        }
        if state.open_until.is_none_or(|until| now >= until) {
            tracing::warn!(%name, cooldown_s = self.cooldown.num_seconds(), "failing: skipped for its cool-down");
        }
        state.open_until = Some(now + self.cooldown);
        state.probing_since = None;
    }

    pub fn worked(&self, name: &str) {
        // The gauge is written when the state changes (and once at first use), not per message.
        let was_open = {
            let mut state = self.lock();
            state.probing_since = None;
            state.open_until.take().is_some()
        };
        if was_open || !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::core::metrics::set("ownlist_circuit_open", &[("relay", name)], 0.0);
        }
        if was_open {
            self.recoveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%name, "works again");
        }
    }
}
