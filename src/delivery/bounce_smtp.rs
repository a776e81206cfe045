//! The bounce receiver: a small SMTP server (setting `bounce_smtp_listen`) that takes the mail
//! sent back to the messages' return paths: delivery status notifications and abuse reports.
//!
//! It accepts mail only for the return paths (`LOCAL+…@DOMAIN` of `bounce_address`, and the
//! bare address), relays nothing, bounds every line, message and wait, and answers 250 to what
//! it does not understand (an out-of-office reply must not bounce again). A bounce is believed
//! only when it proves which message it is about: the return path's MAC, or our Message-ID in
//! the returned headers; a report that names an address alone is logged and ignored, so nobody
//! can bounce a subscriber by mailing the receiver. A database failure answers 451, so the
//! sending server tries again later.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::EntityTrait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::audience::bounces::mail::{BounceMail, ReturnPath, read};
use crate::audience::bounces::{Report, apply};
use crate::core::clock::SharedClock;
use crate::store::Db;
use crate::store::entities::outbox;

/// The longest command line read (RFC 5321 allows 512; some clients send more).
const MAX_LINE: usize = 2048;
/// The largest bounce taken (a DSN carries the headers or the whole original message).
pub const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// How long a client may stay silent.
const IDLE: Duration = Duration::from_secs(60);
/// Connections served at once.
const CONNECTIONS: usize = 64;

/// What the receiver needs.
#[derive(Clone)]
pub struct BounceReceiver {
    pub db: Db,
    pub clock: SharedClock,
    pub return_path: ReturnPath,
    /// The name it greets with.
    pub host: String,
}

