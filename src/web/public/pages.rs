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
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::face::{Face, Kind, context_of};
use crate::core::clock::SharedClock;
use crate::core::error::{Error, FieldError};
use crate::core::i18n::Words;
use crate::core::links::Signer;
use crate::core::values::Channel;
use crate::pages::signup::{self, Confirmed, Invalid, Settings, Submission};
use crate::pages::{attribution, guard};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ClientAddress;
use crate::workflow::catalog::Catalog;
use crate::workflow::page::{DEFAULT_TEMPLATE, DEFAULT_THANK_YOU, Field, Page, ThankYou};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/p/{slug}", get(show).post(submit).options(preflight))
        .route("/p/{slug}/thanks", get(thanks))
        .route("/p/{slug}/token", get(token).options(preflight))
        .route("/c/{token}", get(confirm))
        .route("/favicon.svg", get(favicon))
        .route("/robots.txt", get(robots))
        .route("/kept", get(kept))
        .route("/favicon.ico", get(|| async { axum::response::Redirect::permanent("/favicon.svg") }))
}

/// What search engines may crawl: landing pages, not personal links, tracking, the dashboard or
/// the API.
async fn robots() -> Response {
    let body = "User-agent: *\nDisallow: /admin\nDisallow: /api/\nDisallow: /c/\nDisallow: /u/\nDisallow: /preferences/\nDisallow: /t/\nAllow: /p/\n";
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=86400")], body)
        .into_response()
}

/// Where the sunset rule's "Yes, keep them coming" leads (through a tracked link, whose click is
/// what counts): a thank-you in the visitor's language.
async fn kept(State(face): State<Face>, headers: HeaderMap) -> Response {
    let lang = face.language(&[], &headers);
    face.notice(&lang, StatusCode::OK, "still_kept_title", "still_kept_text")
}

/// Every page's icon when no logo is set.
async fn favicon(State(face): State<Face>) -> Response {
    face.favicon()
}

/// The largest form or JSON body a page takes.
const MAX_BODY: usize = 64 * 1024;

pub(super) fn settings(state: &AppState) -> Settings {
    Settings {
        signer: state.signer.clone(),
        base_url: state.config.base_url.clone(),
        business: state.config.business.clone(),
        confirm_ttl: state.config.confirm_link_ttl,
        confirm_every: state.config.confirm_every,
    }
}

fn text_header(headers: &HeaderMap, name: header::HeaderName, max: usize) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(max).collect())
}

/// A field's label in the page's language (an attribute's is its name, as written).
fn label(field: &Field, words: &Words) -> String {
    let key = match field {
        Field::Email => "field_email",
        Field::Phone => "field_phone",
        Field::FirstName => "field_first_name",
        Field::LastName => "field_last_name",
        Field::Attribute(_) => return field.label(),
    };
    words.get(key).cloned().unwrap_or_else(|| field.label())
}

/// The consent words a page shows in `lang`: its own, or the language's default.
fn consent_text(page: &Page, words: &Words) -> String {
    page.consent_text.clone().unwrap_or_else(|| words.get("consent_default").cloned().unwrap_or_default())
}

/// What a form says about its refused fields, in the page's language.
fn messages(errors: &BTreeMap<String, Invalid>, words: &Words) -> BTreeMap<String, String> {
    errors
        .iter()
        .map(|(name, invalid)| {
            let field_label = Field::parse(name).map(|f| label(&f, words)).unwrap_or_else(|| name.clone());
            (name.clone(), invalid.message(&field_label, words))
        })
        .collect()
}

/// What a landing page's form holds: its token, the visit's attribution, what was typed and
/// ticked, and what was refused.
struct Form<'a> {
    token: &'a str,
    hidden: &'a BTreeMap<String, String>,
    values: &'a BTreeMap<String, String>,
    ticked: &'a BTreeSet<Channel>,
    errors: &'a BTreeMap<String, String>,
    message: Option<&'a str>,
}

impl Form<'_> {
    const EMPTY: Form<'static> = Form {
        token: "",
        hidden: &BTreeMap::new(),
        values: &BTreeMap::new(),
        ticked: &BTreeSet::new(),
        errors: &BTreeMap::new(),
        message: None,
    };
}

