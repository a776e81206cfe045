//! Webhook steps: a signed JSON POST to the URL a workflow names, retried until it succeeds.
//!
//! Signature: `X-Ownlist-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is HMAC-SHA256 over
//! `"{t}.{body}"` with the secret held in the environment variable the step names. Receivers
//! recompute it and reject stale timestamps. Retries: on network errors, 408, 429 and 5xx, with
//! exponential backoff (1 min doubling to 1 h) until the retry age (48 h); any other answer, or a
//! missing secret, fails the message at once.
//!
//! Where a request may go: never to a loopback, link-local (cloud metadata at 169.254.169.254),
//! private, shared or unspecified address, checked on every address the name resolves to, at
//! connect time, unless the operator allows that network (`webhook_allow`). Redirects are not
//! followed (the signature would go with them), and the answer's body is never read.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::Mac;
use serde_json::{Value, json};

use super::{Answer, Carrier, Outcome, Try, Worker};
use crate::core::clock::SharedClock;
use crate::core::values::OutboxChannel;
use crate::store::Db;
use crate::store::entities::outbox;

/// Where signing secrets come from (the environment, or a map in tests).
pub type Secrets = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Sends webhook steps' requests.
pub struct Webhooks {
    client: reqwest::Client,
    secrets: Secrets,
    allowed: Arc<Vec<ipnet::IpNet>>,
}

/// Whether a webhook may reach `ip`: a public address, or one in a network the operator allows.
pub fn reachable(ip: std::net::IpAddr, allowed: &[ipnet::IpNet]) -> bool {
    use std::net::IpAddr;
    if allowed.iter().any(|net| net.contains(&ip)) {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The resolver guard's refusal somewhere in a request error's causes, if it is one.
fn guard_refusal(error: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if text.contains("resolves only to loopback") {
            return Some(text);
        }
        cause = e.source();
    }
    None
}

/// Resolves names for webhook requests, keeping only the addresses a webhook may reach.
struct GuardedResolver {
    allowed: Arc<Vec<ipnet::IpNet>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept: Vec<std::net::SocketAddr> = found.filter(|a| reachable(a.ip(), &allowed)).collect();
            if kept.is_empty() {
                let message =
                    format!("{host} resolves only to loopback, link-local or private addresses (see webhook_allow)");
                return Err(message.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The webhook worker.
pub type WebhookSender = Worker<Webhooks>;

/// The value of the signature header for `body` sent at `at`.
pub fn signature(secret: &str, at: DateTime<Utc>, body: &str) -> String {
    let mut mac = crate::core::hmac::hmac_sha256(secret.as_bytes());
    mac.update(format!("{}.{body}", at.timestamp()).as_bytes());
    format!("t={},v1={}", at.timestamp(), hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSender {
    /// A sender that reaches public addresses only.
    pub fn new(db: Db, clock: SharedClock, secrets: Secrets) -> Self {
        Self::allowing(db, clock, secrets, Vec::new())
    }

    /// A sender that may also reach the loopback, link-local or private networks in `allowed`.
    pub fn allowing(db: Db, clock: SharedClock, secrets: Secrets, allowed: Vec<ipnet::IpNet>) -> Self {
        let allowed = Arc::new(allowed);
        let client = guarded_client(allowed.clone());
        Worker::with(db, clock, Webhooks { client, secrets, allowed })
    }
}

/// An HTTP client for requests a message or a webhook names: no redirects, no proxy, 10 s at
/// most, and no loopback, link-local or private address unless in `allowed` (checked on every
/// address a name resolves to).
pub fn guarded_client(allowed: Arc<Vec<ipnet::IpNet>>) -> reqwest::Client {
    // reqwest is built without a crypto provider of its own: make sure ring is installed (a
    // no-op when the binary already did), or building the client would panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { allowed }))
        .user_agent(concat!("ownlist/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

impl Carrier for Webhooks {
    const CHANNEL: OutboxChannel = OutboxChannel::Webhook;

    async fn attempt(
        &self,
        message: &outbox::Model,
        body: &super::Body,
        now: DateTime<Utc>,
        tries: &mut Vec<Try>,
    ) -> Answer {
        let Ok(payload) = serde_json::from_str::<Value>(body.text()) else {
            return Answer::Fail("the queued payload is not JSON".into());
        };
        let variable = payload.get("secret_env").and_then(Value::as_str).unwrap_or_default();
        let Some(secret) = (self.secrets)(variable).filter(|_| !variable.starts_with("OWNLIST_")) else {
            return Answer::Fail(format!("the signing secret variable {variable} is not set"));
        };
        // A name is checked when it is resolved; an address written in the URL, here.
        let literal = url::Url::parse(&message.recipient).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        });
        if let Some(ip) = literal
            && !reachable(ip, &self.allowed)
        {
            return Answer::Fail(format!("{ip} is a loopback, link-local or private address (see webhook_allow)"));
        }
        let body = json!({
            "id": message.id,
            "workflow": payload.get("workflow"),
            "step": payload.get("step"),
            "subscriber": payload.get("subscriber"),
            "data": payload.get("body"),
            "sent_at": now,
        })
        .to_string();
        let request = self
            .client
            .post(&message.recipient)
            .header("content-type", "application/json")
            .header("x-ownlist-signature", signature(&secret, now, &body))
            .header("idempotency-key", message.idempotency_key.clone())
            .body(body);
        let started = std::time::Instant::now();
        let answer = match request.send().await {
            Ok(response) if response.status().is_success() => {
                Answer::Delivered(json!({"status": response.status().as_u16()}))
            }
            Ok(response) => {
                let status = response.status().as_u16();
                if status == 408 || status == 429 || status >= 500 {
                    Answer::Retry(format!("HTTP {status}"))
                } else if response.status().is_redirection() {
                    Answer::Fail(format!("HTTP {status}: redirects are not followed; use the final URL"))
                } else {
                    Answer::Fail(format!("HTTP {status}"))
                }
            }
            // Refused by the resolver's guard: retrying would not change where the name points.
            Err(e) if guard_refusal(&e).is_some() => Answer::Fail(guard_refusal(&e).unwrap_or_default()),
            Err(e) => Answer::Retry(format!("{}", e.without_url())),
        };
        let outcome = match &answer {
            Answer::Delivered(_) => Outcome::Sent,
            Answer::Retry(_) | Answer::Hold(_) | Answer::Held(..) => Outcome::Retried,
            Answer::Fail(_) | Answer::Bounce(_) | Answer::Stopped(_) | Answer::Asked(_) => Outcome::Failed,
        };
        tries.push(super::tried(Self::CHANNEL, "webhook", outcome, started.elapsed()));
        answer
    }
}
