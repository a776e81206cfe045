//! SMTP connections to one relay: lettre's SMTP client on sockets ownlist opens itself, kept in
//! a small pool.
//!
//! Why not lettre's own transport: it writes a message's body and its final `.` in two writes
//! on a socket with Nagle's algorithm on, so every message waits for the relay's delayed ACK
//! (about 40 ms on Linux): 25 messages a second per connection whatever the relay's speed. Here
//! the socket has `TCP_NODELAY`; the SMTP conversation (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA)
//! is still lettre's. When the relay offers `PIPELINING` (RFC 2920), MAIL, RCPT and DATA go out
//! in one write and their three replies are read together: two round trips per message, not four.
//!
//! URL forms (as lettre reads them): `smtp://host:port` plain; `smtp://…?tls=required` or
//! `?tls=opportunistic` STARTTLS (port 587 by default); `smtps://host:port` TLS from the start
//! (465); `user:password@` logs in (PLAIN or LOGIN); a path names the EHLO host.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    /// STARTTLS, refusing a relay that does not offer it.
    StartTlsRequired,
    /// STARTTLS when offered.
    StartTlsOpportunistic,
    /// TLS from the first byte (`smtps`).
    Tls,
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<Credentials>,
    pub hello: ClientId,
}

/// Why a message was not taken.
#[derive(Debug)]
pub enum Failure {
    /// A 5xx reply: about this message or recipient.
    Permanent { code: Option<u16>, text: String },
    /// Anything else: 4xx, the network, TLS, a timeout.
    Transient(String),
    /// Not tried: no connection to the relay is known to work, and the one being opened to find
    /// out has not answered yet. Nothing is known against the relay (its breaker stays as it
    /// is); the message goes to the next relay.
    Untried,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Permanent { text, .. } | Failure::Transient(text) => f.write_str(text),
            Failure::Untried => f.write_str("not tried: its first connection has not answered yet"),
        }
    }
}

fn failure(error: &lettre::transport::smtp::Error) -> Failure {
    if error.is_permanent() {
        Failure::Permanent { code: error.status().map(u16::from), text: error.to_string() }
    } else {
        Failure::Transient(error.to_string())
    }
}

/// A connection idle longer than this is checked (`NOOP`) before reuse: relays close idle ones.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);
/// Idle connections kept per relay.
const MAX_IDLE: usize = super::CONCURRENCY;

/// How long each step of a conversation may take. A relay that accepts connections and never
/// answers (a tarpit) is found out by the greeting's limit, not by the whole conversation's.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The TCP connection (and the TLS handshake of `smtps`).
    pub connect: Duration,
    /// The 220 greeting and EHLO, and STARTTLS and AUTH after them.
    pub greeting: Duration,
    /// Each command's reply (MAIL, RCPT, DATA, NOOP), and the reply to the message itself.
    pub command: Duration,
}

impl Timeouts {
    /// What a relay gets unless its URL says `timeout=`: 5 s to connect, 10 s to greet, 30 s a
    /// command.
    pub const DEFAULT: Self =
        Self { connect: Duration::from_secs(5), greeting: Duration::from_secs(10), command: Duration::from_secs(30) };

    /// `seconds` for the greeting and each command (and at most that to connect).
    pub fn all(seconds: Duration) -> Self {
        Self { connect: seconds.min(Self::DEFAULT.connect), greeting: seconds, command: seconds }
    }

    /// The whole of one message's conversation, at most: a bound over the steps' bounds.
    fn whole(&self) -> Duration {
        self.connect + self.greeting * 2 + self.command * 4
    }
}

/// `future`, or a transient failure naming `step` once `limit` has passed.
async fn within<T>(
    limit: Duration,
    step: &str,
    future: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Transient(format!("no answer to {step} within {} s", limit.as_secs_f64()))),
    }
}

/// How long a message waits for the first connection to a relay not known to work before it
/// goes to the next relay instead.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_millis(500);

/// Connections to one relay.
pub struct Pool {
    endpoint: Endpoint,
    timeouts: Timeouts,
    idle: std::sync::Mutex<Vec<(Connection, Instant)>>,
    /// Whether a connection has worked since the last one that failed. Until one does, one
    /// connection is opened at a time: a relay that accepts connections and never answers holds
    /// one message for the greeting's limit, not every message under way.
    proven: std::sync::atomic::AtomicBool,
    /// Held while such a connection is being opened, with when it started.
    opening: tokio::sync::Mutex<()>,
    opening_since: std::sync::Mutex<Option<Instant>>,
}

