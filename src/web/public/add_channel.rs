//! `/add/{token}`: the page every message may link (`{{ add_channel_url }}`, signed with the
//! subscriber's id) that asks for a second channel: a mobile number (text messages, WhatsApp)
//! from someone reached by email only, an email address from someone reached by phone only. GET
//! shows the form; POST records the request and sends the usual confirmation (reply YES, or the
//! emailed link); the channel is used once it is confirmed.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::face::{Face, Kind, context_of};
use super::unsubscribe::bad_link;
use crate::core::links::{LinkError, Purpose};
use crate::core::values::Channel;
use crate::pages::add_channel::{self, Ask, Refused, Request};
use crate::store::entities::subscriber;
use crate::web::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/add/{token}", get(page).post(save))
}

/// The largest form accepted (an address, a few boxes).
const MAX_FORM_BYTES: usize = 4 * 1024;

/// The form for `ask`, with what was typed and ticked, and the problem with it if any.
fn render(face: &Face, lang: &str, ask: Option<Ask>, typed: &str, error: Option<&str>, done: bool) -> Response {
    let channels: Vec<&str> = match ask {
        Some(Ask::Phone) => vec!["sms", "whatsapp"],
        Some(Ask::Email) => vec!["email"],
        None => vec![],
    };
    let context = context_of(json!({
        "ask": match ask { Some(Ask::Phone) => "phone", Some(Ask::Email) => "email", None => "" },
        "channels": channels,
        "typed": typed,
        "error": error,
        "done": done,
        "consent_text": face.word(lang, "add_channel_consent"),
    }));
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    face.page(lang, "add-channel", context, status, Kind::Personal)
}

async fn person(state: &AppState, token: &str) -> Result<subscriber::Model, LinkError> {
    use sea_orm::EntityTrait;
    let id = state.signer.verify(Purpose::AddChannel, token, state.clock.now())?;
    match subscriber::Entity::find_by_id(id).one(state.db.conn()).await {
        Ok(Some(person)) => Ok(person),
        Ok(None) | Err(_) => Err(LinkError::Invalid),
    }
}

async fn page(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let browser = face.language(&[], &headers);
    match person(&state, &token).await {
        Ok(person) => {
            let lang = face.language(&[person.locale.as_deref()], &headers);
            render(&face, &lang, add_channel::ask(&person), "", None, false)
        }
        Err(e) => bad_link(&face, &browser, e),
    }
}

async fn save(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(token): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let browser = face.language(&[], &headers);
    // The link is checked before the body is read.
    let person = match person(&state, &token).await {
        Ok(person) => person,
        Err(e) => return bad_link(&face, &browser, e),
    };
    let lang = face.language(&[person.locale.as_deref()], &headers);
    let Ok(body) = crate::web::extract::body_at_most(request, MAX_FORM_BYTES).await else {
        return face.notice(&lang, StatusCode::PAYLOAD_TOO_LARGE, "nothing_changed_title", "nothing_changed_text");
    };
    let ask = add_channel::ask(&person);
    let mut input =
        Request { lang: lang.clone(), consent_text: face.word(&lang, "add_channel_consent"), ..Request::default() };
    let mut channels = BTreeSet::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "address" => input.address = value.chars().take(254).collect(),
            "channel" => {
                if let Ok(channel) = value.parse::<Channel>() {
                    channels.insert(channel);
                }
            }
            _ => {}
        }
    }
    input.channels = channels;
    let settings = super::pages::settings(&state);
    let templates = state.catalog.templates();
    match add_channel::request(&state.db, &settings, &templates, person.id, &input, state.clock.now()).await {
        Ok(Ok(_)) => render(&face, &lang, ask, "", None, true),
        Ok(Err(Refused::NoChannel)) => {
            render(&face, &lang, ask, &input.address, Some(&face.word(&lang, "add_channel_tick")), false)
        }
        Ok(Err(Refused::Address(_))) => {
            let word = if ask == Some(Ask::Email) { "add_channel_bad_email" } else { "add_channel_bad_phone" };
            render(&face, &lang, ask, &input.address, Some(&face.word(&lang, word)), false)
        }
        Err(e) => {
            tracing::error!(error = %e, "a channel request could not be stored");
            face.try_again(&lang)
        }
    }
}
