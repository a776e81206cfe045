//! The dashboard's workflow actions: pause and resume (editors), load the files now (editors),
//! the plan of what loading them would change, and a simulation of one workflow for a chosen
//! subscriber (or a sample one), as `ownlist workflows plan` and `simulate` print them.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;
use serde_json::{Value, json};

use super::audience::problem;
use super::console::TokenOnly;
use super::{Caller, Shown, error_page, failed, refused_form, render};
use crate::web::AppState;
use crate::workflow::plan::Plan;
use crate::workflow::simulate::{Outcome, Script};

/// The file a workflow was read from (`ID.yaml` or `ID.yml` under `workflows_dir`).
pub(super) fn file_of(state: &AppState, id: &str) -> Option<std::path::PathBuf> {
    if id.contains(['/', '\\']) || id.starts_with('.') {
        return None;
    }
    ["yaml", "yml"].iter().map(|ext| state.config.workflows_dir.join(format!("{id}.{ext}"))).find(|p| p.is_file())
}

async fn set_paused(state: AppState, caller: Caller, id: String, form: TokenOnly, paused: bool) -> Shown {
    if let Some(refused) = refused_form(&caller, form.token()) {
        return Err(refused);
    }
    match state.engine.registry().set_paused(state.clock.now(), &id, paused).await {
        Ok(_) => Ok(Redirect::to(&format!("/admin/workflows/{id}")).into_response()),
        Err(e) => {
            let message = problem(e).map_err(failed)?;
            Err(error_page(StatusCode::CONFLICT, &message))
        }
    }
}

pub(super) async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<TokenOnly>,
) -> Shown {
    set_paused(state, caller, id, form, true).await
}

pub(super) async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<TokenOnly>,
) -> Shown {
    set_paused(state, caller, id, form, false).await
}

async fn plan_page(state: &AppState, status: StatusCode, loaded: Option<Value>) -> Shown {
    let dir = &state.config.workflows_dir;
    let (problems, changes) = match crate::workflow::plan::plan(&state.db, dir, &state.config.load_settings()).await {
        Ok(Plan::Problems(problems)) => (problems, Vec::new()),
        Ok(Plan::Changes(lines)) => (Vec::new(), lines),
        Err(e) => {
            tracing::error!(error = %e, "the workflow files could not be planned");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The workflow files could not be read. The error is in the log.",
            ));
        }
    };
    let pending = changes.iter().any(|l| !l.contains(": unchanged"));
    let context = json!({"title": "Plan: the workflow files", "section": "workflows", "problems": problems,
                         "changes": changes, "pending": pending, "loaded": loaded});
    Ok(render("plan.html", status, context))
}

pub(super) async fn plan(State(state): State<AppState>) -> Shown {
    plan_page(&state, StatusCode::OK, None).await
}

/// Loads the files now, as `POST /api/v1/workflows/reload` does, and shows what happened.
pub(super) async fn reload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<TokenOnly>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, form.token()) {
        return Err(refused);
    }
    let now = state.clock.now();
    let reloaded = crate::workflow::loader::reload(&state.db, &state.config.load_settings(), &state.engine, now)
        .await
        .map_err(failed)?;
    let loaded = json!({"workflows": reloaded.workflows.len(), "pages": reloaded.pages.len(),
                        "problems": reloaded.problems.iter().map(|p| format!("{}: {}", p.at, p.message)).collect::<Vec<_>>()});
    let status = if reloaded.problems.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    plan_page(&state, status, Some(loaded)).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SimulateQuery {
    /// A subscriber's email address (else a sample subscriber).
    #[serde(default)]
    subscriber: String,
    /// `NAME@DURATION` events, separated by commas.
    #[serde(default)]
    events: String,
    /// Email steps whose message they open, separated by commas.
    #[serde(default)]
    opens: String,
    #[serde(default)]
    clicks: String,
    days: Option<i64>,
}

fn words(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// A simulation of workflow `id` from now, for the subscriber asked for.
pub(super) async fn simulate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<SimulateQuery>,
) -> Shown {
    let file = file_of(&state, &id).ok_or_else(|| error_page(StatusCode::NOT_FOUND, "No file for this workflow."))?;
    let mut problems = Vec::new();
    let mut script = Script { opens: words(&query.opens), clicks: words(&query.clicks), ..Script::default() };
    for event in words(&query.events) {
        match Script::parse_event(&event) {
            Ok(parsed) => script.events.push(parsed),
            Err(reason) => problems.push(format!("events: {reason}")),
        }
    }
    let email = query.subscriber.trim().to_owned();
    let subscriber = if email.is_empty() { None } else { described(&state, &email, &mut problems).await? };
    let days = query.days.unwrap_or(30).clamp(1, 365);
    let mut timeline = String::new();
    if problems.is_empty() {
        let horizon = chrono::Duration::days(days);
        let templates = &state.config.templates_dir;
        match crate::workflow::simulate::simulate(&file, templates, subscriber, &script, state.clock.now(), horizon)
            .await
        {
            Ok(Outcome::Timeline(text)) => timeline = text,
            Ok(Outcome::Invalid(diagnostics)) => problems.extend(diagnostics.iter().map(ToString::to_string)),
            Err(e) => problems.push(format!("The simulation failed: {e}")),
        }
    }
    let context = json!({"title": format!("Simulate {id}"), "section": "workflows", "id": id, "timeline": timeline,
                         "problems": problems, "subscriber": email, "events": query.events, "opens": query.opens,
                         "clicks": query.clicks, "days": days});
    let status = if context["problems"].as_array().is_some_and(|p| !p.is_empty()) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render("simulate.html", status, context))
}

/// A stored subscriber as the simulation's subscriber: their details, lists, tags, where they
/// came from and the channels they can be reached on (none of it leaves the simulation).
async fn described(
    state: &AppState,
    email: &str,
    problems: &mut Vec<String>,
) -> Result<Option<Value>, axum::response::Response> {
    let found = match crate::core::values::EmailAddress::parse(email) {
        Ok(address) => crate::audience::subscribers::id_by_email(state.db.conn(), &address).await.map_err(failed)?,
        Err(_) => None,
    };
    let Some(id) = found else {
        problems.push(format!("No subscriber has the address {email}."));
        return Ok(None);
    };
    let person = crate::audience::subscribers::get(&state.db, id).await.map_err(failed)?;
    let reachable = |state: &str| state == "subscribed" || state == "pending";
    Ok(Some(json!({
        "email": person.email, "phone": person.phone, "first_name": person.first_name, "last_name": person.last_name,
        "timezone": person.timezone, "locale": person.locale, "attributes": person.attributes, "tags": person.tags,
        "lists": person.lists.iter().map(|l| l.list.clone()).collect::<Vec<_>>(),
        "consent": {"email": reachable(person.channels.email.as_str()), "sms": reachable(person.channels.sms.as_str())},
        "attribution": person.attribution,
    })))
}
