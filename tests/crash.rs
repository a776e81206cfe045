//! Killing ownlist at any instant loses nothing and repeats nothing: every subscriber gets each
//! workflow message exactly once in the outbox, whatever the process was doing when it died; a
//! broadcast killed mid-send arrives at the SMTP server for everyone, repeating at most the
//! messages in flight at each kill; SIGTERM finishes the sends under way and repeats none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/smtp_sink.rs"]
#[allow(dead_code)]
mod smtp_sink;

#[path = "support/process.rs"]
mod process;
use process::Process;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "crash-test-admin-token-0123456789";

const WORKFLOW: &str = r#"name: Crash drip
trigger: { subscribed: leads }
steps:
  - id: first
    email: { subject: "One", template: emails/welcome.html }
  - id: mark
    tag: halfway
  - id: second
    email: { subject: "Two", template: emails/story.html }
  - id: note
    set: { stage: done }
  - id: third
    email: { subject: "Three", template: emails/ask.html }
"#;

struct Server {
    child: Process,
    address: String,
}

fn start(dir: &Path, database_url: Option<&str>) -> Server {
    start_with(dir, database_url, None)
}

fn start_with(dir: &Path, database_url: Option<&str>, smtp_url: Option<&str>) -> Server {
    let mut child = Process(command(dir, database_url, smtp_url).spawn().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first.split("http://").nth(1).unwrap().trim_end_matches('/').to_owned();
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

/// `ownlist worker`: the engine and delivery workers, no HTTP.
fn start_worker(dir: &Path, database_url: &str, smtp_url: &str) -> Process {
    let mut child = Process(command(dir, Some(database_url), Some(smtp_url)).arg("worker").spawn().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("ownlist worker started"), "{first}");
    std::thread::spawn(move || for _ in lines {});
    child
}

fn command(dir: &Path, database_url: Option<&str>, smtp_url: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ownlist"));
    command
        .current_dir(dir)
        .env("OWNLIST_LISTEN", "127.0.0.1:0")
        .env("OWNLIST_ADMIN_TOKEN", TOKEN)
        .env("OWNLIST_TEMPLATES_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"))
        .env("OWNLIST_LOG", "warn")
        // On PostgreSQL, a killed process's claims are taken over when their leases end.
        .env("OWNLIST_CLAIM_LEASE", "6s")
        .stdout(Stdio::piped());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OWNLIST_") && k != "OWNLIST_TEST_DATABASE_URL") {
        if !matches!(
            key.as_str(),
            "OWNLIST_LISTEN" | "OWNLIST_ADMIN_TOKEN" | "OWNLIST_TEMPLATES_DIR" | "OWNLIST_LOG" | "OWNLIST_CLAIM_LEASE"
        ) {
            command.env_remove(key);
        }
    }
    if let Some(url) = database_url {
        command.env("OWNLIST_DATABASE_URL", url);
    }
    if let Some(url) = smtp_url {
        command.env("OWNLIST_SMTP_URL", url);
    }
    command
}

fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_as(address, method, path, "application/json", body)
}

