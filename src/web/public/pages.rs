//! Landing pages (`/p/{slug}`), their signups, and the confirmation link (`/c/{token}`).
//!
//! `GET /p/{slug}` renders the page with a signed form token and the visit's attribution as
//! hidden fields. `POST /p/{slug}` takes the form (form-encoded: 303 to the thank-you page; the
//! form again with the errors next to their fields when invalid) or JSON (202, or 422 naming the
//! fields). Bots (honeypot, token, fill time) get the same answer as people and are counted;
//! past the per-IP limit the answer is 429 with `Retry-After`. `GET /p/{slug}/token` gives an
//! embedded form its token; CORS is on only for the origins a page lists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::unsubscribe::escape;
use crate::core::clock::SharedClock;
use crate::core::error::{Error, FieldError};
use crate::core::links::Signer;
use crate::core::values::Channel;
use crate::pages::signup::{self, Confirmed, Settings, Submission};
use crate::pages::{attribution, guard};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ClientAddress;
use crate::workflow::catalog::Catalog;
use crate::workflow::page::{Page, ThankYou};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/p/{slug}", get(show).post(submit).options(preflight))
        .route("/p/{slug}/thanks", get(thanks))
        .route("/p/{slug}/token", get(token).options(preflight))
        .route("/c/{token}", get(confirm))
}

/// The largest form or JSON body a page takes.
const MAX_BODY: usize = 64 * 1024;

fn settings(state: &AppState) -> Settings {
    Settings {
        signer: state.signer.clone(),
        base_url: state.config.base_url.clone(),
        business: state.config.business.clone(),
        confirm_ttl: state.config.confirm_link_ttl,
        confirm_every: state.config.confirm_every,
    }
}

/// A small page of ownlist's own (not found, confirmed, …): no scripts, nothing third-party.
fn plain(status: StatusCode, title: &str, body: &str) -> Response {
    super::unsubscribe::html(status, title, body)
}

fn page_not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "Page not found", "<p>There is no signup page at this address.</p>")
}

fn text_header(headers: &HeaderMap, name: header::HeaderName, max: usize) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(max).collect())
}

/// Everything a page template gets.
#[allow(clippy::too_many_arguments)]
fn context(
    page: &Page,
    token: &str,
    hidden: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
    ticked: &BTreeSet<Channel>,
    errors: &BTreeMap<String, String>,
    message: Option<&str>,
) -> tera::Context {
    let fields: Vec<Value> = page
        .fields
        .iter()
        .map(|f| {
            let name = f.name();
            let (kind, autocomplete) = f.input();
            json!({
                "name": name, "id": format!("f-{}", name.replace('.', "-")), "label": f.label(), "type": kind,
                "autocomplete": autocomplete, "required": page.required.contains(f), "max": f.max_chars(),
                "value": values.get(&name).cloned().unwrap_or_default(), "error": errors.get(&name),
            })
        })
        .collect();
    let consents: Vec<Value> = page
        .channels
        .iter()
        .map(|c| {
            let label = match c {
                Channel::Email => "By email",
                Channel::Sms => "By text message (SMS)",
            };
            json!({"channel": c, "name": format!("consent_{}", c.as_str()), "label": label, "checked": ticked.contains(c)})
        })
        .collect();
    let hidden: Vec<Value> = hidden.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    let value = json!({
        "page": {
            "slug": page.slug, "title": page.title, "description": page.description,
            "consent_text": page.consent_text, "double_opt_in": page.double_opt_in,
            "action": format!("/p/{}", page.slug),
        },
        "form": {"token_name": guard::TOKEN, "token": token, "honeypot": guard::HONEYPOT, "hidden": hidden},
        "values": values, "errors": errors, "fields": fields, "consents": consents, "message": message,
    });
    tera::Context::from_serialize(&value).unwrap_or_default()
}

/// The shipped page templates, built into the binary: what a page falls back to when its own
/// template is missing or broken, so that a mistake in `templates/` never takes a form down.
static BUILT_IN: std::sync::LazyLock<Option<tera::Tera>> = std::sync::LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    let added = tera.add_raw_templates([
        ("pages/_style.html", include_str!("../../../templates/pages/_style.html")),
        ("pages/default.html", include_str!("../../../templates/pages/default.html")),
        ("pages/thank-you.html", include_str!("../../../templates/pages/thank-you.html")),
    ]);
    added.map(|()| tera).map_err(|e| tracing::error!(error = %e, "the built-in page templates do not parse")).ok()
});

