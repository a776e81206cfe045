//! Turning a rendered message into an outbox row: the one path shared by workflow steps and
//! broadcasts. It rewrites an HTML email's links for click tracking (recording where each goes),
//! adds the open pixel, and counts an SMS body's segments.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use serde_json::json;
use uuid::Uuid;

use crate::core::links::{Purpose, Signer};
use crate::core::sms_text::sms_segments;
use crate::core::values::{OutboxChannel, OutboxStatus};
use crate::store::entities::{outbox, outbox_body};

/// The last path segment of a message's hidden link (`…/t/c/{token}/h`), where a link's index
/// stands otherwise.
pub const TRAP: &str = "h";

/// How long tracking links keep working.
pub const TRACKING_DAYS: i64 = 365;

/// A message rendered for one subscriber, not yet stored.
#[derive(Debug, Clone)]
pub struct Draft {
    pub channel: OutboxChannel,
    pub recipient: String,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: String,
    /// The list this is list mail for (gives `List-Id`).
    pub list_slug: Option<String>,
}

/// Where the tracking endpoints live and how their tokens are signed.
#[derive(Debug, Clone)]
pub struct Tracking {
    pub signer: Signer,
    pub base_url: url::Url,
}

impl Tracking {
    /// A message's click URL prefix (`…/t/c/{token}`; a link's index follows it) and its open
    /// pixel's URL: one signed token names the message in both, so nothing else can be reached
    /// through them.
    pub fn urls(&self, message: Uuid, now: DateTime<Utc>) -> (String, String) {
        let token = self.signer.sign(Purpose::Track, message, now + chrono::Duration::days(TRACKING_DAYS));
        (
            crate::core::links::link(&self.base_url, "t/c", &token),
            crate::core::links::link(&self.base_url, "t/o", &token),
        )
    }

    /// The original of a click URL of this instance, from the message's recorded links.
    pub fn clicked_target<'a>(base_url: &url::Url, href: &str, links: &[&'a str]) -> Option<&'a str> {
        let rest = href.strip_prefix(base_url.as_str())?.strip_prefix("t/c/")?;
        let (_, index) = rest.rsplit_once('/')?;
        links.get(index.parse::<usize>().ok()?).copied()
    }

    /// Links ownlist itself serves (unsubscribe, preferences) are never rewritten: they must keep
    /// working as they are, and following them is not interest in the message.
    fn own_link(&self, url: &str) -> bool {
        let base = self.base_url.as_str();
        url.strip_prefix(base).is_some_and(|rest| rest.starts_with("u/") || rest.starts_with("preferences/"))
    }

    /// `html` with every `href` to an http(s) URL replaced by a click link and the open pixel
    /// added; returns the new HTML and the links in index order.
    pub fn rewrite(&self, html: &str, message: Uuid, now: DateTime<Utc>) -> (String, Vec<String>) {
        let mut links: Vec<String> = Vec::new();
        let mut out = String::with_capacity(html.len() + 1024);
        let (click, open) = self.urls(message, now);
        let lower = html.to_ascii_lowercase();
        let mut done = 0;
        while let Some(at) = find_href(&lower, done) {
            out.push_str(&html[done..at.value_start]);
            let value = &html[at.value_start..at.value_end];
            let target = decode_attribute(value);
            if (target.starts_with("https://") || target.starts_with("http://")) && !self.own_link(&target) {
                let index = match links.iter().position(|l| *l == target) {
                    Some(index) => index,
                    None => {
                        links.push(target);
                        links.len() - 1
                    }
                };
                out.push_str(&click);
                out.push('/');
                out.push_str(&index.to_string());
            } else {
                out.push_str(value);
            }
            done = at.value_end;
        }
        out.push_str(&html[done..]);
        // The open pixel is a 1×1 block's background, not an <img>: mail clients that show images
        // load it all the same, and spam filters do not take a short message with one image for an
        // image-only one (SpamAssassin's HTML_IMAGE_ONLY_*: up to 2.8 points).
        let pixel = format!(
            "<div style=\"width:1px;height:1px;font-size:1px;line-height:1px;background-image:url('{open}')\">&#8203;</div>"
        );
        match lower.rfind("</body>") {
            // After the last link the input was copied as it is, so the body's end is as far
            // from the output's end as it was from the input's.
            Some(at) if at >= done => out.insert_str(out.len() - (html.len() - at), &pixel),
            Some(_) => match out.to_ascii_lowercase().rfind("</body>") {
                Some(at) => out.insert_str(at, &pixel),
                None => out.push_str(&pixel),
            },
            None => out.push_str(&pixel),
        }
        // The hidden link, first in the body: no reader sees or reaches it (not shown, not in the
        // accessibility tree, not focusable, left out of the plain text), so whatever follows it
        // is a machine following every link, and the clicks right after it are the same
        // machine's.
        let trap = format!(
            "<a href=\"{click}/{TRAP}\" aria-hidden=\"true\" tabindex=\"-1\" \
             style=\"display:none;font-size:0;line-height:0;max-height:0;overflow:hidden;mso-hide:all\">&#8203;</a>"
        );
        // Before the first link, the input was copied as it is: the body's start is where it was.
        let body_start = match find_href(&lower, 0) {
            Some(first) => lower[..first.value_start].find("<body"),
            None => lower.find("<body"),
        }
        .and_then(|at| lower[at..].find('>').map(|end| at + end + 1));
        out.insert_str(body_start.unwrap_or(0), &trap);
        (out, links)
    }
}

