//! `/t/o/{token}` (the open pixel) and `/t/c/{token}/{index}` (a tracked link).
//!
//! The token is signed and names one message; the index picks one of the links recorded for
//! that message when it was written, so a click link can lead nowhere else (no open redirect).
//! Index `h` is the message's hidden link, which no reader sees: it leads to the site's front
//! page, and whatever follows it is a machine. Each request is judged person or machine on its
//! method, user agent, address and timing (see [`crate::audience::machines`]).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::audience::engagement::{Click, Link, record_click, record_open};
use crate::audience::machines::Fetch;
use crate::core::links::{Purpose, Signer};
use crate::outbox::compose::TRAP;
use crate::web::AppState;
use crate::web::extract::ClientAddress;

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

pub fn routes() -> Router<AppState> {
    Router::new().route("/t/o/{token}", get(open)).route("/t/c/{token}/{index}", get(click))
}

fn signer(state: &AppState) -> Signer {
    Signer::new(state.config.secret.as_deref().unwrap_or_default())
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "This link is not valid.\n").into_response()
}

/// What a request shows of who made it.
fn fetch(method: &Method, headers: &HeaderMap, address: ClientAddress) -> Fetch {
    Fetch {
        head: method == Method::HEAD,
        user_agent: headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(512).collect()),
        ip: address.0,
        ..Fetch::default()
    }
}

/// Always the pixel (a mail client shows nothing either way); the open is recorded when the
/// token is good. A failure to record is logged, never shown.
async fn open(
    State(state): State<AppState>,
    method: Method,
    address: ClientAddress,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let now = state.clock.now();
    let machines = state.catalog.templates().machines();
    if let Ok(id) = signer(&state).verify(Purpose::Track, &token, now)
        && let Err(e) = record_open(&state.db, id, fetch(&method, &headers, address), &machines, now).await
    {
        tracing::error!(error = %e, "could not record an open");
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store, private")], PIXEL)
        .into_response()
}

async fn click(
    State(state): State<AppState>,
    method: Method,
    address: ClientAddress,
    headers: HeaderMap,
    Path((token, index)): Path<(String, String)>,
) -> Response {
    let now = state.clock.now();
    let link = if index == TRAP { Some(Link::Trap) } else { index.parse::<usize>().ok().map(Link::At) };
    let (Ok(id), Some(link)) = (signer(&state).verify(Purpose::Track, &token, now), link) else {
        return not_found();
    };
    let machines = state.catalog.templates().machines();
    match record_click(&state.db, id, link, fetch(&method, &headers, address), &machines, now).await {
        Ok(Click::To(url)) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, url),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (header::REFERRER_POLICY, "no-referrer".to_owned()),
            ],
        )
            .into_response(),
        Ok(Click::Trap) => (
            StatusCode::FOUND,
            [(header::LOCATION, state.config.base_url.to_string()), (header::CACHE_CONTROL, "no-store".to_owned())],
        )
            .into_response(),
        Ok(Click::Unknown) => not_found(),
        Err(e) => {
            tracing::error!(error = %e, "could not record a click");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], "Please try again in a moment.\n")
                .into_response()
        }
    }
}
