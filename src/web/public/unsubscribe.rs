//! `/u/{token}`: the unsubscribe link in every email, and its `List-Unsubscribe` header.
//!
//! GET shows a page (`pages/unsubscribe.html`) and changes nothing (mail scanners follow links).
//! List mail's link carries its list (`?list=SLUG`): the page offers leaving that list first and
//! all email second. POST does what was chosen, whether from the page's buttons (`scope=list` or
//! `scope=all`) or from a mail client's one-click request (RFC 8058: body
//! `List-Unsubscribe=One-Click`), which leaves the message's list, or all email for mail of no
//! list. A second POST changes nothing and says so.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::face::{Face, Kind, context_of};
use crate::audience::records::ConsentOrigin;
use crate::audience::subscribers::withdraw_email;
use crate::core::links::{LinkError, Purpose};
use crate::core::values::{ChannelState, ConsentMethod};
use crate::pages::preferences::{Unsubscribing, leave_list, unsubscribing};
use crate::web::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/u/{token}", get(page).post(unsubscribe))
}

/// How long the preference link offered beside an unsubscribe works.
const PREFERENCES_LINK_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
struct Scope {
    /// The list the message came from (list mail's link names it).
    list: Option<String>,
}

/// The page for a link that does not verify: 410 once expired, 404 when damaged or forged.
pub(super) fn bad_link(face: &Face, lang: &str, error: LinkError) -> Response {
    match error {
        LinkError::Expired => face.expired(lang, None),
        LinkError::Invalid => face.not_found(lang, "link"),
    }
}

/// The context of the unsubscribe pages: the list (when the link names one the person is on or
/// was), and a preference link.
fn context(person: &Unsubscribing, preferences_url: &str, extra: serde_json::Value) -> tera::Context {
    let list = person.list.as_ref().map(|l| json!({"slug": l.slug, "name": l.name, "on": l.on}));
    let mut value = json!({"list": list, "preferences_url": preferences_url});
    if let (Some(map), serde_json::Value::Object(more)) = (value.as_object_mut(), extra) {
        map.extend(more);
    }
    context_of(value)
}

/// The subscriber behind a link (its id, what the pages show of them, and their language), or the
/// page that says why there is none.
async fn person_behind(
    state: &AppState,
    face: &Face,
    token: &str,
    scope: &Scope,
    headers: &HeaderMap,
) -> Result<(uuid::Uuid, Unsubscribing, String), Response> {
    let browser = || face.language(&[], headers);
    let verified = state.signer.verify(Purpose::Unsubscribe, token, state.clock.now());
    let id = verified.map_err(|e| bad_link(face, &browser(), e))?;
    match unsubscribing(&state.db, id, scope.list.as_deref()).await {
        Ok(Some(person)) => {
            let lang = face.language(&[person.locale.as_deref()], headers);
            Ok((id, person, lang))
        }
        Ok(None) => Err(bad_link(face, &browser(), LinkError::Invalid)),
        Err(e) => {
            tracing::error!(error = %e, "the unsubscribe page failed");
            Err(face.try_again(&browser()))
        }
    }
}

/// A preference link for the subscriber, offered beside the unsubscribe.
fn preferences_url(state: &AppState, id: uuid::Uuid) -> String {
    let expires = state.clock.now() + chrono::Duration::days(PREFERENCES_LINK_DAYS);
    state.signer.url(&state.config.base_url, "preferences", Purpose::Preferences, id, expires)
}

async fn page(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(token): Path<String>,
    Query(scope): Query<Scope>,
    headers: HeaderMap,
) -> Response {
    let (id, person, lang) = match person_behind(&state, &face, &token, &scope, &headers).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let context = context(&person, &preferences_url(&state, id), json!({}));
    face.page(&lang, "unsubscribe", context, StatusCode::OK, Kind::Personal)
}

async fn unsubscribe(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(token): Path<String>,
    Query(scope): Query<Scope>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (id, person, lang) = match person_behind(&state, &face, &token, &scope, &headers).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (db, now) = (&state.db, state.clock.now());
    let one_click = body.split('&').any(|pair| pair == "List-Unsubscribe=One-Click");
    let asked_all = url::form_urlencoded::parse(body.as_bytes()).any(|(k, v)| k == "scope" && v == "all");
    let how = if one_click { "one-click (mail client)" } else { "unsubscribe page" };
    // The list the link names, when the person is on it and did not ask to leave everything.
    let list = person.list.as_ref().filter(|_| !asked_all);
    let changed = match list {
        Some(list) => leave_list(db, now, id, &list.slug, how).await,
        None => {
            let origin = ConsentOrigin {
                method: ConsentMethod::UnsubscribeLink,
                source: Some(how.to_owned()),
                ip: None,
                user_agent: headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(500).collect()),
            };
            withdraw_email(db, now, id, &origin, ChannelState::Unsubscribed).await
        }
    };
    match changed {
        Ok(changed) => {
            let shown = Unsubscribing { locale: None, list: list.cloned() };
            let context = context(&shown, &preferences_url(&state, id), json!({"already": !changed}));
            face.page(&lang, "unsubscribed", context, StatusCode::OK, Kind::Personal)
        }
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe failed");
            face.try_again(&lang)
        }
    }
}
