//! Starting the real app on a random port with a fresh database, and talking to it over HTTP.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use ownlist::app::App;
use ownlist::config::Config;
use ownlist::core::clock::{Clock, ManualClock, SharedClock};
use ownlist::store::Db;
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(TestApp)` once on SQLite and once on PostgreSQL (when
/// `OWNLIST_TEST_DATABASE_URL` is set; otherwise the PostgreSQL half says so and passes).
macro_rules! on_both_databases {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    let app = crate::helpers::TestApp::spawn(crate::helpers::Backend::Sqlite).await.unwrap();
                    super::$test(app).await;
                }

                #[tokio::test]
                async fn postgres() {
                    match crate::helpers::TestApp::spawn(crate::helpers::Backend::Postgres).await {
                        Some(app) => super::$test(app).await,
                        None => eprintln!("OWNLIST_TEST_DATABASE_URL is not set: PostgreSQL half skipped"),
                    }
                }
            }
        )+
    };
}
pub(crate) use on_both_databases;

/// Runs each named `async fn(Backend)` once per database, for tests that start their app with a
/// configuration of their own (`TestApp::spawn_with` answers `None` when PostgreSQL is not set up).
macro_rules! with_each_backend {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test(crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$test(crate::helpers::Backend::Postgres).await;
                }
            }
        )+
    };
}
pub(crate) use with_each_backend;

/// The bounce webhook's secret in tests.
pub const BOUNCE_SECRET: &str = "test-bounce-secret-0123";

pub struct TestApp {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub clock: Arc<ManualClock>,
    pub backend: Backend,
    pub engine: std::sync::Arc<ownlist::workflow::engine::Engine>,
    pub email: std::sync::Arc<ownlist::delivery::email::EmailSender>,
    pub sms: std::sync::Arc<ownlist::delivery::sms::SmsSender>,
    pub whatsapp: std::sync::Arc<ownlist::delivery::sms::WhatsAppSender>,
    pub workflows_dir: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
    _database: Option<PostgresDatabase>,
}

/// An HTTP client for the test server. It drops a pooled connection well before the server
/// closes an idle one (`header_timeout`, 10 s): reusing one the server is closing at that very
/// moment fails the request, which under a loaded machine made tests flaky.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(3)).user_agent(BROWSER)
}

/// The tests' user agent: a person's browser (opens and clicks by it count as a person's).
pub const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

impl TestApp {
    /// A fresh app, or `None` for PostgreSQL when no test database is configured.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults_in(dir.path()).unwrap();
        std::fs::create_dir_all(&config.workflows_dir).unwrap();
        config.templates_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
        let workflows_dir = config.workflows_dir.clone();
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let database = PostgresDatabase::from_env().await?;
                config.database_url = database.url.clone();
                Some(database)
            }
        };
        config.bounce_secret = Some(BOUNCE_SECRET.into());
        adjust(&mut config);
        let data_dir = config.data_dir.clone();
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()));
        let shared: SharedClock = clock.clone();
        let app = App::open(config, shared).await.unwrap().start().await.unwrap();
        let token =
            ownlist::tokens::create(&app.app.db, clock.now(), "test", ownlist::tokens::Role::Admin).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let db = app.app.db.clone();
        let engine = app.engine.clone();
        let email = app.email.clone();
        let sms = app.sms.clone();
        let whatsapp = app.whatsapp.clone();
        let server = tokio::spawn(async move {
            app.serve(listener, std::future::pending()).await.unwrap();
        });
        Some(Self {
            base,
            token,
            client: client_builder().build().unwrap(),
            db,
            clock,
            backend,
            engine,
            email,
            sms,
            whatsapp,
            workflows_dir,
            data_dir,
            server,
            _dir: dir,
            _database: database,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path).json(body).send().await.unwrap()
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path).json(body).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.unwrap()
    }

    pub async fn post_csv(&self, path: &str, csv: impl Into<reqwest::Body>) -> Response {
        self.request(Method::POST, path).header("content-type", "text/csv").body(csv).send().await.unwrap()
    }

    /// Creates a list and returns its JSON.
    pub async fn create_list(&self, slug: &str) -> Value {
        let response = self.post("/api/v1/lists", &serde_json::json!({"slug": slug, "name": slug})).await;
        expect_json(response, StatusCode::CREATED).await
    }

    /// Creates a subscriber and returns its JSON.
    pub async fn create_subscriber(&self, body: Value) -> Value {
        expect_json(self.post("/api/v1/subscribers", &body).await, StatusCode::CREATED).await
    }

    /// A subscriber with email consent on `list`; returns their id.
    pub async fn join(&self, email: &str, list: &str) -> String {
        let body = serde_json::json!({"email": email, "lists": [list], "consent": {"email": true}});
        self.create_subscriber(body).await["id"].as_str().unwrap_or_default().to_owned()
    }

    /// Writes a workflow file and reloads; panics with the problems when it is refused.
    pub async fn install_workflow(&self, id: &str, yaml: &str) -> Value {
        std::fs::write(self.workflows_dir.join(format!("{id}.yaml")), yaml).unwrap();
        let response = self.request(Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
        expect_json(response, StatusCode::OK).await
    }

    /// Runs the engine until nothing is due at the test clock's "now".
    pub async fn tick(&self) -> ownlist::workflow::engine::TickReport {
        self.engine.tick().await.unwrap()
    }

    /// Moves the test clock on and runs what became due.
    pub async fn advance(&self, by: chrono::Duration) -> ownlist::workflow::engine::TickReport {
        self.clock.advance(by);
        self.tick().await
    }

    /// Counts rows in a table, straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let row = self.db.conn().query_one_raw(Statement::from_string(self.db.backend(), sql)).await.unwrap().unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Asserts the status and returns the JSON body, showing the body when the status is wrong.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
}

/// Asserts a problem+json error with this status and code, and returns it.
pub async fn expect_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body = expect_json(response, status).await;
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["code"], code, "problem: {body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "problem without detail: {body}");
    body
}

fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    }
}

/// A database of its own on the test PostgreSQL server, dropped afterwards.
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PostgresDatabase {
    /// A new database on the server `OWNLIST_TEST_DATABASE_URL` names; `None` when it is not set.
    pub async fn from_env() -> Option<Self> {
        let admin_url = std::env::var("OWNLIST_TEST_DATABASE_URL").ok()?;
        Some(Self::create(&admin_url).await)
    }

    pub async fn create(admin_url: &str) -> Self {
        let name = format!("ownlist_test_{}", uuid::Uuid::now_v7().simple());
        let admin = Db::connect(admin_url).await.unwrap();
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Self { admin_url: admin_url.to_owned(), name, url: url.to_string() }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(admin) = Db::connect(&admin_url).await {
                    let _ = admin.execute_unprepared(&sql).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A subscriber's timeline, oldest first.
pub async fn timeline(app: &TestApp, subscriber: &str) -> Vec<Value> {
    let page =
        expect_json(app.get(&format!("/api/v1/subscribers/{subscriber}/timeline?limit=1000")).await, StatusCode::OK)
            .await;
    let mut events = page["data"].as_array().unwrap().clone();
    events.reverse();
    events
}

pub async fn kinds(app: &TestApp, subscriber: &str) -> Vec<String> {
    timeline(app, subscriber).await.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

/// The bodies of an outbox message as stored.
pub async fn stored_body(app: &TestApp, message: uuid::Uuid) -> ownlist::store::entities::outbox_body::Model {
    use sea_orm::EntityTrait;
    ownlist::store::entities::outbox_body::Entity::find_by_id(message).one(app.db.conn()).await.unwrap().unwrap()
}

/// The dictionary an outbox message's bodies are stored against, if any.
pub async fn stored_dictionary(
    app: &TestApp,
    message: uuid::Uuid,
) -> Option<ownlist::store::entities::outbox_dictionary::Model> {
    use sea_orm::EntityTrait;
    let id = stored_body(app, message).await.dictionary_id?;
    ownlist::store::entities::outbox_dictionary::Entity::find_by_id(id).one(app.db.conn()).await.unwrap()
}

/// The bodies of an outbox message: (HTML, text).
pub async fn bodies(app: &TestApp, message: uuid::Uuid) -> (Option<String>, String) {
    let body = stored_body(app, message).await;
    let dictionary = stored_dictionary(app, message).await;
    (body.html(dictionary.as_ref()).unwrap().map(|html| html.into_owned()), body.text)
}

/// Where the click-tracking links of an outbox message lead, as stored with it (or with its
/// dictionary).
pub async fn tracked_links(app: &TestApp, message: uuid::Uuid) -> Option<serde_json::Value> {
    let body = stored_body(app, message).await;
    let dictionary = stored_dictionary(app, message).await;
    body.links(dictionary.as_ref()).unwrap().cloned()
}

/// The plain-text part of a message as sent by the `file` transport (quoted-printable decoded).
pub fn sent_text(app: &TestApp, message: uuid::Uuid) -> String {
    let raw = std::fs::read_to_string(app.data_dir.join("mail").join(format!("{message}.eml"))).unwrap();
    let part = raw.split("Content-Type: text/plain").nth(1).expect("a plain-text part");
    let (head, rest) = part.split_once("\r\n\r\n").unwrap();
    let body = rest.split("\r\n--").next().unwrap();
    if !head.contains("quoted-printable") {
        return body.replace("\r\n", "\n");
    }
    let unwrapped = body.replace("=\r\n", "");
    let bytes = unwrapped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], std::str::from_utf8(&bytes[(i + 1).min(bytes.len())..(i + 3).min(bytes.len())])) {
            (b'=', Ok(hex)) if hex.len() == 2 && u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap().replace("\r\n", "\n")
}
