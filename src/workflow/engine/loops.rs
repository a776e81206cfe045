//! The run loops: workflows and broadcasts every half second, one tick at a time, while this instance leads.

use super::*;
use crate::core::error::Result;
use std::sync::Arc;
use uuid::Uuid;

impl Engine {
    /// Runs until `stop` says so: workflows ticking twice a second (so a step runs well within a
    /// second or two of its time), and beside them the writing of due broadcasts, looked for
    /// twice a second too; errors are logged and retried. A big broadcast is written by its own
    /// loop, so drips keep moving while it is written.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        tokio::join!(self.run_workflows(stop.clone()), self.run_broadcasts(stop));
    }

    pub(super) async fn run_workflows(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.every_half_second(stop, || async {
            // With several instances, the workflows in force are those stored last by any of
            // them (a reload on one is run by whichever leads).
            if self.leadership.is_some()
                && let Err(e) = self.registry.refresh().await
            {
                tracing::error!(error = %e, "cannot read the stored workflows; retrying");
            }
            match self.tick_workflows().await {
                Ok(report) if report.advanced > 0 || report.triggers > 0 => {
                    tracing::debug!(?report, "workflow engine tick");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "workflow engine tick failed; retrying"),
            }
        })
        .await;
    }

    pub(super) async fn run_broadcasts(&self, stop: tokio::sync::watch::Receiver<bool>) {
        let watching = stop.clone();
        self.every_half_second(stop, || async {
            if let Err(e) = self.fan_out(|| !*watching.borrow()).await {
                tracing::error!(error = %e, "writing a broadcast failed; retrying");
            }
        })
        .await;
    }

    /// Runs `work` now and then half a second after each run ends, until `stop` says so.
    pub(super) async fn every_half_second<F: std::future::Future<Output = ()>>(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        work: impl Fn() -> F,
    ) {
        loop {
            work().await;
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Does all the work that is due now: triggers first, then enrollments, until none is left;
    /// then writes the due broadcasts.
    pub async fn tick(&self) -> Result<TickReport> {
        let mut report = self.tick_workflows().await?;
        report.broadcast_to = self.fan_out(|| true).await?;
        Ok(report)
    }

    /// The workflows' part of [`Self::tick`]: triggers, then enrollments, until none is left.
    pub(super) async fn tick_workflows(&self) -> Result<TickReport> {
        let mut report = TickReport::default();
        loop {
            // Each round renews the lease, so a long tick keeps it, and a process that lost it
            // stops within a round.
            if !self.leading().await? {
                return Ok(report);
            }
            let (scheduled, more) = self.run_schedules().await?;
            let (dated, more_dates) = self.run_dates().await?;
            let scheduled = scheduled + dated;
            let more = more || more_dates;
            let (triggers, enrolled) = self.process_triggers().await?;
            let advanced = self.run_due().await?;
            report.triggers += triggers;
            report.enrolled += enrolled + scheduled;
            report.advanced += advanced;
            if advanced > 0 {
                self.bell.ring();
            }
            if triggers == 0 && advanced == 0 && !more {
                return Ok(report);
            }
        }
    }

    /// Enrolls a subscriber in a workflow now, as its trigger would (used by simulations).
    pub async fn enroll_directly(&self, id: &str, subscriber_id: Uuid) -> Result<bool> {
        let Some(current) = self.registry.current().get(id).cloned() else { return Ok(false) };
        let now = self.clock.now();
        let txn = self.db.begin_write().await?;
        let enrolled = self.enroll(&txn, id, &current.program, subscriber_id, now).await?;
        txn.commit().await?;
        Ok(enrolled)
    }
}
