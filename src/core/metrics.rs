//! Prometheus metrics: counters, gauges and histograms kept in memory per process (Prometheus
//! sums processes and copes with restarts), plus figures read from the database when scraped
//! (outbox depth and age, enrollments per step), which every instance sees alike.
//!
//! Labels never carry personal data: pages, sources, channels, relays, routes, outcomes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex, PoisonError};

type Key = (&'static str, Vec<(&'static str, String)>);

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Registry {
    counters: Mutex<BTreeMap<Key, u64>>,
    gauges: Mutex<BTreeMap<Key, f64>>,
    histograms: Mutex<BTreeMap<Key, Histogram>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// What each metric means (its `# HELP`), and its type.
const HELP: &[(&str, &str, &str)] = &[
    ("ownlist_http_requests_total", "counter", "HTTP requests by method, route and status."),
    ("ownlist_http_request_duration_seconds", "histogram", "HTTP request latency by method and route."),
    ("ownlist_signups_total", "counter", "Landing-page signups stored, by page and source."),
    ("ownlist_signups_rejected_total", "counter", "Landing-page submissions taken for a bot's, by page and reason."),
    ("ownlist_signup_confirmations_total", "counter", "Double opt-in confirmations, by page and source."),
    (
        "ownlist_unsubscribes_total",
        "counter",
        "Channel consents withdrawn, by channel, how, and the subscriber's source.",
    ),
    (
        "ownlist_deliveries_total",
        "counter",
        "Delivery attempts by channel, relay or provider, and outcome (sent, refused, failed).",
    ),
    ("ownlist_delivery_duration_seconds", "histogram", "Time a relay or provider took to answer an attempt."),
    ("ownlist_circuit_open", "gauge", "1 while a relay's or provider's circuit breaker is open (skipped), else 0."),
    ("ownlist_outbox_queued", "gauge", "Messages waiting in the outbox (due or not), by channel."),
    ("ownlist_outbox_due", "gauge", "Messages due now and not yet sent, by channel."),
    ("ownlist_outbox_oldest_due_seconds", "gauge", "How long the oldest due message has been waiting, by channel."),
    ("ownlist_enrollments_active", "gauge", "Enrollments in progress, by workflow and current step."),
];

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (name, labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
}

/// Adds one to a counter.
pub fn inc(name: &'static str, labels: &[(&'static str, &str)]) {
    *REGISTRY.counters.lock().unwrap_or_else(PoisonError::into_inner).entry(key(name, labels)).or_default() += 1;
}

/// Sets a gauge.
pub fn set(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    REGISTRY.gauges.lock().unwrap_or_else(PoisonError::into_inner).insert(key(name, labels), value);
}

/// Every value of a gauge this process has set, with its labels.
pub fn gauges(name: &str) -> Vec<(Vec<(&'static str, String)>, f64)> {
    let gauges = REGISTRY.gauges.lock().unwrap_or_else(PoisonError::into_inner);
    gauges.iter().filter(|((n, _), _)| *n == name).map(|((_, labels), v)| (labels.clone(), *v)).collect()
}

/// Records a duration in a histogram.
pub fn observe(name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
    let mut histograms = REGISTRY.histograms.lock().unwrap_or_else(PoisonError::into_inner);
    let h = histograms.entry(key(name, labels)).or_default();
    for (i, bound) in BUCKETS.iter().enumerate() {
        if seconds <= *bound {
            h.buckets[i] += 1;
        }
    }
    h.sum += seconds;
    h.count += 1;
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(pairs: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut all: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        all.push(format!("{k}=\"{v}\""));
    }
    if all.is_empty() { String::new() } else { format!("{{{}}}", all.join(",")) }
}

/// A gauge read from the database at scrape time.
pub struct Sampled {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The text exposition format (version 0.0.4): this process's metrics and `sampled` ones.
pub fn render(sampled: &[Sampled]) -> String {
    let counters = REGISTRY.counters.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let gauges = REGISTRY.gauges.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let histograms = REGISTRY.histograms.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut out = String::new();
    for (name, kind, help) in HELP {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((n, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
            let _ = writeln!(out, "{n}{} {v}", labels(l, None));
        }
        for ((n, l), v) in gauges.iter().filter(|((n, _), _)| n == name) {
            let _ = writeln!(out, "{n}{} {v}", labels(l, None));
        }
        for s in sampled.iter().filter(|s| s.name == *name) {
            let _ = writeln!(out, "{}{} {}", s.name, labels(&s.labels, None), s.value);
        }
        for ((n, l), h) in histograms.iter().filter(|((n, _), _)| n == name) {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{n}_bucket{} {}", labels(l, Some(("le", bound.to_string()))), h.buckets[i]);
            }
            let _ = writeln!(out, "{n}_bucket{} {}", labels(l, Some(("le", "+Inf".into()))), h.count);
            let _ = writeln!(out, "{n}_sum{} {}", labels(l, None), h.sum);
            let _ = writeln!(out, "{n}_count{} {}", labels(l, None), h.count);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_help_types_labels_and_cumulative_buckets() {
        inc("ownlist_signups_total", &[("page", "unit-test"), ("source", "a \"quoted\" one")]);
        observe("ownlist_delivery_duration_seconds", &[("channel", "email"), ("relay", "unit-test")], 0.02);
        let text =
            render(&[Sampled { name: "ownlist_outbox_due", labels: vec![("channel", "email".into())], value: 3.0 }]);
        assert!(text.contains("# TYPE ownlist_signups_total counter"));
        assert!(text.contains("ownlist_signups_total{page=\"unit-test\",source=\"a \\\"quoted\\\" one\"} 1"), "{text}");
        assert!(text.contains("ownlist_outbox_due{channel=\"email\"} 3"));
        let bucket = |le: &str| {
            format!("ownlist_delivery_duration_seconds_bucket{{channel=\"email\",relay=\"unit-test\",le=\"{le}\"}}")
        };
        assert!(text.contains(&format!("{} 0", bucket("0.01"))) && text.contains(&format!("{} 1", bucket("0.025"))));
        assert!(text.contains(&format!("{} 1", bucket("+Inf"))));
    }
}