impl BounceReceiver {
    /// Serves connections until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        let receiver = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                let mut stream = stream;
                let _ = stream.write_all(b"421 4.3.2 too many connections, try again later\r\n").await;
                continue;
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let _slot = slot;
                // A connection lives at most as long as its slowest honest use.
                let whole = Duration::from_secs(600);
                if let Err(e) = tokio::time::timeout(whole, receiver.conversation(stream)).await.unwrap_or(Ok(())) {
                    tracing::debug!(%peer, error = %e, "bounce SMTP connection ended");
                }
            });
        }
    }

    async fn conversation(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read_half, mut write) = stream.into_split();
        let mut reader = BufReader::new(read_half);
        let host = &self.host;
        write.write_all(format!("220 {host} ownlist bounce receiver\r\n").as_bytes()).await?;
        let mut recipients: Vec<String> = Vec::new();
        let mut sender = false;
        loop {
            let Some(line) = read_line(&mut reader).await? else { return Ok(()) };
            let upper = line.to_ascii_uppercase();
            let verb = upper.split_whitespace().next().unwrap_or_default();
            let answer: String = match verb {
                "EHLO" => {
                    format!("250-{host}\r\n250-SIZE {MAX_MESSAGE}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
                }
                "HELO" => format!("250 {host}\r\n"),
                "MAIL" if upper.starts_with("MAIL FROM:") => {
                    sender = true;
                    recipients.clear();
                    "250 2.1.0 OK\r\n".into()
                }
                "RCPT" if upper.starts_with("RCPT TO:") && !sender => "503 5.5.1 MAIL first\r\n".into(),
                "RCPT" if upper.starts_with("RCPT TO:") => {
                    let address = angle(&line["RCPT TO:".len()..]);
                    if recipients.len() >= 100 {
                        "452 4.5.3 too many recipients\r\n".into()
                    } else if self.return_path.is_ours(&address) {
                        recipients.push(address);
                        "250 2.1.5 OK\r\n".into()
                    } else {
                        "550 5.1.1 no such mailbox here: this server only takes bounces\r\n".into()
                    }
                }
                "DATA" if recipients.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
                "DATA" => {
                    write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                    let answer = match read_data(&mut reader).await? {
                        Some(message) => self.take(&recipients, &message).await,
                        None => "552 5.3.4 message too big\r\n".into(),
                    };
                    recipients.clear();
                    sender = false;
                    answer
                }
                "RSET" => {
                    recipients.clear();
                    sender = false;
                    "250 2.0.0 OK\r\n".into()
                }
                "NOOP" => "250 2.0.0 OK\r\n".into(),
                "VRFY" => "252 2.5.0 cannot verify\r\n".into(),
                "QUIT" => {
                    write.write_all(b"221 2.0.0 bye\r\n").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 command not recognised\r\n".into(),
            };
            write.write_all(answer.as_bytes()).await?;
        }
    }

    /// Applies a bounce mail sent to `recipients`; the answer to its DATA.
    async fn take(&self, recipients: &[String], message: &[u8]) -> String {
        let Some(bounce) = read(message) else {
            tracing::info!("bounce receiver: a message that is no bounce, ignored");
            return "250 2.0.0 OK, not a bounce\r\n".into();
        };
        match self.reports(recipients, &bounce).await {
            Ok(reports) if reports.is_empty() => {
                tracing::warn!(recipients = ?bounce.recipients, "bounce receiver: a bounce naming no message of ours, ignored");
                "250 2.0.0 OK, no message of ours\r\n".into()
            }
            Ok(reports) => match apply(&self.db, self.clock.now(), reports).await {
                Ok(Ok(done)) => {
                    tracing::info!(applied = done.applied, kind = ?bounce.kind, "bounce receiver: applied");
                    "250 2.0.0 OK\r\n".into()
                }
                Ok(Err((_, problem))) => {
                    tracing::warn!(%problem, "bounce receiver: a bounce about an unusable address, ignored");
                    "250 2.0.0 OK, ignored\r\n".into()
                }
                Err(e) => {
                    tracing::error!(error = %e, "bounce receiver: could not record a bounce");
                    "451 4.3.0 try again later\r\n".into()
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "bounce receiver: could not read the outbox");
                "451 4.3.0 try again later\r\n".into()
            }
        }
    }

    /// The reports a bounce proves: about the message its return path names, else about the
    /// message whose Message-ID it returns; each about that message's recipient.
    async fn reports(&self, recipients: &[String], bounce: &BounceMail) -> crate::core::error::Result<Vec<Report>> {
        let mut ids: Vec<uuid::Uuid> = recipients.iter().filter_map(|r| self.return_path.message(r)).collect();
        if ids.is_empty() {
            ids.extend(bounce.message);
        }
        ids.dedup();
        let mut reports = Vec::new();
        for id in ids {
            let Some(message) = outbox::Entity::find_by_id(id).one(self.db.conn()).await? else { continue };
            if message.channel != crate::core::values::OutboxChannel::Email {
                continue;
            }
            reports.push(Report { address: message.recipient, kind: bounce.kind, reason: bounce.reason.clone() });
        }
        Ok(reports)
    }
}

/// `<a@b>` (with any ESMTP parameters after it) → `a@b`.
fn angle(rest: &str) -> String {
    let rest = rest.trim();
    match (rest.find('<'), rest.find('>')) {
        (Some(open), Some(close)) if open < close => rest[open + 1..close].trim().to_owned(),
        _ => rest.split_whitespace().next().unwrap_or_default().to_owned(),
    }
}

/// One command line without its line ending; `None` at the end of the stream. A line that runs
/// past [`MAX_LINE`] or a client silent past [`IDLE`] ends the conversation.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(IDLE, (&mut *reader).take(MAX_LINE as u64).read_until(b'\n', &mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
    if read == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(Some(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned()))
}

/// The message after DATA, dots unstuffed, up to the lone dot; `None` when it ran past
/// [`MAX_MESSAGE`] (read to its end all the same, so the conversation can go on).
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut too_big = false;
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(IDLE, (&mut *reader).take(64 * 1024).read_until(b'\n', &mut line))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "ended inside DATA"));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(message));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if message.len() + line.len() > MAX_MESSAGE {
            too_big = true;
        } else {
            message.extend_from_slice(line);
        }
    }
}
