//! Start-up: open the database, prepare the secret, serve HTTP until told to stop.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::audience::bounces::mail::ReturnPath;
use crate::config::{Config, redact};
use crate::core::clock::SharedClock;
use crate::delivery::email::{EmailSender, Letterhead, Relay, Transport};
use crate::delivery::sms::{SmsSender, SmsSetup, SmsTransport, WhatsAppSender};
use crate::delivery::webhook::WebhookSender;
use crate::web::{self, AppState};

pub mod cli;
pub mod doctor;
use crate::core::links::Signer;
use crate::store::Db;
use crate::workflow::engine::Engine;
use crate::workflow::loader;
use crate::workflow::registry::Registry;
use crate::workflow::templates::TemplateChecker;

/// A configured ownlist with its database open and migrated.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: SharedClock,
}

impl App {
    /// What an SMS or WhatsApp worker is given: its providers (none: files under
    /// `data_dir/{channel}`), its hours, the default zone and the status callback's base.
    fn text_setup(
        &self,
        providers: &[crate::config::SmsProviderConfig],
        channel: &str,
        hours: crate::delivery::sms::SendingHours,
    ) -> anyhow::Result<SmsSetup> {
        let transport = if providers.is_empty() {
            SmsTransport::File(self.config.data_dir.join(channel))
        } else {
            let built = providers.iter().map(|p| p.build().map(Arc::new)).collect::<Result<Vec<_>, _>>();
            SmsTransport::Providers(built.map_err(|problem| anyhow::anyhow!("{channel}_providers: {problem}"))?)
        };
        tracing::info!(?transport, channel, "text transport");
        Ok(SmsSetup { transport, hours, default_zone: self.config.timezone, base_url: self.config.base_url.clone() })
    }

    /// Connects to the database and brings its schema up to date.
    pub async fn open(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let db = Db::connect(&config.database_url)
            .await
            .with_context(|| format!("cannot open the database at {}", redact(&config.database_url)))?;
        db.migrate().await.context("cannot migrate the database schema")?;
        let mut config = config;
        if config.secret.is_none() {
            config.secret = Some(load_or_create_secret(&config.data_dir)?);
        }
        Ok(Self { config: Arc::new(config), db, clock })
    }

