//! Killing ownlist at any instant loses nothing and repeats nothing: every subscriber gets each
//! workflow message exactly once in the outbox, whatever the process was doing when it died.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
    child: Child,
    address: String,
}

fn start(dir: &Path, database_url: Option<&str>) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ownlist"));
    command
        .current_dir(dir)
        .env("OWNLIST_LISTEN", "127.0.0.1:0")
        .env("OWNLIST_ADMIN_TOKEN", TOKEN)
        .env("OWNLIST_TEMPLATES_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"))
        .env("OWNLIST_LOG", "warn")
        .stdout(Stdio::piped());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OWNLIST_") && k != "OWNLIST_TEST_DATABASE_URL") {
        if !matches!(key.as_str(), "OWNLIST_LISTEN" | "OWNLIST_ADMIN_TOKEN" | "OWNLIST_TEMPLATES_DIR" | "OWNLIST_LOG") {
            command.env_remove(key);
        }
    }
    if let Some(url) = database_url {
        command.env("OWNLIST_DATABASE_URL", url);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first.split("http://").nth(1).unwrap().trim_end_matches('/').to_owned();
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

#[test]
fn a_crash_at_any_instant_loses_no_message_and_repeats_none_on_postgres() {
    let Ok(admin) = std::env::var("OWNLIST_TEST_DATABASE_URL") else {
        eprintln!("OWNLIST_TEST_DATABASE_URL is not set: PostgreSQL half skipped");
        return;
    };
    let name = format!("ownlist_crash_{}", uuid::Uuid::now_v7().simple());
    let psql = |sql: &str| Command::new("psql").arg(&admin).args(["-qc", sql]).output().unwrap();
    assert!(psql(&format!("CREATE DATABASE \"{name}\"")).status.success());
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    scenario(Some(url.as_str()));
    psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
}
