//! SMS and WhatsApp webhooks: texts from subscribers, and delivery reports from providers (a
//! WhatsApp message comes from a `whatsapp:` sender; its keywords act on WhatsApp consent).
//!
//! - `POST /webhooks/sms/twilio`: Twilio's inbound-message webhook (form fields `MessageSid`,
//!   `From`, `Body`, …), answered with empty TwiML (replies go through the outbox).
//! - `POST /webhooks/sms/status`: delivery reports; Twilio's status callback (form `MessageSid`,
//!   `MessageStatus`, `ErrorCode`), or a generic provider's JSON `{"id", "status", "error"}`.
//!
//! Twilio requests must carry a valid `X-Twilio-Signature` (HMAC-SHA1 with a configured Twilio
//! auth token over the URL as Twilio called it, `{base_url}webhooks/sms/…`, and the sorted form
//! fields); a generic provider's report must carry its token as a bearer token. Anything else is
//! refused with 403 and changes nothing.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::config::SmsProviderConfig;
use crate::delivery::sms::{StatusReport, record_status, twilio_signature};
use crate::inbound_sms::{Inbound, Replies, receive};
use crate::tokens::same_secret;
use crate::web::AppState;
use crate::web::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/sms/twilio", post(inbound)).route("/webhooks/sms/status", post(status))
}

const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

fn forbidden(detail: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", detail)
}

/// The largest body a provider's webhook may send (Twilio's are a few hundred bytes).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// The configured Twilio auth tokens, SMS's and WhatsApp's (none: the Twilio webhooks are off).
fn twilio_tokens(state: &AppState) -> Vec<&str> {
    state
        .config
        .sms_providers
        .iter()
        .chain(&state.config.whatsapp_providers)
        .filter_map(|p| match p {
            SmsProviderConfig::Twilio { auth_token, .. } => Some(auth_token.as_str()),
            SmsProviderConfig::Http { .. } => None,
        })
        .collect()
}

/// What can be checked of a Twilio request before its body is read: Twilio is configured and
/// the request carries a signature of the right shape (base64 of an HMAC-SHA1, 28 characters).
fn twilio_headers(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if twilio_tokens(state).is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_configured", "no Twilio provider is configured"));
    }
    let given = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let shaped = given.len() == 28 && given.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if shaped { Ok(()) } else { Err(forbidden("an X-Twilio-Signature header is required")) }
}

/// The form fields of a Twilio request, once its signature is checked against every configured
/// Twilio auth token.
fn signed_form(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let tokens = twilio_tokens(state);
    if tokens.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_configured", "no Twilio provider is configured"));
    }
    let given = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let fields: Vec<(String, String)> =
        url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let url = state.config.base_url.join(path).map(|u| u.to_string()).unwrap_or_default();
    if tokens.iter().any(|token| same_secret(&twilio_signature(token, &url, &fields), given)) {
        Ok(fields)
    } else {
        Err(forbidden(
            "the X-Twilio-Signature does not match this request (is the webhook URL {base_url}webhooks/sms/…?)",
        ))
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn inbound(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    twilio_headers(&state, request.headers())?;
    let headers = request.headers().clone();
    let body = crate::web::extract::body_at_most(request, MAX_WEBHOOK_BYTES).await?;
    let fields = signed_form(&state, "webhooks/sms/twilio", &headers, &body)?;
    let (Some(id), Some(from)) = (field(&fields, "MessageSid"), field(&fields, "From")) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "MessageSid and From are required",
        ));
    };
    // Twilio writes a WhatsApp sender as `whatsapp:+14155552671`.
    let (channel, from) = match from.strip_prefix("whatsapp:") {
        Some(number) => (crate::core::values::Channel::Whatsapp, number),
        None => (crate::core::values::Channel::Sms, from),
    };
    let message = Inbound {
        id: id.to_owned(),
        from: from.to_owned(),
        body: field(&fields, "Body").unwrap_or_default().to_owned(),
        channel,
    };
    let translations = state.catalog.templates().translations();
    let replies = Replies { help: &state.config.sms_help_text, translations: &translations };
    let received = receive(&state.db, state.clock.now(), &message, &replies).await?;
    tracing::info!(subscriber = ?received.subscriber, keyword = ?received.keyword, %channel, "inbound message");
    Ok(([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response())
}

#[derive(Deserialize)]
struct GenericStatus {
    id: String,
    status: String,
    error: Option<String>,
}

async fn status(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Who is calling is checked from the headers, before the body is read.
    if json {
        let bearer = crate::web::auth::bearer(&headers).unwrap_or_default();
        let known = state.config.sms_providers.iter().chain(&state.config.whatsapp_providers).any(|p| match p {
            SmsProviderConfig::Http { token: Some(token), .. } => same_secret(token, bearer),
            _ => false,
        });
        if !known {
            return Err(forbidden("send the provider's token as 'Authorization: Bearer TOKEN'"));
        }
    } else {
        twilio_headers(&state, &headers)?;
    }
    let body = crate::web::extract::body_at_most(request, MAX_WEBHOOK_BYTES).await?;
    let report = if json {
        let report: GenericStatus = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("expected {{\"id\", \"status\"}}: {e}"),
            )
        })?;
        StatusReport { provider_ref: report.id, status: report.status, error_code: None, error: report.error }
    } else {
        let fields = signed_form(&state, "webhooks/sms/status", &headers, &body)?;
        let (Some(id), Some(status)) = (field(&fields, "MessageSid"), field(&fields, "MessageStatus")) else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "MessageSid and MessageStatus are required",
            ));
        };
        StatusReport {
            provider_ref: id.to_owned(),
            status: status.to_owned(),
            error_code: field(&fields, "ErrorCode").and_then(|c| c.parse().ok()),
            error: None,
        }
    };
    // An unknown message is acknowledged too: the provider has nothing to retry.
    record_status(&state.db, state.clock.now(), &report).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