struct Href {
    value_start: usize,
    value_end: usize,
}

/// The next quoted `href` attribute value at or after `from` (`lower` is the ASCII-lowercased
/// HTML, so its byte offsets are the original's).
fn find_href(lower: &str, mut from: usize) -> Option<Href> {
    let bytes = lower.as_bytes();
    while let Some(found) = lower.get(from..)?.find("href") {
        let name = from + found;
        from = name + 4;
        if name == 0 || !bytes[name - 1].is_ascii_whitespace() {
            continue;
        }
        let mut i = from;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let quote = *bytes.get(i)?;
        if quote != b'"' && quote != b'\'' {
            continue;
        }
        let start = i + 1;
        let len = lower.get(start..)?.find(quote as char)?;
        return Some(Href { value_start: start, value_end: start + len });
    }
    None
}

/// An attribute value as the browser reads it (templates escape `&` as `&amp;`).
fn decode_attribute(value: &str) -> String {
    value.replace("&amp;", "&").replace("&#39;", "'").replace("&quot;", "\"").trim().to_owned()
}

/// An email's HTML as stored, with its links rewritten for click tracking when tracked, and the
/// links it tracks (JSON, in index order).
fn tracked(
    html: Option<String>,
    channel: OutboxChannel,
    tracking: Option<&Tracking>,
    id: Uuid,
    now: DateTime<Utc>,
) -> (Option<String>, Option<serde_json::Value>) {
    match (html, tracking, channel) {
        (Some(html), Some(tracking), OutboxChannel::Email) => {
            let (html, links) = tracking.rewrite(&html, id, now);
            (Some(html), Some(json!(links)))
        }
        (html, _, _) => (html, None),
    }
}

/// A dictionary for the bodies of messages like `draft` (see [`outbox_body::Dictionary`]):
/// its HTML as a message would store it, tracked links and all. `None` when it has no HTML.
pub fn dictionary(
    id: Uuid,
    draft: &Draft,
    tracking: Option<&Tracking>,
    now: DateTime<Utc>,
) -> Option<outbox_body::Dictionary> {
    let (html, links) = tracked(draft.html.clone(), draft.channel, tracking, id, now);
    Some(outbox_body::Dictionary { id, html: html?, links, created_at: now })
}

/// A message to queue: a draft for one subscriber under its idempotency key (a second message
/// with the same key is never written), with how its bodies are written.
pub struct NewMessage<'a> {
    id: Uuid,
    key: String,
    subscriber_id: Uuid,
    draft: Draft,
    tracking: Option<&'a Tracking>,
    dictionary: Option<&'a outbox_body::Dictionary>,
}

impl<'a> NewMessage<'a> {
    pub fn new(key: String, subscriber_id: Uuid, draft: Draft) -> Self {
        Self { id: Uuid::now_v7(), key, subscriber_id, draft, tracking: None, dictionary: None }
    }

    /// Its id, as the outbox row will have it.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// With open and click tracking (its links rewritten), when given.
    pub fn tracked(mut self, tracking: Option<&'a Tracking>) -> Self {
        self.tracking = tracking;
        self
    }

    /// With its HTML stored against `dictionary` (a broadcast's shared parts), when given.
    pub fn compressed_with(mut self, dictionary: Option<&'a outbox_body::Dictionary>) -> Self {
        self.dictionary = dictionary;
        self
    }

    /// The outbox rows: the message, queued and due `now`, and its bodies.
    pub fn rows(self, now: DateTime<Utc>) -> (outbox::ActiveModel, outbox_body::ActiveModel) {
        row(self, now)
    }
}