/// Renders the template `name`, or when it cannot be rendered, the built-in `fallback`.
/// Renders a page template (with `business` added to its context), or the built-in one.
fn render(state: &AppState, name: &str, fallback: &str, mut context: tera::Context, status: StatusCode) -> Response {
    context.insert("business", &state.config.business);
    let rendered = state.catalog.templates().tera().render(name, &context).or_else(|e| {
        tracing::error!(template = name, error = %e, "a page template failed to render; the built-in one is shown");
        BUILT_IN.as_ref().map_or(Err(e), |built_in| built_in.render(fallback, &context))
    });
    match rendered {
        Ok(body) => (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "a page template failed to render");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>This page cannot be shown just now. Please try again in a minute.</p>",
            )
        }
    }
}

/// The visit's attribution as hidden fields: UTM parameters and click ids from the query, and
/// the referrer the browser sent.
fn attribution_fields(query: &BTreeMap<String, String>, headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut hidden: BTreeMap<String, String> = attribution::PARAMS
        .iter()
        .filter_map(|p| query.get(*p).map(|v| ((*p).to_owned(), v.chars().take(500).collect())))
        .collect();
    if let Some(referrer) = text_header(headers, header::REFERER, 2000) {
        hidden.insert("referrer".into(), referrer);
    }
    hidden
}

async fn show(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    method: axum::http::Method,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(page) = state.catalog.pages().get(&slug) else { return page_not_found() };
    // Counted server-side, without cookies; machines apart.
    let landing = format!("{}p/{}", state.config.base_url, page.slug);
    let referrer = text_header(&headers, header::REFERER, 2000);
    let touch = attribution::touch(&query, referrer.as_deref(), &landing);
    let agent = text_header(&headers, header::USER_AGENT, 500);
    let what = if crate::rollups::funnel::is_bot(method == axum::http::Method::HEAD, agent.as_deref()) {
        crate::rollups::funnel::Count::BotView
    } else {
        crate::rollups::funnel::Count::View
    };
    let from =
        crate::rollups::funnel::Source::of(touch.source.as_deref(), touch.medium.as_deref(), touch.campaign.as_deref());
    if let Err(e) =
        crate::rollups::funnel::record(&state.db, state.clock.now().date_naive(), &page.slug, &from, what).await
    {
        tracing::warn!(page = %page.slug, error = %e, "a page view could not be counted");
    }
    let token = state.signer.form_token(&page.slug, state.clock.now());
    let hidden = attribution_fields(&query, &headers);
    let context = context(&page, &token, &hidden, &BTreeMap::new(), &BTreeSet::new(), &BTreeMap::new(), None);
    render(&state, &page.template, crate::workflow::page::DEFAULT_TEMPLATE, context, StatusCode::OK)
}

async fn thanks(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    let Some(page) = state.catalog.pages().get(&slug) else { return page_not_found() };
    match &page.thank_you {
        ThankYou::Redirect(url) => redirect(url),
        ThankYou::Template(name) => {
            let context =
                context(&page, "", &BTreeMap::new(), &BTreeMap::new(), &BTreeSet::new(), &BTreeMap::new(), None);
            render(&state, name, crate::workflow::page::DEFAULT_THANK_YOU, context, StatusCode::OK)
        }
    }
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => plain(StatusCode::OK, "Thank you", "<p>Thank you.</p>"),
    }
}

