//! The worker's loop: passes of claim, send and record, with backoff after a failed pass.

use super::*;
use crate::core::error::Result;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

impl<S: Carrier + 'static> Worker<S> {
    /// Attempts a batch of due messages of the channel; returns how many were attempted.
    pub async fn send_due(self: &Arc<Self>) -> Result<u64> {
        if !self.ready_to_claim().await? {
            return Ok(0);
        }
        let (_, never) = tokio::sync::watch::channel(false);
        let batch = self.claim(self.clock.now(), None).await?;
        let progress = Progress::default();
        progress.outstanding.store(batch.len(), std::sync::atomic::Ordering::Relaxed);
        self.send_all(futures_util::stream::iter([batch]), &never, &progress).await
    }

    /// Attempts the messages of the batches as they come, CONCURRENCY at a time, starting none
    /// once `stop` says so (those under way finish and are recorded); returns how many were
    /// attempted.
    ///
    /// Each attempt is a task of its own, so the attempts (building a message is CPU work) run
    /// on every core of the runtime, not only on the one polling this function. A send's answer
    /// goes to the recorder, which writes every answer that has come in one transaction while
    /// the next messages are sent. A message holds one of IN_FLIGHT permits from before its
    /// attempt until its answer is written: at any instant at most IN_FLIGHT messages are sent
    /// (or being sent) but not recorded, and only those can be sent again after a crash. Every
    /// attempt started is recorded before this returns: the recorder reads until the last task
    /// has handed in its answer.
    pub(super) async fn send_all(
        self: &Arc<Self>,
        batches: impl futures_util::Stream<Item = Vec<Ready>> + std::marker::Send,
        stop: &tokio::sync::watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<u64> {
        type Permit = tokio::sync::OwnedSemaphorePermit;
        use std::sync::atomic::Ordering::Relaxed;
        let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let sending = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Attempted, Permit)>();
        let failed = &progress.failed;
        let starting = async {
            let tx = tx;
            let mut messages = std::pin::pin!(batches.flat_map(futures_util::stream::iter));
            while let Some((message, body)) = messages.next().await {
                let (Ok(slot), Ok(permit)) =
                    (sending.clone().acquire_owned().await, window.clone().acquire_owned().await)
                else {
                    break;
                };
                // Stopping, or the answers cannot be written: start nothing more (a message may
                // have waited here for its place while that happened).
                if *stop.borrow() || failed.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // A lease about to end: leave the message for whoever claims it next.
                if let (Some(until), Some((_, lease))) = (message.lease_until, &self.leases)
                    && self.clock.now() + *lease / 2 > until
                {
                    progress.outstanding.fetch_sub(1, Relaxed);
                    continue;
                }
                let (worker, tx) = (self.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut tries = Vec::new();
                    let now = worker.clock.now();
                    let answer = match &body {
                        Some(body) => match worker.policy.judge(&worker.db, &message, now).await {
                            Ok(policy::Verdict::Hold(until, why)) => Answer::Held(until, why),
                            Ok(policy::Verdict::Stop(why)) => Answer::Stopped(why),
                            Ok(policy::Verdict::Ask(why)) => Answer::Asked(why),
                            Ok(policy::Verdict::Go) => worker.sender.attempt(&message, body, now, &mut tries).await,
                            Err(e) => Answer::Retry(format!("cannot read what the send policy counts: {e}")),
                        },
                        None => Answer::Fail("the message's body is missing".into()),
                    };
                    drop(slot);
                    // The recorder reads until every task has dropped its sender: this cannot fail.
                    let _ = tx.send(((message, answer, tries), permit));
                });
            }
        };
        let recording = async {
            let (mut outcome, mut count) = (Ok(()), 0u64);
            let mut group = Vec::with_capacity(IN_FLIGHT);
            while rx.recv_many(&mut group, IN_FLIGHT).await > 0 {
                // While sends are under way, wait a little for more answers: each transaction
                // rewrites the pages it touches (the table's last pages, the indexes'), so a few
                // large ones write much less than many small ones.
                let deadline = tokio::time::Instant::now() + GATHER;
                while group.len() < IN_FLIGHT / 2 && sending.available_permits() < CONCURRENCY {
                    match tokio::time::timeout_at(deadline, rx.recv_many(&mut group, IN_FLIGHT)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                count += group.len() as u64;
                progress.outstanding.fetch_sub(group.len(), Relaxed);
                let (answers, permits): (Vec<_>, Vec<_>) = group.drain(..).unzip();
                if outcome.is_ok() {
                    outcome = self.record_retrying(&answers).await;
                }
                if outcome.is_err() {
                    // Kept, not dropped: without its answer a sent message would be sent again.
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.held().extend(answers);
                }
                drop(permits);
            }
            outcome.map(|()| count)
        };
        tokio::join!(starting, recording).1
    }

    /// Sends due messages until `stop` says so: batch after batch while there is a backlog,
    /// otherwise looking again when the bell rings or after a second. On `stop` it starts no new attempt, finishes and
    /// records those under way, and returns.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut bell = self.bell.listen();
        let mut failures = 0u32;
        loop {
            bell.mark_unchanged();
            let mut pause = Duration::from_secs(1);
            match self.pass(&stop).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    // Each failure in a row waits twice as long (to half a minute), and what
                    // this process claimed but did not attempt goes back to the other instances.
                    failures = failures.saturating_add(1);
                    pause = Duration::from_millis(500 << failures.min(6));
                    tracing::error!(error = %e, channel = S::CHANNEL.as_str(), ?pause, "delivery failed; trying again");
                    if let Err(e) = self.release_leases().await {
                        tracing::warn!(error = %e, channel = S::CHANNEL.as_str(), "could not give back claimed messages");
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = bell.changed(), if failures == 0 => {}
                () = tokio::time::sleep(pause) => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.write_unrecorded().await {
            let lost = self.held().len();
            tracing::error!(error = %e, channel = S::CHANNEL.as_str(), lost, "stopping with answers that cannot be written: those messages may be sent again");
        }
        if let Err(e) = self.release_leases().await {
            tracing::warn!(error = %e, channel = S::CHANNEL.as_str(), "could not give back claimed messages");
        }
    }

    /// One pass through what is due: batch after batch until a batch comes back short, each
    /// claimed while the ones before it are being sent (at most two wait, so memory stays
    /// bounded), and the messages sent as one stream, so no batch waits for the last of the one
    /// before it.
    pub(super) async fn pass(self: &Arc<Self>, stop: &tokio::sync::watch::Receiver<bool>) -> Result<()> {
        if !self.ready_to_claim().await? {
            return Ok(());
        }
        use std::sync::atomic::Ordering::Relaxed;
        let (batches, waiting) = tokio::sync::mpsc::channel::<Vec<Ready>>(1);
        let progress = &Progress::default();
        let claiming = async move {
            let mut after = None;
            let mut bell = self.bell.listen();
            while !*stop.borrow() && !progress.failed.load(Relaxed) {
                bell.mark_unchanged();
                let batch = self.claim(self.clock.now(), after).await?;
                let claimed = batch.len();
                if let Some(last) = batch.last().map(|(m, _)| (m.due_at, m.id)) {
                    after = Some(last);
                    progress.outstanding.fetch_add(claimed, Relaxed);
                    if batches.send(batch).await.is_err() {
                        break;
                    }
                }
                if claimed as u64 == BATCH {
                    continue;
                }
                // Nothing more is due now. While sends are still under way (a slow relay, a
                // probe waiting out its greeting), look again in a moment rather than when the
                // slowest of them ends: one slow message must not hold up the messages after it.
                if progress.outstanding.load(Relaxed) == 0 {
                    break;
                }
                tokio::select! {
                    _ = bell.changed() => {}
                    () = tokio::time::sleep(LOOK_AGAIN) => {}
                }
            }
            Ok::<_, crate::core::error::Error>(())
        };
        let waiting = futures_util::stream::unfold(waiting, |mut rx| async { rx.recv().await.map(|b| (b, rx)) });
        let (claimed, sent) = tokio::join!(claiming, self.send_all(waiting, stop, progress));
        sent?;
        claimed
    }
}
