//! Webhook steps: a signed JSON POST to the URL a workflow names, retried until it succeeds.
//!
//! Signature: `X-Ownlist-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is HMAC-SHA256 over
//! `"{t}.{body}"` with the secret held in the environment variable the step names. Receivers
//! recompute it and reject stale timestamps. Retries: on network errors, 408, 429 and 5xx, with
//! exponential backoff (1 min doubling to 1 h) for up to ten attempts; any other answer, or a
//! missing secret, fails the message at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::audience::records;
use crate::clock::SharedClock;
use crate::error::Result;
use crate::store::Db;
use crate::store::entities::outbox;

const MAX_ATTEMPTS: i32 = 10;
const BATCH: u64 = 50;

/// Where signing secrets come from (the environment, or a map in tests).
pub type Secrets = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct WebhookSender {
    db: Db,
    clock: SharedClock,
    client: reqwest::Client,
    secrets: Secrets,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSender")
    }
}

/// The value of the signature header for `body` sent at `at`.
pub fn signature(secret: &str, at: DateTime<Utc>, body: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{}.{body}", at.timestamp()).as_bytes());
    format!("t={},v1={}", at.timestamp(), hex::encode(mac.finalize().into_bytes()))
}

enum Answer {
    Delivered(u16),
    Retry(String),
    Fail(String),
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
        Self { db, clock, client, secrets }
    }

    /// Sends every due webhook once; returns how many were attempted.
    pub async fn send_due(&self) -> Result<u64> {
        let now = self.clock.now();
        let due = outbox::Entity::find()
            .filter(outbox::Column::Channel.eq("webhook"))
            .filter(outbox::Column::Status.eq("queued"))
            .filter(outbox::Column::DueAt.lte(now))
            .order_by_asc(outbox::Column::DueAt)
            .limit(BATCH)
            .all(self.db.conn())
            .await?;
        let count = due.len() as u64;
        for message in due {
            let answer = self.attempt(&message, now).await;
            self.record(message, answer, now).await?;
        }
        Ok(count)
    }

    async fn attempt(&self, message: &outbox::Model, now: DateTime<Utc>) -> Answer {
        let Ok(payload) = serde_json::from_str::<Value>(&message.body_text) else {
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
        match request.send().await {
            Ok(response) if response.status().is_success() => Answer::Delivered(response.status().as_u16()),
            Ok(response) => {
                let status = response.status().as_u16();
                if status == 408 || status == 429 || status >= 500 {
                    Answer::Retry(format!("HTTP {status}"))
                } else {
                    Answer::Fail(format!("HTTP {status}"))
                }
            }
            Err(e) => Answer::Retry(format!("{}", e.without_url())),
        }
    }

    async fn record(&self, message: outbox::Model, answer: Answer, now: DateTime<Utc>) -> Result<()> {
        let subscriber = message.subscriber_id;
        let attempts = message.attempts + 1;
        let step = message.step_id.clone();
        let workflow = message.workflow_id.clone();
        let mut active = message.into_active_model();
        active.attempts = Set(attempts);
        active.updated_at = Set(now);
        let (kind, detail) = match answer {
            Answer::Delivered(status) => {
                active.status = Set("sent".into());
                active.sent_at = Set(Some(now));
                active.last_error = Set(None);
                ("webhook_sent", json!({"status": status}))
            }
            Answer::Retry(error) if attempts < MAX_ATTEMPTS => {
                let wait = chrono::Duration::minutes(1 << (attempts - 1).min(6)).min(chrono::Duration::hours(1));
                active.due_at = Set(now + wait);
                active.last_error = Set(Some(error.clone()));
                ("webhook_retrying", json!({"error": error, "next_attempt": now + wait}))
            }
            Answer::Retry(error) | Answer::Fail(error) => {
                active.status = Set("failed".into());
                active.last_error = Set(Some(error.clone()));
                ("webhook_failed", json!({"error": error}))
            }
        };
        let txn = self.db.begin_write().await?;
        active.update(&txn).await?;
        let data = json!({"workflow": workflow, "step": step, "attempt": attempts, "detail": detail});
        records::event(subscriber, kind, data, now).insert(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Sends due webhooks every second until `stop` says so.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.send_due().await {
                tracing::error!(error = %e, "webhook delivery failed; retrying");
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
