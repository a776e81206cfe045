//! Webhook steps: a signed JSON POST to the URL a workflow names, retried until it succeeds.
//!
//! Signature: `X-Ownlist-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is HMAC-SHA256 over
//! `"{t}.{body}"` with the secret held in the environment variable the step names. Receivers
//! recompute it and reject stale timestamps. Retries: on network errors, 408, 429 and 5xx, with
//! exponential backoff (1 min doubling to 1 h) until the retry age (48 h); any other answer, or a
//! missing secret, fails the message at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Answer, Carrier, Outcome, Try, Worker};
use crate::clock::SharedClock;
use crate::store::Db;
use crate::store::entities::outbox;

/// Where signing secrets come from (the environment, or a map in tests).
pub type Secrets = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Sends webhook steps' requests.
pub struct Webhooks {
    client: reqwest::Client,
    secrets: Secrets,
}

/// The webhook worker.
pub type WebhookSender = Worker<Webhooks>;

/// The value of the signature header for `body` sent at `at`.
pub fn signature(secret: &str, at: DateTime<Utc>, body: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{}.{body}", at.timestamp()).as_bytes());
    format!("t={},v1={}", at.timestamp(), hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSender {
    pub fn new(db: Db, clock: SharedClock, secrets: Secrets) -> Self {
        // reqwest is built without a crypto provider of its own: make sure ring is installed
        // (a no-op when the binary already did), or building the client would panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("ownlist/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Worker::with(db, clock, Webhooks { client, secrets })
    }
}

impl Carrier for Webhooks {
    const CHANNEL: &'static str = "webhook";

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
        let Some(secret) = (self.secrets)(variable) else {
            return Answer::Fail(format!("the signing secret variable {variable} is not set"));
        };
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
                } else {
                    Answer::Fail(format!("HTTP {status}"))
                }
            }
            Err(e) => Answer::Retry(format!("{}", e.without_url())),
        };
        let outcome = match &answer {
            Answer::Delivered(_) => Outcome::Sent,
            Answer::Retry(_) | Answer::Hold(_) => Outcome::Retried,
            Answer::Fail(_) | Answer::Bounce(_) => Outcome::Failed,
        };
        tries.push(super::tried("webhook", "webhook", outcome, started.elapsed()));
        answer
    }
}
