//! The `ownlist` command line: one binary, several subcommands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::app::App;
use crate::audience::{Actor, export, import};
use crate::config::{Config, redact};
use crate::core::clock::{SharedClock, SystemClock};
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
    /// Run the background workers only (workflow engine, email, SMS and webhook delivery), no
    /// HTTP: more of them, on one PostgreSQL database, share the work.
    Worker,
    /// Create or update the database schema, then exit.
    Migrate,
    /// Manage admin API tokens.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// Import subscribers from a CSV file (columns: email, phone, first_name, last_name, tags, …).
    Import {
        /// A CSV file of subscribers.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        file: Option<PathBuf>,
        /// Every imported subscriber joins this list.
        #[arg(long, value_name = "SLUG")]
        list: Option<String>,
        /// Restore a whole `export --all` folder into this (empty) instance instead.
        #[arg(long, value_name = "DIR")]
        all: Option<PathBuf>,
    },
    /// Check, plan or simulate workflow files.
    #[command(subcommand)]
    Workflows(WorkflowCommand),
    /// Export every subscriber as CSV.
    Export {
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE", conflicts_with = "all")]
        out: Option<PathBuf>,
        /// Everything (subscribers, consents, lists, tags, events, messages, workflow versions, …)
        /// as JSON Lines and CSV files in this new folder.
        #[arg(long, value_name = "DIR")]
        all: Option<PathBuf>,
    },
    /// A consistent copy of the SQLite database, safe while the service runs (for PostgreSQL it
    /// says which pg_dump command to use).
    Backup {
        /// The new file (it must not exist yet).
        file: PathBuf,
    },
    /// Check this deployment: the database, each SMTP relay (nothing is sent), the sending
    /// domain's SPF, DKIM, DMARC, MX and reverse DNS, base_url over HTTPS, the bulk-sender rules
    /// of Gmail, Yahoo and Outlook, the SMS providers' credentials. Exits 1 when a check fails.
    Doctor {
        /// The DNS server to ask (`IP:PORT`), instead of the system's resolver.
        #[arg(long, value_name = "IP:PORT")]
        resolver: Option<std::net::SocketAddr>,
    },
    /// Rehearse an outage: who could still be reached, with consent, without a channel (`email`,
    /// `sms`), a relay or provider (by name), or the platform people came from (`source:NAME`),
    /// per list and per source, and how long one message to all of them would take.
    Drill {
        /// What goes dark; repeat it or separate with commas (nothing: today's reach).
        #[arg(long, value_name = "WHAT")]
        without: Vec<String>,
        /// Print the report as JSON (as `GET /api/v1/reachability` answers).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `ownlist completions bash > /etc/bash_completion.d/ownlist`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
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
    Create {
        name: String,
        /// What it may do: viewer (read), editor (also change the audience and send), admin (also
        /// manage tokens and read the audit log).
        #[arg(long, value_enum, default_value_t = tokens::Role::Admin)]
        role: tokens::Role,
    },
    /// List tokens by name.
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

/// Exit codes: 0 success, 1 done with rejected rows, 2 bad configuration or usage, 3 failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Completions { shell }) = cli.command {
        // Needs no configuration: it only describes the command line.
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "ownlist", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("OWNLIST_")).collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ownlist: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log, config.log_format);
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

