//! Building a worker, and claiming due messages (leases on PostgreSQL, pauses while every relay rests).

use super::*;
use crate::core::clock::SharedClock;
use crate::core::error::Result;
use crate::core::values::OutboxStatus;
use crate::outbox::Doorbell;
use crate::store::Db;
use crate::store::entities::outbox;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

impl<S: Carrier + 'static> Worker<S> {
    pub fn with(db: Db, clock: SharedClock, sender: S) -> Self {
        Self {
            db,
            clock,
            sender,
            bell: Doorbell::new(),
            max_age: chrono::Duration::hours(DEFAULT_MAX_AGE_HOURS),
            fallback_after: chrono::Duration::minutes(crate::audience::reach::fallback::DEFAULT_FALLBACK_AFTER_MINUTES),
            health: None,
            leases: None,
            dictionaries: Dictionaries::default(),
            unrecorded: std::sync::Mutex::new(Vec::new()),
            recoveries_seen: std::sync::atomic::AtomicU64::new(0),
            policy: super::policy::SendPolicy::default(),
        }
    }

    /// Holds marketing messages by this send policy (caps, sending days, holidays).
    pub fn with_policy(mut self, policy: super::policy::SendPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Claims messages with leases (several instances on one PostgreSQL database): a batch is
    /// claimed with `FOR UPDATE SKIP LOCKED`, so instances never take the same message, and
    /// marked as this process's until `lease` from now; a message is attempted only while at
    /// least half its lease remains (longer than any attempt), so once a lease has ended the
    /// message is safe for another instance to take over (a crashed process's claims come back
    /// that way).
    pub fn with_leases(mut self, instance: String, lease: chrono::Duration) -> Self {
        self.leases = Some((instance, lease));
        self
    }

    /// Gives up on a message that still fails for a temporary reason once it is this old.
    pub fn with_max_age(mut self, max_age: chrono::Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// `reach: first`: how long a message failing for now waits before its fallback goes instead.
    pub fn with_fallback_after(mut self, after: chrono::Duration) -> Self {
        self.fallback_after = after;
        self
    }

    /// Says here whether its channel works: failing from a message failing for now, working
    /// again once one gets through (or is answered for good).
    pub fn with_health(mut self, health: crate::core::health::SharedHealth) -> Self {
        self.health = Some(health);
        self
    }

    /// Listens to this bell (the one the engine rings) rather than a bell of its own.
    pub fn with_bell(mut self, bell: Doorbell) -> Self {
        self.bell = bell;
        self
    }

    /// The next due messages of the channel with their bodies, in (due time, id) order after
    /// `after`: a pass through a backlog claims each batch after the previous one, so the next
    /// batch can be read while the current one is being sent.
    pub(super) async fn claim(
        &self,
        now: DateTime<Utc>,
        after: Option<(DateTime<Utc>, uuid::Uuid)>,
    ) -> Result<Vec<Ready>> {
        let claimed = match &self.leases {
            Some((instance, lease)) => self.claim_leased(now, instance, *lease).await?,
            None => self.claim_next(now, after).await?,
        };
        self.dictionaries.attach(&self.db, claimed).await
    }

    /// The next due messages after `after` (one instance: no leases).
    pub(super) async fn claim_next(
        &self,
        now: DateTime<Utc>,
        after: Option<(DateTime<Utc>, uuid::Uuid)>,
    ) -> Result<Vec<Claimed>> {
        let mut query = outbox::with_bodies()
            .filter(channel_is(S::CHANNEL))
            .filter(crate::store::queued())
            .filter(outbox::Column::DueAt.lte(now));
        if let Some((due, id)) = after {
            query = query.filter(
                sea_orm::Condition::any()
                    .add(outbox::Column::DueAt.gt(due))
                    .add(sea_orm::Condition::all().add(outbox::Column::DueAt.eq(due)).add(outbox::Column::Id.gt(id))),
            );
        }
        let query = query.order_by_asc(outbox::Column::DueAt).order_by_asc(outbox::Column::Id).limit(BATCH);
        Ok(outbox::all_with_bodies(query, self.db.conn()).await?)
    }

    /// Claims the next due messages that no live lease holds (PostgreSQL).
    pub(super) async fn claim_leased(
        &self,
        now: DateTime<Utc>,
        instance: &str,
        lease: chrono::Duration,
    ) -> Result<Vec<Claimed>> {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = "UPDATE outbox SET lease_until = $1, lease_owner = $2 WHERE id IN (\
                   SELECT id FROM outbox WHERE channel = $3 AND status = 'queued' AND due_at <= $4 \
                   AND (lease_until IS NULL OR lease_until < $4) ORDER BY due_at, id LIMIT $5 \
                   FOR UPDATE SKIP LOCKED) RETURNING id";
        let values: [sea_orm::Value; 5] =
            [(now + lease).into(), instance.into(), S::CHANNEL.as_str().into(), now.into(), (BATCH as i64).into()];
        let statement = Statement::from_sql_and_values(self.db.backend(), sql, values);
        let rows = self.db.conn().query_all_raw(statement).await?;
        let ids: Vec<uuid::Uuid> = rows.iter().filter_map(|r| r.try_get::<uuid::Uuid>("", "id").ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = outbox::with_bodies()
            .filter(outbox::Column::Id.is_in(ids))
            .order_by_asc(outbox::Column::DueAt)
            .order_by_asc(outbox::Column::Id);
        Ok(outbox::all_with_bodies(query, self.db.conn()).await?)
    }

    /// Gives back the leases of claimed messages not attempted (on stopping, or after a pass
    /// failed), so another instance can send them at once rather than when the leases end. The
    /// messages sent whose answers are not written yet keep theirs: they must not be sent again.
    pub(super) async fn release_leases(&self) -> Result<()> {
        let Some((instance, _)) = &self.leases else { return Ok(()) };
        use sea_orm::sea_query::Expr;
        let sent: Vec<uuid::Uuid> = self.held().iter().map(|(message, _, _)| message.id).collect();
        outbox::Entity::update_many()
            .col_expr(outbox::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(outbox::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .filter(outbox::Column::LeaseOwner.eq(instance.as_str()))
            .filter(outbox::Column::Status.eq(OutboxStatus::Queued))
            .filter(outbox::Column::Id.is_not_in(sent))
            .exec(self.db.conn())
            .await?;
        Ok(())
    }

    /// What comes before claiming: the answers kept after a failure are written (until they
    /// are, nothing is claimed), nothing is claimed while every relay cools down, and retries
    /// are made due when a relay works again. `false`: claim nothing now.
    pub(super) async fn ready_to_claim(&self) -> Result<bool> {
        self.write_unrecorded().await?;
        if let Some(until) = self.sender.paused_until(self.clock.now()) {
            tracing::debug!(channel = S::CHANNEL.as_str(), %until, "every relay is cooling down: nothing claimed");
            return Ok(false);
        }
        self.retry_now_after_a_recovery().await?;
        Ok(true)
    }

    /// When a relay works again after failing, the messages waiting out a backoff are due at
    /// once: their tries failed because the relays did (or, for a few, for a reason of their
    /// own, which costs them one early try), and an outage should end when the relay is back,
    /// not when the longest backoff does.
    pub(super) async fn retry_now_after_a_recovery(&self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let recoveries = self.sender.recoveries();
        if self.recoveries_seen.load(Relaxed) == recoveries {
            return Ok(());
        }
        use sea_orm::sea_query::Expr;
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let moved = outbox::Entity::update_many()
            .col_expr(outbox::Column::DueAt, Expr::value(now))
            .filter(channel_is(S::CHANNEL))
            .filter(crate::store::queued())
            .filter(outbox::Column::Attempts.gt(0))
            .filter(outbox::Column::DueAt.gt(now))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.recoveries_seen.store(recoveries, Relaxed);
        tracing::info!(
            channel = S::CHANNEL.as_str(),
            messages = moved.rows_affected,
            "a relay works again: retries are due now"
        );
        Ok(())
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, Vec<Attempted>> {
        self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