/// Everything a page template gets besides what every public page gets (see [`Face::render`]).
fn context(state: &AppState, page: &Page, words: &Words, form: &Form<'_>) -> tera::Context {
    let fields: Vec<Value> = page
        .fields
        .iter()
        .map(|f| {
            let name = f.name();
            let (kind, autocomplete) = f.input();
            json!({
                "name": name, "id": format!("f-{}", name.replace('.', "-")), "label": label(f, words), "type": kind,
                "autocomplete": autocomplete, "required": page.required.contains(f), "max": f.max_chars(),
                "value": form.values.get(&name).cloned().unwrap_or_default(), "error": form.errors.get(&name),
            })
        })
        .collect();
    let consents: Vec<Value> = page
        .channels
        .iter()
        .map(|c| {
            let key = match c {
                Channel::Email => "consent_email",
                Channel::Sms => "consent_sms",
                Channel::Whatsapp => "consent_whatsapp",
            };
            let label = words.get(key).cloned().unwrap_or_default();
            json!({"channel": c, "name": format!("consent_{}", c.as_str()), "label": label, "checked": form.ticked.contains(c)})
        })
        .collect();
    let hidden: Vec<Value> = form.hidden.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    let cta = page.cta.clone().unwrap_or_else(|| words.get("sign_up").cloned().unwrap_or_default());
    let value = json!({
        "page": {
            "slug": page.slug, "title": page.title, "description": page.description,
            "image": page.image, "image_alt": page.image_alt.clone().unwrap_or_default(), "bullets": page.bullets,
            "cta": cta, "url": format!("{}p/{}", state.config.base_url, page.slug),
            "consent_text": consent_text(page, words), "double_opt_in": page.double_opt_in,
            "action": format!("/p/{}", page.slug),
        },
        "form": {"token_name": guard::TOKEN, "token": form.token, "honeypot": guard::HONEYPOT, "hidden": hidden},
        "values": form.values, "errors": form.errors, "fields": fields, "consents": consents, "message": form.message,
    });
    context_of(value)
}

/// The language of a landing page: its own, else the visitor's browser's.
fn page_language(face: &Face, page: &Page, headers: &HeaderMap) -> String {
    face.language(&[page.locale.as_deref()], headers)
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
    State(face): State<Face>,
    Path(slug): Path<String>,
    method: axum::http::Method,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(page) = state.catalog.pages().get(&slug) else { return face.no_page(&headers) };
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
    let lang = page_language(&face, &page, &headers);
    let words = face.translations().words(&lang);
    let context = context(&state, &page, &words, &Form { token: &token, hidden: &hidden, ..Form::EMPTY });
    face.render(&lang, &page.template, DEFAULT_TEMPLATE, context, StatusCode::OK, Kind::Public)
}

async fn thanks(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(page) = state.catalog.pages().get(&slug) else { return face.no_page(&headers) };
    let lang = page_language(&face, &page, &headers);
    match &page.thank_you {
        ThankYou::Redirect(url) => redirect(&face, &lang, url),
        ThankYou::Template(name) => {
            let words = face.translations().words(&lang);
            let context = context(&state, &page, &words, &Form::EMPTY);
            face.render(&lang, name, DEFAULT_THANK_YOU, context, StatusCode::OK, Kind::Public)
        }
    }
}

