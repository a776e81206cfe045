//! The dashboard's lists: every list with its size and growth, create, rename, delete (asked
//! to confirm, refused while a landing page or workflow uses it).

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, Shown, error_page, failed, refused_form, render};
use crate::audience::lists::{self, ListPatch, NewList};
use crate::core::error::Error;
use crate::web::AppState;

/// A refusal the person filling a form can act on (a field, a conflict), in words; anything
/// else (the database's trouble) is given back, to be shown as such.
pub(super) fn problem(e: Error) -> Result<String, Error> {
    match e {
        Error::Invalid(fields) => {
            Ok(fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))
        }
        Error::Conflict { detail, .. } | Error::Malformed { detail, .. } => Ok(detail),
        Error::NotFound { what } => Ok(format!("No such {what}.")),
        other => Err(other),
    }
}

async fn lists_page(state: &AppState, status: StatusCode, problem: Option<String>, form: Value) -> Shown {
    let all = lists::all_with_growth(&state.db, state.clock.now()).await.map_err(failed)?;
    let rows: Vec<Value> = all
        .iter()
        .map(|l| {
            let growth = l.growth.clone().unwrap_or_default();
            json!({"slug": l.slug, "name": l.name, "description": l.description, "double_opt_in": l.double_opt_in,
                   "pending": l.members.pending, "confirmed": l.members.confirmed,
                   "unsubscribed": l.members.unsubscribed, "joined": growth.joined, "left": growth.left,
                   "used_by": crate::web::api::lists::users_of(state, &l.slug).join(", ")})
        })
        .collect();
    let context = json!({"title": "Lists", "section": "lists", "lists": rows, "problem": problem, "form": form});
    Ok(render("lists.html", status, context))
}

pub(super) async fn all(State(state): State<AppState>) -> Shown {
    let blank = json!({"slug": "", "name": "", "description": "", "double_opt_in": true});
    lists_page(&state, StatusCode::OK, None, blank).await
}

/// A list's form, to create one or change it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct NewListForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    double_opt_in: Option<String>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<NewListForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let input = NewList {
        slug: form.slug.trim().to_owned(),
        name: form.name.clone(),
        description: Some(form.description.clone()).filter(|d| !d.trim().is_empty()),
        double_opt_in: Some(form.double_opt_in.is_some()),
    };
    match lists::create(&state.db, state.clock.now(), input).await {
        Ok(list) => Ok(Redirect::to(&format!("/admin/lists/{}", list.slug)).into_response()),
        Err(e) => {
            let shown = json!({"slug": form.slug, "name": form.name, "description": form.description,
                               "double_opt_in": form.double_opt_in.is_some()});
            lists_page(&state, StatusCode::UNPROCESSABLE_ENTITY, Some(problem(e).map_err(failed)?), shown).await
        }
    }
}

async fn list_page(state: &AppState, slug: &str, status: StatusCode, problem: Option<String>) -> Shown {
    let list = lists::get(&state.db, slug).await.map_err(|e| match e {
        Error::NotFound { .. } => error_page(StatusCode::NOT_FOUND, "No such list."),
        other => failed(other),
    })?;
    let used_by = crate::web::api::lists::users_of(state, slug);
    let context = json!({"title": format!("List {}", list.name), "section": "lists", "list": list,
                         "used_by": used_by.join(", "), "problem": problem});
    Ok(render("list.html", status, context))
}

pub(super) async fn one(State(state): State<AppState>, Path(slug): Path<String>) -> Shown {
    list_page(&state, &slug, StatusCode::OK, None).await
}

pub(super) async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    Form(form): Form<NewListForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let new_slug = form.slug.trim();
    let renamed = !new_slug.is_empty() && new_slug != slug;
    if renamed && !crate::web::api::lists::users_of(&state, &slug).is_empty() {
        let message = "Pages or workflows use this list by its slug: change those files first.".to_owned();
        return list_page(&state, &slug, StatusCode::CONFLICT, Some(message)).await;
    }
    let description = form.description.trim();
    let patch = ListPatch {
        slug: renamed.then(|| new_slug.to_owned()),
        name: Some(form.name.clone()),
        description: Some((!description.is_empty()).then(|| description.to_owned())),
        double_opt_in: Some(form.double_opt_in.is_some()),
    };
    match lists::update(&state.db, state.clock.now(), &slug, patch).await {
        Ok(list) => Ok(Redirect::to(&format!("/admin/lists/{}", list.slug)).into_response()),
        Err(e) => list_page(&state, &slug, StatusCode::UNPROCESSABLE_ENTITY, Some(problem(e).map_err(failed)?)).await,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeleteForm {
    #[serde(default)]
    form_token: String,
    /// The list's slug typed again: the confirmation.
    #[serde(default)]
    confirm: String,
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(slug): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Shown {
    if let Some(refused) = refused_form(&caller, &form.form_token) {
        return Err(refused);
    }
    let users = crate::web::api::lists::users_of(&state, &slug);
    if !users.is_empty() {
        let message = format!("This list is used by {}: change those files first, then delete it.", users.join(", "));
        return list_page(&state, &slug, StatusCode::CONFLICT, Some(message)).await;
    }
    if form.confirm.trim() != slug {
        let message = format!("To delete it, type its slug, {slug}, in the box.");
        return list_page(&state, &slug, StatusCode::UNPROCESSABLE_ENTITY, Some(message)).await;
    }
    match lists::delete(&state.db, &slug).await {
        Ok(()) => Ok(Redirect::to("/admin/lists").into_response()),
        Err(e) => list_page(&state, &slug, StatusCode::UNPROCESSABLE_ENTITY, Some(problem(e).map_err(failed)?)).await,
    }
}