fn http_as(address: &str, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn kill(server: &mut Server) {
    // SIGKILL: no chance to finish anything.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

fn completed(address: &str) -> u64 {
    let (_, body) = http(address, "GET", "/api/v1/workflows/crash", "");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    view["enrollments"]["by_status"]["completed"].as_u64().unwrap_or(0)
}

fn scenario(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    let mut server = start(dir.path(), database_url);
    let (status, _) = http(&server.address, "POST", "/api/v1/lists", r#"{"slug":"leads","name":"Leads"}"#);
    assert_eq!(status, 201);
    std::fs::write(dir.path().join("workflows/crash.yaml"), WORKFLOW).unwrap();
    assert_eq!(http(&server.address, "POST", "/api/v1/workflows/reload", "").0, 200);
    // Hold the workflow while people arrive, so there is a backlog to be killed in.
    assert_eq!(http(&server.address, "POST", "/api/v1/workflows/crash/pause", "").0, 200);
    const PEOPLE: u64 = 600;
    for n in 0..PEOPLE {
        let body = format!(r#"{{"email":"p{n}@example.com","lists":["leads"],"consent":{{"email":true}}}}"#);
        assert_eq!(http(&server.address, "POST", "/api/v1/subscribers", &body).0, 201);
    }
    assert_eq!(http(&server.address, "POST", "/api/v1/workflows/crash/resume", "").0, 200);

    // Kill it mid-flight, several times, at different moments.
    let mut killed_mid_backlog = false;
    for delay_ms in [150, 40, 300] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        killed_mid_backlog |= completed(&server.address) < PEOPLE;
        kill(&mut server);
        server = start(dir.path(), database_url);
    }
    assert!(killed_mid_backlog, "the kills came too late to prove anything; raise PEOPLE");
    let deadline = Instant::now() + Duration::from_secs(120);
    while completed(&server.address) < PEOPLE {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(&mut server);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use sea_orm::{ConnectionTrait, Statement};
        let url = database_url.map(str::to_owned).unwrap_or_else(|| format!("sqlite://{}/data/ownlist.db", dir.path().display()));
        let db = ownlist::store::Db::connect(&url).await.unwrap();
        let one = |sql: &str| Statement::from_string(db.backend(), sql.to_owned());
        let total = db.conn().query_one_raw(one("SELECT COUNT(*) AS n FROM outbox")).await.unwrap().unwrap();
        assert_eq!(total.try_get::<i64>("", "n").unwrap(), i64::try_from(PEOPLE * 3).unwrap(), "every message exactly once");
        let wrong = db
            .conn()
            .query_one_raw(one(
                "SELECT COUNT(*) AS n FROM (SELECT subscriber_id FROM outbox GROUP BY subscriber_id HAVING COUNT(*) <> 3 OR COUNT(DISTINCT step_id) <> 3) AS x",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wrong.try_get::<i64>("", "n").unwrap(), 0, "each subscriber got first, second and third once");
        db.close().await.unwrap();
    });
}

#[test]
fn a_crash_at_any_instant_loses_no_message_and_repeats_none() {
    scenario(None);
}

/// Runs `scenario` on a fresh database of its own on the test PostgreSQL server, when one is set.
fn on_postgres(scenario: impl FnOnce(&str)) {
    let Ok(admin) = std::env::var("OWNLIST_TEST_DATABASE_URL") else {
        eprintln!("OWNLIST_TEST_DATABASE_URL is not set: PostgreSQL half skipped");
        return;
    };
    let name = format!("ownlist_crash_{}", uuid::Uuid::now_v7().simple());
    let psql = |sql: &str| Command::new("psql").arg(&admin).args(["-qc", sql]).output().unwrap();
    assert!(psql(&format!("CREATE DATABASE \"{name}\"")).status.success());
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    scenario(url.as_str());
    psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
}

#[test]
fn a_crash_at_any_instant_loses_no_message_and_repeats_none_on_postgres() {
    on_postgres(|url| scenario(Some(url)));
}

const READERS: usize = 1500;
/// The most messages one process has in flight at once.
const IN_FLIGHT: usize = ownlist::delivery::IN_FLIGHT;

/// A list of READERS with email consent and a broadcast to them; returns the broadcast's id.
fn start_broadcast(address: &str) -> String {
    assert_eq!(http(address, "POST", "/api/v1/lists", r#"{"slug":"news","name":"News"}"#).0, 201);
    let csv: String = std::iter::once("email,email_state\n".to_owned())
        .chain((0..READERS).map(|i| format!("reader{i:05}@example.com,subscribed\n")))
        .collect();
    let (status, body) = http_as(address, "POST", "/api/v1/imports?list=news", "text/csv", &csv);
    assert_eq!(status, 200, "{body}");
    let broadcast = r#"{"list":"news","subject":"We moved","html":"<p>Hi {{ subscriber.email }}: <a href=\"https://shop.example/\">shop</a></p>"}"#;
    let (status, body) = http(address, "POST", "/api/v1/broadcasts", broadcast);
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned()
}

fn broadcast_status(address: &str, id: &str) -> serde_json::Value {
    let (_, body) = http(address, "GET", &format!("/api/v1/broadcasts/{id}"), "");
    serde_json::from_str(&body).unwrap_or_default()
}

/// Waits until the broadcast is done; the sink has then taken everything it will.
fn wait_until_done(address: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while broadcast_status(address, id)["status"] != "done" {
        assert!(Instant::now() < deadline, "the broadcast did not finish: {}", broadcast_status(address, id));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_arrivals(sink: &smtp_sink::SmtpSink, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.taken().len() < at_least {
        assert!(Instant::now() < deadline, "only {} messages arrived", sink.taken().len());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How many times each Message-ID arrived.
fn arrivals(sink: &smtp_sink::SmtpSink) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for message in sink.taken() {
        let id = message
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or_else(|| panic!("no Message-ID in {message}"))
            .to_owned();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

fn sent_in_outbox(dir: &Path, database_url: Option<&str>) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use sea_orm::{ConnectionTrait, Statement};
        let url =
            database_url.map(str::to_owned).unwrap_or_else(|| format!("sqlite://{}/data/ownlist.db", dir.display()));
        let db = ownlist::store::Db::connect(&url).await.unwrap();
        let sql = "SELECT COUNT(*) AS n FROM outbox WHERE status = 'sent'".to_owned();
        let row = db.conn().query_one_raw(Statement::from_string(db.backend(), sql)).await.unwrap().unwrap();
        let n = row.try_get::<i64>("", "n").unwrap();
        db.close().await.unwrap();
        n
    })
}

fn killed_mid_broadcast(database_url: Option<&str>) {
    let sinks = tokio::runtime::Runtime::new().unwrap();
    let sink = sinks.block_on(smtp_sink::SmtpSink::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    let mut server = start_with(dir.path(), database_url, Some(&sink.url()));
    let id = start_broadcast(&server.address);
    let kills = [100, 500, 900];
    for at in kills {
        wait_for_arrivals(&sink, at);
        kill(&mut server);
        server = start_with(dir.path(), database_url, Some(&sink.url()));
    }
    wait_until_done(&server.address, &id);
    kill(&mut server);
    let seen = arrivals(&sink);
    assert_eq!(seen.len(), READERS, "every reader's message arrived");
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    assert!(repeated <= kills.len() * IN_FLIGHT, "{repeated} repeats: more than the messages in flight at the kills");
    assert_eq!(sent_in_outbox(dir.path(), database_url), READERS as i64, "each recorded as sent once");
}

#[test]
fn a_broadcast_killed_mid_send_reaches_everyone_repeating_at_most_the_messages_in_flight() {
    killed_mid_broadcast(None);
}

#[test]
fn a_broadcast_killed_mid_send_reaches_everyone_repeating_at_most_the_messages_in_flight_on_postgres() {
    on_postgres(|url| killed_mid_broadcast(Some(url)));
}

fn terminated_mid_broadcast(database_url: Option<&str>) {
    let sinks = tokio::runtime::Runtime::new().unwrap();
    let sink = sinks.block_on(smtp_sink::SmtpSink::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    let mut server = start_with(dir.path(), database_url, Some(&sink.url()));
    let id = start_broadcast(&server.address);
    wait_for_arrivals(&sink, 200);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop ownlist");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "a clean exit: {exit:?}");
    let taken = sink.taken().len();
    assert!(taken < READERS, "stopped before the end ({taken} of {READERS}): it stopped claiming");
    assert_eq!(
        sent_in_outbox(dir.path(), database_url),
        taken as i64,
        "every send under way was finished and recorded"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.taken().len(), taken, "nothing was sent after the exit");

    let server = start_with(dir.path(), database_url, Some(&sink.url()));
    wait_until_done(&server.address, &id);
    let mut server = server;
    kill(&mut server);
    let seen = arrivals(&sink);
    assert_eq!(seen.len(), READERS);
    assert!(seen.values().all(|n| *n == 1), "after a SIGTERM nothing is sent twice");
}

#[test]
fn sigterm_finishes_the_sends_under_way_and_the_restart_repeats_none() {
    terminated_mid_broadcast(None);
}

#[test]
fn sigterm_finishes_the_sends_under_way_and_the_restart_repeats_none_on_postgres() {
    on_postgres(|url| terminated_mid_broadcast(Some(url)));
}

const MANY: usize = 20_000;
const DRIPPED: usize = 200;

/// Three processes run workers on one PostgreSQL database (`serve` and two `ownlist worker`):
/// a 20,000-reader broadcast and a three-email drip arrive once each, and killing one worker
/// halfway repeats at most the messages it had in flight.
fn three_workers(database_url: &str, kill_one: bool) {
    let sinks = tokio::runtime::Runtime::new().unwrap();
    let sink = sinks.block_on(smtp_sink::SmtpSink::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    let mut server = start_with(dir.path(), Some(database_url), Some(&sink.url()));
    let address = server.address.clone();
    assert_eq!(http(&address, "POST", "/api/v1/lists", r#"{"slug":"leads","name":"Leads"}"#).0, 201);
    assert_eq!(http(&address, "POST", "/api/v1/lists", r#"{"slug":"news","name":"News"}"#).0, 201);
    std::fs::write(dir.path().join("workflows/crash.yaml"), WORKFLOW).unwrap();
    let (status, body) = http(&address, "POST", "/api/v1/workflows/reload", "");
    assert_eq!(status, 200, "{body}");
    let csv: String = std::iter::once("email,email_state\n".to_owned())
        .chain((0..MANY).map(|i| format!("reader{i:05}@example.com,subscribed\n")))
        .collect();
    let (status, body) = http_as(&address, "POST", "/api/v1/imports?list=news", "text/csv", &csv);
    assert_eq!(status, 200, "{body}");
    let mut workers: Vec<Process> = (0..2).map(|_| start_worker(dir.path(), database_url, &sink.url())).collect();
    for i in 0..DRIPPED {
        let person = format!(r#"{{"email":"lead{i:04}@example.com","lists":["leads"],"consent":{{"email":true}}}}"#);
        assert_eq!(http(&address, "POST", "/api/v1/subscribers", &person).0, 201);
    }
    let broadcast =
        r#"{"list":"news","subject":"We moved","html":"<p>Hi {{ subscriber.email }}</p>","tracking":false}"#;
    let (status, body) = http(&address, "POST", "/api/v1/broadcasts", broadcast);
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();

    if kill_one {
        wait_for_arrivals(&sink, MANY / 2);
        let mut killed = workers.remove(0);
        killed.kill().unwrap();
        killed.wait().unwrap();
    }
    wait_until_done(&address, &id);
    let expected = MANY + 3 * DRIPPED;
    wait_for_arrivals(&sink, expected);
    // Whatever could still come (a late duplicate) has time to arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    for mut worker in workers {
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    kill(&mut server);

    let mut seen: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    for message in sink.taken() {
        let header = |name: &str| {
            message.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned)).unwrap_or_default()
        };
        *seen.entry((header("To"), header("Subject"))).or_default() += 1;
    }
    assert_eq!(seen.len(), expected, "every reader's broadcast and every lead's three emails arrived");
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    let allowed = if kill_one { IN_FLIGHT } else { 0 };
    assert!(repeated <= allowed, "{repeated} repeats: more than the killed worker had in flight ({allowed})");
    assert_eq!(sent_in_outbox(dir.path(), Some(database_url)), expected as i64, "each recorded as sent once");
}

#[test]
fn three_processes_on_postgres_send_each_message_exactly_once() {
    on_postgres(|url| three_workers(url, false));
}

#[test]
fn three_processes_on_postgres_send_each_message_once_even_when_one_is_killed() {
    on_postgres(|url| three_workers(url, true));
}
