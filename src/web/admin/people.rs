//! The dashboard's subscribers: a paginated list filtered by list, tag, status, channel state,
//! source or a search; add one (with the consent they gave, recorded as given to the editor);
//! change one's details and tags, unsubscribe them, or erase them (confirmed by typing).

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::audience::problem;
use super::{Caller, Shown, error_page, failed, name_of, refused_form, render};
use crate::audience::subscribers::{self, ConsentInput, NewSubscriber, SubscriberFilter, SubscriberPatch};
use crate::core::values::{ChannelState, SubscriberStatus};
use crate::web::AppState;

/// Subscribers a page shows.
const PAGE: u64 = 50;

/// The filters as a form sends them: every field may be empty.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
pub(super) struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    list: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    sms: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    cursor: String,
}

/// A form field's text, trimmed, unless it is empty.
pub(super) fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl Filters {
    /// The query string of these filters, past `cursor` (for the next page's link).
    fn next(&self, cursor: &str) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("list", &self.list),
            ("tag", &self.tag),
            ("status", &self.status),
            ("email", &self.email),
            ("sms", &self.sms),
            ("source", &self.source),
        ] {
            if !value.trim().is_empty() {
                pairs.append_pair(name, value.trim());
            }
        }
        pairs.append_pair("cursor", cursor);
        pairs.finish()
    }
}

async fn list_page(state: &AppState, filters: Filters, status: StatusCode, added: Option<(String, Value)>) -> Shown {
    let mut problems = Vec::new();
    let parse_state = |text: &str, what: &str, problems: &mut Vec<String>| match some(text) {
        Some(t) => t.parse::<ChannelState>().map(Some).unwrap_or_else(|_| {
            problems.push(format!("No such {what} state: {t}."));
            None
        }),
        None => None,
    };
    let email = parse_state(&filters.email, "email", &mut problems);
    let sms = parse_state(&filters.sms, "SMS", &mut problems);
    let wanted_status = match some(&filters.status) {
        Some(t) => t.parse::<SubscriberStatus>().map(Some).unwrap_or_else(|_| {
            problems.push(format!("No such status: {t}."));
            None
        }),
        None => None,
    };
    let filter = SubscriberFilter {
        list: some(&filters.list),
        tag: some(&filters.tag),
        status: wanted_status,
        email,
        sms,
        source: some(&filters.source),
        q: some(&filters.q).map(|q| q.chars().take(200).collect()),
        limit: Some(PAGE),
        cursor: some(&filters.cursor),
    };
    let page = match subscribers::list(&state.db, filter).await {
        Ok(page) => page,
        Err(e) => {
            problems.push(problem(e).map_err(failed)?);
            subscribers::Page { data: Vec::new(), next_cursor: None }
        }
    };
    let rows: Vec<Value> = page
        .data
        .iter()
        .map(|s| {
            json!({"id": s.id, "email": s.email, "phone": s.phone, "name": name_of(s), "status": s.status,
                   "email_state": s.channels.email, "sms_state": s.channels.sms, "source": s.attribution.source,
                   "lists": s.lists.iter().map(|l| l.list.clone()).collect::<Vec<_>>().join(", ")})
        })
        .collect();
    let lists = crate::audience::lists::all(&state.db).await.map_err(failed)?;
    let lists: Vec<Value> = lists.iter().map(|l| json!({"slug": l.slug, "name": l.name})).collect();
    let blank = || {
        json!({"email": "", "phone": "", "first_name": "", "last_name": "", "list": filters.list, "email_consent": true,
               "sms_consent": false, "whatsapp_consent": false, "consent_text": ""})
    };
    let (add_problem, add) = added.unwrap_or_else(|| (String::new(), blank()));
    let context = json!({
        "title": "Subscribers", "section": "subscribers", "filters": filters, "results": rows,
        "problem": problems.join(" "), "next": page.next_cursor.as_deref().map(|c| filters.next(c)),
        "lists": lists, "statuses": SubscriberStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "states": ChannelState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "add_problem": add_problem, "add": add,
    });
    Ok(render("subscribers.html", status, context))
}

pub(super) async fn all(State(state): State<AppState>, Query(filters): Query<Filters>) -> Shown {
    list_page(&state, filters, StatusCode::OK, None).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AddForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    list: String,
    email_consent: Option<String>,
    sms_consent: Option<String>,
    whatsapp_consent: Option<String>,
    /// How they agreed: the words, or where (kept as the consent text).
    #[serde(default)]
    consent_text: String,
}

