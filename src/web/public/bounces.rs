//! `POST /webhooks/bounces`: bounces and complaints reported by a mail provider or a bounce
//! processor, as generic JSON, authenticated by a shared secret (`bounce_secret`, sent as
//! `Authorization: Bearer SECRET`; compared in constant time). Beside it, each common provider's
//! own format, each authenticated its own way: `/ses` (SNS, signed with a certificate), `/sendgrid`
//! (ECDSA), `/postmark` (basic authentication with `bounce_secret`), `/mailgun` (HMAC). A provider's
//! signature covers its body, so those bodies are read (bounded) before they are authenticated.
//!
//! Body: one report or an array of up to 1,000: `{"address": "ada@example.com", "type": "hard" |
//! "soft" | "complaint", "reason": "…"}`. A hard bounce marks the address bounced; a complaint
//! withdraws email consent at once (state `complained`); a soft bounce is noted in the timeline
//! only. Every report is checked before any is applied, and a batch is applied in one
//! transaction (all of it or, on an error, none); applying one twice changes nothing more.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audience::bounces::{self, providers, signatures};
use crate::web::AppState;
use crate::web::error::{ApiError, ApiResult};

const MAX_REPORTS: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/bounces", post(bounces))
        .route("/webhooks/bounces/ses", post(ses))
        .route("/webhooks/bounces/sendgrid", post(sendgrid))
        .route("/webhooks/bounces/postmark", post(postmark))
        .route("/webhooks/bounces/mailgun", post(mailgun))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Hard,
    Soft,
    Complaint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    address: String,
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reports {
    Many(Vec<Report>),
    One(Report),
}

fn off(setting: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_configured",
        format!("this bounce webhook is off: set OWNLIST_{} to turn it on", setting.to_uppercase()),
    )
}

fn authorised(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(secret) = state.config.bounce_secret.as_deref() else { return Err(off("bounce_secret")) };
    let presented =
        crate::web::auth::bearer(headers).map(str::to_owned).or_else(|| basic_password(headers)).unwrap_or_default();
    if crate::tokens::same_secret(&presented, secret) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// The password of `Authorization: Basic …` (Postmark sends the credentials of the webhook URL so).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let encoded = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

fn forbidden(detail: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", detail.to_owned())
}

fn unreadable(detail: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail)
}

/// Applies reports: the answer names how many were applied and how many named no subscriber.
async fn apply(state: &AppState, reports: Vec<bounces::Report>) -> ApiResult<Json<Value>> {
    if reports.len() > MAX_REPORTS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_reports",
            format!("at most {MAX_REPORTS} reports per request"),
        ));
    }
    match bounces::apply(&state.db, state.clock.now(), reports).await? {
        Ok(done) => Ok(Json(json!({"applied": done.applied, "unknown_addresses": done.unknown}))),
        Err((i, problem)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_address", problem)
            .with_field(format!("[{i}].address"))),
    }
}

/// The largest batch of reports read (1,000 reports of a few hundred bytes each).
const MAX_BODY_BYTES: usize = 1024 * 1024;

async fn bounces(State(state): State<AppState>, request: Request) -> ApiResult<Json<Value>> {
    // The secret is checked from the headers before a byte of the body is read.
    authorised(&state, request.headers())?;
    let body = crate::web::extract::body_at_most(request, MAX_BODY_BYTES).await?;
    let reports = match serde_json::from_slice::<Reports>(&body) {
        Ok(Reports::Many(reports)) => reports,
        Ok(Reports::One(report)) => vec![report],
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "expected {\"address\", \"type\": \"hard\" | \"soft\" | \"complaint\", \"reason\"?} or an array of them",
            ));
        }
    };
    let reports = reports
        .into_iter()
        .map(|r| bounces::Report {
            address: r.address,
            kind: match r.kind {
                Kind::Hard => bounces::Kind::Hard,
                Kind::Soft => bounces::Kind::Soft,
                Kind::Complaint => bounces::Kind::Complaint,
            },
            reason: r.reason.unwrap_or_default(),
        })
        .collect();
    apply(&state, reports).await
}

/// The largest provider notification read.
const MAX_PROVIDER_BYTES: usize = 256 * 1024;

/// Amazon SES through SNS: the topic must be one of `ses_topic_arns`, the certificate an SNS
/// host's, the signature good. A subscription confirmation is confirmed.
async fn ses(State(state): State<AppState>, request: Request) -> ApiResult<Json<Value>> {
    if state.config.ses_topic_arns.is_empty() {
        return Err(off("ses_topic_arns"));
    }
    let body = crate::web::extract::body_at_most(request, MAX_PROVIDER_BYTES).await?;
    let message: signatures::SnsMessage =
        serde_json::from_slice(&body).map_err(|e| unreadable(format!("expected an SNS message: {e}")))?;
    if !state.config.ses_topic_arns.contains(&message.topic_arn) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_topic",
            "that SNS topic is not one of ses_topic_arns",
        ));
    }
    if !signatures::sns_host(&message.signing_cert_url) {
        return Err(forbidden("the signing certificate is not on an SNS host"));
    }
    let certificate = sns_certificate(&state, &message.signing_cert_url).await?;
    message.verify(&certificate).map_err(|problem| forbidden(&problem))?;
    match message.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = message.subscribe_url.clone().unwrap_or_default();
            if !signatures::sns_host(&url) {
                return Err(forbidden("the subscription URL is not on an SNS host"));
            }
            let confirmed = client().get(&url).send().await.is_ok_and(|r| r.status().is_success());
            tracing::info!(topic = %message.topic_arn, confirmed, "SES: SNS subscription confirmation");
            Ok(Json(json!({"confirmed": confirmed})))
        }
        "Notification" => apply(&state, providers::ses(&message.message).map_err(unreadable)?).await,
        _ => Ok(Json(json!({"applied": 0, "unknown_addresses": 0}))),
    }
}

fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| crate::delivery::webhook::guarded_client(std::sync::Arc::new(Vec::new()))).clone()
}

/// An SNS signing certificate: from `ses_certificates_dir` when set, else fetched (once per URL).
async fn sns_certificate(state: &AppState, url: &str) -> ApiResult<String> {
    static FETCHED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let name = url.rsplit('/').next().unwrap_or_default();
    if let Some(dir) = &state.config.ses_certificates_dir {
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let text = plain.then(|| std::fs::read_to_string(dir.join(name)).ok()).flatten();
        return text.ok_or_else(|| forbidden("the signing certificate is not among ses_certificates_dir's"));
    }
    if let Some((_, pem)) = FETCHED.lock().ok().and_then(|f| f.iter().find(|(u, _)| u == url).cloned()) {
        return Ok(pem);
    }
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "certificate_unavailable",
            "cannot fetch the SNS signing certificate; SNS will retry",
        )
    };
    let answer = client().get(url).send().await.map_err(|_| unavailable())?;
    if !answer.status().is_success() || answer.content_length().is_some_and(|n| n > 64 * 1024) {
        return Err(unavailable());
    }
    let pem = answer.text().await.map_err(|_| unavailable())?;
    if pem.len() > 64 * 1024 {
        return Err(unavailable());
    }
    if let Ok(mut fetched) = FETCHED.lock() {
        fetched.truncate(15);
        fetched.push((url.to_owned(), pem.clone()));
    }
    Ok(pem)
}

/// SendGrid's signature and timestamp headers.
fn signed_by_sendgrid(headers: &HeaderMap) -> Option<(String, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Some((header("x-twilio-email-event-webhook-signature")?, header("x-twilio-email-event-webhook-timestamp")?))
}

/// SendGrid's signed event webhook.
async fn sendgrid(State(state): State<AppState>, request: Request) -> ApiResult<Json<Value>> {
    let Some(key) = state.config.sendgrid_webhook_key.clone() else { return Err(off("sendgrid_webhook_key")) };
    let signed = signed_by_sendgrid(request.headers());
    let Some((signature, timestamp)) = signed else {
        return Err(forbidden("the signature headers are missing"));
    };
    let body = crate::web::extract::body_at_most(request, MAX_BODY_BYTES).await?;
    if !signatures::sendgrid(&key, &timestamp, &body, &signature) {
        return Err(forbidden("the signature does not match"));
    }
    apply(&state, providers::sendgrid(&body).map_err(unreadable)?).await
}

/// Postmark's bounce and spam complaint webhooks (basic authentication with `bounce_secret`).
async fn postmark(State(state): State<AppState>, request: Request) -> ApiResult<Json<Value>> {
    authorised(&state, request.headers())?;
    let body = crate::web::extract::body_at_most(request, MAX_PROVIDER_BYTES).await?;
    apply(&state, providers::postmark(&body).map_err(unreadable)?).await
}

/// How far a Mailgun signature's timestamp may be from now.
const MAILGUN_WINDOW_SECONDS: i64 = 15 * 60;

/// Mailgun's webhooks: the signature in the body, over its timestamp (fresh) and token.
async fn mailgun(State(state): State<AppState>, request: Request) -> ApiResult<Json<Value>> {
    let Some(key) = state.config.mailgun_signing_key.clone() else { return Err(off("mailgun_signing_key")) };
    let body = crate::web::extract::body_at_most(request, MAX_PROVIDER_BYTES).await?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| unreadable(format!("expected Mailgun's JSON: {e}")))?;
    let signed = &value["signature"];
    let field = |name: &str| signed[name].as_str().map(str::to_owned).unwrap_or_else(|| signed[name].to_string());
    let (timestamp, token, signature) = (field("timestamp"), field("token"), field("signature"));
    if !signatures::mailgun(&key, &timestamp, &token, &signature) {
        return Err(forbidden("the signature does not match"));
    }
    let fresh =
        timestamp.parse::<i64>().is_ok_and(|t| (state.clock.now().timestamp() - t).abs() <= MAILGUN_WINDOW_SECONDS);
    if !fresh {
        return Err(forbidden("the signature is too old"));
    }
    apply(&state, providers::mailgun(&value).map_err(unreadable)?).await
}