fn redirect(face: &Face, lang: &str, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => face.notice(lang, StatusCode::OK, "thanks_title", "thanks_subscribed"),
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

async fn preflight(
    State(catalog): State<Arc<Catalog>>,
    State(face): State<Face>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(page) = catalog.pages().get(&slug) else { return face.no_page(&headers) };
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
    State(face): State<Face>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(page) = catalog.pages().get(&slug) else { return face.no_page(&headers) };
    let token = signer.form_token(&page.slug, clock.now());
    let lang = page_language(&face, &page, &headers);
    let words = face.translations().words(&lang);
    let fields: Vec<String> = page.fields.iter().map(|f| f.name()).collect();
    let required: Vec<String> = page.required.iter().map(|f| f.name()).collect();
    let body = json!({
        "token": token, "token_field": guard::TOKEN, "honeypot": guard::HONEYPOT,
        "fields": fields, "required": required, "channels": page.channels, "consent_text": consent_text(&page, &words), "lang": lang,
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
fn accepted(face: &Face, lang: &str, page: &Page, json: bool, headers: &HeaderMap) -> Response {
    let mut response = if json {
        // What an embedded form shows the visitor, in the page's language.
        let message =
            face.word(lang, if page.double_opt_in { "json_thanks_confirm" } else { "json_thanks_subscribed" });
        let body = json!({"status": "received", "message": message, "lang": lang});
        (StatusCode::ACCEPTED, axum::Json(body)).into_response()
    } else {
        match &page.thank_you {
            ThankYou::Redirect(url) => redirect(face, lang, url),
            ThankYou::Template(_) => redirect(face, lang, &format!("/p/{}/thanks", page.slug)),
        }
    };
    cors(page, headers, &mut response);
    response
}

async fn submit(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(slug): Path<String>,
    ClientAddress(ip): ClientAddress,
    request: Request,
) -> Response {
    let Some(page) = state.catalog.pages().get(&slug) else {
        return face.no_page(request.headers());
    };
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
        let lang = page_language(&face, &page, &headers);
        return too_many(&face, &lang, json, wait.num_seconds().max(1));
    }
    match handle(&state, &face, &page, &headers, json, &body, ip).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(page = %page.slug, error = %e, "a signup could not be stored");
            let lang = page_language(&face, &page, &headers);
            let mut response =
                face.notice(&lang, StatusCode::SERVICE_UNAVAILABLE, "try_again_title", "signup_failed_text");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            response
        }
    }
}

fn too_many(face: &Face, lang: &str, json: bool, seconds: i64) -> Response {
    let mut response = if json {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_signups",
            format!("too many signups from this address; try again in {seconds} s"),
        )
        .into_response()
    } else {
        face.notice(lang, StatusCode::TOO_MANY_REQUESTS, "too_many_title", "too_many_text")
    };
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn handle(
    state: &AppState,
    face: &Face,
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
    // The language the form was shown in (it says so in a hidden field), else the page's.
    let lang = face.language(&[values.get("lang").map(String::as_str), page.locale.as_deref()], headers);
    let words = face.translations().words(&lang);
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
        return Ok(accepted(face, &lang, page, json, headers));
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
        lang: lang.clone(),
        consent_text: consent_text(page, &words),
    };
    let valid = match signup::validate(page, submission) {
        Ok(valid) => valid,
        Err(errors) => {
            let errors = messages(&errors, &words);
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
            let message = words.get("check_fields").cloned().unwrap_or_default();
            let form = Form {
                token: &token,
                hidden: &hidden,
                values: &values,
                ticked: &ticked,
                errors: &errors,
                message: Some(&message),
            };
            let context = context(state, page, &words, &form);
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(face.render(&lang, &page.template, DEFAULT_TEMPLATE, context, status, Kind::Public));
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
    Ok(accepted(face, &lang, page, json, headers))
}

async fn confirm(
    State(state): State<AppState>,
    State(face): State<Face>,
    Path(token): Path<String>,
    ClientAddress(ip): ClientAddress,
    request: Request,
) -> Response {
    let now = state.clock.now();
    let headers = request.headers();
    let page = |slug: &str| state.catalog.pages().get(slug);
    let lang_of = |page: Option<&Arc<Page>>| face.language(&[page.and_then(|p| p.locale.as_deref())], headers);
    let ip = ip.map(|ip| ip.to_string());
    let user_agent = text_header(request.headers(), header::USER_AGENT, 500);
    let signer = state.signer.clone();
    match signup::confirm_link(&state.db, &signer, now, &token, ip, user_agent).await {
        Ok(Confirmed::Now(slug)) => {
            let page = page(&slug);
            let title = page.as_ref().map(|p| p.title.clone()).unwrap_or_default();
            let context = context_of(json!({"page": {"slug": slug, "title": title}}));
            face.page(&lang_of(page.as_ref()), "confirmed", context, StatusCode::OK, Kind::Personal)
        }
        Ok(Confirmed::Already(slug)) => {
            let page = page(&slug);
            let context = context_of(json!({"page": {"slug": slug}}));
            face.page(&lang_of(page.as_ref()), "already-confirmed", context, StatusCode::OK, Kind::Personal)
        }
        Ok(Confirmed::Expired(slug)) => {
            let page = page(&slug);
            let again = page.as_ref().map(|p| format!("/p/{}", p.slug));
            face.expired(&lang_of(page.as_ref()), again.as_deref())
        }
        Ok(Confirmed::Invalid) => face.not_found(&lang_of(None), "link"),
        Err(e) => {
            tracing::error!(error = %e, "a confirmation could not be stored");
            face.try_again(&lang_of(None))
        }
    }
}