fn row(message: NewMessage<'_>, now: DateTime<Utc>) -> (outbox::ActiveModel, outbox_body::ActiveModel) {
    let NewMessage { id, key, subscriber_id, draft, tracking, dictionary } = message;
    let (html, links) = tracked(draft.html, draft.channel, tracking, id, now);
    let segments = (draft.channel == OutboxChannel::Sms).then(|| sms_segments(&draft.text) as i32);
    let body = outbox_body::Model::new(id, html.as_deref(), draft.text, links, dictionary).into_row();
    let message = outbox::ActiveModel {
        id: Set(id),
        idempotency_key: Set(key),
        subscriber_id: Set(subscriber_id),
        channel: Set(draft.channel),
        recipient: Set(draft.recipient),
        subject: Set(draft.subject),
        status: Set(OutboxStatus::Queued),
        attempts: Set(0),
        last_error: Set(None),
        sent_at: Set(None),
        due_at: Set(now),
        created_at: Set(now),
        updated_at: Set(now),
        list_slug: Set(draft.list_slug),
        segments: Set(segments),
        enrollment_id: Set(None),
        workflow_id: Set(None),
        step_id: Set(None),
        broadcast_id: Set(None),
        provider_ref: Set(None),
        opened_at: Set(None),
        clicked_at: Set(None),
        lease_until: Set(None),
        lease_owner: Set(None),
        fallback_id: Set(None),
    };
    (message, body)
}

/// Writes messages and their bodies (a message whose idempotency key is taken is skipped, with
/// its body); returns the ids written.
pub async fn insert(
    txn: &sea_orm::DatabaseTransaction,
    rows: Vec<(outbox::ActiveModel, outbox_body::ActiveModel)>,
) -> crate::core::error::Result<Vec<Uuid>> {
    write(txn, prepare(sea_orm::ConnectionTrait::get_database_backend(txn), rows)).await
}

/// Messages and their bodies as the statements that insert them, built before the transaction
/// that runs them (see [`write`]), so a big batch holds the write lock only while it is written.
#[derive(Debug)]
pub struct Prepared(Vec<Chunk>);

/// Up to 100 messages: their ids, the INSERT of the messages, and their bodies (as rows too, for
/// when some message was there already and its body must be left out).
#[derive(Debug)]
struct Chunk {
    ids: Vec<Uuid>,
    messages: sea_orm::Statement,
    bodies: sea_orm::Statement,
    body_rows: Vec<outbox_body::ActiveModel>,
}

/// The statements for `rows` on `backend` (CPU work: no database is touched).
pub fn prepare(backend: sea_orm::DbBackend, rows: Vec<(outbox::ActiveModel, outbox_body::ActiveModel)>) -> Prepared {
    use crate::store::bulk::{OnDuplicate, insert_bound_statement};
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(100));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let (messages, body_rows): (Vec<_>, Vec<_>) = rows.by_ref().take(100).unzip();
        let ids: Vec<Uuid> = messages
            .iter()
            .filter_map(|m| match &m.id {
                Set(id) | sea_orm::ActiveValue::Unchanged(id) => Some(*id),
                sea_orm::ActiveValue::NotSet => None,
            })
            .collect();
        let (Some(messages), Some(bodies)) = (
            insert_bound_statement(backend, messages, OnDuplicate::Ignore),
            insert_bound_statement(backend, body_rows.clone(), OnDuplicate::Fail).map(|b| for_written(backend, b)),
        ) else {
            continue;
        };
        chunks.push(Chunk { ids, messages, bodies, body_rows });
    }
    Prepared(chunks)
}

/// On SQLite, the INSERT of bodies made to insert only those whose message is there:
/// `INSERT INTO … SELECT * FROM (VALUES …) WHERE EXISTS (the message)`, so it can run in the same
/// call as the messages' INSERT OR IGNORE (see [`write`]) and still leave out the bodies of
/// messages whose key was taken. Elsewhere (or if the statement is not of the expected form) as
/// it is.
fn for_written(backend: sea_orm::DbBackend, mut bodies: sea_orm::Statement) -> sea_orm::Statement {
    if backend != sea_orm::DbBackend::Sqlite {
        return bodies;
    }
    let Some((head, values)) = bodies.sql.split_once(" VALUES ") else { return bodies };
    let Some(columns) = head.split_once('(').map(|(_, c)| c.trim_end_matches(')')) else { return bodies };
    let Some(position) = columns.split(", ").position(|c| c == "\"outbox_id\"") else { return bodies };
    bodies.sql = format!(
        "{head} SELECT * FROM (VALUES {values}) WHERE EXISTS \
         (SELECT 1 FROM \"outbox\" WHERE \"outbox\".\"id\" = column{})",
        position + 1
    );
    bodies
}