/// CORS headers for an origin the page allows (none otherwise).
fn cors(page: &Page, headers: &HeaderMap, response: &mut Response) {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return };
    if page.cors.iter().any(|allowed| allowed == origin)
        && let Ok(value) = HeaderValue::from_str(origin)
    {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

async fn preflight(State(catalog): State<Arc<Catalog>>, Path(slug): Path<String>, headers: HeaderMap) -> Response {
    let Some(page) = catalog.pages().get(&slug) else { return page_not_found() };
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(&page, &headers, &mut response);
    if response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

/// A form token for a page embedded elsewhere (JSON), with what the form should ask.
async fn token(
    State(clock): State<SharedClock>,
    State(catalog): State<Arc<Catalog>>,
    State(signer): State<Signer>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(page) = catalog.pages().get(&slug) else { return page_not_found() };
    let token = signer.form_token(&page.slug, clock.now());
    let fields: Vec<String> = page.fields.iter().map(|f| f.name()).collect();
    let required: Vec<String> = page.required.iter().map(|f| f.name()).collect();
    let body = json!({
        "token": token, "token_field": guard::TOKEN, "honeypot": guard::HONEYPOT,
        "fields": fields, "required": required, "channels": page.channels, "consent_text": page.consent_text,
    });
    let mut response = ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response();
    cors(&page, &headers, &mut response);
    response
}

/// A posted form or JSON body as field texts and ticked boxes.
fn read_body(json: bool, body: &[u8]) -> Result<(BTreeMap<String, String>, BTreeSet<Channel>), ApiError> {
    let mut values = BTreeMap::new();
    let mut ticked = BTreeSet::new();
    let tick = |name: &str, ticked: &mut BTreeSet<Channel>| {
        if let Some(channel) = name.strip_prefix("consent_").and_then(|c| c.parse::<Channel>().ok()) {
            ticked.insert(channel);
        }
    };
    if json {
        let parsed: serde_json::Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not a JSON object: {e}"))
        })?;
        for (key, value) in parsed {
            match (key.as_str(), value) {
                ("consent", Value::Array(items)) => {
                    for item in items.iter().filter_map(Value::as_str) {
                        tick(&format!("consent_{item}"), &mut ticked);
                    }
                }
                ("attributes", Value::Object(map)) => {
                    for (k, v) in map {
                        if let Some(text) = v.as_str() {
                            values.insert(format!("attributes.{k}"), text.to_owned());
                        }
                    }
                }
                (name, Value::Bool(true)) => tick(name, &mut ticked),
                (_, Value::String(text)) => {
                    values.insert(key, text);
                }
                (_, Value::Null | Value::Bool(false)) => {}
                (name, _) => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_body",
                        format!("'{name}' must be a string"),
                    )
                    .with_field(name));
                }
            }
        }
    } else {
        for (key, value) in url::form_urlencoded::parse(body) {
            if key.starts_with("consent_") {
                if !value.is_empty() {
                    tick(&key, &mut ticked);
                }
            } else {
                values.insert(key.into_owned(), value.into_owned());
            }
        }
    }
    Ok((values, ticked))
}

/// The answer to a signup that went through (or a bot's): the same whatever was stored before.
fn accepted(page: &Page, json: bool, headers: &HeaderMap) -> Response {
    let mut response = if json {
        let message = if page.double_opt_in {
            "Thanks! Check your inbox (or your texts) to confirm."
        } else {
            "Thanks! You are subscribed."
        };
        (StatusCode::ACCEPTED, axum::Json(json!({"status": "received", "message": message}))).into_response()
    } else {
        match &page.thank_you {
            ThankYou::Redirect(url) => redirect(url),
            ThankYou::Template(_) => redirect(&format!("/p/{}/thanks", page.slug)),
        }
    };
    cors(page, headers, &mut response);
    response
}

async fn submit(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ClientAddress(ip): ClientAddress,
    request: Request,
) -> Response {
    let Some(page) = state.catalog.pages().get(&slug) else { return page_not_found() };
    let now = state.clock.now();
    let headers = request.headers().clone();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the form is larger than 64 KiB")
                .into_response();
        }
    };
    if let Some(ip) = ip
        && let Err(wait) = state.signup_limit.hit(ip, now)
    {
        return too_many(json, wait.num_seconds().max(1));
    }
    match handle(&state, &page, &headers, json, &body, ip).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(page = %page.slug, error = %e, "a signup could not be stored");
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record your signup just now; nothing was stored. Please try again in a minute.</p>",
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            response
        }
    }
}

