//! Scheduler benchmark: N enrollments waiting on SQLite become due at once; the engine advances
//! them through non-message steps (a tag, then the start of a wait). Reports steps/s, peak RSS,
//! and how late a step due in the middle of the drain ran.
//!
//!   cargo bench --bench scheduler -- [ENROLLMENTS]      (default 1,000,000)

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use ownlist::app::App;
use ownlist::clock::{ManualClock, SharedClock};
use ownlist::config::Config;
use ownlist::store::bulk::{OnDuplicate, insert_statement};
use ownlist::store::entities::{enrollment, subscriber};
use sea_orm::ActiveValue::Set;
use sea_orm::ConnectionTrait;
use serde_json::json;
use uuid::Uuid;

/// Due times are spread over this many seconds: a million over 120 s is ~17,000 steps/s, below
/// the engine's capacity, so phase two measures lateness, not a backlog that can only grow.
const SPREAD: usize = 120;

const WORKFLOW: &str = "name: Bench\ntrigger: { event: bench }\nsteps:\n  - id: mark\n    tag: benched\n  - id: pause\n    wait: 1d\n  - id: done\n    tag: done\n";

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
        let mut config = Config::defaults_in(dir.path());
        std::fs::create_dir_all(&config.workflows_dir)?;
        std::fs::write(config.workflows_dir.join("bench.yaml"), WORKFLOW)?;
        config.templates_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let shared: SharedClock = clock.clone();
        let service = App::open(config, shared).await?.start().await?;
        let db = service.app.db.clone();

        eprintln!("seeding {n} subscribers and enrollments…");
        let seeded = Instant::now();
        let backend = db.backend();
        for chunk_start in (0..n).step_by(5000) {
            let end = (chunk_start + 5000).min(n);
            let mut subscribers = Vec::with_capacity(end - chunk_start);
            let mut enrollments = Vec::with_capacity(end - chunk_start);
            for i in chunk_start..end {
                let id = Uuid::now_v7();
                subscribers.push(subscriber::ActiveModel {
                    id: Set(id),
                    email: Set(Some(format!("user{i}@example.com"))),
                    email_key: Set(Some(format!("user{i}@example.com"))),
                    phone: Set(None),
                    first_name: Set(None),
                    last_name: Set(None),
                    timezone: Set(None),
                    locale: Set(None),
                    attributes: Set(json!({})),
                    status: Set("active".into()),
                    email_state: Set("subscribed".into()),
                    sms_state: Set("none".into()),
                    source: Set(None),
                    medium: Set(None),
                    campaign: Set(None),
                    referrer: Set(None),
                    landing_page: Set(None),
                    created_at: Set(start),
                    updated_at: Set(start),
                });
                enrollments.push(enrollment::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    workflow_id: Set("bench".into()),
                    version: Set(1),
                    subscriber_id: Set(id),
                    status: Set("active".into()),
                    step_id: Set(Some("mark".into())),
                    next_run_at: Set(Some(start + Duration::seconds(i64::try_from(i % SPREAD).unwrap_or(0)))),
                    wait_started_at: Set(None),
                    waiting_for: Set(None),
                    end_reason: Set(None),
                    created_at: Set(start),
                    updated_at: Set(start),
                    ended_at: Set(None),
                });
            }
            let txn = db.begin_write().await?;
            for part in [subscribers].into_iter() {
                for chunk in part.chunks(1000) {
                    if let Some(s) = insert_statement(backend, chunk.to_vec(), OnDuplicate::Fail) {
                        txn.execute_unprepared(&s.sql).await?;
                    }
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

        // Everything becomes due over one minute; the engine drains it.
        clock.set(start + Duration::seconds(i64::try_from(SPREAD).unwrap_or(0)));
        let drained = Instant::now();
        let report = service.engine.tick().await?;
        let seconds = drained.elapsed().as_secs_f64();
        let steps = report.advanced * 2;
        #[allow(clippy::cast_precision_loss)]
        let rate = steps as f64 / seconds;
        println!("enrollments: {n}");
        println!("steps: {steps} (a tag and the start of a wait each) in {seconds:.1} s: {rate:.0} steps/s");
        // Phase two: the waits end one day after their steps were due, spread over a minute.
        // The clock now follows the wall clock; before each tick, note how late the oldest due
        // step is. That lateness is what a subscriber would see.
        let spread = Duration::seconds(i64::try_from(SPREAD).unwrap_or(0));
        let phase_two = start + spread + Duration::days(1);
        let wall = Instant::now();
        let mut worst = 0.0f64;
        let mut finished = 0u64;
        loop {
            let elapsed = Duration::milliseconds(i64::try_from(wall.elapsed().as_millis()).unwrap_or(i64::MAX));
            let now = phase_two - spread + elapsed;
            clock.set(now);
            let oldest = db
                .conn()
                .query_one_raw(sea_orm::Statement::from_string(
                    backend,
                    "SELECT MIN(next_run_at) AS due FROM enrollments WHERE status = 'active'".to_owned(),
                ))
                .await?
                .and_then(|row| row.try_get::<Option<chrono::DateTime<Utc>>>("", "due").ok().flatten());
            let Some(oldest) = oldest else { break };
            #[allow(clippy::cast_precision_loss)]
            let late = (now - oldest).num_milliseconds() as f64 / 1000.0;
            worst = worst.max(late);
            let report = service.engine.tick().await?;
            finished += report.advanced;
            if report.advanced == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        println!("phase two: {finished} enrollments came due over {SPREAD} s of wall time; the oldest due step was at most {worst:.2} s late");
        println!("peak RSS: {:.0} MB", peak_rss_mb());
        Ok(())
    })
}
