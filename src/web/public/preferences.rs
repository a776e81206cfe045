//! `/preferences/{token}`: the preference page linked from every message (signed with the
//! subscriber's id). GET shows the lists and channels with a box each; POST saves them, or
//! withdraws everything at once. Addresses are shown masked: links get forwarded.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use super::unsubscribe::{bad_link, escape, html};
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
        Channel::Sms => {
            let chars: Vec<char> = address.chars().collect();
            let keep = chars.len().saturating_sub(4);
            let head: String = chars.iter().take(2.min(keep)).collect();
            let tail: String = chars.iter().skip(keep).collect();
            format!("{head}•••••{tail}")
        }
    }
}

fn render(choices: &Choices, notice: Option<&str>) -> Response {
    let mut body = String::new();
    if let Some(notice) = notice {
        body.push_str(&format!("<p role=\"status\"><strong>{}</strong></p>", escape(notice)));
    }
    let hello = choices.first_name.as_deref().map(|n| format!("Hello {}. ", escape(n))).unwrap_or_default();
    body.push_str(&format!("<p>{hello}Choose what you get from us; untick anything you no longer want.</p>"));
    body.push_str("<form method=\"post\"><input type=\"hidden\" name=\"save\" value=\"1\">");
    if !choices.lists.is_empty() {
        body.push_str("<fieldset><legend>Lists</legend>");
        for l in &choices.lists {
            body.push_str(&format!(
                "<p><label><input type=\"checkbox\" name=\"list\" value=\"{}\"{}> {}</label></p>",
                escape(&l.slug),
                if l.on { " checked" } else { "" },
                escape(&l.name)
            ));
        }
        body.push_str("</fieldset>");
    }
    if !choices.channels.is_empty() {
        body.push_str("<fieldset><legend>How we may reach you</legend>");
        for c in &choices.channels {
            let name = if c.channel == Channel::Email { "Email" } else { "Text messages" };
            body.push_str(&format!(
                "<p><label><input type=\"checkbox\" name=\"channel\" value=\"{}\"{}{}> {name} ({})</label></p>",
                c.channel.as_str(),
                if c.on() { " checked" } else { "" },
                if c.switchable() { "" } else { " disabled" },
                escape(&masked(c.channel, &c.address))
            ));
        }
        body.push_str("</fieldset>");
    }
    body.push_str("<p><button type=\"submit\">Save my choices</button></p></form>");
    body.push_str(
        "<form method=\"post\"><input type=\"hidden\" name=\"everything\" value=\"off\">\
         <p><button type=\"submit\">Unsubscribe from everything</button></p></form>",
    );
    html(StatusCode::OK, "Your preferences", &body)
}

async fn page(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(signer): State<Signer>,
    Path(token): Path<String>,
) -> Response {
    let now = clock.now();
    let id = match signer.verify(Purpose::Preferences, &token, now) {
        Ok(id) => id,
        Err(e) => return bad_link(e),
    };
    match preferences::choices(&db, id).await {
        Ok(Some(choices)) => render(&choices, None),
        Ok(None) => bad_link(LinkError::Invalid),
        Err(e) => unavailable(&e),
    }
}

fn unavailable(error: &crate::core::error::Error) -> Response {
    tracing::error!(error = %error, "the preference page failed");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>We could not do this just now; nothing was changed. Please try again in a minute.</p>",
    )
}

async fn save(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(signer): State<Signer>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let now = clock.now();
    let id = match signer.verify(Purpose::Preferences, &token, now) {
        Ok(id) => id,
        Err(e) => return bad_link(e),
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
        return html(
            StatusCode::BAD_REQUEST,
            "Nothing was changed",
            "<p>Open the link again and use the page's buttons to save your choices.</p>",
        );
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
        return unavailable(&e);
    }
    match preferences::choices(&db, id).await {
        Ok(Some(choices)) => {
            let notice =
                if everything_off { "You are unsubscribed from everything." } else { "Your choices are saved." };
            render(&choices, Some(notice))
        }
        Ok(None) => bad_link(LinkError::Invalid),
        Err(e) => unavailable(&e),
    }
}