fn too_many(json: bool, seconds: i64) -> Response {
    let mut response = if json {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_signups",
            format!("too many signups from this address; try again in {seconds} s"),
        )
        .into_response()
    } else {
        plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many signups",
            "<p>Too many signups came from your network just now. Please try again later.</p>",
        )
    };
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn handle(
    state: &AppState,
    page: &Arc<Page>,
    headers: &HeaderMap,
    json: bool,
    body: &Bytes,
    ip: Option<IpAddr>,
) -> crate::core::error::Result<Response> {
    let now = state.clock.now();
    let (values, ticked) = match read_body(json, body) {
        Ok(read) => read,
        Err(problem) => return Ok(problem.into_response()),
    };
    let rules = guard::Rules { min_fill: state.config.form_min_fill, max_age: chrono::Duration::hours(24) };
    let signer = &state.signer;
    let token = values.get(guard::TOKEN).cloned().unwrap_or_default();
    if let Err(rejection) =
        guard::check(signer, rules, &page.slug, values.get(guard::HONEYPOT).map(String::as_str), Some(&token), now)
    {
        tracing::info!(page = %page.slug, reason = rejection.counter(), "a bot's signup was dropped");
        let reason = rejection.counter().trim_start_matches("rejected_");
        crate::core::metrics::inc("ownlist_signups_rejected_total", &[("page", &page.slug), ("reason", reason)]);
        signup::count(&state.db, &page.slug, rejection.counter(), now).await?;
        return Ok(accepted(page, json, headers));
    }
    let mut query = BTreeMap::new();
    for name in attribution::PARAMS {
        if let Some(value) = values.get(*name) {
            query.insert((*name).to_owned(), value.clone());
        }
    }
    let referrer = values
        .get("referrer")
        .cloned()
        .or_else(|| if json { text_header(headers, header::REFERER, 2000) } else { None });
    let landing = format!("{}p/{}", state.config.base_url, page.slug);
    let touch = attribution::touch(&query, referrer.as_deref(), &landing);
    let source = crate::rollups::funnel::source_label(touch.source.as_deref());
    let from =
        crate::rollups::funnel::Source::of(touch.source.as_deref(), touch.medium.as_deref(), touch.campaign.as_deref());
    let submission = Submission {
        values: values.clone(),
        consents: ticked.clone(),
        attribution: touch,
        ip: ip.map(|ip| ip.to_string()),
        user_agent: text_header(headers, header::USER_AGENT, 500),
    };
    let valid = match signup::validate(page, submission) {
        Ok(valid) => valid,
        Err(errors) => {
            if json {
                let fields = errors.into_iter().map(|(field, message)| FieldError::new(field, message)).collect();
                let mut response = ApiError::from(Error::Invalid(fields)).into_response();
                cors(page, headers, &mut response);
                return Ok(response);
            }
            let hidden: BTreeMap<String, String> = values
                .iter()
                .filter(|(k, _)| attribution::PARAMS.contains(&k.as_str()) || k.as_str() == "referrer")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let message = "Please check the fields marked below.";
            let context = context(page, &token, &hidden, &values, &ticked, &errors, Some(message));
            return Ok(render(
                state,
                &page.template,
                crate::workflow::page::DEFAULT_TEMPLATE,
                context,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let outcome = signup::submit(&state.db, &settings(state), &state.catalog.templates(), now, page, valid).await?;
    tracing::info!(page = %page.slug, ?outcome, "signup");
    if !matches!(outcome, signup::Outcome::Unchanged) {
        crate::core::metrics::inc("ownlist_signups_total", &[("page", &page.slug), ("source", source)]);
        let day = now.date_naive();
        crate::rollups::funnel::record(&state.db, day, &page.slug, &from, crate::rollups::funnel::Count::Signup)
            .await?;
    }
    if matches!(outcome, signup::Outcome::Written { confirmations } if confirmations > 0) {
        state.engine.ring();
    }
    Ok(accepted(page, json, headers))
}

async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ClientAddress(ip): ClientAddress,
    request: Request,
) -> Response {
    let now = state.clock.now();
    let ip = ip.map(|ip| ip.to_string());
    let user_agent = text_header(request.headers(), header::USER_AGENT, 500);
    let signer = state.signer.clone();
    match signup::confirm_link(&state.db, &signer, now, &token, ip, user_agent).await {
        Ok(Confirmed::Now(slug)) => {
            let title = state.catalog.pages().get(&slug).map(|p| p.title.clone()).unwrap_or_default();
            let body = format!("<p>Thank you: you are subscribed. {}</p>", escape(&title));
            plain(StatusCode::OK, "You are confirmed", &body)
        }
        Ok(Confirmed::Already(_)) => {
            plain(StatusCode::OK, "Already confirmed", "<p>You had already confirmed: nothing more to do.</p>")
        }
        Ok(Confirmed::Expired(slug)) => plain(
            StatusCode::GONE,
            "This link has expired",
            &format!(
                "<p>Confirmation links work for a limited time. <a href=\"/p/{}\">Sign up again</a> to get a new one.</p>",
                escape(&slug)
            ),
        ),
        Ok(Confirmed::Invalid) => plain(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "<p>Check that the whole link was copied from the email.</p>",
        ),
        Err(e) => {
            tracing::error!(error = %e, "a confirmation could not be stored");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record this just now; nothing was changed. Please try again in a minute.</p>",
            )
        }
    }
}
