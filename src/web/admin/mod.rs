//! The dashboard at `/admin`: read-only pages rendered on the server (tera templates compiled
//! into the binary, SVG charts, no script), behind a login with an admin token.
//!
//! - `/admin/login`: the token once; it opens a session (see [`session`]); `/admin/logout` ends it.
//! - `/admin`: the funnel over a date range (the last 30 days by default), daily, with the top
//!   landing pages and sources;
//! - `/admin/pages/{slug}`: one landing page's funnel, by source;
//! - `/admin/workflows`, `/admin/workflows/{id}`: each step's flow, where people wait and drop;
//! - `/admin/delivery`: the outbox now, each relay's and provider's sends and failures, the
//!   circuit breakers;
//! - `/admin/subscribers?q=`, `/admin/subscribers/{id}`: a person and their timeline;
//! - `/admin/broadcasts`, `/admin/broadcasts/{id}`: every broadcast with its figures, one
//!   broadcast's report, cancel (editors);
//! - `/admin/audit`: who did what, in the API and here (admins).
//!
//! A session has its token's role (see [`crate::tokens::Role`]): a page or action the role may
//! not use answers 403. Every form that changes something carries the session's form token and
//! must come from the dashboard's own pages (`Origin`, `Sec-Fetch-Site`).
//!
//! Every figure comes from the same functions as `/api/v1/stats/*`.