fn init_logging(filter: &str, format: crate::config::LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder.try_init(),
        crate::config::LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    match command {
        Command::Serve => serve(config, clock).await,
        Command::Worker => work(config, clock).await,
        Command::Migrate => {
            let url = redact(&config.database_url);
            App::open(config, clock).await?;
            println!("database at {url} is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(command) => manage_tokens(App::open(config, clock).await?, command).await,
        Command::Import { all: Some(dir), .. } => import_all(App::open(config, clock).await?, &dir).await,
        Command::Import { file, list, .. } => {
            let file = file.ok_or_else(|| anyhow::anyhow!("name a CSV file, or --all DIR"))?;
            import_file(App::open(config, clock).await?, file, list).await
        }
        Command::Export { all: Some(dir), .. } => export_all(App::open(config, clock).await?, &dir).await,
        Command::Export { out, .. } => export_file(App::open(config, clock).await?, out).await,
        Command::Backup { file } => backup(config, clock, &file).await,
        Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        Command::Drill { without, json } => drill(App::open(config, clock).await?, &without, json).await,
        Command::Doctor { resolver } => {
            let healthy = crate::app::doctor::run(&config, resolver).await?;
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Workflows(WorkflowCommand::Check { dir }) => check_workflows(&config, dir).await,
        Command::Workflows(WorkflowCommand::Plan { dir }) => plan_workflows(config, dir).await,
        Command::Workflows(WorkflowCommand::Simulate { file, subscriber, events, opens, clicks, start, days }) => {
            simulate_workflow(&config, &file, subscriber, &events, opens, clicks, start, days).await
        }
    }
}

async fn serve(config: Config, clock: SharedClock) -> anyhow::Result<ExitCode> {
    let listen = config.listen;
    let Some(_lock) = lock_sqlite(&config)? else { return Ok(ExitCode::from(2)) };
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
    println!("  dashboard: {base}/admin");
    for page in service.engine.catalog().pages().all() {
        println!("  landing page: {base}/p/{}", page.slug);
    }
    let problems = service.engine.catalog().problems();
    if !problems.is_empty() {
        println!(
            "  workflow files: {} problem(s), logged above and listed at {base}/readyz; those files changed nothing",
            problems.len()
        );
    }
    if app.config.admin_token.is_none() && !tokens::any_exist(&app.db).await? {
        println!(
            "  no admin token yet: run `ownlist tokens create admin` and send it as 'Authorization: Bearer TOKEN'"
        );
    }
    for hint in app.config.hints() {
        tracing::warn!("{hint}");
        println!("  to do: {hint}");
    }
    let bounces = match service.bounce_receiver() {
        Some((listen, receiver)) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("OWNLIST_BOUNCE_SMTP_LISTEN: cannot listen on {listen}"))?;
            println!(
                "  bounce receiver: smtp://{} (return path {})",
                listener.local_addr()?,
                receiver.return_path.example()
            );
            Some(tokio::spawn(receiver.serve(listener)))
        }
        None => None,
    };
    let workers = Workers::start(&service);
    service.serve(listener, shutdown_signal()).await?;
    if let Some(bounces) = bounces {
        bounces.abort();
    }
    workers.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// The background tasks of `serve` and `worker`: the engine, the delivery workers and the
/// workflow-folder watcher.
struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    fn start(service: &crate::app::Service) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn(service.engine.clone().run(stopped.clone())),
            tokio::spawn(service.webhooks.clone().run(stopped.clone())),
            tokio::spawn(service.email.clone().run(stopped.clone())),
            tokio::spawn(service.sms.clone().run(stopped.clone())),
            tokio::spawn(service.whatsapp.clone().run(stopped.clone())),
            tokio::spawn(watch_workflows(service.clone(), stopped)),
        ];
        Self { stop, tasks }
    }

    /// Tells every task to stop and waits for them (sends under way finish and are recorded).
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// `ownlist worker`: the engine and the delivery workers until SIGTERM or Ctrl-C, then it stops
/// claiming, finishes and records the sends under way, gives back what it claimed, and exits.
async fn work(config: Config, clock: SharedClock) -> anyhow::Result<ExitCode> {
    let Some(_lock) = lock_sqlite(&config)? else { return Ok(ExitCode::from(2)) };
    let service = App::open(config, clock).await?.start().await?;
    println!("ownlist worker started (database: {})", redact(&service.app.config.database_url));
    let workers = Workers::start(&service);
    shutdown_signal().await;
    workers.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// On SQLite, takes the lock that makes this the only long-running process on the database file
/// (`FILE.lock` beside it, released when the process ends however it ends); `None` after saying
/// why when another process holds it.
fn lock_sqlite(config: &Config) -> anyhow::Result<Option<Option<std::fs::File>>> {
    let Some(path) = config.sqlite_path() else { return Ok(Some(None)) };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Some(file))),
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "ownlist: another ownlist process is already serving {} (it holds {}). SQLite serves one \
                 process; stop the other one, or use PostgreSQL (OWNLIST_DATABASE_URL=postgres://…) to run several.",
                path.display(),
                lock_path.display()
            );
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", lock_path.display())),
    }
}