/// Runs prepared inserts in `txn`; returns the ids written (a message whose idempotency key is
/// taken is skipped, with its body).
///
/// On SQLite every statement goes to the database in one call (see `bulk::joined`): the
/// messages' INSERT OR IGNORE, and the bodies of those written (see [`for_written`]). When
/// fewer rows than all were written, the ids kept are read back.
pub async fn write(txn: &sea_orm::DatabaseTransaction, prepared: Prepared) -> crate::core::error::Result<Vec<Uuid>> {
    use sea_orm::ConnectionTrait;

    use crate::store::bulk::{OnDuplicate, execute, insert_bound_statement, joined};
    let backend = txn.get_database_backend();
    if backend == sea_orm::DbBackend::Sqlite {
        let ids: Vec<Uuid> = prepared.0.iter().flat_map(|chunk| chunk.ids.iter().copied()).collect();
        let statements = prepared.0.into_iter().flat_map(|chunk| [chunk.messages, chunk.bodies]).collect();
        let mut changed = 0;
        for statement in joined(backend, statements) {
            changed += execute(txn, statement).await?;
        }
        if changed == 2 * ids.len() as u64 {
            return Ok(ids);
        }
        let mut kept = Vec::with_capacity(ids.len());
        for part in ids.chunks(500) {
            kept.extend(existing(txn, part).await?);
        }
        return Ok(kept);
    }
    let mut written = Vec::new();
    for Chunk { ids, messages, bodies, body_rows } in prepared.0 {
        let inserted = execute(txn, messages).await?;
        if inserted == ids.len() as u64 {
            execute(txn, bodies).await?;
            written.extend(ids);
            continue;
        }
        // Keys already taken (a step or broadcast written before) left no row: no body either.
        let kept = existing(txn, &ids).await?;
        let bodies: Vec<_> =
            body_rows.into_iter().zip(&ids).filter(|(_, id)| kept.contains(id)).map(|(body, _)| body).collect();
        if let Some(statement) = insert_bound_statement(backend, bodies, OnDuplicate::Fail) {
            execute(txn, statement).await?;
        }
        written.extend(kept);
    }
    Ok(written)
}

/// Those of `ids` (a chunk's) whose message is in the outbox, in their order.
async fn existing(txn: &sea_orm::DatabaseTransaction, ids: &[Uuid]) -> crate::core::error::Result<Vec<Uuid>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let found: Vec<Uuid> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Id)
        .filter(outbox::Column::Id.is_in(ids.to_vec()))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(ids.iter().copied().filter(|id| found.contains(id)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracking() -> Tracking {
        Tracking {
            signer: Signer::new("0123456789abcdef0123456789abcdef"),
            base_url: url::Url::parse("https://news.example.com/").unwrap(),
        }
    }

    #[test]
    fn links_are_rewritten_once_each_and_own_links_kept() {
        let t = tracking();
        let id = Uuid::now_v7();
        let now = Utc::now();
        let html = "<html><body><a href=\"https://shop.example/a?x=1&amp;y=2\">A</a> <a class=x HREF='https://shop.example/b'>B</a>\
            <a href=\"https://shop.example/a?x=1&amp;y=2\">A again</a> <a href=\"mailto:hi@example.com\">mail</a>\
            <a href=\"https://news.example.com/u/TOKEN\">unsubscribe</a><p data-href=\"https://no.example\">x</p></body></html>";
        let (out, links) = t.rewrite(html, id, now);
        let (click, open) = t.urls(id, now);
        let click_url = |index: usize| format!("{click}/{index}");
        assert_eq!(links, vec!["https://shop.example/a?x=1&y=2", "https://shop.example/b"]);
        assert_eq!(out.matches(&click_url(0)).count(), 2, "{out}");
        assert_eq!(out.matches(&click_url(1)).count(), 1, "{out}");
        assert!(out.contains("mailto:hi@example.com") && out.contains("https://news.example.com/u/TOKEN"));
        assert!(out.contains("data-href=\"https://no.example\""), "only href attributes: {out}");
        assert!(out.contains(&format!("background-image:url('{open}')")) && out.ends_with("</div></body></html>"));
        assert!(!out.contains("<img"), "no image: {out}");
        let links: Vec<&str> = links.iter().map(String::as_str).collect();
        let clicked = |href: &str| Tracking::clicked_target(&t.base_url, href, &links);
        assert_eq!(clicked(&click_url(1)), Some("https://shop.example/b"));
        assert_eq!(clicked(&click_url(2)), None, "no such link");
        assert_eq!(clicked("https://elsewhere.example/t/c/TOKEN/0"), None, "not this instance's");
        // A link after the body's end: the pixel still goes before it.
        let (odd, _) = t.rewrite("<body>x</body><a href=\"https://shop.example/c\">c</a>", id, now);
        let trap = format!("<a href=\"{click}/h\" aria-hidden=\"true\" tabindex=\"-1\"");
        assert!(odd.starts_with(&format!("<body>{trap}")), "the hidden link first in the body: {odd}");
        assert!(odd.contains("</a>x<div style=") && odd.contains("</div></body><a href="), "{odd}");
        assert_eq!(out.matches(&trap).count(), 1, "{out}");
        let text = crate::core::text::html_to_text(&out);
        assert!(!text.contains("/h"), "no reader sees the hidden link, in the plain text neither: {text}");
    }
}
