//! `/preferences/{token}`: the preference page linked from every message (signed with the
//! subscriber's id). GET shows the lists and channels with a box each; POST saves them, or
//! withdraws everything at once. Addresses are shown masked: links get forwarded.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use serde_json::{Value, json};

use super::face::{Face, Kind, context_of};
use super::unsubscribe::bad_link;
use crate::audience::records::ConsentOrigin;
use crate::core::clock::SharedClock;
use crate::core::links::Signer;
use crate::core::links::{LinkError, Purpose};
use crate::core::values::{Channel, ConsentMethod};
use crate::pages::preferences::{self, Choices};
use crate::store::Db;
use crate::web::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/preferences/{token}", get(page).post(save))
}

/// `a•••@example.com`, `+1•••••2671`.
fn masked(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => match address.split_once('@') {
            Some((local, domain)) => format!("{}•••@{domain}", local.chars().next().unwrap_or('•')),
            None => "•••".into(),
        },
        Channel::Sms | Channel::Whatsapp => {
            let chars: Vec<char> = address.chars().collect();
            let keep = chars.len().saturating_sub(4);
            let head: String = chars.iter().take(2.min(keep)).collect();
            let tail: String = chars.iter().skip(keep).collect();
            format!("{head}•••••{tail}")
        }
    }
}

fn render(face: &Face, lang: &str, choices: &Choices, notice: Option<&str>) -> Response {
    let lists: Vec<Value> = choices.lists.iter().map(|l| json!({"slug": l.slug, "name": l.name, "on": l.on})).collect();
    let channels: Vec<Value> = choices
        .channels
        .iter()
        .map(|c| {
            json!({
                "channel": c.channel.as_str(), "address": masked(c.channel, &c.address),
                "on": c.on(), "switchable": c.switchable(),
            })
        })
        .collect();
    let context = context_of(json!({
        "choices": {"first_name": choices.first_name, "lists": lists, "channels": channels},
        "notice": notice,
    }));
    face.page(lang, "preferences", context, StatusCode::OK, Kind::Personal)
}

async fn page(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(signer): State<Signer>,
    State(face): State<Face>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let now = clock.now();
    let browser = || face.language(&[], &headers);
    let id = match signer.verify(Purpose::Preferences, &token, now) {
        Ok(id) => id,
        Err(e) => return bad_link(&face, &browser(), e),
    };
    match preferences::choices(&db, id).await {
        Ok(Some(choices)) => render(&face, &face.language(&[choices.locale.as_deref()], &headers), &choices, None),
        Ok(None) => bad_link(&face, &browser(), LinkError::Invalid),
        Err(e) => unavailable(&face, &browser(), &e),
    }
}

fn unavailable(face: &Face, lang: &str, error: &crate::core::error::Error) -> Response {
    tracing::error!(error = %error, "the preference page failed");
    face.try_again(lang)
}

async fn save(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(signer): State<Signer>,
    State(face): State<Face>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let now = clock.now();
    let browser = || face.language(&[], &headers);
    let id = match signer.verify(Purpose::Preferences, &token, now) {
        Ok(id) => id,
        Err(e) => return bad_link(&face, &browser(), e),
    };
    let (mut lists, mut channels) = (BTreeSet::new(), BTreeSet::new());
    let (mut everything_off, mut saving) = (false, false);
    for (key, value) in url::form_urlencoded::parse(body.as_bytes()) {
        match key.as_ref() {
            "list" => {
                lists.insert(value.into_owned());
            }
            "channel" => {
                if let Ok(channel) = value.parse::<Channel>() {
                    channels.insert(channel);
                }
            }
            "everything" => everything_off = value == "off",
            "save" => saving = true,
            _ => {}
        }
    }
    // Only the page's own forms change anything: a post that is neither (an empty one, say) must
    // not read as "nothing ticked" and withdraw everything.
    if !saving && !everything_off {
        return face.notice(&browser(), StatusCode::BAD_REQUEST, "nothing_changed_title", "nothing_changed_text");
    }
    if everything_off {
        lists.clear();
        channels.clear();
    }
    let origin = ConsentOrigin {
        method: ConsentMethod::Preferences,
        source: Some("preference page".into()),
        ip: None,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(500).collect()),
    };
    if let Err(e) = preferences::save(&db, now, id, &lists, &channels, &origin).await {
        return unavailable(&face, &browser(), &e);
    }
    match preferences::choices(&db, id).await {
        Ok(Some(choices)) => {
            let lang = face.language(&[choices.locale.as_deref()], &headers);
            let notice = face.word(&lang, if everything_off { "unsubscribed_everything" } else { "choices_saved" });
            render(&face, &lang, &choices, Some(&notice))
        }
        Ok(None) => bad_link(&face, &browser(), LinkError::Invalid),
        Err(e) => unavailable(&face, &browser(), &e),
    }
}
