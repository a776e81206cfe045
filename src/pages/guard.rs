//! Keeping bots and floods out without a CAPTCHA: a signed form token that proves when the form
//! was served (a submission faster than a person can type is refused), a honeypot field people
//! never see, and a per-IP limit on signups. A refused bot gets the same answer as a person.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use crate::core::links::Signer;

/// The honeypot's field name: a plausible one, so form-filling bots fill it.
pub const HONEYPOT: &str = "website";
/// The form token's field name.
pub const TOKEN: &str = "_form";

/// Why a submission was taken for a bot's (counted per page and day as `rejected_{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Honeypot,
    /// No token, a forged one, or one for another page.
    Token,
    /// Sent sooner after the form was served than a person could fill it in.
    TooFast,
    /// A form served too long ago (a replayed token).
    Stale,
}

impl Rejection {
    pub fn counter(self) -> &'static str {
        match self {
            Rejection::Honeypot => "rejected_honeypot",
            Rejection::Token => "rejected_token",
            Rejection::TooFast => "rejected_too_fast",
            Rejection::Stale => "rejected_stale",
        }
    }
}

/// The bot checks' settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The least time between serving a form and its submission.
    pub min_fill: Duration,
    /// The most (a token older than this is stale).
    pub max_age: Duration,
}

/// Checks a submission's honeypot and token.
pub fn check(
    signer: &Signer,
    rules: Rules,
    slug: &str,
    honeypot: Option<&str>,
    token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    if honeypot.is_some_and(|v| !v.trim().is_empty()) {
        return Err(Rejection::Honeypot);
    }
    let issued = signer.verify_form_token(slug, token.unwrap_or_default()).map_err(|_| Rejection::Token)?;
    if now < issued + rules.min_fill {
        return Err(Rejection::TooFast);
    }
    if now > issued + rules.max_age {
        return Err(Rejection::Stale);
    }
    Ok(())
}

/// Signups per IP address in a sliding hour, per process.
#[derive(Debug)]
pub struct RateLimit {
    per_hour: u32,
    seen: Mutex<HashMap<IpAddr, VecDeque<DateTime<Utc>>>>,
}

impl RateLimit {
    pub fn new(per_hour: u32) -> Self {
        Self { per_hour, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` is past the limit now (without counting anything), and for how long.
    pub fn blocked(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<Duration> {
        if self.per_hour == 0 {
            return None;
        }
        let window = Duration::hours(1);
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent: Vec<&DateTime<Utc>> =
            seen.get(&ip).map(|times| times.iter().filter(|t| now - **t < window).collect()).unwrap_or_default();
        (recent.len() >= self.per_hour as usize)
            .then(|| recent.first().map_or(window, |first| **first + window - now).max(Duration::seconds(1)))
    }

    /// Counts a signup from `ip`; past the limit, how long until one more is allowed.
    pub fn hit(&self, ip: IpAddr, now: DateTime<Utc>) -> Result<(), Duration> {
        if self.per_hour == 0 {
            return Ok(());
        }
        let window = Duration::hours(1);
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() > 100_000 {
            // Forget addresses whose whole window has passed, so the map cannot grow without end.
            seen.retain(|_, times| times.back().is_some_and(|last| now - *last < window));
        }
        let times = seen.entry(ip).or_default();
        while times.front().is_some_and(|first| now - *first >= window) {
            times.pop_front();
        }
        if times.len() >= self.per_hour as usize {
            let wait = times.front().map_or(window, |first| *first + window - now);
            return Err(wait.max(Duration::seconds(1)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_prove_when_and_where_the_form_was_served() {
        let signer = Signer::new("0123456789abcdef0123456789abcdef");
        let rules = Rules { min_fill: Duration::seconds(3), max_age: Duration::hours(24) };
        let served = Utc::now();
        let token = signer.form_token("guide", served);
        let at = |s: i64| served + Duration::seconds(s);
        assert_eq!(check(&signer, rules, "guide", None, Some(&token), at(5)), Ok(()));
        assert_eq!(check(&signer, rules, "guide", Some(""), Some(&token), at(5)), Ok(()));
        assert_eq!(check(&signer, rules, "guide", None, Some(&token), at(1)), Err(Rejection::TooFast));
        assert_eq!(check(&signer, rules, "guide", None, Some(&token), at(90_000)), Err(Rejection::Stale));
        assert_eq!(check(&signer, rules, "other", None, Some(&token), at(5)), Err(Rejection::Token));
        assert_eq!(check(&signer, rules, "guide", None, None, at(5)), Err(Rejection::Token));
        assert_eq!(check(&signer, rules, "guide", None, Some("AAAA"), at(5)), Err(Rejection::Token));
        assert_eq!(check(&signer, rules, "guide", Some("http://spam"), Some(&token), at(5)), Err(Rejection::Honeypot));
    }

    #[test]
    fn the_rate_limit_slides_over_an_hour() {
        let limit = RateLimit::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Utc::now();
        assert!(limit.hit(ip, t0).is_ok() && limit.hit(ip, t0 + Duration::minutes(10)).is_ok());
        let wait = limit.hit(ip, t0 + Duration::minutes(20)).unwrap_err();
        assert_eq!(wait, Duration::minutes(40));
        assert!(limit.hit("192.0.2.8".parse().unwrap(), t0).is_ok(), "per address");
        assert!(limit.hit(ip, t0 + Duration::minutes(61)).is_ok(), "the first one has left the window");
    }
}