/// An open SMTP session, and whether the relay offered `PIPELINING`.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

impl Pool {
    pub fn new(endpoint: Endpoint, timeouts: Timeouts) -> Self {
        Self {
            endpoint,
            timeouts,
            idle: std::sync::Mutex::new(Vec::new()),
            proven: std::sync::atomic::AtomicBool::new(false),
            opening: tokio::sync::Mutex::new(()),
            opening_since: std::sync::Mutex::new(None),
        }
    }

    fn take_idle(&self) -> Option<(Connection, Instant)> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    fn put_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((connection, Instant::now()));
        }
    }

    /// Sends one message: each step within its own limit (see [`Timeouts`]), the whole within
    /// the sum of them.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<String, Failure> {
        within(self.timeouts.whole(), "the whole conversation", self.send_now(envelope, message)).await
    }

    async fn send_now(&self, envelope: &Envelope, message: &[u8]) -> Result<String, Failure> {
        let command = self.timeouts.command;
        let mut connection = loop {
            match self.take_idle() {
                Some((mut connection, since)) => {
                    let alive = since.elapsed() < CHECK_AFTER_IDLE
                        || tokio::time::timeout(command, connection.smtp.test_connected()).await.unwrap_or(false);
                    if alive {
                        break connection;
                    }
                    connection.smtp.abort().await;
                }
                None => break self.open().await?,
            }
        };
        let sending = async {
            if connection.pipelining {
                pipelined(&mut connection.smtp, envelope, message, command).await
            } else {
                connection.smtp.send(envelope, message).await.map_err(|e| failure(&e))
            }
        };
        // The steps of a message without pipelining are lettre's: they share one limit.
        let limit = if connection.pipelining { self.timeouts.whole() } else { command * 3 };
        match within(limit, "the message", sending).await {
            Ok(response) => {
                self.put_back(connection);
                let text: Vec<&str> = response.message().collect();
                Ok(format!("{} {}", response.code(), text.join(" ")))
            }
            // lettre has already closed a connection that failed mid-transaction; one that timed
            // out is dropped here, with whatever the relay still owes it.
            Err(failure) => {
                if matches!(failure, Failure::Transient(_)) {
                    self.proven.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(failure)
            }
        }
    }

    /// A new connection; while none is known to work, one at a time (see `proven`).
    async fn open(&self) -> Result<Connection, Failure> {
        use std::sync::atomic::Ordering::Relaxed;
        let since = || self.opening_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let turn = if self.proven.load(Relaxed) {
            None
        } else {
            // Once the connection being opened has taken longer than the wait, nobody waits for
            // it any more: the relay is slow or silent, and the next relay takes the messages.
            let waited = since().map_or(Duration::ZERO, |started| started.elapsed());
            let wait = FIRST_CONNECTION_WAIT.saturating_sub(waited);
            let turn = match self.opening.try_lock() {
                Ok(turn) => Ok(turn),
                // (Without a timer: a zero timeout still waits for the timer's next tick.)
                Err(_) if wait.is_zero() => return Err(Failure::Untried),
                Err(_) => tokio::time::timeout(wait, self.opening.lock()).await,
            };
            match turn {
                // The connection before this one worked: no need to wait in turn any more.
                Ok(_) if self.proven.load(Relaxed) => None,
                Ok(turn) => {
                    *since() = Some(Instant::now());
                    Some(turn)
                }
                Err(_) => return Err(Failure::Untried),
            }
        };
        let opened = self.connect().await;
        self.proven.store(opened.is_ok(), Relaxed);
        if turn.is_some() {
            *since() = None;
        }
        opened
    }

    /// Where and how it connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Opens a connection as for sending (TLS, EHLO, AUTH) and closes it.
    pub async fn probe(&self) -> Result<(), Failure> {
        let mut connection = self.connect().await?;
        let _ = connection.smtp.quit().await;
        Ok(())
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let Endpoint { host, port, security, credentials, hello } = &self.endpoint;
        let Timeouts { connect, greeting, .. } = self.timeouts;
        let tcp = within(connect, "the connection", async {
            tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| Failure::Transient(format!("cannot connect: {e}")))
        })
        .await?;
        tcp.set_nodelay(true).map_err(|e| Failure::Transient(format!("cannot set TCP_NODELAY: {e}")))?;
        let tls = || TlsParameters::new(host.clone()).map_err(|e| Failure::Transient(format!("TLS setup: {e}")));
        let stream: Box<dyn AsyncTokioStream> = if *security == Security::Tls {
            #[allow(deprecated)]
            let mut network = lettre::transport::smtp::client::AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
            let parameters = tls()?;
            within(connect, "the TLS handshake", async {
                network.upgrade_tls(parameters).await.map_err(|e| failure(&e))
            })
            .await?;
            Box::new(Encrypted(network.compat()))
        } else {
            Box::new(tcp)
        };
        let mut connection = within(greeting, "the greeting", async {
            AsyncSmtpConnection::connect_with_transport(stream, hello).await.map_err(|e| failure(&e))
        })
        .await?;
        within(greeting, "STARTTLS, EHLO and AUTH", async {
            match security {
                Security::StartTlsRequired => connection.starttls(tls()?, hello).await.map_err(|e| failure(&e))?,
                Security::StartTlsOpportunistic if connection.can_starttls() => {
                    connection.starttls(tls()?, hello).await.map_err(|e| failure(&e))?;
                }
                _ => {}
            }
            // lettre keeps only the EHLO keywords it uses; ask again to learn whether the relay
            // pipelines (before AUTH: a new EHLO may reset an authenticated session).
            let ehlo = connection.command(Ehlo::new(hello.clone())).await.map_err(|e| failure(&e))?;
            let pipelining = ehlo.message().any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
            if let Some(credentials) = credentials {
                connection.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await.map_err(|e| failure(&e))?;
            }
            Ok(pipelining)
        })
        .await
        .map(|pipelining| Connection { smtp: connection, pipelining })
    }
}

