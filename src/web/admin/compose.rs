//! Composing a broadcast in the dashboard (editors): the list, an optional tag and condition,
//! the subject, a template or inline HTML, the channels, tracking, now or a time. Before it is
//! sent: how many it would reach (counted again with every answer of the form), a preview for a
//! chosen subscriber or a sample one, a test sent to one address. The same checks as
//! `POST /api/v1/broadcasts`; nothing is stored until it is sent or scheduled.

use axum::Extension;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::audience::problem;
use super::people::some;
use super::{Caller, Shown, failed, refused_form, render};
use crate::core::error::Error;
use crate::web::AppState;
use crate::workflow::engine::NewBroadcast;

/// The form as it is sent: every field text, empty when left out.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(super) struct ComposeForm {
    #[serde(default, skip_serializing)]
    form_token: String,
    #[serde(default)]
    list: String,
    #[serde(default)]
    tag: String,
    /// A workflow `if:` condition as JSON.
    #[serde(default)]
    condition: String,
    #[serde(default)]
    subject: String,
    /// `template` or `html`.
    #[serde(default)]
    source: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    html: String,
    #[serde(default)]
    text: String,
    email: Option<String>,
    sms: Option<String>,
    whatsapp: Option<String>,
    /// The approved WhatsApp template (its id), if the provider needs one.
    #[serde(default)]
    whatsapp_template: String,
    /// One message each, on the first channel that works (`reach: first`).
    reach_first: Option<String>,
    #[serde(default)]
    sms_text: String,
    tracking: Option<String>,
    /// `YYYY-MM-DDTHH:MM` (UTC); empty: now.
    #[serde(default)]
    send_at: String,
    /// A subscriber's email address to preview and test for (empty: a sample subscriber).
    #[serde(default)]
    preview_for: String,
    #[serde(default)]
    test_to: String,
    /// Which button: `count`, `preview`, `test` or `send`.
    #[serde(default)]
    action: String,
}

