//! Reading the CSV: the header's columns, each row parsed and checked on its own.

use super::*;
use crate::audience::subscribers::{Attribution, Checker, Profile};
use crate::core::error::{Error, Result};
use crate::core::values::{MembershipStatus, validate_attribute_key, validate_slug};
use chrono::{DateTime, Utc};
use csv_async::ByteRecord;
use serde_json::{Map, Value};
use tokio::io::AsyncRead;
use uuid::Uuid;

impl Known {
    pub(super) fn from_header(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "id" => Self::Id,
            "email" => Self::Email,
            "phone" => Self::Phone,
            "first_name" => Self::FirstName,
            "last_name" => Self::LastName,
            "timezone" => Self::Timezone,
            "locale" => Self::Locale,
            "status" => Self::Status,
            "email_state" => Self::EmailState,
            "sms_state" => Self::SmsState,
            "whatsapp_state" => Self::WhatsappState,
            "lists" => Self::Lists,
            "tags" => Self::Tags,
            "attributes" => Self::Attributes,
            "source" => Self::Source,
            "medium" => Self::Medium,
            "campaign" => Self::Campaign,
            "referrer" => Self::Referrer,
            "landing_page" => Self::LandingPage,
            "content" | "utm_content" => Self::Content,
            "term" | "utm_term" => Self::Term,
            "click_id" => Self::ClickId,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            _ => return None,
        })
    }
}

pub(super) fn read_header(record: &ByteRecord) -> Result<Header> {
    let malformed = |detail: String| Error::Malformed { code: "invalid_csv_header", detail };
    let mut columns = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw) in record.iter().enumerate() {
        let raw = if index == 0 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        let name = std::str::from_utf8(raw)
            .map_err(|_| malformed(format!("header column {} is not UTF-8 text", index + 1)))?
            .trim()
            .to_owned();
        if name.is_empty() {
            return Err(malformed(format!("header column {} has no name", index + 1)));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(malformed(format!("column '{name}' appears twice in the header")));
        }
        let kind = match Known::from_header(&name) {
            Some(known) => ColumnKind::Known(known),
            None => {
                validate_attribute_key(&name).map_err(|reason| malformed(reason.into()))?;
                ColumnKind::Attribute(name.clone())
            }
        };
        columns.push((name, kind));
    }
    let has_address = columns.iter().any(|(_, k)| matches!(k, ColumnKind::Known(Known::Email | Known::Phone)));
    if !has_address {
        return Err(malformed("the CSV needs an 'email' or a 'phone' column".into()));
    }
    Ok(Header { columns })
}

