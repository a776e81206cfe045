//! `/u/{token}`: the unsubscribe link in every email, and its `List-Unsubscribe` header.
//!
//! GET shows a page with one button and changes nothing (mail scanners follow links); POST
//! withdraws email consent, whether from that button or from a mail client's one-click request
//! (RFC 8058: body `List-Unsubscribe=One-Click`). A second POST changes nothing and says so.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::audience::records::ConsentOrigin;
use crate::audience::subscribers::withdraw_email;
use crate::core::links::{LinkError, Purpose, Signer};
use crate::core::values::{ChannelState, ConsentMethod};
use crate::web::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/u/{token}", get(page).post(unsubscribe))
}

fn signer(state: &AppState) -> Signer {
    Signer::new(state.config.secret.as_deref().unwrap_or_default())
}

/// A small self-contained page: no scripts, no third-party anything.
pub(super) fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:10vh auto;padding:0 1rem;color:#1a1a1a}}\
         button{{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:.4rem;background:#1a56db;color:#fff;cursor:pointer}}\
         button:focus{{outline:3px solid #93b4f5}}</style></head><body><h1>{title}</h1>{body}</body></html>"
    );
    // Never framed (their buttons change consent: no clickjacking), never indexed.
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        (header::HeaderName::from_static("x-robots-tag"), "noindex"),
    ];
    (status, headers, Html(page)).into_response()
}

/// Text made safe to place in HTML.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The page for a link that does not verify: 410 once expired, 404 when damaged or forged.
pub(super) fn bad_link(error: LinkError) -> Response {
    match error {
        LinkError::Expired => html(
            StatusCode::GONE,
            "This link has expired",
            "<p>Use the link in a more recent message, or reply to it and ask.</p>",
        ),
        LinkError::Invalid => html(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "<p>Check that the whole link was copied from the message.</p>",
        ),
    }
}

async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if let Err(e) = signer(&state).verify(Purpose::Unsubscribe, &token, state.clock.now()) {
        return bad_link(e);
    }
    html(
        StatusCode::OK,
        "Unsubscribe",
        "<p>Stop receiving these emails?</p><form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
    )
}

async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let now = state.clock.now();
    let id = match signer(&state).verify(Purpose::Unsubscribe, &token, now) {
        Ok(id) => id,
        Err(e) => return bad_link(e),
    };
    let one_click = body.split('&').any(|pair| pair == "List-Unsubscribe=One-Click");
    let origin = ConsentOrigin {
        method: ConsentMethod::UnsubscribeLink,
        source: Some(if one_click { "one-click (mail client)" } else { "unsubscribe page" }.to_owned()),
        ip: None,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(500).collect()),
    };
    match withdraw_email(&state.db, now, id, &origin, ChannelState::Unsubscribed).await {
        Ok(true) => html(StatusCode::OK, "You are unsubscribed", "<p>You will not get these emails any more.</p>"),
        Ok(false) => html(StatusCode::OK, "You are already unsubscribed", "<p>Nothing more to do.</p>"),
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe failed");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record this just now; nothing was changed. Please try again in a minute.</p>",
            )
        }
    }
}