    /// Loads the workflow files and prepares the engine: everything `serve` runs. A file with
    /// problems does not stop it: its workflow keeps its last valid version and its pages stay
    /// up, and the problems are logged and reported (`/readyz`, the API, the dashboard).
    pub async fn start(self) -> anyhow::Result<Service> {
        let registry = Arc::new(Registry::open(self.db.clone()).await.context("cannot read the stored workflows")?);
        let load = if self.config.workflows_dir.is_dir() {
            let load = loader::load(&self.db, &registry, self.clock.now(), &self.config.load_settings())
                .await
                .context("cannot store the workflows")?;
            let r = &load.reloaded;
            tracing::info!(workflows = ?r.workflows, pages = ?r.pages, lists_created = ?r.lists_created, moved = r.moves.len(), problems = r.problems.len(), "workflows loaded");
            Some(load)
        } else {
            tracing::warn!(dir = %self.config.workflows_dir.display(), "no workflows folder: no workflow runs");
            None
        };
        let secret = self.config.secret.clone().unwrap_or_default();
        let templates = match &load {
            Some(load) => load.templates.clone(),
            None => Arc::new(TemplateChecker::load(&self.config.templates_dir)),
        };
        // Delivery and the engine work on connections of their own (see `Db::background`).
        let background = self.db.background();
        let engine = Engine::new(
            background.clone(),
            self.clock.clone(),
            registry,
            templates,
            Signer::new(&secret),
            self.config.base_url.clone(),
        );
        let bell = crate::outbox::Doorbell::new();
        // What the delivery workers learn of each channel, read by the engine for `reach: first`.
        let health = crate::core::health::SharedHealth::default();
        let engine = engine
            .with_bell(bell.clone())
            .with_business(&self.config.business)
            .with_health(health.clone(), self.config.fallback_after);
        // Several instances share a PostgreSQL database: one runs the engine at a time, and
        // delivery workers claim messages with leases. (SQLite serves one process.)
        let instance = uuid::Uuid::now_v7().to_string();
        let shared = !self.config.is_sqlite();
        let lease = self.config.claim_lease;
        let engine_ttl = lease.min(chrono::Duration::seconds(crate::workflow::engine::ENGINE_LEASE_SECONDS));
        let engine = if shared { engine.with_leadership(instance.clone(), engine_ttl) } else { engine };
        if let Some(load) = load {
            engine.catalog().take_load(load);
        }
        let engine = Arc::new(if self.config.tracking { engine } else { engine.without_tracking() });
        let webhooks = WebhookSender::allowing(
            background.clone(),
            self.clock.clone(),
            Arc::new(crate::config::webhook_secret),
            self.config.webhook_allow.clone(),
        );
        let max_age = self.config.retry_max_age;
        let webhooks = webhooks.with_bell(bell.clone()).with_max_age(max_age);
        let webhooks = Arc::new(if shared { webhooks.with_leases(instance.clone(), lease) } else { webhooks });
        let letterhead = Letterhead {
            from: self.config.email_from.clone(),
            base_url: self.config.base_url.clone(),
            signer: Signer::new(&secret),
            dkim: match &self.config.dkim {
                Some(dkim) => {
                    Some(Arc::new(dkim.load().map_err(|problem| anyhow::anyhow!("dkim_key_file: {problem}"))?))
                }
                None => None,
            },
            unsubscribe_mailto: self.config.unsubscribe_mailto.clone(),
            return_path: self.config.return_path_address().map(|a| ReturnPath::new(&a, &secret)),
        };
        let transport = if self.config.smtp_relays.is_empty() {
            Transport::File(self.config.data_dir.join("mail"))
        } else {
            let relays = self.config.smtp_relays.iter().map(|url| Relay::from_url(url)).collect::<Result<Vec<_>, _>>();
            Transport::Smtp(relays.map_err(|problem| anyhow::anyhow!("smtp_relays: {problem}"))?)
        };
        tracing::info!(?transport, "email transport");
        let email = EmailSender::new(background.clone(), self.clock.clone(), letterhead, transport)
            .with_bell(bell.clone())
            .with_max_age(max_age)
            .with_fallback_after(self.config.fallback_after)
            .with_health(health.clone())
            .with_policy(self.config.send_policy(false));
        let email = Arc::new(if shared { email.with_leases(instance.clone(), lease) } else { email });
        let setup = self.text_setup(&self.config.sms_providers, "sms", self.config.sms_hours)?;
        let whatsapp_bell = bell.clone();
        let sms = SmsSender::new(background.clone(), self.clock.clone(), setup)
            .with_bell(bell)
            .with_max_age(max_age)
            .with_fallback_after(self.config.fallback_after)
            .with_health(health.clone())
            .with_policy(self.config.send_policy(true));
        let sms = Arc::new(if shared { sms.with_leases(instance.clone(), lease) } else { sms });
        let setup = self.text_setup(&self.config.whatsapp_providers, "whatsapp", self.config.whatsapp_hours)?;
        let whatsapp = WhatsAppSender::new(background.clone(), self.clock.clone(), setup)
            .with_bell(whatsapp_bell)
            .with_max_age(max_age)
            .with_fallback_after(self.config.fallback_after)
            .with_health(health)
            .with_policy(self.config.send_policy(true));
        let whatsapp = Arc::new(if shared { whatsapp.with_leases(instance, lease) } else { whatsapp });
        let signup_limit = Arc::new(crate::pages::guard::RateLimit::new(self.config.signups_per_ip));
        let login_limit = Arc::new(crate::pages::guard::RateLimit::new(crate::web::admin::FAILED_LOGINS_PER_HOUR));
        Ok(Service { app: self, engine, webhooks, email, sms, whatsapp, signup_limit, login_limit })
    }
}

impl Service {
    /// The bounce receiver, when `bounce_smtp_listen` is set: its address and what it needs.
    pub fn bounce_receiver(&self) -> Option<(std::net::SocketAddr, crate::delivery::bounce_smtp::BounceReceiver)> {
        let config = &self.app.config;
        let listen = config.bounce_smtp_listen?;
        let address = config.return_path_address()?;
        let secret = config.secret.clone().unwrap_or_default();
        let receiver = crate::delivery::bounce_smtp::BounceReceiver {
            db: self.app.db.clone(),
            clock: self.app.clock.clone(),
            return_path: ReturnPath::new(&address, &secret),
            host: address.domain().to_owned(),
        };
        Some((listen, receiver))
    }
}

/// A started ownlist: the app with its workflow engine.
#[derive(Clone)]
pub struct Service {
    pub app: App,
    pub engine: Arc<Engine>,
    pub webhooks: Arc<WebhookSender>,
    pub email: Arc<EmailSender>,
    pub sms: Arc<SmsSender>,
    pub whatsapp: Arc<WhatsAppSender>,
    /// Landing-page signups per client address, shared by every router this service makes.
    pub signup_limit: Arc<crate::pages::guard::RateLimit>,
    /// Failed dashboard logins per client address, likewise.
    pub login_limit: Arc<crate::pages::guard::RateLimit>,
}

impl Service {
    pub fn router(&self) -> axum::Router {
        web::router(AppState {
            db: self.app.db.clone(),
            clock: self.app.clock.clone(),
            config: self.app.config.clone(),
            engine: self.engine.clone(),
            catalog: self.engine.catalog().clone(),
            signer: self.engine.links().0.clone(),
            signup_limit: self.signup_limit.clone(),
            login_limit: self.login_limit.clone(),
        })
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = web::serve::limits(&self.app.config);
        web::serve::serve(listener, self.router(), limits, shutdown).await.context("HTTP server failed")
    }
}

/// Reads the signing secret from the data dir, or creates it there (mode 0600) on first run.
fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is shorter than 32 characters; delete it to have a new one made", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}