impl ComposeForm {
    /// The broadcast the form describes, or what is wrong with it.
    fn broadcast(&self) -> Result<NewBroadcast, Vec<String>> {
        let mut problems = Vec::new();
        let condition = match some(&self.condition) {
            None => None,
            Some(text) => match serde_json::from_str(&text) {
                Ok(condition) => Some(condition),
                Err(e) => {
                    problems.push(format!("condition: not a condition ({e})"));
                    None
                }
            },
        };
        let send_at = match some(&self.send_at) {
            None => None,
            Some(text) => match chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M") {
                Ok(at) => Some(at.and_utc()),
                Err(_) => {
                    problems.push("send at: a day and time such as 2026-03-02T09:30".to_owned());
                    None
                }
            },
        };
        let (email, sms) = (self.email.is_some(), self.sms.is_some());
        let mut channels = Vec::new();
        if email {
            channels.push("email".to_owned());
        }
        if sms {
            channels.push("sms".to_owned());
        }
        let whatsapp = self.whatsapp.is_some();
        if whatsapp {
            channels.push("whatsapp".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let inline = self.source == "html";
        Ok(NewBroadcast {
            list: self.list.trim().to_owned(),
            tag: some(&self.tag),
            condition,
            channels: Some(channels),
            subject: some(&self.subject).filter(|_| email),
            template: some(&self.template).filter(|_| email && !inline),
            html: some(&self.html).filter(|_| email && inline),
            text: some(&self.text).filter(|_| email && inline),
            sms_text: some(&self.sms_text).filter(|_| sms || whatsapp),
            whatsapp_template: some(&self.whatsapp_template).filter(|_| whatsapp),
            reach: Some(if self.reach_first.is_some() { "first" } else { "all" }.to_owned()),
            send_at,
            tracking: Some(self.tracking.is_some()),
        })
    }
}

/// The email templates a broadcast may use: `emails/*.html`, not the layout's parts (`_…`) nor
/// the translations (`name.it.html`, chosen by each subscriber's language).
fn templates(state: &AppState) -> Vec<String> {
    let dir = state.config.templates_dir.join("emails");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.ends_with(".html") && !n.starts_with('_') && n.matches('.').count() == 1)
                .map(|n| format!("emails/{n}"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn page(state: &AppState, form: &ComposeForm, status: StatusCode, results: Value) -> Shown {
    let lists = crate::audience::lists::all(&state.db).await.map_err(failed)?;
    let lists: Vec<Value> = lists.iter().map(|l| json!({"slug": l.slug, "name": l.name})).collect();
    let mut context = json!({"title": "New broadcast", "section": "broadcasts", "f": form, "lists": lists,
                             "templates": templates(state), "now": state.clock.now().format("%Y-%m-%d %H:%M UTC").to_string()});
    if let (Some(map), Value::Object(more)) = (context.as_object_mut(), results) {
        map.extend(more);
    }
    for key in ["problems", "audience", "previews", "tested"] {
        if let Some(map) = context.as_object_mut() {
            map.entry(key).or_insert(Value::Null);
        }
    }
    Ok(render("compose.html", status, context))
}

pub(super) async fn new(State(state): State<AppState>) -> Shown {
    let form = ComposeForm {
        email: Some("on".into()),
        tracking: state.config.tracking.then(|| "on".to_owned()),
        source: "template".into(),
        ..ComposeForm::default()
    };
    page(&state, &form, StatusCode::OK, json!({})).await
}

/// The subscriber to preview and test for, by their email address.
async fn chosen(state: &AppState, email: &str) -> Result<Option<Uuid>, Vec<String>> {
    let Some(email) = some(email) else { return Ok(None) };
    let Ok(address) = crate::core::values::EmailAddress::parse(&email) else {
        return Err(vec![format!("preview for: {email} is not an email address")]);
    };
    match crate::audience::subscribers::id_by_email(state.db.conn(), &address).await {
        Ok(Some(id)) => Ok(Some(id)),
        Ok(None) => Err(vec![format!("preview for: no subscriber has the address {email}")]),
        Err(e) => Err(vec![e.to_string()]),
    }
}

/// What is wrong, field by field, or (`Err`) the database's trouble.
fn refusal(e: Error) -> Result<Vec<String>, Error> {
    match e {
        Error::Invalid(fields) => Ok(fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect()),
        other => problem(other).map(|p| vec![p]),
    }
}

pub(super) async fn act(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ComposeForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let invalid = |problems: Vec<String>| json!({"problems": problems});
    let input = match form.broadcast() {
        Ok(input) => input,
        Err(problems) => return page(&state, &form, StatusCode::UNPROCESSABLE_ENTITY, invalid(problems)).await,
    };
    let engine = &state.engine;
    if form.action == "send" {
        return match engine.create_broadcast(input).await {
            Ok(created) => Ok(Redirect::to(&format!("/admin/broadcasts/{}", created.id)).into_response()),
            Err(e) => page(&state, &form, StatusCode::UNPROCESSABLE_ENTITY, invalid(refusal(e).map_err(failed)?)).await,
        };
    }
    // Every other answer counts the audience again.
    let audience = match engine.broadcast_audience(input.clone()).await {
        Ok(audience) => audience,
        Err(e) => {
            return page(&state, &form, StatusCode::UNPROCESSABLE_ENTITY, invalid(refusal(e).map_err(failed)?)).await;
        }
    };
    let mut results = json!({"audience": audience});
    let who = match chosen(&state, &form.preview_for).await {
        Ok(who) => who,
        Err(problems) => {
            results["problems"] = json!(problems);
            return page(&state, &form, StatusCode::UNPROCESSABLE_ENTITY, results).await;
        }
    };
    let outcome = match form.action.as_str() {
        "preview" => engine.preview_broadcast(input, who).await.map(|previews| {
            results["previews"] = json!(previews);
        }),
        "test" => engine.test_broadcast(input, who, &form.test_to).await.map(|_| {
            results["tested"] = json!(form.test_to.trim());
        }),
        _ => Ok(()),
    };
    match outcome {
        Ok(()) => page(&state, &form, StatusCode::OK, results).await,
        Err(e) => {
            results["problems"] = json!(refusal(e).map_err(failed)?);
            page(&state, &form, StatusCode::UNPROCESSABLE_ENTITY, results).await
        }
    }
}
