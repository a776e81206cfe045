//! Stats benchmark: a year of history on SQLite (1,000,000 subscribers, 10,000,000 timeline
//! events, 1,000,000 enrollments of which 200,000 are in progress, and the daily rollups such a
//! year leaves: 10 landing pages × 8 sources × 3 campaigns, 5 workflows of 8 steps, 4 relays),
//! then every stats request over HTTP, each timed 20 times: median and worst.
//!
//!   cargo bench --bench stats -- [SUBSCRIBERS]      (default 1,000,000; events are ten per subscriber)
//!
//! The rollups are written directly (a year of live traffic would take a year); their sizes are
//! what the counting code makes of such a year: a row per day and key that saw anything.

#[path = "support.rs"]
mod support;

use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use ownlist::app::App;
use ownlist::config::Config;
use ownlist::core::clock::{ManualClock, SharedClock};
use ownlist::store::bulk::{OnDuplicate, insert_statement};
use ownlist::store::entities::{delivery_day, enrollment, event, funnel_day, step_day};
use sea_orm::ActiveValue::Set;
use sea_orm::ConnectionTrait;
use serde_json::json;
use support::subscriber_row;
use uuid::Uuid;

use ownlist::core::values::OutboxChannel;

const TOKEN: &str = "stats-bench-admin-token-0123456789";
const DAYS: i64 = 365;
const PAGES: usize = 10;
const SOURCES: [&str; 8] = ["instagram", "facebook", "tiktok", "google", "newsletter", "twitter", "youtube", ""];
const CAMPAIGNS: [&str; 3] = ["spring", "summer", ""];
const WORKFLOWS: usize = 5;
const STEPS: [&str; 8] = ["hello", "text", "pause", "story", "check", "ask", "wait-more", "last"];
const RELAYS: [(OutboxChannel, &str); 4] = [
    (OutboxChannel::Email, "smtp-a.example:587"),
    (OutboxChannel::Email, "smtp-b.example:587"),
    (OutboxChannel::Sms, "twilio"),
    (OutboxChannel::Sms, "backup"),
];

/// A small deterministic spread of counts.
fn spread(seed: u64, max: i64) -> i64 {
    let mixed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407) >> 33;
    i64::try_from(mixed % u64::try_from(max).unwrap_or(1)).unwrap_or(0)
}

fn workflow_yaml(id: usize) -> String {
    format!(
        "name: Flow {id}\ntrigger: {{ event: flow{id} }}\nsteps:\n  - id: hello\n    tag: a\n  - id: text\n    tag: b\n  \
         - id: pause\n    wait: 1d\n  - id: story\n    tag: c\n  - id: check\n    tag: d\n  - id: ask\n    tag: e\n  \
         - id: wait-more\n    wait: 2d\n  - id: last\n    tag: f\n"
    )
}