/// `ownlist backup FILE`: SQLite's `VACUUM INTO`, a consistent snapshot taken in one read
/// transaction while the service keeps writing.
async fn backup(config: Config, clock: SharedClock, file: &Path) -> anyhow::Result<ExitCode> {
    if !config.is_sqlite() {
        println!(
            "ownlist backup copies SQLite databases. For PostgreSQL, take a consistent online dump with:\n  \
             pg_dump --format=custom --file={} '{}'\nand restore it into an empty database with pg_restore \
             --dbname=URL {}.",
            file.display(),
            redact(&config.database_url),
            file.display()
        );
        return Ok(ExitCode::from(2));
    }
    if file.exists() {
        eprintln!("ownlist: {} exists already; name a new file", file.display());
        return Ok(ExitCode::from(2));
    }
    let target = file.to_str().ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", file.display()))?;
    let app = App::open(config, clock).await?;
    let started = std::time::Instant::now();
    app.db
        .execute_unprepared(&format!("VACUUM INTO '{}'", target.replace('\'', "''")))
        .await
        .with_context(|| format!("cannot write the backup to {}", file.display()))?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!("backup written to {} ({size} bytes in {:.1} s)", file.display(), started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

async fn drill(app: App, without: &[String], json: bool) -> anyhow::Result<ExitCode> {
    use crate::audience::reach;
    let providers = app.config.reach_providers();
    let asked = match reach::Without::parse(without.iter().map(String::as_str), &providers) {
        Ok(asked) => asked,
        Err(crate::core::error::Error::Invalid(errors)) => {
            for e in errors {
                eprintln!("ownlist drill: --without: {}", e.message);
            }
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let report = reach::report(&app.db, &providers, &asked, app.clock.now()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", reach::text(&report));
    }
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
        match crate::workflow::loader::reload(&service.app.db, &config.load_settings(), &service.engine, now).await {
            Ok(reloaded) => tracing::info!(
                workflows = ?reloaded.workflows,
                lists_created = ?reloaded.lists_created,
                moved = reloaded.moves.len(),
                problems = reloaded.problems.len(),
                "workflows reloaded"
            ),
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
        TokenCommand::Create { name, role } => {
            let token = tokens::create(&app.db, app.clock.now(), &name, role).await?;
            println!("{token}");
            eprintln!("Token '{}' ({role}) created. It is shown only now: store it somewhere safe.", name.trim());
        }
        TokenCommand::List => {
            for token in tokens::list(&app.db).await? {
                println!("{}\t{}\t{}", token.name, token.role, token.created_at.to_rfc3339());
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
    let report = match import::import_csv(&app.db, app.clock.clone(), reader, options).await {
        Ok(report) => report,
        Err(crate::core::error::Error::Interrupted { done, cause }) => {
            eprintln!("{}: stopped part way: {cause}", file.display());
            eprintln!(
                "stored before it: imported {}, updated {}; no row after them. Import the file again once this is \
                 fixed: stored rows are updated, not duplicated.",
                done["imported"], done["updated"]
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(anyhow::Error::from(e).context(file.display().to_string())),
    };
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

async fn export_all(app: App, dir: &Path) -> anyhow::Result<ExitCode> {
    let outcome = crate::audience::archive::export_all(&app.db, app.clock.now(), dir).await.map(|m| m.counts);
    report_archive(outcome, &format!("exported to {} (see its README.md)", dir.display()), "", 2)
}

async fn import_all(app: App, dir: &Path) -> anyhow::Result<ExitCode> {
    let outcome = crate::audience::archive::import_all(&app.db, dir).await;
    report_archive(outcome, &format!("imported from {}", dir.display()), " (nothing was imported)", 1)
}

/// Prints an archive command's rows per table, or its refusal (exit `refused`).
fn report_archive(
    outcome: crate::core::error::Result<Vec<(String, u64)>>,
    done: &str,
    after_refusal: &str,
    refused: u8,
) -> anyhow::Result<ExitCode> {
    match outcome {
        Ok(counts) => {
            for (table, n) in &counts {
                println!("{table}: {n}");
            }
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }
        Err(crate::core::error::Error::Malformed { detail, .. }) => {
            eprintln!("ownlist: {detail}{after_refusal}");
            Ok(ExitCode::from(refused))
        }
        Err(e) => Err(e.into()),
    }
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
    let folder = crate::workflow::check_dir(&dir, &context);
    for diagnostic in &folder.diagnostics {
        println!("{diagnostic}");
    }
    let diagnostics = folder.diagnostics;
    if diagnostics.is_empty() {
        eprintln!(
            "{} workflow(s), {} landing page(s) and {} declared list(s) OK in {}",
            folder.workflows.len(),
            folder.pages.len(),
            folder.lists.len(),
            dir.display()
        );
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
    match crate::workflow::plan::plan(&app.db, &dir, &app.config.load_settings()).await? {
        crate::workflow::plan::Plan::Problems(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            eprintln!(
                "{} problem(s) found: the files with problems would change nothing (their last valid version keeps running)",
                problems.len()
            );
            return Ok(ExitCode::from(1));
        }
        crate::workflow::plan::Plan::Changes(lines) => {
            for line in lines {
                println!("{line}");
            }
        }
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
