//! Scheduler benchmark: N enrollments waiting on SQLite are all due (a backlog, as after a
//! broadcast or a restart) while the clock follows the wall clock. The engine drains them through
//! non-message steps (a tag, then the start of a wait). Meanwhile "probe" enrollments come due
//! ten times a second; a poller notes how long each stays due before the engine has run it.
//! Reports steps/s for the drain, the worst probe lateness, and peak RSS.
//!
//!   cargo bench --bench scheduler -- [ENROLLMENTS]      (default 1,000,000)

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ownlist::app::App;
use ownlist::config::Config;
use ownlist::core::clock::{ManualClock, SharedClock};
use ownlist::store::bulk::{OnDuplicate, insert_statement};
use ownlist::store::entities::enrollment;
use sea_orm::ActiveValue::Set;
use sea_orm::ConnectionTrait;
use support::subscriber_row;
use uuid::Uuid;

/// The backlog's due times are spread over the SPREAD seconds before the start.
const SPREAD: i64 = 120;
/// Probes come due every PROBE_EVERY_MS milliseconds for PROBE_SECONDS seconds.
const PROBE_EVERY_MS: i64 = 100;
const PROBE_SECONDS: i64 = 150;

const STEPS: &str =
    "steps:\n  - id: mark\n    tag: benched\n  - id: pause\n    wait: 1d\n  - id: done\n    tag: done\n";

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let mut config = Config::defaults_in(dir.path())?;
        std::fs::create_dir_all(&config.workflows_dir)?;
        for id in ["bench", "probe"] {
            let file = format!("name: {id}\ntrigger: {{ event: {id} }}\n{STEPS}");
            std::fs::write(config.workflows_dir.join(format!("{id}.yaml")), file)?;
        }
        config.templates_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let shared: SharedClock = clock.clone();
        let service = App::open(config, shared).await?.start().await?;
        let db = service.app.db.clone();
        let backend = db.backend();

        let probes = usize::try_from(PROBE_SECONDS * 1000 / PROBE_EVERY_MS).unwrap_or(0);
        eprintln!("seeding {n} enrollments due now and {probes} probes coming due over {PROBE_SECONDS} s…");
        let seeded = Instant::now();
        let total = n + probes;
        for chunk_start in (0..total).step_by(5000) {
            let end = (chunk_start + 5000).min(total);
            let mut subscribers = Vec::with_capacity(end - chunk_start);
            let mut enrollments = Vec::with_capacity(end - chunk_start);
            for i in chunk_start..end {
                let id = Uuid::now_v7();
                subscribers.push(subscriber_row(id, i, start, None, None));
                let (workflow, due) = if i < n {
                    ("bench", start - Duration::seconds(i64::try_from(i).unwrap_or(0) % SPREAD))
                } else {
                    let k = i64::try_from(i - n).unwrap_or(0);
                    ("probe", start + Duration::milliseconds((k + 1) * PROBE_EVERY_MS))
                };
                enrollments.push(enrollment::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    workflow_id: Set(workflow.into()),
                    version: Set(1),
                    subscriber_id: Set(id),
                    status: Set("active".into()),
                    step_id: Set(Some("mark".into())),
                    next_run_at: Set(Some(due)),
                    wait_started_at: Set(None),
                    waiting_for: Set(None),
                    end_reason: Set(None),
                    created_at: Set(start),
                    updated_at: Set(start),
                    ended_at: Set(None),
                });
            }
            let txn = db.begin_write().await?;
            for chunk in subscribers.chunks(1000) {
                if let Some(s) = insert_statement(backend, chunk.to_vec(), OnDuplicate::Fail) {
                    txn.execute_unprepared(&s.sql).await?;
                }
            }
            for chunk in enrollments.chunks(1000) {
                if let Some(s) = insert_statement(backend, chunk.to_vec(), OnDuplicate::Fail) {
                    txn.execute_unprepared(&s.sql).await?;
                }
            }
            txn.commit().await?;
        }
        eprintln!("seeded in {:.1} s", seeded.elapsed().as_secs_f64());

        // From here the clock follows the wall clock, as it would in production.
        let wall = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let follow = {
            let (clock, done) = (clock.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    clock.set(start + elapsed(wall));
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            })
        };
        // The poller: how long has the oldest due probe been waiting for the engine?
        let poller = {
            let (db, done) = (db.clone(), done.clone());
            tokio::spawn(async move {
                let mut worst = 0.0f64;
                while !done.load(Ordering::Relaxed) {
                    let oldest = db
                        .conn()
                        .query_one_raw(sea_orm::Statement::from_string(
                            backend,
                            "SELECT MIN(next_run_at) AS due FROM enrollments WHERE workflow_id = 'probe' \
                             AND step_id = 'mark' AND ended_at IS NULL"
                                .to_owned(),
                        ))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|row| row.try_get::<Option<DateTime<Utc>>>("", "due").ok().flatten());
                    let now = start + elapsed(wall);
                    if let Some(oldest) = oldest {
                        #[allow(clippy::cast_precision_loss)]
                        let late = (now - oldest).num_milliseconds() as f64 / 1000.0;
                        worst = worst.max(late);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                worst
            })
        };

        let report = service.engine.tick().await?;
        let seconds = wall.elapsed().as_secs_f64();
        let steps = report.advanced * 2;
        #[allow(clippy::cast_precision_loss)]
        let rate = steps as f64 / seconds;
        println!("enrollments: {n} due at once, plus {probes} probes coming due over {PROBE_SECONDS} s");
        println!("drain: {steps} steps (a tag and the start of a wait each) in {seconds:.1} s: {rate:.0} steps/s");
        // Let the remaining probes come due and run, as `serve` would: a tick twice a second.
        while elapsed(wall) < Duration::seconds(PROBE_SECONDS + 1) {
            service.engine.tick().await?;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        service.engine.tick().await?;
        done.store(true, Ordering::Relaxed);
        let worst = poller.await?;
        follow.await?;
        println!("probes: the longest any due step waited for the engine was {worst:.2} s");
        println!("peak RSS: {:.0} MB", peak_rss_mb());
        Ok(())
    })
}

fn elapsed(since: Instant) -> Duration {
    Duration::milliseconds(i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX))
}