async fn insert_all<A>(db: &ownlist::store::Db, rows: Vec<A>) -> anyhow::Result<()>
where
    A: sea_orm::ActiveModelTrait + Clone,
{
    let backend = db.backend();
    let txn = db.begin_write().await?;
    for chunk in rows.chunks(1000) {
        if let Some(statement) = insert_statement(backend, chunk.to_vec(), OnDuplicate::Fail) {
            txn.execute_unprepared(&statement.sql).await?;
        }
    }
    txn.commit().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let mut config = Config::defaults_in(dir.path())?;
        std::fs::create_dir_all(&config.workflows_dir)?;
        for w in 0..WORKFLOWS {
            std::fs::write(config.workflows_dir.join(format!("flow{w}.yaml")), workflow_yaml(w))?;
        }
        config.templates_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
        config.admin_token = Some(TOKEN.into());
        let today = Utc.with_ymd_and_hms(2026, 12, 31, 12, 0, 0).unwrap();
        let first_day = today.date_naive() - Duration::days(DAYS - 1);
        let clock: SharedClock = std::sync::Arc::new(ManualClock::new(today));
        let app = App::open(config, clock).await?;
        let db = app.db.clone();

        eprintln!("seeding {n} subscribers, {} events, {n} enrollments…", n * 10);
        let seeded = Instant::now();
        for chunk_start in (0..n).step_by(10_000) {
            let end = (chunk_start + 10_000).min(n);
            let mut people = Vec::with_capacity(end - chunk_start);
            let mut events = Vec::with_capacity((end - chunk_start) * 10);
            let mut enrollments = Vec::with_capacity(end - chunk_start);
            for i in chunk_start..end {
                let id = Uuid::now_v7();
                let joined = today - Duration::minutes(i64::try_from(i).unwrap_or(0) % (DAYS * 24 * 60));
                people.push(subscriber_row(
                    id,
                    i,
                    joined,
                    Some(SOURCES[i % 7]),
                    Some(format!("https://shop.example/p/page{}", i % PAGES)),
                ));
                for k in 0..10 {
                    events.push(event::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        subscriber_id: Set(id),
                        kind: Set(
                            ["email_sent", "email_opened", "step_done", "tag_added", "email_clicked"][k % 5].into()
                        ),
                        data: Set(json!({"workflow": "flow0", "step": STEPS[k % 8]})),
                        created_at: Set(joined + Duration::hours(i64::try_from(k).unwrap_or(0))),
                    });
                }
                let live = i % 5 == 0;
                enrollments.push(enrollment::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    workflow_id: Set(format!("flow{}", i % WORKFLOWS)),
                    version: Set(1),
                    subscriber_id: Set(id),
                    status: Set(if live { "active" } else { "completed" }.into()),
                    step_id: Set(live.then(|| STEPS[i % 8].to_owned())),
                    next_run_at: Set(live.then(|| today + Duration::days(1))),
                    wait_started_at: Set(None),
                    waiting_for: Set(None),
                    end_reason: Set((!live).then(|| "all steps done".to_owned())),
                    created_at: Set(joined),
                    updated_at: Set(joined),
                    ended_at: Set((!live).then_some(joined)),
                });
            }
            insert_all(&db, people).await?;
            insert_all(&db, events).await?;
            insert_all(&db, enrollments).await?;
        }
        let (funnel_rows, step_rows, relay_rows) = seed_rollups(&db, first_day).await?;
        eprintln!(
            "seeded in {:.0} s (rollups: {funnel_rows} funnel, {step_rows} step, {relay_rows} delivery rows)",
            seeded.elapsed().as_secs_f64()
        );

        let service = app.start().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(service.clone().serve(listener, std::future::pending()));
        let client = reqwest::Client::new();
        let month = (today.date_naive() - Duration::days(29)).format("%Y-%m-%d").to_string();
        let requests = [
            "/api/v1/stats/funnel".to_owned(),
            format!("/api/v1/stats/funnel?from={month}"),
            "/api/v1/stats/funnel?page=page3".to_owned(),
            "/api/v1/stats/funnel?source=instagram&from=2026-06-01&to=2026-08-31".to_owned(),
            "/api/v1/stats/funnel?by=day&format=csv".to_owned(),
            "/api/v1/stats/workflows/flow0".to_owned(),
            format!("/api/v1/stats/workflows/flow1?from={month}&format=csv"),
            "/api/v1/stats/delivery".to_owned(),
            format!("/api/v1/stats/delivery?from={month}&format=csv"),
        ];
        println!("subscribers: {n}, events: {}, enrollments: {n} ({} in progress)", n * 10, n / 5);
        println!("rollup rows: funnel {funnel_rows}, steps {step_rows}, delivery {relay_rows}");
        let mut worst_of_all = 0.0f64;
        for path in &requests {
            let mut times = Vec::new();
            for _ in 0..20 {
                let started = Instant::now();
                let response = client.get(format!("http://{address}{path}")).bearer_auth(TOKEN).send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(status.is_success(), "{path}: {status}: {}", String::from_utf8_lossy(&body));
            }
            times.sort_by(f64::total_cmp);
            let (median, worst) = (times[times.len() / 2], times[times.len() - 1]);
            worst_of_all = worst_of_all.max(worst);
            println!("{median:7.1} ms median {worst:7.1} ms worst  GET {path}");
        }
        println!("slowest of all: {worst_of_all:.1} ms (target: under 200 ms)");
        server.abort();
        Ok(())
    })
}