pub(super) fn parse_row(
    header: &Header,
    record: &ByteRecord,
    line: u64,
) -> std::result::Result<Row, Vec<(String, String)>> {
    let mut c = Checker::default();
    let mut cells: HashMap<Known, &str> = HashMap::new();
    let mut attribute_cells = Map::new();
    for ((name, kind), raw) in header.columns.iter().zip(record.iter()) {
        let Ok(text) = std::str::from_utf8(raw) else {
            c.errors.push(crate::core::error::FieldError::new(name.clone(), "is not UTF-8 text"));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match kind {
            ColumnKind::Known(known) => {
                cells.insert(*known, text);
            }
            ColumnKind::Attribute(key) => {
                attribute_cells.insert(key.clone(), Value::String(text.trim().to_owned()));
            }
        }
    }
    let cell = |k: Known| cells.get(&k).copied();
    let email = c.email("email", cell(Known::Email));
    let phone = c.phone("phone", cell(Known::Phone));
    if cell(Known::Email).is_none() && cell(Known::Phone).is_none() {
        c.errors.push(crate::core::error::FieldError::new("email", "an email or a phone is required"));
    }
    let mut attributes = match cell(Known::Attributes) {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                c.errors.push(crate::core::error::FieldError::new("attributes", "must be a JSON object"));
                Map::new()
            }
        },
    };
    attributes.extend(attribute_cells);
    c.attributes("attributes", &attributes);
    let profile = Profile {
        email,
        phone,
        first_name: c.text("first_name", cell(Known::FirstName), 200),
        last_name: c.text("last_name", cell(Known::LastName), 200),
        timezone: c.timezone("timezone", cell(Known::Timezone)),
        locale: c.locale("locale", cell(Known::Locale)),
        attributes,
        attribution: c.attribution(&Attribution {
            source: cell(Known::Source).map(str::to_owned),
            medium: cell(Known::Medium).map(str::to_owned),
            campaign: cell(Known::Campaign).map(str::to_owned),
            referrer: cell(Known::Referrer).map(str::to_owned),
            landing_page: cell(Known::LandingPage).map(str::to_owned),
            content: cell(Known::Content).map(str::to_owned),
            term: cell(Known::Term).map(str::to_owned),
            click_id: cell(Known::ClickId).map(str::to_owned),
        }),
    };
    let id = cell(Known::Id)
        .and_then(|t| c.check("id", Uuid::parse_str(t.trim()).map_err(|_| format!("'{t}' is not a UUID"))));
    let status = cell(Known::Status).and_then(|t| c.check("status", t.parse()));
    let email_state = cell(Known::EmailState).and_then(|t| c.check("email_state", t.parse()));
    let sms_state = cell(Known::SmsState).and_then(|t| c.check("sms_state", t.parse()));
    let whatsapp_state = cell(Known::WhatsappState).and_then(|t| c.check("whatsapp_state", t.parse()));
    let created_at = cell(Known::CreatedAt).and_then(|t| {
        c.check(
            "created_at",
            DateTime::parse_from_rfc3339(t.trim())
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| format!("'{t}' is not an RFC 3339 time such as 2026-01-31T09:00:00Z")),
        )
    });
    let tags: Vec<String> = cell(Known::Tags)
        .map(|t| t.split([';', ',']).filter(|s| !s.trim().is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let tags = c.tags("tags", &tags);
    let mut lists = Vec::new();
    for entry in cell(Known::Lists).into_iter().flat_map(|t| t.split(';')).map(str::trim).filter(|e| !e.is_empty()) {
        let (slug, status) = entry.split_once(':').unwrap_or((entry, "confirmed"));
        let slug = slug.trim();
        let status = c.check("lists", status.parse::<MembershipStatus>());
        if c.check("lists", validate_slug(slug)).is_some()
            && let Some(status) = status
        {
            lists.push((slug.to_owned(), status));
        }
    }
    if !c.errors.is_empty() {
        return Err(c.errors.into_iter().map(|e| (e.field, e.message)).collect());
    }
    Ok(Row { line, id, profile, status, email_state, sms_state, whatsapp_state, lists, tags, created_at })
}

/// Reads, parses and validates rows, sending valid ones on in batches.
pub(super) async fn read_rows<R>(
    reader: &mut csv_async::AsyncReader<R>,
    record: &mut ByteRecord,
    header: &Header,
    rejected: &mut ImportReport,
    batches: &tokio::sync::mpsc::Sender<Vec<Row>>,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send,
{
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match reader.read_byte_record(record).await {
            Ok(true) => {
                let line = record.position().map_or(0, csv_async::Position::line);
                if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    continue;
                }
                match parse_row(header, record, line) {
                    Ok(row) => batch.push(row),
                    Err(problems) => {
                        rejected.skipped += 1;
                        for (column, message) in problems {
                            rejected.reject(line, Some(column), message);
                        }
                    }
                }
                if batch.len() >= BATCH && batches.send(std::mem::take(&mut batch)).await.is_err() {
                    // The writer stopped on an error; it is reported from there.
                    return Ok(());
                }
            }
            Ok(false) => break,
            Err(e) => match e.kind() {
                csv_async::ErrorKind::Io(_) => return Err(csv_failure(&e)),
                _ => {
                    let line = e.position().map_or(0, csv_async::Position::line);
                    rejected.skipped += 1;
                    rejected.reject(line, None, csv_row_message(&e));
                }
            },
        }
    }
    if !batch.is_empty() {
        let _ = batches.send(batch).await;
    }
    Ok(())
}

pub(super) fn csv_failure(e: &csv_async::Error) -> Error {
    match e.kind() {
        csv_async::ErrorKind::Io(io) => {
            Error::Malformed { code: "import_read_failed", detail: format!("reading the CSV failed: {io}") }
        }
        _ => Error::Malformed { code: "invalid_csv", detail: csv_row_message(e) },
    }
}

pub(super) fn csv_row_message(e: &csv_async::Error) -> String {
    match e.kind() {
        csv_async::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields where the header has {expected_len}")
        }
        csv_async::ErrorKind::Utf8 { .. } => "is not UTF-8 text".into(),
        _ => format!("cannot be read as CSV: {e}"),
    }
}