mod audience;
pub mod charts;
mod compose;
mod console;
mod flows;
mod people;
pub mod session;
mod timeline;
mod transfer;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Router;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{Duration, NaiveDate};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::core::clock::SharedClock;
use crate::stats::{self, Days, Filter};
use crate::store::Db;
use crate::tokens::Role;
use crate::web::AppState;
use crate::web::extract::ClientAddress;
use crate::workflow::catalog::Catalog;
use crate::workflow::engine::Engine;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("range.html", include_str!("templates/range.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("page.html", include_str!("templates/page.html")),
    ("workflows.html", include_str!("templates/workflows.html")),
    ("workflow.html", include_str!("templates/workflow.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
    ("subscribers.html", include_str!("templates/subscribers.html")),
    ("subscriber.html", include_str!("templates/subscriber.html")),
    ("error.html", include_str!("templates/error.html")),
    ("broadcasts.html", include_str!("templates/broadcasts.html")),
    ("broadcast.html", include_str!("templates/broadcast.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("lists.html", include_str!("templates/lists.html")),
    ("list.html", include_str!("templates/list.html")),
    ("import.html", include_str!("templates/import.html")),
    ("plan.html", include_str!("templates/plan.html")),
    ("compose.html", include_str!("templates/compose.html")),
    ("simulate.html", include_str!("templates/simulate.html")),
];

/// The dashboard's templates, parsed once (a failure here is a bug, shown as an error page).
static TERA: LazyLock<Result<tera::Tera, String>> = LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    tera.add_raw_templates(TEMPLATES.iter().copied()).map_err(|e| format!("{e:?}"))?;
    Ok(tera)
});

/// Failed logins from one address in an hour, after which it must wait (429).
pub const FAILED_LOGINS_PER_HOUR: u32 = 20;

/// How many days the pages show when no range is asked for.
const DEFAULT_DAYS: i64 = 30;

pub fn routes(state: AppState) -> Router<AppState> {
    let private = Router::new()
        .route("/admin", get(overview))
        .route("/admin/pages/{slug}", get(landing_page))
        .route("/admin/workflows", get(workflows))
        .route("/admin/workflows/plan", get(flows::plan))
        .route("/admin/workflows/reload", post(flows::reload))
        .route("/admin/workflows/{id}", get(workflow))
        .route("/admin/workflows/{id}/pause", post(flows::pause))
        .route("/admin/workflows/{id}/resume", post(flows::resume))
        .route("/admin/workflows/{id}/simulate", get(flows::simulate))
        .route("/admin/delivery", get(delivery))
        .route("/admin/subscribers", get(people::all).post(people::add))
        .route("/admin/subscribers/{id}", get(subscriber).post(people::edit))
        .route("/admin/subscribers/{id}/unsubscribe", post(people::unsubscribe))
        .route("/admin/subscribers/{id}/erase", post(people::erase))
        .route("/admin/broadcasts", get(console::broadcasts))
        .route("/admin/broadcasts/new", get(compose::new).post(compose::act))
        .route("/admin/broadcasts/{id}", get(console::broadcast))
        .route("/admin/broadcasts/{id}/cancel", post(console::cancel))
        .route("/admin/audit", get(console::audit))
        .route(
            "/admin/import",
            get(transfer::form).post(transfer::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/admin/import/{id}", get(transfer::progress))
        .route("/admin/export/subscribers.csv", get(transfer::export))
        .route("/admin/lists", get(audience::all).post(audience::create))
        .route("/admin/lists/{slug}", get(audience::one).post(audience::update))
        .route("/admin/lists/{slug}/delete", post(audience::delete))
        .route("/admin/logout", post(logout))
        // After the login: the audit log (every change made here, as the API's), then the role.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::web::api::audit::record))
        .route_layer(middleware::from_fn_with_state(state, require_session));
    Router::new().route("/admin/login", get(login_form).post(login)).merge(private)
}

/// A page, with the headers every dashboard response carries.
fn render(name: &str, status: StatusCode, mut context: Value) -> Response {
    let caller = CALLER.try_with(|c| c.clone()).ok();
    if let Some(map) = context.as_object_mut() {
        let role = caller.as_ref().map(|c| c.role);
        map.insert("form_token".into(), json!(caller.as_ref().map(|c| c.form_token.clone()).unwrap_or_default()));
        map.insert("who".into(), json!(caller.as_ref().map(|c| c.actor.label()).unwrap_or_default()));
        map.insert("role".into(), json!(role.map(Role::as_str).unwrap_or_default()));
        map.insert("can_edit".into(), json!(role.is_some_and(|r| r >= Role::Editor)));
        map.insert("is_admin".into(), json!(role == Some(Role::Admin)));
    }
    let rendered = match &*TERA {
        Ok(tera) => tera::Context::from_serialize(&context)
            .map_err(|e| e.to_string())
            .and_then(|c| tera.render(name, &c).map_err(|e| format!("{e:?}"))),
        Err(e) => Err(e.clone()),
    };
    let (status, body) = match rendered {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(template = name, error = %e, "a dashboard template failed to render");
            let body = "<!doctype html><title>Error</title><p>This page cannot be shown. The error is in the log.</p>";
            (StatusCode::INTERNAL_SERVER_ERROR, body.to_owned())
        }
    };
    let mut response = (status, Html(body)).into_response();
    secure_headers(response.headers_mut());
    response
}

pub(super) fn secure_headers(headers: &mut HeaderMap) {
    let fixed = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// An error shown as a page of the dashboard.
fn error_page(status: StatusCode, message: &str) -> Response {
    render("error.html", status, json!({"title": "Problem", "section": "", "message": message}))
}

/// Who is using the dashboard: set for the handling of each request behind the login, and read
/// by [`render`] (the navigation shows what the role may do; forms carry the session's token).
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: crate::audience::Actor,
    pub role: Role,
    /// The token every form posts back (CSRF).
    pub form_token: String,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// The least role a dashboard request needs: the audit log and tokens are for admins, every
/// change (a POST) but logging out is for editors, every page for viewers.
fn console_role(method: &axum::http::Method, path: &str) -> Role {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if under("/admin/audit") || under("/admin/tokens") {
        Role::Admin
    } else if under("/admin/export") {
        // Every subscriber's personal data at once: as in the API, for editors.
        Role::Editor
    } else if method != axum::http::Method::GET && method != axum::http::Method::HEAD && path != "/admin/logout" {
        Role::Editor
    } else {
        Role::Viewer
    }
}

/// What a session's role may do, and where a change may come from: runs inside the audit log,
/// so a refusal is logged too, and before the body is read.
async fn guard(
    axum::Extension(caller): axum::Extension<Caller>,
    State(config): State<Arc<Config>>,
    request: Request,
    next: Next,
) -> Response {
    let needed = console_role(request.method(), request.uri().path());
    if caller.role < needed {
        let article = if caller.role == Role::Admin { "an" } else { "a" };
        let message =
            format!("This needs the {needed} role; you are logged in with a token that is {article} {}.", caller.role);
        return error_page(StatusCode::FORBIDDEN, &message);
    }
    // A change comes from the dashboard's own pages: never from a form on another site.
    if request.method() != axum::http::Method::GET && !same_site(request.headers(), &config.base_url) {
        return error_page(StatusCode::FORBIDDEN, "Send this from the dashboard's own page.");
    }
    next.run(request).await
}

/// The 403 page for a posted form without the session's token, if it is without.
fn refused_form(caller: &Caller, presented: &str) -> Option<Response> {
    (!session::same_form_token(&caller.form_token, presented)).then(|| {
        error_page(StatusCode::FORBIDDEN, "This form has expired. Go back, reload the page and send it again.")
    })
}

/// What a handler returns: a page, or an error page.
type Shown = Result<Response, Response>;

fn failed(e: crate::core::error::Error) -> Response {
    match e {
        crate::core::error::Error::NotFound { what } => error_page(StatusCode::NOT_FOUND, &format!("No such {what}.")),
        other => {
            tracing::error!(error = %other, "a dashboard page failed");
            error_page(StatusCode::SERVICE_UNAVAILABLE, "The database did not answer. Try again in a minute.")
        }
    }
}

/// Only with a session: anything else is sent to the login page (which brings them back).
async fn require_session(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(config): State<Arc<Config>>,
    mut request: Request,
    next: Next,
) -> Response {
    let found = match session::from_headers(request.headers()) {
        Some(secret) => session::find(&db, &secret, config.admin_token.as_deref(), clock.now()).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(session)) => {
            let actor = match session.row.actor.strip_prefix("token:") {
                Some("bootstrap") => crate::audience::Actor::Bootstrap,
                Some(name) => crate::audience::Actor::Token(name.to_owned()),
                None => crate::audience::Actor::Cli,
            };
            let form_token = session::form_token(config.secret.as_deref().unwrap_or_default(), &session.row.id);
            let caller = Caller { actor: actor.clone(), role: session.role, form_token };
            request.extensions_mut().insert(actor);
            request.extensions_mut().insert(session.role);
            request.extensions_mut().insert(caller.clone());
            CALLER.scope(caller, next.run(request)).await
        }
        Ok(None) => {
            let wanted = request.uri().path_and_query().map_or("/admin", |p| p.as_str());
            let next_path = if request.method() == axum::http::Method::GET { wanted } else { "/admin" };
            let target = format!("/admin/login?next={}", urlencoding(next_path));
            let mut response = Redirect::to(&target).into_response();
            secure_headers(response.headers_mut());
            response
        }
        Err(e) => failed(e),
    }
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Where to go after logging in: a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> String {
    let Some(next) = next else { return "/admin".to_owned() };
    let path = next.split(['?', '#']).next().unwrap_or_default();
    let dashboard = path == "/admin" || path.starts_with("/admin/");
    // Printable ASCII only (no CR, LF, NUL or spaces to break a header), no backslash, and no
    // `.` or `..` segment, written plainly or percent-encoded, that could climb out of /admin.
    let plain = next.len() <= 1000 && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let climbs = path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    });
    if dashboard && plain && !climbs { next.to_owned() } else { "/admin".to_owned() }
}

/// Whether a login form was posted from the dashboard's own page: a browser says where a form
/// comes from (`Sec-Fetch-Site`, `Origin`), and a form on another site must not log a visitor
/// in to a session of its choosing. Clients that send neither header (scripts) are let through.
fn same_site(headers: &HeaderMap, base_url: &url::Url) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text("origin") else { return true };
    let Ok(origin) = url::Url::parse(origin) else { return false };
    let host = |u: &url::Url| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(80)));
    let ours = host(base_url);
    let requested = text("host").map(|h| if h.contains(':') { h.to_owned() } else { format!("{h}:80") });
    let theirs = host(&origin);
    theirs.is_some() && (theirs == ours || theirs == requested)
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(Query(query): Query<LoginQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    render("login.html", StatusCode::OK, json!({"title": "Log in", "section": "", "next": next, "error": null}))
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let now = state.clock.now();
    let page = |status: StatusCode, error: &str| {
        let context = json!({"title": "Log in", "section": "", "next": next, "error": error});
        render("login.html", status, context)
    };
    // Guessing is slowed down: past the limit of failures, an address waits, token or not.
    if let Some(wait) = ip.and_then(|ip| state.login_limit.blocked(ip, now)) {
        let mut response = page(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins from here. Try again later.");
        if let Ok(seconds) = HeaderValue::from_str(&wait.num_seconds().to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        return response;
    }
    if !same_site(&headers, &state.config.base_url) {
        return page(StatusCode::FORBIDDEN, "Log in from this dashboard's own login page.");
    }
    let refused = || {
        if let Some(ip) = ip {
            let _ = state.login_limit.hit(ip, now);
        }
        page(StatusCode::UNAUTHORIZED, "That token is not valid.")
    };
    let token = form.token.trim();
    if token.is_empty() || token.len() > 200 {
        return refused();
    }
    let actor = match crate::tokens::authenticate(&state.db, state.config.admin_token.as_deref(), token).await {
        Ok(Some((actor, _role))) => actor,
        Ok(None) => return refused(),
        Err(e) => return failed(e),
    };
    let ttl = state.config.admin_session_ttl;
    let secret = match session::open(&state.db, &actor, state.config.admin_token.as_deref(), now, ttl).await {
        Ok(secret) => secret,
        Err(e) => return failed(e),
    };
    let secure = state.config.base_url.scheme() == "https";
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::cookie(Some(&secret), ttl, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    secure_headers(response.headers_mut());
    response
}

async fn logout(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    Form(form): Form<console::TokenOnly>,
) -> Response {
    if let Some(refused) = refused_form(&caller, form.token()) {
        return refused;
    }
    if let Some(secret) = session::from_headers(&headers)
        && let Err(e) = session::close(&db, &secret).await
    {
        return failed(e);
    }
    let secure = config.base_url.scheme() == "https";
    let mut response = Redirect::to("/admin/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::cookie(None, Duration::zero(), secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    secure_headers(response.headers_mut());
    response
}

#[derive(Debug, Default, Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The range asked for (the last 30 days by default), every day in it, and what was wrong with
/// the question, if anything (then the default is shown).
fn range(query: &RangeQuery, today: NaiveDate) -> (Days, Vec<String>, Option<String>) {
    let parse = |v: &Option<String>| {
        v.as_deref().filter(|s| !s.trim().is_empty()).map(|s| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d"))
    };
    let default_from = today - Duration::days(DEFAULT_DAYS - 1);
    let (from, to, problem) = match (parse(&query.from), parse(&query.to)) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => (default_from, today, Some("Dates look like 2026-03-01.".to_owned())),
        (from, to) => {
            let to = to.and_then(Result::ok).unwrap_or(today);
            let from = from.and_then(Result::ok).unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
            if from > to {
                (default_from, today, Some("The first day is after the last one.".to_owned()))
            } else if (to - from).num_days() > 3660 {
                (default_from, today, Some("Ten years at most.".to_owned()))
            } else {
                (from, to, None)
            }
        }
    };
    let labels = from.iter_days().take_while(|d| *d <= to).map(crate::rollups::day_key).collect();
    (Days { from: Some(from), to: Some(to) }, labels, problem)
}

fn range_context(days: &Days, problem: Option<String>) -> Value {
    json!({"from": days.from.map(crate::rollups::day_key), "to": days.to.map(crate::rollups::day_key), "problem": problem})
}

fn percent(share: Option<f64>) -> String {
    share.map(|s| format!("{:.1}%", s * 100.0)).unwrap_or_else(|| "–".to_owned())
}

/// The funnel's stages as the pages label them.
fn stage_label(stage: &str) -> &str {
    match stage {
        "views" => "Views",
        "signups" => "Signups",
        "confirmed" => "Confirmed",
        "opened" => "Opened an email",
        "clicked" => "Clicked a link",
        "goal_reached" => "Reached a goal",
        other => other,
    }
}

/// The funnel's figures, chart and daily chart for a filter.
async fn funnel_context(state: &AppState, filter: &Filter, labels: &[String]) -> Result<Value, Response> {
    let funnel = stats::funnel::funnel(&state.db, filter).await.map_err(failed)?;
    let stages: Vec<Value> = funnel
        .stages
        .iter()
        .map(|s| json!({"stage": s.stage, "label": stage_label(&s.stage), "count": s.count, "conversion": percent(s.conversion)}))
        .collect();
    let bars: Vec<(String, i64, Option<String>)> = funnel
        .stages
        .iter()
        .map(|s| {
            (stage_label(&s.stage).to_owned(), s.count, s.conversion.map(|c| format!("{:.1}% of previous", c * 100.0)))
        })
        .collect();
    let by_day: BTreeMap<&str, &stats::funnel::Counts> =
        funnel.by_day.iter().map(|k| (k.key.as_str(), &k.counts)).collect();
    let series = |pick: fn(&stats::funnel::Counts) -> i64| -> Vec<i64> {
        labels.iter().map(|d| by_day.get(d.as_str()).map_or(0, |c| pick(c))).collect()
    };
    let daily = charts::lines(
        "daily",
        "Views, signups and confirmed subscribers per day",
        labels,
        &[("views", series(|c| c.views)), ("signups", series(|c| c.signups)), ("confirmed", series(|c| c.confirmed))],
    );
    let rows = |list: &[stats::funnel::Keyed]| -> Vec<Value> {
        list.iter()
            .map(|k| {
                json!({"key": k.key, "views": k.counts.views, "signups": k.counts.signups, "confirmed": k.counts.confirmed,
                       "goals": k.counts.goals, "conversion": percent(k.conversion)})
            })
            .collect()
    };
    Ok(json!({
        "stages": stages,
        "bot_views": funnel.bot_views,
        "funnel_chart": charts::bars("funnel", "The funnel, stage by stage", &bars),
        "daily_chart": daily,
        "days": funnel.by_day.iter().map(|k| json!({"day": k.key, "views": k.counts.views, "signups": k.counts.signups, "confirmed": k.counts.confirmed})).collect::<Vec<_>>(),
        "pages": rows(&funnel.by_page),
        "sources": rows(&funnel.by_source),
        "totals": funnel.totals,
        "confirm_rate": percent(stats::ratio(funnel.totals.confirmed, funnel.totals.views)),
    }))
}

async fn overview(State(state): State<AppState>, Query(query): Query<RangeQuery>) -> Shown {
    let (days, labels, problem) = range(&query, state.clock.now().date_naive());
    let filter = Filter { days, ..Filter::default() };
    let mut funnel = funnel_context(&state, &filter, &labels).await?;
    // Every declared page is listed, those without a visit in the range too (last).
    if let Some(pages) = funnel["pages"].as_array_mut() {
        for page in state.catalog.pages().all() {
            if !pages.iter().any(|p| p["key"] == page.slug.as_str()) {
                pages.push(json!({"key": page.slug, "views": 0, "signups": 0, "confirmed": 0, "goals": 0,
                                  "conversion": percent(None)}));
            }
        }
    }
    let (multi, weakest, people) =
        crate::audience::reach::overview(&state.db, &state.config.reach_providers()).await.map_err(failed)?;
    let reach = json!({
        "people": people,
        "multi_channel": percent(multi),
        "weakest": weakest.map(|w| json!({"lose": w.lose, "unreachable": w.unreachable, "share": percent(w.share)})),
    });
    let context = json!({"title": "Overview", "section": "overview", "range": range_context(&days, problem),
                         "funnel": funnel, "reach": reach});
    Ok(render("overview.html", StatusCode::OK, context))
}

async fn landing_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Shown {
    let declared = state.catalog.pages().get(&slug);
    let (days, labels, problem) = range(&query, state.clock.now().date_naive());
    let filter = Filter { page: Some(slug.clone()), days, ..Filter::default() };
    let funnel = funnel_context(&state, &filter, &labels).await?;
    if declared.is_none() && funnel["totals"]["views"] == 0 && funnel["totals"]["signups"] == 0 {
        return Err(error_page(StatusCode::NOT_FOUND, "No such landing page."));
    }
    let sources = funnel["sources"].as_array().cloned().unwrap_or_default();
    let bars: Vec<(String, i64, Option<String>)> = sources
        .iter()
        .map(|s| {
            let key = s["key"].as_str().filter(|k| !k.is_empty()).unwrap_or("(direct)").to_owned();
            (key, s["confirmed"].as_i64().unwrap_or(0), Some(format!("of {} views", s["views"].as_i64().unwrap_or(0))))
        })
        .collect();
    let context = json!({
        "title": format!("Page {slug}"), "section": "overview", "slug": slug,
        "page_title": declared.as_ref().map(|p| p.title.clone()), "list": declared.as_ref().map(|p| p.list.clone()),
        "goal": declared.as_ref().and_then(|p| p.goal.clone()),
        "range": range_context(&days, problem), "funnel": funnel,
        "sources_chart": charts::bars("sources", "Confirmed subscribers by source", &bars),
    });
    Ok(render("page.html", StatusCode::OK, context))
}

async fn workflows(
    State(db): State<Db>,
    State(clock): State<SharedClock>,
    State(engine): State<Arc<Engine>>,
    State(catalog): State<Arc<Catalog>>,
    Query(query): Query<RangeQuery>,
) -> Shown {
    let (days, _, problem) = range(&query, clock.now().date_naive());
    let mut rows = Vec::new();
    for (id, current) in engine.registry().current() {
        if current.status == crate::workflow::registry::Status::Removed {
            continue;
        }
        let figures = stats::steps::workflow(&db, &id, &[], days).await.map_err(failed)?;
        rows.push(json!({
            "id": id, "name": current.program.workflow.name, "version": current.version,
            "status": format!("{:?}", current.status).to_lowercase(),
            "enrolled": figures.enrolled, "completed": figures.completed, "exited": figures.exited,
            "active_now": figures.active_now,
        }));
    }
    let context = json!({
        "title": "Workflows", "section": "workflows", "range": range_context(&days, problem), "workflows": rows,
        "problems": catalog.problems(),
    });
    Ok(render("workflows.html", StatusCode::OK, context))
}

async fn workflow(State(state): State<AppState>, Path(id): Path<String>, Query(query): Query<RangeQuery>) -> Shown {
    let (db, clock, engine) = (&state.db, &state.clock, &state.engine);
    let current = engine.registry().current();
    let found = current.get(&id).ok_or_else(|| error_page(StatusCode::NOT_FOUND, "No such workflow."))?;
    let (days, _, problem) = range(&query, clock.now().date_naive());
    let steps = stats::steps::steps_of(&found.program.workflow);
    let figures = stats::steps::workflow(db, &id, &steps, days).await.map_err(failed)?;
    let file = flows::file_of(&state, &id);
    let file_name = file.as_ref().and_then(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned());
    let file_text = file.and_then(|f| std::fs::read_to_string(f).ok());
    let mut cards = Vec::new();
    for s in &figures.steps {
        cards.push(json!({
            "step": s.step, "kind": s.kind, "entered": s.entered, "completed": s.completed, "skipped": s.skipped,
            "skipped_by_reason": s.skipped_by_reason, "exited": s.exited, "waiting_now": s.waiting_now,
            "sent": s.sent, "delivered": s.delivered, "failed": s.failed, "opened": s.opened, "clicked": s.clicked,
            "opened_by_machine": s.opened_by_machine, "clicked_by_machine": s.clicked_by_machine,
            "unsubscribed": s.unsubscribed, "open_rate": percent(s.open_rate), "click_rate": percent(s.click_rate),
            "message": s.sent > 0 || s.delivered > 0 || matches!(s.kind.as_deref(), Some("email" | "sms" | "webhook")),
            "went_on": s.completed + s.skipped,
        }));
    }
    let bars: Vec<(String, i64, Option<String>)> = figures
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.entered, (s.waiting_now > 0).then(|| format!("{} waiting now", s.waiting_now))))
        .collect();
    let context = json!({
        "title": format!("Workflow {}", found.program.workflow.name), "section": "workflows", "id": id,
        "name": found.program.workflow.name, "version": found.version,
        "status": format!("{:?}", found.status).to_lowercase(),
        "range": range_context(&days, problem),
        "enrolled": figures.enrolled, "completed": figures.completed, "exited": figures.exited,
        "active_now": figures.active_now, "steps": cards,
        "chart": charts::bars("entered", "Subscribers who reached each step", &bars),
        "file": file_text, "file_name": file_name,
    });
    Ok(render("workflow.html", StatusCode::OK, context))
}

async fn delivery(State(db): State<Db>, State(clock): State<SharedClock>, Query(query): Query<RangeQuery>) -> Shown {
    let now = clock.now();
    let (days, labels, problem) = range(&query, now.date_naive());
    let outbox = stats::delivery::outbox(&db, now).await.map_err(failed)?;
    let figures = stats::delivery::delivery(&db, days).await.map_err(failed)?;
    let open: BTreeMap<String, bool> = crate::core::metrics::gauges("ownlist_circuit_open")
        .into_iter()
        .filter_map(|(labels, value)| labels.into_iter().find(|(k, _)| *k == "relay").map(|(_, v)| (v, value > 0.0)))
        .collect();
    let mut relays: Vec<Value> = figures
        .relays
        .iter()
        .map(|r| {
            json!({"channel": r.channel, "relay": r.relay, "sent": r.sent, "failed": r.failed, "retried": r.retried,
                   "attempts": r.attempts, "latency": r.mean_latency_ms.map(|ms| format!("{ms:.0} ms")),
                   "success": percent(r.success_rate), "open": open.get(&r.relay).copied().unwrap_or(false)})
        })
        .collect();
    for (relay, is_open) in &open {
        if !figures.relays.iter().any(|r| &r.relay == relay) {
            relays.push(json!({"channel": "", "relay": relay, "sent": 0, "failed": 0, "retried": 0, "attempts": 0,
                               "latency": null, "success": "–", "open": is_open}));
        }
    }
    let by_day: BTreeMap<&str, &stats::delivery::DayStats> =
        figures.by_day.iter().map(|d| (d.day.as_str(), d)).collect();
    let series = |pick: fn(&stats::delivery::DayStats) -> i64| -> Vec<i64> {
        labels.iter().map(|d| by_day.get(d.as_str()).map_or(0, |s| pick(s))).collect()
    };
    let chart = charts::lines(
        "deliveries",
        "Messages sent, failed and retried per day",
        &labels,
        &[("sent", series(|s| s.sent)), ("failed", series(|s| s.failed)), ("retried", series(|s| s.retried))],
    );
    let outbox: Vec<Value> = outbox
        .iter()
        .map(|d| json!({"channel": d.channel, "queued": d.queued, "due": d.due, "oldest": age(d.oldest_due_seconds)}))
        .collect();
    let context = json!({
        "title": "Delivery", "section": "delivery", "range": range_context(&days, problem),
        "outbox": outbox, "relays": relays, "chart": chart,
    });
    Ok(render("delivery.html", StatusCode::OK, context))
}

/// A wait in words: `0 s`, `42 s`, `5 min`, `3 h 20 min`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn name_of(s: &crate::audience::subscribers::SubscriberView) -> String {
    [s.first_name.as_deref(), s.last_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ")
}

async fn subscriber(State(state): State<AppState>, Path(id): Path<String>) -> Shown {
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return Err(error_page(StatusCode::NOT_FOUND, "No such subscriber."));
    };
    subscriber_page(&state, id, StatusCode::OK, None).await
}

/// A person's page: details, consent records, timeline, and (for editors) what can be changed.
async fn subscriber_page(state: &AppState, id: uuid::Uuid, status: StatusCode, problem: Option<String>) -> Shown {
    let db = &state.db;
    let person = crate::audience::subscribers::get(db, id).await.map_err(failed)?;
    let page = crate::audience::subscribers::PageRequest { limit: Some(500), cursor: None };
    let timeline = crate::audience::subscribers::timeline(db, id, page).await.map_err(failed)?;
    let names = timeline::Names::of(db, &timeline.data).await.map_err(failed)?;
    let events: Vec<Value> = timeline
        .data
        .iter()
        .map(|e| {
            json!({"at": e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(), "kind": e.kind,
                   "words": names.describe(&e.kind, &e.data)})
        })
        .collect();
    let consents: Vec<Value> = crate::audience::subscribers::consents(db, id)
        .await
        .map_err(failed)?
        .iter()
        .rev()
        .map(|c| {
            json!({
                "at": c.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(), "channel": c.channel.as_str(),
                "granted": c.granted, "method": c.method.as_str(), "text": c.text, "version": c.text_version,
                "page": c.page, "page_version": c.page_version, "ip": c.ip, "user_agent": c.user_agent,
                "source": c.source,
            })
        })
        .collect();
    let context = json!({
        "title": format!("Subscriber {}", person.email.clone().or(person.phone.clone()).unwrap_or_default()),
        "section": "subscribers", "person": person, "name": name_of(&person), "events": events, "consents": consents,
        "more": timeline.next_cursor.is_some(), "problem": problem,
        "address": person.email.clone().or(person.phone.clone()).unwrap_or_default(), "tags": person.tags.join(", "),
    });
    Ok(render("subscriber.html", status, context))
}

/// An event's data in one line: `key: value` pairs, nested values as JSON.
fn summary(data: &Value) -> String {
    match data {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(" · "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        assert!(TERA.as_ref().is_ok(), "{:?}", TERA.as_ref().err());
    }

    #[test]
    fn only_dashboard_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/admin/workflows?from=2026-03-01")), "/admin/workflows?from=2026-03-01");
        assert_eq!(safe_next(Some("/admin")), "/admin");
        for evil in [
            "https://evil.example/",
            "//evil.example/admin",
            "/p/guide",
            "/admin\\..",
            "",
            "/admin/../../p/x",
            "/admin/%2E%2e/p/x",
            "/admin/./../p",
            "/adminx",
            "/admin/\r\nSet-Cookie: x=1",
            "/admin/\0",
            "/admin/a b",
        ] {
            assert_eq!(safe_next(Some(evil)), "/admin", "{evil:?}");
        }
    }

    #[test]
    fn a_login_form_posted_from_another_site_is_refused() {
        let base = url::Url::parse("https://lists.example.com/").unwrap();
        let with = |pairs: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            same_site(&headers, &base)
        };
        assert!(with(&[]), "a script sends neither header");
        assert!(with(&[("sec-fetch-site", "same-origin"), ("origin", "https://lists.example.com")]));
        assert!(with(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]), "as the browser asked it");
        assert!(!with(&[("sec-fetch-site", "cross-site")]));
        assert!(!with(&[("sec-fetch-site", "same-site"), ("origin", "https://evil.example.com")]));
        assert!(!with(&[("origin", "https://evil.example")]));
        assert!(!with(&[("origin", "null")]));
    }

    #[test]
    fn a_range_defaults_to_the_last_thirty_days() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 31).unwrap();
        let (days, labels, problem) = range(&RangeQuery::default(), today);
        assert_eq!(days.from, NaiveDate::from_ymd_opt(2026, 3, 2));
        assert_eq!((labels.len(), problem), (30, None));
        let bad = RangeQuery { from: Some("yesterday".into()), to: None };
        assert!(range(&bad, today).2.is_some());
        let backwards = RangeQuery { from: Some("2026-03-10".into()), to: Some("2026-03-01".into()) };
        assert_eq!(range(&backwards, today).1.len(), 30);
    }

    #[test]
    fn waits_read_as_words() {
        assert_eq!([0.0, 42.4, 300.0, 12_000.0].map(age), ["0 s", "42 s", "5 min", "3 h 20 min"]);
    }
}