/// MAIL, RCPT and DATA written at once, then their replies read in order (RFC 2920), then the
/// message. On any refusal the connection is closed (as lettre does), so no reply is left unread.
async fn pipelined(
    connection: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
    limit: Duration,
) -> Result<Response, Failure> {
    let non_ascii = |address: &lettre::Address| !AsRef::<str>::as_ref(address).is_ascii();
    let mut options = Vec::new();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        options.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mut commands = Mail::new(envelope.from().cloned(), options).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    commands.push_str(&Data.to_string());
    // `command` writes everything and reads the first reply (MAIL's); the others follow.
    let replies = within(limit, "MAIL, RCPT and DATA", async {
        let mut replies = vec![connection.command(commands).await];
        for _ in 0..envelope.to().len() + 1 {
            replies.push(connection.read_response().await);
        }
        Ok(replies)
    })
    .await?;
    let result = match replies.into_iter().find(Result::is_err) {
        Some(refused) => refused.map_err(|e| failure(&e)),
        None => {
            within(limit, "the message", async { send_data(connection, message).await.map_err(|e| failure(&e)) }).await
        }
    };
    if result.is_err() {
        connection.abort().await;
    }
    result
}

/// The message after `DATA`: dot-stuffed (a no-op for bodies from `mime`), with the closing
/// `.`, in one write. (lettre's `message` copies it byte by byte and writes the `.` apart.)
async fn send_data(
    connection: &mut AsyncSmtpConnection,
    message: &[u8],
) -> Result<Response, lettre::transport::smtp::Error> {
    let stuffed = super::mime::dot_stuffed(message);
    match std::str::from_utf8(&stuffed) {
        Ok(text) => connection.command(Terminated(text)).await,
        Err(_) => connection.message(message).await,
    }
}

/// Message text followed by the end-of-data line.
struct Terminated<'a>(&'a str);

impl std::fmt::Display for Terminated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)?;
        f.write_str("\r\n.\r\n")
    }
}

/// A TLS stream set up by lettre, seen as the tokio stream lettre's connection reads.
#[allow(deprecated)]
#[derive(Debug)]
struct Encrypted(Compat<lettre::transport::smtp::client::AsyncNetworkStream>);

impl AsyncRead for Encrypted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Encrypted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}