async fn seed_rollups(db: &ownlist::store::Db, first_day: NaiveDate) -> anyhow::Result<(usize, usize, usize)> {
    let (mut funnel, mut steps, mut relays) = (Vec::new(), Vec::new(), Vec::new());
    let (mut f, mut s, mut r) = (0, 0, 0);
    for d in 0..DAYS {
        let day = (first_day + Duration::days(d)).format("%Y-%m-%d").to_string();
        let seed = u64::try_from(d).unwrap_or(0);
        for page in 0..PAGES {
            for (si, source) in SOURCES.iter().enumerate() {
                for (ci, campaign) in CAMPAIGNS.iter().enumerate() {
                    let k = seed * 1000 + (page * 100 + si * 10 + ci) as u64;
                    let views = spread(k, 400);
                    funnel.push(funnel_day::ActiveModel {
                        day: Set(day.clone()),
                        page: Set(format!("page{page}")),
                        source: Set((*source).to_owned()),
                        medium: Set(if source.is_empty() { String::new() } else { "social".into() }),
                        campaign: Set((*campaign).to_owned()),
                        views: Set(views),
                        bot_views: Set(spread(k + 1, 100)),
                        signups: Set(views / 10),
                        confirmed: Set(views / 14),
                        opened: Set(views / 20),
                        clicked: Set(views / 40),
                        goals: Set(views / 80),
                        second_channel: Set(views / 200),
                    });
                }
            }
        }
        for w in 0..WORKFLOWS {
            let workflow = format!("flow{w}");
            for (name, n) in [("enrolled", 300), ("completed", 250), ("exited", 20)] {
                steps.push(step_row(&workflow, &day, "", name, "", spread(seed + w as u64, n)));
            }
            for (i, step) in STEPS.iter().enumerate() {
                let k = seed * 100 + (w * 10 + i) as u64;
                for (name, n) in [
                    ("entered", 300),
                    ("completed", 280),
                    ("sent", 270),
                    ("delivered", 260),
                    ("opened", 120),
                    ("clicked", 40),
                    ("unsubscribed", 3),
                ] {
                    steps.push(step_row(&workflow, &day, step, name, "", spread(k, n)));
                }
                for reason in ["they have no phone number", "no SMS consent"] {
                    steps.push(step_row(&workflow, &day, step, "skipped", reason, spread(k + 7, 20)));
                }
            }
        }
        for (channel, relay) in RELAYS {
            let attempts = 5000 + spread(seed, 5000);
            relays.push(delivery_day::ActiveModel {
                day: Set(day.clone()),
                channel: Set(channel),
                relay: Set(relay.into()),
                sent: Set(attempts - 60),
                failed: Set(10),
                retried: Set(50),
                attempts: Set(attempts),
                latency_ms: Set(attempts * 35),
            });
        }
        if funnel.len() > 20_000 {
            f += funnel.len();
            insert_all(db, std::mem::take(&mut funnel)).await?;
        }
        if steps.len() > 20_000 {
            s += steps.len();
            insert_all(db, std::mem::take(&mut steps)).await?;
        }
    }
    f += funnel.len();
    s += steps.len();
    r += relays.len();
    insert_all(db, funnel).await?;
    insert_all(db, steps).await?;
    insert_all(db, relays).await?;
    Ok((f, s, r))
}

fn step_row(workflow: &str, day: &str, step: &str, measure: &str, detail: &str, n: i64) -> step_day::ActiveModel {
    step_day::ActiveModel {
        workflow_id: Set(workflow.to_owned()),
        day: Set(day.to_owned()),
        step_id: Set(step.to_owned()),
        measure: Set(measure.to_owned()),
        detail: Set(detail.to_owned()),
        n: Set(n),
    }
}