pub(super) async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<AddForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let input = NewSubscriber {
        email: some(&form.email),
        phone: some(&form.phone),
        first_name: some(&form.first_name),
        last_name: some(&form.last_name),
        lists: some(&form.list).into_iter().collect(),
        consent: ConsentInput {
            email: form.email_consent.is_some(),
            sms: form.sms_consent.is_some(),
            whatsapp: form.whatsapp_consent.is_some(),
            text: some(&form.consent_text),
            version: None,
        },
        ..NewSubscriber::default()
    };
    match subscribers::create(&state.db, state.clock.now(), &caller.actor, input).await {
        Ok(created) => Ok(Redirect::to(&format!("/admin/subscribers/{}", created.id)).into_response()),
        Err(e) => {
            let shown = json!({"email": form.email, "phone": form.phone, "first_name": form.first_name,
                "last_name": form.last_name, "list": form.list, "email_consent": form.email_consent.is_some(),
                "sms_consent": form.sms_consent.is_some(), "whatsapp_consent": form.whatsapp_consent.is_some(),
                "consent_text": form.consent_text});
            let added = Some((problem(e).map_err(failed)?, shown));
            list_page(&state, Filters::default(), StatusCode::UNPROCESSABLE_ENTITY, added).await
        }
    }
}

fn no_such_subscriber() -> axum::response::Response {
    error_page(StatusCode::NOT_FOUND, "No such subscriber.")
}

/// After a change: back to the person's page, with what went wrong when something did.
async fn done(state: &AppState, id: Uuid, outcome: crate::core::error::Result<()>) -> Shown {
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!("/admin/subscribers/{id}")).into_response()),
        Err(e) => {
            super::subscriber_page(state, id, StatusCode::UNPROCESSABLE_ENTITY, Some(problem(e).map_err(failed)?)).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct EditForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    /// Tags, separated by commas: the person's tags become these.
    #[serde(default)]
    tags: String,
}

pub(super) async fn edit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let Ok(id) = id.parse::<Uuid>() else { return Err(no_such_subscriber()) };
    let tags: Vec<String> = form.tags.split(',').filter_map(some).collect();
    let patch = SubscriberPatch {
        email: Some(some(&form.email)),
        phone: Some(some(&form.phone)),
        first_name: Some(some(&form.first_name)),
        last_name: Some(some(&form.last_name)),
        tags: Some(tags),
        ..SubscriberPatch::default()
    };
    let outcome = subscribers::update(&state.db, state.clock.now(), &caller.actor, id, patch).await.map(|_| ());
    done(&state, id, outcome).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    form_token: String,
    /// For unsubscribing: the box ticked. For erasing: the address typed again.
    #[serde(default)]
    confirm: String,
}

pub(super) async fn unsubscribe(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let Ok(id) = id.parse::<Uuid>() else { return Err(no_such_subscriber()) };
    if form.confirm != "yes" {
        let message = "Tick the box to confirm: they will get nothing more.".to_owned();
        return super::subscriber_page(&state, id, StatusCode::UNPROCESSABLE_ENTITY, Some(message)).await;
    }
    let patch = SubscriberPatch { status: Some(SubscriberStatus::Unsubscribed), ..SubscriberPatch::default() };
    let outcome = subscribers::update(&state.db, state.clock.now(), &caller.actor, id, patch).await.map(|_| ());
    done(&state, id, outcome).await
}

pub(super) async fn erase(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let Ok(id) = id.parse::<Uuid>() else { return Err(no_such_subscriber()) };
    let person = subscribers::get(&state.db, id).await.map_err(failed)?;
    let address = person.email.clone().or(person.phone.clone()).unwrap_or_default();
    if form.confirm.trim() != address {
        let message = format!("To erase them, type {address} in the box.");
        return super::subscriber_page(&state, id, StatusCode::UNPROCESSABLE_ENTITY, Some(message)).await;
    }
    match subscribers::erase(&state.db, state.clock.now(), &caller.actor, id).await {
        Ok(()) => {
            let context = json!({"title": "Erased", "section": "subscribers",
                                 "message": "Erased: their personal data is gone; the record that they were erased stays."});
            Ok(render("error.html", StatusCode::OK, context))
        }
        Err(e) => done(&state, id, Err(e)).await,
    }
}
