//! The `ownlist` command line: one binary, several subcommands.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::app::App;
use crate::audience::{Actor, export, import};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, redact};
use crate::tokens;

#[derive(Debug, Parser)]
#[command(name = "ownlist", version, about = "Own your audience: landing pages, consent, drip workflows.")]
struct Cli {
    /// Configuration file (default: ./ownlist.toml when present). OWNLIST_* variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP and run the background workers (the default).
    Serve,
    /// Create or update the database schema, then exit.
    Migrate,
    /// Manage admin API tokens.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// Import subscribers from a CSV file (columns: email, phone, first_name, last_name, tags, …).
    Import {
        file: PathBuf,
        /// Every imported subscriber joins this list.
        #[arg(long, value_name = "SLUG")]
        list: Option<String>,
    },
    /// Check, plan or simulate workflow files.
    #[command(subcommand)]
    Workflows(WorkflowCommand),
    /// Export every subscriber as CSV.
    Export {
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Validate every workflow file; print `file:line:column: message` for each problem.
    Check {
        /// The folder of workflow files (default: OWNLIST_WORKFLOWS_DIR, ./workflows).
        dir: Option<PathBuf>,
    },
    /// Show, before loading a change, how many enrollments sit at each step and where they go.
    Plan {
        /// The folder of workflow files (default: OWNLIST_WORKFLOWS_DIR, ./workflows).
        dir: Option<PathBuf>,
    },
    /// Run one workflow on a virtual clock for an imaginary subscriber and print its timeline.
    Simulate {
        file: PathBuf,
        /// The subscriber, as JSON like POST /api/v1/subscribers (default: ada@example.com).
        #[arg(long, value_name = "JSON")]
        subscriber: Option<String>,
        /// An event and when it happens after the start, e.g. purchased@2d (repeatable).
        #[arg(long = "event", value_name = "NAME@DURATION")]
        events: Vec<String>,
        /// An email step whose message the subscriber opens (repeatable).
        #[arg(long = "opens", value_name = "STEP")]
        opens: Vec<String>,
        /// An email step in whose message the subscriber clicks (repeatable).
        #[arg(long = "clicks", value_name = "STEP")]
        clicks: Vec<String>,
        /// When the simulation starts (RFC 3339; default: now).
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// How far to simulate, in days.
        #[arg(long, default_value_t = 90)]
        days: i64,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once; only its hash is stored.
    Create { name: String },
    /// List tokens by name.
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

/// Exit codes: 0 success, 1 done with rejected rows, 2 bad configuration or usage, 3 failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("OWNLIST_")).collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ownlist: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ownlist: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ownlist: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    match command {
        Command::Serve => serve(config, clock).await,
        Command::Migrate => {
            let url = redact(&config.database_url);
            App::open(config, clock).await?;
            println!("database at {url} is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(command) => manage_tokens(App::open(config, clock).await?, command).await,
        Command::Import { file, list } => import_file(App::open(config, clock).await?, file, list).await,
        Command::Export { out } => export_file(App::open(config, clock).await?, out).await,
        Command::Workflows(WorkflowCommand::Check { dir }) => check_workflows(&config, dir).await,
        Command::Workflows(WorkflowCommand::Plan { dir }) => plan_workflows(config, dir).await,
        Command::Workflows(WorkflowCommand::Simulate { file, subscriber, events, opens, clicks, start, days }) => {
            simulate_workflow(&config, &file, subscriber, &events, opens, clicks, start, days).await
        }
    }
}

async fn serve(config: Config, clock: SharedClock) -> anyhow::Result<ExitCode> {
    let listen = config.listen;
    let service = App::open(config, clock).await?.start().await?;
    let app = service.app.clone();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("OWNLIST_LISTEN: cannot listen on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let base = app.config.base_url.as_str().trim_end_matches('/').to_owned();
    println!("ownlist is serving on http://{bound}/");
    println!("  database:  {}", redact(&app.config.database_url));
    println!("  admin API: {base}/api/v1  (OpenAPI document: {base}/api/v1/openapi.json)");
    if app.config.admin_token.is_none() && !tokens::any_exist(&app.db).await? {
        println!(
            "  no admin token yet: run `ownlist tokens create admin` and send it as 'Authorization: Bearer TOKEN'"
        );
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(service.engine.clone().run(stopped.clone()));
    let webhooks = tokio::spawn(service.webhooks.clone().run(stopped.clone()));
    let email = tokio::spawn(service.email.clone().run(stopped.clone()));
    let sms = tokio::spawn(service.sms.clone().run(stopped.clone()));
    let watcher = tokio::spawn(watch_workflows(service.clone(), stopped));
    service.serve(listener, shutdown_signal()).await?;
    let _ = stop.send(true);
    let _ = engine.await;
    let _ = webhooks.await;
    let _ = email.await;
    let _ = sms.await;
    let _ = watcher.await;
    Ok(ExitCode::SUCCESS)
}

/// Reloads the workflows when their files change (checked every two seconds) or on SIGHUP. An
/// invalid edit is logged and refused; the last valid version keeps running.
async fn watch_workflows(service: crate::app::Service, mut stop: tokio::sync::watch::Receiver<bool>) {
    let config = service.app.config.clone();
    let dirs = [config.workflows_dir.as_path(), config.templates_dir.as_path()];
    let mut seen = crate::workflow::loader::fingerprint(&dirs);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_signal = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_signal = std::future::pending::<()>();
        let forced = tokio::select! {
            _ = stop.changed() => return,
            () = hangup_signal => true,
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
        };
        let now_seen = crate::workflow::loader::fingerprint(&dirs);
        if !forced && now_seen == seen {
            continue;
        }
        seen = now_seen;
        let now = service.app.clock.now();
        match crate::app::reload(&service.app.db, &config, &service.engine, now).await {
            Ok(Ok(reloaded)) => {
                tracing::info!(workflows = ?reloaded.workflows, moved = reloaded.moves.len(), "workflows reloaded")
            }
            Ok(Err(refused)) => {
                for diagnostic in &refused.diagnostics {
                    tracing::error!(%diagnostic, "workflow edit refused; the last valid version keeps running");
                }
            }
            Err(e) => tracing::error!(error = %e, "workflow reload failed"),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn manage_tokens(app: App, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { name } => {
            let token = tokens::create(&app.db, app.clock.now(), &name).await?;
            println!("{token}");
            eprintln!("Token '{}' created. It is shown only now: store it somewhere safe.", name.trim());
        }
        TokenCommand::List => {
            for (name, created) in tokens::list(&app.db).await? {
                println!("{name}\t{}", created.to_rfc3339());
            }
        }
        TokenCommand::Revoke { name } => {
            tokens::revoke(&app.db, &name).await?;
            eprintln!("Token '{name}' revoked.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn import_file(app: App, file: PathBuf, list: Option<String>) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let handle = tokio::fs::File::open(&file).await.with_context(|| format!("cannot open {}", file.display()))?;
    let reader = tokio::io::BufReader::with_capacity(256 * 1024, handle);
    let options = import::ImportOptions { list, actor: Actor::Cli };
    let report = import::import_csv(&app.db, app.clock.clone(), reader, options)
        .await
        .with_context(|| format!("{}", file.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = report.imported + report.updated + report.skipped;
    for error in &report.errors {
        let column = error.column.as_deref().map(|c| format!(" {c}:")).unwrap_or_default();
        eprintln!("{}:{}:{column} {}", file.display(), error.row, error.message);
    }
    if report.errors_total > report.errors.len() as u64 {
        eprintln!("… and {} more rejected rows", report.errors_total - report.errors.len() as u64);
    }
    if !report.lists_created.is_empty() {
        eprintln!("created lists: {}", report.lists_created.join(", "));
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = rows as f64 / seconds.max(1e-9);
    eprintln!(
        "imported {}, updated {}, skipped {} ({} suppressed) in {seconds:.1} s ({rate:.0} rows/s)",
        report.imported, report.updated, report.skipped, report.suppressed
    );
    Ok(if report.errors_total > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn export_file(app: App, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut writer: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &out {
        Some(path) => Box::new(tokio::io::BufWriter::new(
            tokio::fs::File::create(path).await.with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(tokio::io::BufWriter::new(tokio::io::stdout())),
    };
    let mut stream = std::pin::pin!(export::subscribers_csv(app.db.clone()));
    while let Some(chunk) = stream.next().await {
        writer.write_all(&chunk?).await.context("writing the export")?;
    }
    writer.flush().await.context("writing the export")?;
    Ok(ExitCode::SUCCESS)
}

async fn check_workflows(config: &Config, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| config.workflows_dir.clone());
    if !dir.is_dir() {
        eprintln!("{}: not a folder of workflow files", dir.display());
        return Ok(ExitCode::from(2));
    }
    let templates = crate::workflow::templates::TemplateChecker::load(&config.templates_dir);
    let lists = known_lists(config).await;
    if lists.is_none() {
        eprintln!("note: no database at hand, so list names were not checked");
    }
    let context = crate::workflow::Context {
        templates: &templates,
        lists: lists.as_ref(),
        sms_max_segments: config.sms_max_segments,
    };
    let (workflows, diagnostics) = crate::workflow::check_dir(&dir, &context);
    for diagnostic in &diagnostics {
        println!("{diagnostic}");
    }
    if diagnostics.is_empty() {
        eprintln!("{} workflow file(s) OK in {}", workflows.len(), dir.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} problem(s) found", diagnostics.len());
        Ok(ExitCode::from(1))
    }
}

/// The lists in the configured database, when it exists and answers; never creates it.
async fn known_lists(config: &Config) -> Option<std::collections::BTreeSet<String>> {
    if config.is_sqlite() {
        let path = config.database_url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(path).exists() {
            return None;
        }
    }
    let db = crate::store::Db::connect(&config.database_url).await.ok()?;
    let lists = crate::audience::lists::all(&db).await.ok()?;
    Some(lists.into_iter().map(|l| l.slug).collect())
}

async fn plan_workflows(config: Config, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| config.workflows_dir.clone());
    let app = App::open(config, Arc::new(SystemClock)).await?;
    let (workflows, _, diagnostics) = crate::workflow::loader::check_folder(&app.db, &dir, &app.config).await?;
    if !diagnostics.is_empty() {
        for diagnostic in &diagnostics {
            println!("{diagnostic}");
        }
        eprintln!("{} problem(s) found: this change would be refused", diagnostics.len());
        return Ok(ExitCode::from(1));
    }
    let registry = crate::workflow::registry::Registry::open(app.db.clone()).await?;
    let current = registry.current();
    let moves = registry.plan(&workflows).await?;
    for w in &workflows {
        match current.get(&w.id) {
            None => println!("{}: new, version 1", w.id),
            Some(c) if moves.iter().any(|m| m.workflow == w.id) || c.program.workflow != *w => {
                println!("{}: version {} → {}", w.id, c.version, c.version + 1);
                for m in moves.iter().filter(|m| m.workflow == w.id) {
                    let from = m.step.as_deref().unwrap_or("(start)");
                    let to = match (&m.to_step, m.wait_changed) {
                        (None, _) => "complete (their step is gone and nothing follows it)".to_owned(),
                        (Some(to), true) => format!("stay at '{to}'; the wait is recomputed from when it began"),
                        (Some(to), false) if to == from => format!("stay at '{to}'"),
                        (Some(to), false) => format!("move to '{to}'"),
                    };
                    println!("  {} at '{from}' (version {}): {to}", m.enrollments, m.from_version);
                }
            }
            Some(c) => println!("{}: unchanged (version {})", w.id, c.version),
        }
    }
    for id in current.keys().filter(|id| !workflows.iter().any(|w| &w.id == *id)) {
        println!("{id}: removed (no new enrollments; live ones finish on their version)");
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn simulate_workflow(
    config: &Config,
    file: &std::path::Path,
    subscriber: Option<String>,
    events: &[String],
    opens: Vec<String>,
    clicks: Vec<String>,
    start: Option<String>,
    days: i64,
) -> anyhow::Result<ExitCode> {
    use crate::workflow::simulate::{Outcome, Script, simulate};
    let subscriber = match subscriber {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--subscriber is not JSON: {e}"))?),
        None => None,
    };
    let mut script = Script { opens, clicks, ..Script::default() };
    for event in events {
        script.events.push(Script::parse_event(event).map_err(|e| anyhow::anyhow!("--event {e}"))?);
    }
    let start = match start {
        Some(text) => chrono::DateTime::parse_from_rfc3339(&text)
            .map_err(|_| anyhow::anyhow!("--start '{text}' is not an RFC 3339 time such as 2026-03-02T09:00:00Z"))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let horizon = chrono::Duration::days(days.clamp(1, 3650));
    match simulate(file, &config.templates_dir, subscriber, &script, start, horizon).await? {
        Outcome::Timeline(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Invalid(diagnostics) => {
            for diagnostic in diagnostics {
                println!("{diagnostic}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
