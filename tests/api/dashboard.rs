//! The dashboard: no page without a session, sessions that end (logout, expiry, a revoked
//! token), and in headless Chromium every page shows the figures the API gives, with
//! screenshots at laptop and phone sizes in `target/tmp/dashboard-screenshots/`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{Backend, TestApp, expect_json, with_each_backend};

with_each_backend!(
    only_a_session_opens_the_dashboard_and_sessions_end,
    the_dashboard_shows_what_the_api_counts,
    the_bootstrap_token_opens_a_session_that_ends_when_the_setting_changes,
    the_workflows_page_lists_the_problems_of_invalid_files,
    a_viewer_looks_an_editor_acts_with_the_form_token_and_an_admin_reads_the_audit_log,
    an_editor_runs_lists_and_subscribers_through_the_consoles_forms,
    an_editor_pauses_simulates_plans_and_loads_workflows_on_their_pages,
    an_editor_composes_counts_previews_tests_and_sends_a_broadcast,
    bad_answers_to_the_consoles_forms_are_named_and_store_nothing,
);

const BOOTSTRAP: &str = "bootstrap-admin-token-0123456789";

async fn the_bootstrap_token_opens_a_session_that_ends_when_the_setting_changes(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.admin_token = Some(BOOTSTRAP.into())).await else { return };
    let cookie = log_in(&app, BOOTSTRAP).await;
    for path in ["/admin", "/admin/workflows", "/admin/delivery"] {
        let page = get_with(&app, path, &cookie).await;
        assert_eq!(page.status(), StatusCode::OK, "{path} with a bootstrap session");
    }
    // The session is tied to the token it was opened with: another setting, or none, ends it.
    use ownlist::core::clock::Clock;
    use ownlist::web::admin::session;
    let secret = cookie.split_once('=').unwrap().1;
    let now = app.clock.now();
    assert!(session::find(&app.db, secret, Some(BOOTSTRAP), now).await.unwrap().is_some());
    assert!(session::find(&app.db, secret, Some("another-bootstrap-token-0123"), now).await.unwrap().is_none());
    assert!(session::find(&app.db, secret, None, now).await.unwrap().is_none());
}

async fn the_workflows_page_lists_the_problems_of_invalid_files(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let cookie = log_in(&app, &app.token).await;
    std::fs::write(
        app.workflows_dir.join("broken.yaml"),
        "name: Broken\ntrigger: { event: x }\nsteps:\n  - id: a\n    wait: forever\n",
    )
    .unwrap();
    let response = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = get_with(&app, "/admin/workflows", &cookie).await.text().await.unwrap();
    assert!(page.contains("Problems in the workflow files"), "{page}");
    assert!(page.contains("broken.yaml:5:11"), "{page}");
    let listed = expect_json(app.get("/api/v1/workflows").await, StatusCode::OK).await;
    assert!(listed["problems"][0]["at"].as_str().unwrap().ends_with("broken.yaml:5:11"), "{listed}");
}

const PAGES: &str = "pages:
  - slug: guide
    title: Get the free guide
    list: guide-leads
    double_opt_in: false
    goal: purchased
";

const WELCOME: &str = "name: Welcome
trigger: { subscribed: guide-leads }
steps:
  - id: hello
    email: { subject: Your guide, template: emails/guide.html }
  - id: pause
    wait: 2d
  - id: later
    email: { subject: More, template: emails/welcome.html }
";

const PRIVATE: [&str; 10] = [
    "/admin",
    "/admin/pages/guide",
    "/admin/workflows",
    "/admin/workflows/welcome",
    "/admin/delivery",
    "/admin/subscribers?q=ada",
    "/admin/subscribers/0190a7c1-2222-7333-8444-555566667777",
    "/admin/broadcasts",
    "/admin/audit",
    "/admin/lists",
];

/// A form-encoded body.
fn form(request: reqwest::RequestBuilder, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    request.header("content-type", "application/x-www-form-urlencoded").body(body)
}

fn no_redirects() -> reqwest::Client {
    crate::helpers::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) dashboard test")
        .build()
        .unwrap()
}

/// Logs in with `token` and returns the session cookie (`name=value`).
pub(crate) async fn log_in(app: &TestApp, token: &str) -> String {
    let request = no_redirects().post(app.url("/admin/login"));
    let response = form(request, &[("token", token), ("next", "/admin/workflows")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/admin/workflows");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=43200"), "{cookie}");
    assert!(!cookie.contains("Secure"), "served over plain HTTP here: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

pub(crate) async fn get_with(app: &TestApp, path: &str, cookie: &str) -> reqwest::Response {
    no_redirects().get(app.url(path)).header("cookie", cookie).send().await.unwrap()
}

/// The session's form token, as a page's forms carry it.
fn form_token(html: &str) -> String {
    let start = html.find("name=\"form_token\" value=\"").expect("a form token") + "name=\"form_token\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn sent_to_login(response: &reqwest::Response) -> bool {
    response.status() == StatusCode::SEE_OTHER
        && response.headers()["location"].to_str().is_ok_and(|l| l.starts_with("/admin/login"))
}

async fn only_a_session_opens_the_dashboard_and_sessions_end(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("guide-leads").await;
    app.install_workflow("pages", PAGES).await;
    app.install_workflow("welcome", WELCOME).await;
    let client = no_redirects();
    for path in PRIVATE {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert!(sent_to_login(&response), "{path}: {}", response.status());
        // An API token is no session: the dashboard wants its login.
        let bearer = client.get(app.url(path)).bearer_auth(&app.token).send().await.unwrap();
        assert!(sent_to_login(&bearer), "{path} with a bearer token");
    }
    let first = client.get(app.url("/admin/workflows?from=2026-03-01")).send().await.unwrap();
    assert_eq!(first.headers()["location"], "/admin/login?next=%2Fadmin%2Fworkflows%3Ffrom%3D2026-03-01");
    let login = client.get(app.url("/admin/login?next=%2Fadmin%2Fdelivery")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(login.headers()["x-frame-options"], "DENY");
    let page = login.text().await.unwrap();
    assert!(page.contains("name=\"next\" value=\"/admin/delivery\""), "{page}");

    let wrong = form(client.post(app.url("/admin/login")), &[("token", "not-a-token")]).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.unwrap().contains("That token is not valid."));
    let pairs = [("token", app.token.as_str()), ("next", "https://evil.example/")];
    let elsewhere = form(client.post(app.url("/admin/login")), &pairs).send().await.unwrap();
    assert_eq!(elsewhere.headers()["location"], "/admin", "never sent to another site");

    let cookie = log_in(&app, &app.token).await;
    let overview = get_with(&app, "/admin", &cookie).await.text().await.unwrap();
    assert!(overview.contains("href=\"/admin/pages/guide?"), "a declared page is listed before its first visit");
    for path in PRIVATE {
        let page = get_with(&app, path, &cookie).await;
        // A subscriber who does not exist: the dashboard's own "not found" page.
        let expected = if path.starts_with("/admin/subscribers/") { StatusCode::NOT_FOUND } else { StatusCode::OK };
        assert_eq!(page.status(), expected, "{path}");
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        let html = page.text().await.unwrap();
        assert!(!html.contains("<script"), "{path} works without JavaScript");
    }
    for missing in ["/admin/pages/nope", "/admin/workflows/nope"] {
        let page = get_with(&app, missing, &cookie).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "{missing}");
        assert!(page.text().await.unwrap().contains("Back to the overview"));
    }
    let bad_range = get_with(&app, "/admin?from=yesterday", &cookie).await;
    assert_eq!(bad_range.status(), StatusCode::OK);
    assert!(bad_range.text().await.unwrap().contains("Dates look like 2026-03-01."));

    // Logging out ends the session on the server: the old cookie opens nothing. Like every
    // form, it carries the session's form token: without it, nothing happens.
    let refused = form(client.post(app.url("/admin/logout")).header("cookie", &cookie), &[]).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(get_with(&app, "/admin", &cookie).await.status(), StatusCode::OK);
    let token = form_token(&get_with(&app, "/admin", &cookie).await.text().await.unwrap());
    let out = form(client.post(app.url("/admin/logout")).header("cookie", &cookie), &[("form_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert!(sent_to_login(&get_with(&app, "/admin", &cookie).await));

    // A session ends after admin_session_ttl (12 hours).
    let cookie = log_in(&app, &app.token).await;
    app.clock.advance(chrono::Duration::hours(11));
    assert_eq!(get_with(&app, "/admin", &cookie).await.status(), StatusCode::OK);
    app.clock.advance(chrono::Duration::hours(2));
    assert!(sent_to_login(&get_with(&app, "/admin", &cookie).await));

    // Revoking the token a session was opened with ends the session.
    let now = ownlist::core::clock::Clock::now(app.clock.as_ref());
    let token = ownlist::tokens::create(&app.db, now, "dashboard", ownlist::tokens::Role::Admin).await.unwrap();
    let cookie = log_in(&app, &token).await;
    assert_eq!(get_with(&app, "/admin", &cookie).await.status(), StatusCode::OK);
    ownlist::tokens::revoke(&app.db, "dashboard").await.unwrap();
    assert!(sent_to_login(&get_with(&app, "/admin", &cookie).await));
    let forged = get_with(&app, "/admin", "ownlist_admin=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert!(sent_to_login(&forged));

    // Guessing is slowed down: after 20 failures in an hour, an address waits, even
    // with the right token, and then may try again.
    for _ in 0..20 {
        let wrong = form(client.post(app.url("/admin/login")), &[("token", "still-not-it")]).send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let right = [("token", app.token.as_str())];
    let blocked = form(client.post(app.url("/admin/login")), &right).send().await.unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(blocked.headers().get("set-cookie").is_none());
    app.clock.advance(chrono::Duration::minutes(61));
    let later = form(client.post(app.url("/admin/login")), &right).send().await.unwrap();
    assert_eq!(later.status(), StatusCode::SEE_OTHER);
}

/// Visitors from Instagram and one from nowhere, two signups, a first email delivered and
/// opened, one purchase (the page's goal).
async fn some_traffic(app: &TestApp) -> Vec<String> {
    app.create_list("guide-leads").await;
    app.install_workflow("pages", PAGES).await;
    app.install_workflow("welcome", WELCOME).await;
    let visitor = no_redirects();
    for query in ["?utm_source=ig&utm_campaign=spring", "?utm_source=ig", "?utm_source=ig", ""] {
        let view = visitor.get(app.url(&format!("/p/guide{query}"))).send().await.unwrap();
        assert_eq!(view.status(), StatusCode::OK);
    }
    let mut ids = Vec::new();
    for (email, name) in [("ada@example.com", "Ada <b>Lovelace</b>"), ("bob@example.com", "Bob")] {
        let token = expect_json(visitor.get(app.url("/p/guide/token")).send().await.unwrap(), StatusCode::OK).await;
        app.clock.advance(chrono::Duration::seconds(5));
        let body = json!({"_form": token["token"], "email": email, "first_name": name, "consent": ["email"], "utm_source": "ig"});
        let signed = visitor.post(app.url("/p/guide")).json(&body).send().await.unwrap();
        assert_eq!(signed.status(), StatusCode::ACCEPTED);
        let found = expect_json(app.get(&format!("/api/v1/subscribers?q={email}")).await, StatusCode::OK).await;
        ids.push(found["data"][0]["id"].as_str().unwrap().to_owned());
    }
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 2);
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let ada: uuid::Uuid = ids[0].parse().unwrap();
    let message = ownlist::store::entities::outbox::Entity::find()
        .filter(ownlist::store::entities::outbox::Column::SubscriberId.eq(ada))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    let html = crate::helpers::bodies(app, message.id).await.0.unwrap();
    let start = html.find("/t/o/").unwrap();
    let pixel = html[start..].split(['"', '\'']).next().unwrap();
    assert_eq!(visitor.get(app.url(pixel)).send().await.unwrap().status(), StatusCode::OK);
    let bought = app.post("/api/v1/events", &json!({"email": "ada@example.com", "name": "purchased"})).await;
    assert_eq!(bought.status(), StatusCode::CREATED);
    app.tick().await;
    ids
}

/// The `data-figure` values of the page in the browser.
async fn figures(browser: &mut Browser) -> Value {
    browser
        .eval("Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(e => [e.dataset.figure, e.textContent.trim()]))")
        .await
}

async fn text_of(browser: &mut Browser, selector: &str) -> String {
    let script = format!("document.querySelector({}).textContent.trim()", json!(selector));
    browser.eval(&script).await.as_str().unwrap_or_default().to_owned()
}

/// What every page must be: charts with words, no script, no sideways scrolling on a phone, and
/// no accessibility violation (axe-core) at either width.
async fn check_page(browser: &mut Browser, axe: &str, name: &str) {
    let found = browser.axe_violations(axe).await;
    assert!(found.is_empty(), "{name}: axe-core finds {found:?}");
    let accessible = browser
        .eval("[...document.querySelectorAll('svg')].every(s => s.getAttribute('role') === 'img' && s.querySelector('title') && s.querySelector('desc'))")
        .await;
    assert_eq!(accessible, true, "{name}: every chart is an image with a title and a description");
    assert_eq!(browser.eval("document.scripts.length").await, 0, "{name}: no script");
    assert_eq!(browser.eval("document.querySelectorAll('img:not([alt])').length").await, 0);
    browser.screenshot(&format!("{name}-laptop")).await;
    browser.resize(390, 844, true).await;
    let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth + 1").await;
    assert_eq!(fits, true, "{name}: nothing runs off a phone's screen");
    let charts_fit = browser
        .eval("[...document.querySelectorAll('svg.chart')].every(c => c.getBoundingClientRect().width <= c.parentElement.clientWidth + 1)")
        .await;
    assert_eq!(charts_fit, true, "{name}: every chart fits its card on a phone");
    let found = browser.axe_violations(axe).await;
    assert!(found.is_empty(), "{name} on a phone: axe-core finds {found:?}");
    browser.screenshot(&format!("{name}-phone")).await;
    browser.resize(1280, 900, false).await;
}

async fn the_dashboard_shows_what_the_api_counts(backend: Backend) {
    if !crate::tools::chromium("the_dashboard_shows_what_the_api_counts") {
        return;
    }
    let Some(axe) = crate::tools::axe("the_dashboard_shows_what_the_api_counts") else { return };
    let axe = std::fs::read_to_string(axe).unwrap();
    let Some(app) = TestApp::spawn(backend).await else { return };
    let ids = some_traffic(&app).await;
    let tag = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let mut browser = Browser::start().await;

    // Any page leads to the login, and the login back to it.
    browser.open(&app.url("/admin/workflows"), "/admin/login").await;
    check_page(&mut browser, &axe, &format!("{tag}-login")).await;
    let submit = format!(
        "document.querySelector('#token').value = {}; document.querySelector('form[action=\"/admin/login\"]').submit(); true",
        json!(app.token)
    );
    browser.eval(&submit).await;
    browser.wait_for("/admin/workflows").await;

    // The overview: the last 30 days of the funnel.
    browser.open(&app.url("/admin"), "/admin").await;
    let funnel = expect_json(app.get("/api/v1/stats/funnel?from=2026-02-01&to=2026-03-02").await, StatusCode::OK).await;
    let shown = figures(&mut browser).await;
    for (figure, total) in [("views", "views"), ("signups", "signups"), ("confirmed", "confirmed"), ("goals", "goals")]
    {
        assert_eq!(shown[figure], funnel["totals"][total].to_string(), "{figure}: {shown}");
    }
    assert_eq!(shown["views"], "4");
    assert_eq!(shown["confirmed"], "2");
    assert_eq!(shown["goals"], "1");
    for stage in funnel["stages"].as_array().unwrap() {
        let cell = text_of(&mut browser, &format!("[data-stage=\"{}\"]", stage["stage"].as_str().unwrap())).await;
        assert_eq!(cell, stage["count"].to_string(), "{stage}");
    }
    assert_eq!(text_of(&mut browser, "[data-page=\"guide\"]").await, "4");
    assert_eq!(text_of(&mut browser, "[data-source=\"instagram\"]").await, "3");
    check_page(&mut browser, &axe, &format!("{tag}-overview")).await;

    // A landing page, by source.
    browser.open(&app.url("/admin/pages/guide"), "/admin/pages/guide").await;
    let page =
        expect_json(app.get("/api/v1/stats/funnel?page=guide&from=2026-02-01&to=2026-03-02").await, StatusCode::OK)
            .await;
    let shown = figures(&mut browser).await;
    assert_eq!(shown["views"], page["totals"]["views"].to_string());
    assert_eq!(shown["confirmed"], page["totals"]["confirmed"].to_string());
    assert_eq!(text_of(&mut browser, "[data-source-confirmed=\"instagram\"]").await, "2");
    check_page(&mut browser, &axe, &format!("{tag}-page")).await;

    // The workflows, and one step by step.
    browser.open(&app.url("/admin/workflows"), "/admin/workflows").await;
    let stats =
        expect_json(app.get("/api/v1/stats/workflows/welcome?from=2026-02-01&to=2026-03-02").await, StatusCode::OK)
            .await;
    assert_eq!(text_of(&mut browser, "[data-workflow=\"welcome\"]").await, stats["enrolled"].to_string());
    check_page(&mut browser, &axe, &format!("{tag}-workflows")).await;
    browser.open(&app.url("/admin/workflows/welcome"), "/admin/workflows/welcome").await;
    assert_eq!(figures(&mut browser).await["active"], stats["active_now"].to_string());
    for step in stats["steps"].as_array().unwrap() {
        let id = step["step"].as_str().unwrap();
        for figure in ["entered", "completed", "skipped", "exited"] {
            let cell = text_of(&mut browser, &format!("[data-step=\"{id}\"] [data-figure=\"{figure}\"]")).await;
            assert_eq!(cell, step[figure].to_string(), "{id} {figure}");
        }
    }
    assert_eq!(text_of(&mut browser, "[data-step=\"hello\"] [data-figure=\"delivered\"]").await, "2");
    assert!(text_of(&mut browser, "[data-step=\"hello\"] [data-figure=\"opened\"]").await.starts_with("1 (50.0%)"));
    assert_eq!(text_of(&mut browser, "[data-step=\"pause\"] [data-figure=\"waiting\"]").await, "2");
    check_page(&mut browser, &axe, &format!("{tag}-workflow")).await;

    // Delivery health.
    browser.open(&app.url("/admin/delivery"), "/admin/delivery").await;
    let delivery =
        expect_json(app.get("/api/v1/stats/delivery?from=2026-02-01&to=2026-03-02").await, StatusCode::OK).await;
    let file = delivery["relays"].as_array().unwrap().iter().find(|r| r["relay"] == "file").unwrap().clone();
    assert_eq!(text_of(&mut browser, "[data-sent=\"file\"]").await, file["sent"].to_string());
    assert_eq!(text_of(&mut browser, "[data-queued=\"email\"]").await, "0");
    check_page(&mut browser, &axe, &format!("{tag}-delivery")).await;

    // A subscriber and their timeline; a name with HTML in it is shown as text.
    browser.open(&app.url("/admin/subscribers?q=ada"), "/admin/subscribers?q=ada").await;
    check_page(&mut browser, &axe, &format!("{tag}-lookup")).await;
    browser.eval("document.querySelector('main table a').click(); true").await;
    browser.wait_for(&format!("/admin/subscribers/{}", ids[0])).await;
    let kinds = browser.eval("[...document.querySelectorAll('tr[data-kind]')].map(r => r.dataset.kind)").await;
    let api =
        expect_json(app.get(&format!("/api/v1/subscribers/{}/timeline?limit=500", ids[0])).await, StatusCode::OK).await;
    let api_kinds: Vec<Value> = api["data"].as_array().unwrap().iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, Value::Array(api_kinds), "the same timeline, newest first");
    assert!(kinds.as_array().unwrap().contains(&json!("goal_reached")));
    assert_eq!(browser.eval("document.querySelectorAll('main b').length").await, 0, "escaped");
    // In people's words: messages by subject and origin, never an id; the consent with its proof.
    let words: Vec<String> = serde_json::from_value(
        browser.eval("[...document.querySelectorAll('tr[data-kind] td:last-child')].map(c => c.textContent)").await,
    )
    .unwrap();
    assert!(
        words.contains(&"Sent the email “Your guide” (from step “hello” of workflow “welcome”)".to_owned()),
        "{words:?}"
    );
    assert!(words.iter().any(|w| w.starts_with("Opened the email “Your guide”")), "{words:?}");
    assert!(words.contains(&"Entered workflow “welcome”".to_owned()), "{words:?}");
    let id_like = |w: &String| w.split(|c: char| !c.is_ascii_hexdigit() && c != '-').any(|p| p.len() == 36);
    assert!(!words.iter().any(id_like), "no ids: {words:?}");
    let consent = text_of(&mut browser, "tr[data-consent=\"email-granted\"]").await;
    assert!(consent.contains("Gave email") && consent.contains("guide"), "{consent}");
    assert!(consent.contains("dashboard test"), "the browser that gave it: {consent}");
    assert!(consent.contains('“'), "the words agreed to: {consent}");
    check_page(&mut browser, &axe, &format!("{tag}-subscriber")).await;

    // Broadcasts: the list and a report show the API's figures; one scheduled is cancelled with
    // its button.
    let sent = json!({"list": "guide-leads", "subject": "News <b>now</b>", "html": "<p>Read <a href=\"https://shop.example/\">the shop</a></p>"});
    let sent = expect_json(app.post("/api/v1/broadcasts", &sent).await, StatusCode::CREATED).await;
    let later =
        json!({"list": "guide-leads", "subject": "Later", "html": "<p>Soon</p>", "send_at": "2026-04-01T09:00:00Z"});
    let later = expect_json(app.post("/api/v1/broadcasts", &later).await, StatusCode::CREATED).await;
    app.tick().await;
    app.email.send_due().await.unwrap();
    let (sent, later) = (sent["id"].as_str().unwrap(), later["id"].as_str().unwrap());
    browser.open(&app.url("/admin/broadcasts"), "/admin/broadcasts").await;
    let report = expect_json(app.get(&format!("/api/v1/broadcasts/{sent}/report")).await, StatusCode::OK).await;
    let row = format!("[data-broadcast=\"{sent}\"] [data-figure=\"delivered\"]");
    assert_eq!(text_of(&mut browser, &row).await, report["totals"]["delivered"].to_string());
    check_page(&mut browser, &axe, &format!("{tag}-broadcasts")).await;
    browser.open(&app.url(&format!("/admin/broadcasts/{sent}")), &format!("/admin/broadcasts/{sent}")).await;
    let shown = figures(&mut browser).await;
    for figure in ["sent", "delivered", "failed", "bounced", "opened", "clicked", "clicks", "unsubscribed"] {
        assert_eq!(shown[figure], report["totals"][figure].to_string(), "{figure}: {shown}");
    }
    assert_eq!(shown["messages"], report["broadcast"]["messages"].to_string());
    assert_eq!(browser.eval("document.querySelectorAll('main b').length").await, 0, "the subject is text");
    check_page(&mut browser, &axe, &format!("{tag}-broadcast")).await;
    let path = format!("/admin/broadcasts/{later}");
    browser.open(&app.url(&path), &path).await;
    browser.submit("form[action$=\"/cancel\"]", &path).await;
    assert_eq!(text_of(&mut browser, "[data-status]").await, "Cancelled");
    let api = expect_json(app.get(&format!("/api/v1/broadcasts/{later}")).await, StatusCode::OK).await;
    assert_eq!(api["status"], "cancelled");
    browser.open(&app.url("/admin/audit"), "/admin/audit").await;
    assert!(text_of(&mut browser, "main table").await.contains(&format!("POST /admin/broadcasts/{later}/cancel")));
    check_page(&mut browser, &axe, &format!("{tag}-audit")).await;

    // Logging out from the page: the dashboard is closed again.
    browser.eval("document.querySelector('form[action=\"/admin/logout\"] button').click(); true").await;
    browser.wait_for("/admin/login").await;
    browser.open(&app.url("/admin"), "/admin/login").await;
}

/// Roles in the console: a viewer sees a broadcast's report but no cancel button, and is refused
/// the action (403 naming the role) and the audit log; an editor's cancel needs the session's
/// form token and the dashboard's own origin; the admin's audit log shows who did what, here
/// and in the API, refusals included.
async fn a_viewer_looks_an_editor_acts_with_the_form_token_and_an_admin_reads_the_audit_log(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("news").await;
    let member = json!({"email": "ada@example.com", "lists": ["news"], "consent": {"email": true}});
    app.create_subscriber(member).await;
    let later = "2026-03-09T09:00:00Z";
    let body = json!({"list": "news", "subject": "Spring <sale>", "html": "<p>Hi</p>", "send_at": later});
    let created = expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let make = |name: &'static str, role: &'static str| {
        let app = &app;
        async move {
            let made = app.post("/api/v1/tokens", &json!({"name": name, "role": role})).await;
            expect_json(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned()
        }
    };
    let viewer = log_in(&app, &make("reader", "viewer").await).await;
    let editor = log_in(&app, &make("marketer", "editor").await).await;
    let admin = log_in(&app, &app.token).await;
    let page = format!("/admin/broadcasts/{id}");
    let cancel = format!("/admin/broadcasts/{id}/cancel");
    let client = no_redirects();
    let post = |cookie: &str, pairs: &[(&str, &str)]| {
        form(client.post(app.url(&cancel)).header("cookie", cookie), pairs).send()
    };

    let list = get_with(&app, "/admin/broadcasts", &viewer).await.text().await.unwrap();
    assert!(list.contains("Spring &lt;sale&gt;") && list.contains(&format!("href=\"{page}\"")), "{list}");
    let shown = get_with(&app, &page, &viewer).await.text().await.unwrap();
    assert!(shown.contains("Scheduled") && !shown.contains(&cancel), "no button for a viewer");
    assert!(!shown.contains("href=\"/admin/audit\""), "nor the audit log in the menu");
    let refused = post(&viewer, &[("form_token", &form_token(&shown))]).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("needs the editor role"));
    assert_eq!(get_with(&app, "/admin/audit", &viewer).await.status(), StatusCode::FORBIDDEN);
    // Every action of the console is refused to a viewer the same way, before its form is read.
    let someone = "0190a7c1-2222-7333-8444-555566667777";
    for path in [
        "/admin/lists".to_owned(),
        "/admin/lists/news".to_owned(),
        "/admin/lists/news/delete".to_owned(),
        "/admin/subscribers".to_owned(),
        format!("/admin/subscribers/{someone}"),
        format!("/admin/subscribers/{someone}/unsubscribe"),
        format!("/admin/subscribers/{someone}/erase"),
        "/admin/import".to_owned(),
        "/admin/broadcasts/new".to_owned(),
        "/admin/workflows/reload".to_owned(),
        "/admin/workflows/welcome/pause".to_owned(),
    ] {
        let refused =
            form(client.post(app.url(&path)).header("cookie", &viewer), &[("form_token", "x")]).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(refused.text().await.unwrap().contains("needs the editor role"), "{path}");
    }
    let export = get_with(&app, "/admin/export/subscribers.csv", &viewer).await;
    assert_eq!(export.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        expect_json(app.get("/api/v1/lists/news").await, StatusCode::OK).await["slug"],
        "news",
        "nothing changed"
    );

    let shown = get_with(&app, &page, &editor).await.text().await.unwrap();
    assert!(shown.contains(&format!("action=\"{cancel}\"")), "an editor has the button");
    let token = form_token(&shown);
    assert_ne!(token, form_token(&get_with(&app, &page, &admin).await.text().await.unwrap()), "one per session");
    let forged = post(&editor, &[("form_token", "guessed")]).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let cross_site = form(
        client.post(app.url(&cancel)).header("cookie", &editor).header("origin", "https://evil.example"),
        &[("form_token", &token)],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let path = format!("/api/v1/broadcasts/{id}");
    assert_eq!(expect_json(app.get(&path).await, StatusCode::OK).await["status"], "scheduled", "nothing changed yet");
    let done = post(&editor, &[("form_token", &token)]).await.unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()["location"], page.as_str());
    assert_eq!(expect_json(app.get(&path).await, StatusCode::OK).await["status"], "cancelled");

    let log = get_with(&app, "/admin/audit", &admin).await;
    assert_eq!(log.status(), StatusCode::OK);
    let log = log.text().await.unwrap();
    assert!(log.contains(&format!("POST {cancel}")), "{log}");
    let entries = expect_json(app.get("/api/v1/audit").await, StatusCode::OK).await;
    let of = |who: &str| -> Vec<i64> {
        entries["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["actor"] == who && e["path"] == cancel.as_str())
            .map(|e| e["status"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(of("token:reader"), vec![403], "the viewer's refusal is logged");
    assert_eq!(of("token:marketer"), vec![303, 403, 403], "newest first: done, cross-site, forged");
}

/// What a browser test of the console needs: Chromium and axe-core (`None`, the test skipped,
/// when either is missing and not required), an app on `backend`, and the screenshots' prefix.
async fn console(test: &str, backend: Backend) -> Option<(TestApp, String, &'static str)> {
    if !crate::tools::chromium(test) {
        return None;
    }
    let axe = std::fs::read_to_string(crate::tools::axe(test)?).unwrap();
    let app = TestApp::spawn(backend).await?;
    let tag = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    Some((app, axe, tag))
}

/// Logs the browser in with `token` through the login form, landing on `path`.
async fn browser_log_in(browser: &mut Browser, app: &TestApp, token: &str, path: &str) {
    browser.open(&app.url(&format!("/admin/login?next={path}")), "/admin/login").await;
    browser.fill("#token", token).await;
    browser.submit("form[action=\"/admin/login\"]", path).await;
}

/// An editor in Chromium, through the forms alone: creates and renames a list, adds a subscriber
/// with the consent they gave, tags them, finds them by filters, erases them (typing their
/// address to confirm) and deletes the list (typing its slug); every page is accessible. A
/// viewer sees the same pages without a form.
async fn an_editor_runs_lists_and_subscribers_through_the_consoles_forms(backend: Backend) {
    let test = "an_editor_runs_lists_and_subscribers_through_the_consoles_forms";
    let Some((app, axe, tag)) = console(test, backend).await else { return };
    let token = |name: &'static str, role: &'static str| {
        let app = &app;
        async move {
            let made = app.post("/api/v1/tokens", &json!({"name": name, "role": role})).await;
            expect_json(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned()
        }
    };
    let (editor, viewer) = (token("marketer", "editor").await, token("reader", "viewer").await);
    let mut browser = Browser::start().await;
    browser_log_in(&mut browser, &app, &editor, "/admin/lists").await;

    browser.fill("#name", "Spring news").await;
    browser.fill("#slug", "spring").await;
    browser.submit("form[action=\"/admin/lists\"]", "/admin/lists/spring").await;
    check_page(&mut browser, &axe, &format!("{tag}-list")).await;
    browser.fill("#name", "Spring offers").await;
    browser.submit("form[action=\"/admin/lists/spring\"]", "/admin/lists/spring").await;
    let list = expect_json(app.get("/api/v1/lists/spring").await, StatusCode::OK).await;
    assert_eq!(list["name"], "Spring offers");

    // A CSV file through the import form: the good rows stored, the bad one named by its line.
    browser.open(&app.url("/admin/import"), "/admin/import").await;
    let csv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(csv.path(), "email,first_name\nbob@example.com,Bob\nnot-an-address,X\ncy@example.com,Cy\n").unwrap();
    browser.choose_file("#file", csv.path()).await;
    browser.eval("document.querySelector('#list').value = 'spring'; true").await;
    browser.submit("form[action=\"/admin/import\"]", "/admin/import/*").await;
    // The import runs in the background; its page shows how far it got until it is done.
    let job: String = serde_json::from_value(browser.eval("location.pathname").await).unwrap();
    for _ in 0..100 {
        if browser.eval("document.querySelector('[data-running]') === null").await == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        browser.open(&app.url(&job), &job).await;
    }
    let shown = figures(&mut browser).await;
    assert_eq!((shown["imported"].as_str(), shown["errors"].as_str()), (Some("2"), Some("1")), "{shown}");
    assert!(text_of(&mut browser, "tr[data-row=\"3\"]").await.contains("email"), "line 3 and why");
    let list = expect_json(app.get("/api/v1/lists/spring").await, StatusCode::OK).await;
    assert_eq!(list["members"]["confirmed"], 2);
    check_page(&mut browser, &axe, &format!("{tag}-import")).await;
    let export = get_with(&app, "/admin/export/subscribers.csv", &log_in(&app, &editor).await).await;
    assert_eq!(export.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(export.text().await.unwrap().contains("bob@example.com"));
    let refused = get_with(&app, "/admin/export/subscribers.csv", &log_in(&app, &viewer).await).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "a viewer does not take the list home");

    browser.open(&app.url("/admin/subscribers?list=spring"), "/admin/subscribers?list=spring").await;
    browser.fill("#add-email", "ada@example.com").await;
    browser.fill("#add-first", "Ada").await;
    browser.fill("#add-consent-text", "Asked at the counter").await;
    assert_eq!(browser.eval("document.querySelector('#add-list').value").await, "spring", "the list shown");
    browser.submit("form[action=\"/admin/subscribers\"]", "/admin/subscribers/*").await;
    let path: String = serde_json::from_value(browser.eval("location.pathname").await).unwrap();
    let id = path.trim_start_matches("/admin/subscribers/").to_owned();
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await;
    assert_eq!(
        (person["email"].as_str(), person["channels"]["email"].as_str()),
        (Some("ada@example.com"), Some("subscribed"))
    );
    assert_eq!(person["lists"][0]["list"], "spring");
    let consent = text_of(&mut browser, "tr[data-consent=\"email-granted\"]").await;
    assert!(consent.contains("Asked at the counter") && consent.contains("token:marketer"), "{consent}");

    browser.fill("#tags", "vip, regular").await;
    browser.submit(&format!("form[action=\"{path}\"]"), &path).await;
    let person = expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await;
    assert_eq!(person["tags"], json!(["regular", "vip"]));
    check_page(&mut browser, &axe, &format!("{tag}-subscriber-editor")).await;

    for (query, found) in [("tag=vip", 1), ("list=spring&email=subscribed", 3), ("status=bounced", 0), ("q=ADA", 1)] {
        let at = format!("/admin/subscribers?{query}");
        browser.open(&app.url(&at), &at).await;
        let rows = browser.eval("document.querySelectorAll('tr[data-subscriber]').length").await;
        assert_eq!(rows, found, "{query}");
        let api = expect_json(app.get(&format!("/api/v1/subscribers?{query}")).await, StatusCode::OK).await;
        assert_eq!(api["data"].as_array().unwrap().len(), found as usize, "the API agrees on {query}");
    }
    check_page(&mut browser, &axe, &format!("{tag}-subscribers")).await;

    // A viewer sees the same pages, without a form to change anything.
    let mut looker = Browser::start().await;
    browser_log_in(&mut looker, &app, &viewer, &path).await;
    assert_eq!(looker.eval("document.querySelectorAll('main form').length").await, 0);
    looker.open(&app.url("/admin/lists"), "/admin/lists").await;
    assert_eq!(looker.eval("document.querySelectorAll('main form').length").await, 0);

    // Erasing asks for the address; deleting a list for its slug.
    browser.open(&app.url(&path), &path).await;
    browser.fill("#erase-confirm", "someone@else.example").await;
    browser.submit("form[action$=\"/erase\"]", &format!("{path}/erase")).await;
    assert!(text_of(&mut browser, "main").await.contains("type ada@example.com"));
    assert_eq!(app.get(&format!("/api/v1/subscribers/{id}")).await.status(), StatusCode::OK, "nothing erased yet");
    browser.fill("#erase-confirm", "ada@example.com").await;
    browser.submit("form[action$=\"/erase\"]", &format!("{path}/erase")).await;
    assert_eq!(app.get(&format!("/api/v1/subscribers/{id}")).await.status(), StatusCode::NOT_FOUND);
    browser.open(&app.url("/admin/lists/spring"), "/admin/lists/spring").await;
    browser.fill("#confirm", "spring").await;
    browser.submit("form[action$=\"/delete\"]", "/admin/lists").await;
    assert_eq!(app.get("/api/v1/lists/spring").await.status(), StatusCode::NOT_FOUND);
    check_page(&mut browser, &axe, &format!("{tag}-lists")).await;
}

/// A workflow on its page: its file, pause and resume (the API agrees), a simulation for a
/// chosen subscriber, and a change to the file planned, then loaded with a button.
async fn an_editor_pauses_simulates_plans_and_loads_workflows_on_their_pages(backend: Backend) {
    let test = "an_editor_pauses_simulates_plans_and_loads_workflows_on_their_pages";
    let Some((app, axe, tag)) = console(test, backend).await else { return };
    app.create_list("guide-leads").await;
    app.install_workflow("welcome", WELCOME).await;
    let member =
        json!({"email": "ada@example.com", "first_name": "Ada", "lists": ["guide-leads"], "consent": {"email": true}});
    app.create_subscriber(member).await;
    let made = app.post("/api/v1/tokens", &json!({"name": "marketer", "role": "editor"})).await;
    let editor = expect_json(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned();
    let mut browser = Browser::start().await;
    let page = "/admin/workflows/welcome";
    browser_log_in(&mut browser, &app, &editor, page).await;
    assert!(text_of(&mut browser, "main").await.contains("subject: Your guide"), "the file is shown");
    let status = || {
        let app = &app;
        async move {
            let shown = expect_json(app.get("/api/v1/workflows/welcome").await, StatusCode::OK).await;
            shown["status"].as_str().unwrap().to_owned()
        }
    };
    browser.submit("form[action$=\"/pause\"]", page).await;
    assert_eq!(text_of(&mut browser, "[data-status]").await, "paused");
    assert_eq!(status().await, "paused");
    check_page(&mut browser, &axe, &format!("{tag}-workflow-paused")).await;
    browser.submit("form[action$=\"/resume\"]", page).await;
    assert_eq!(status().await, "active");

    let simulate = "/admin/workflows/welcome/simulate?subscriber=ada%40example.com&opens=hello&days=5";
    browser.open(&app.url(simulate), simulate).await;
    let timeline = text_of(&mut browser, "[data-timeline]").await;
    assert!(timeline.contains("Your guide") && timeline.contains("opens hello"), "{timeline}");
    check_page(&mut browser, &axe, &format!("{tag}-simulate")).await;
    let nobody = "/admin/workflows/welcome/simulate?subscriber=nobody%40example.com";
    browser.open(&app.url(nobody), nobody).await;
    assert!(text_of(&mut browser, "main").await.contains("No subscriber has the address nobody@example.com"));

    // A change in the file: planned, then loaded from the page.
    let changed = WELCOME.replace("subject: More", "subject: More for you");
    std::fs::write(app.workflows_dir.join("welcome.yaml"), changed).unwrap();
    browser.open(&app.url("/admin/workflows/plan"), "/admin/workflows/plan").await;
    let plan = text_of(&mut browser, "[data-plan]").await;
    assert!(plan.contains("welcome: version 1 → 2"), "{plan}");
    check_page(&mut browser, &axe, &format!("{tag}-plan")).await;
    assert_eq!(expect_json(app.get("/api/v1/workflows/welcome").await, StatusCode::OK).await["version"], 1);
    browser.submit("form[action=\"/admin/workflows/reload\"]", "/admin/workflows/reload").await;
    assert_eq!(expect_json(app.get("/api/v1/workflows/welcome").await, StatusCode::OK).await["version"], 2);
    browser.open(&app.url("/admin/workflows/plan"), "/admin/workflows/plan").await;
    assert!(text_of(&mut browser, "main h2").await.contains("Nothing to load"));
}

/// A broadcast composed in the console: who it reaches counted, previewed for a chosen
/// subscriber, a test sent to one address (in no report and no timeline), then sent; its
/// report on its page is the API's.
async fn an_editor_composes_counts_previews_tests_and_sends_a_broadcast(backend: Backend) {
    let test = "an_editor_composes_counts_previews_tests_and_sends_a_broadcast";
    let Some((app, axe, tag)) = console(test, backend).await else { return };
    app.create_list("news").await;
    let ada = json!({"email": "ada@example.com", "first_name": "Ada", "lists": ["news"], "consent": {"email": true}});
    app.create_subscriber(ada).await;
    let bob = json!({"email": "bob@example.com", "first_name": "Bob", "lists": ["news"], "consent": {"email": false}});
    app.create_subscriber(bob).await;
    let made = app.post("/api/v1/tokens", &json!({"name": "marketer", "role": "editor"})).await;
    let editor = expect_json(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned();
    let mut browser = Browser::start().await;
    let new = "/admin/broadcasts/new";
    browser_log_in(&mut browser, &app, &editor, new).await;
    check_page(&mut browser, &axe, &format!("{tag}-compose")).await;

    browser.eval("document.querySelector('#source-html').checked = true; true").await;
    browser.fill("#subject", "Hello {{ subscriber.first_name }}").await;
    browser
        .fill("#html", "<p>Hi {{ subscriber.first_name }}, see <a href=\"https://shop.example/\">the shop</a>.</p>")
        .await;
    browser.fill("#preview_for", "ada@example.com").await;
    browser.press("button[value=\"preview\"]", new).await;
    assert_eq!(text_of(&mut browser, "[data-figure=\"members\"]").await, "2", "both members are considered");
    assert_eq!(text_of(&mut browser, "[data-reach=\"email\"]").await, "1", "only Ada agreed to email");
    assert_eq!(text_of(&mut browser, "[data-preview-subject]").await, "Hello Ada");
    let frame = browser.eval("document.querySelector('iframe.preview').getAttribute('srcdoc')").await;
    assert!(frame.as_str().unwrap().contains("Hi Ada, see"), "{frame}");
    check_page(&mut browser, &axe, &format!("{tag}-compose-preview")).await;

    browser.fill("#test_to", "me@shop.example").await;
    browser.press("button[value=\"test\"]", new).await;
    assert!(text_of(&mut browser, "[data-tested]").await.contains("me@shop.example"));
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let test_mail = app.count("outbox WHERE recipient = 'me@shop.example' AND subject = '[Test] Hello Ada'").await;
    assert_eq!(test_mail, 1);
    assert_eq!(app.count("events WHERE kind = 'email_sent'").await, 0, "a test is in no timeline");
    assert!(
        expect_json(app.get("/api/v1/broadcasts").await, StatusCode::OK).await["data"].as_array().unwrap().is_empty()
    );

    browser.press("button[value=\"send\"]", "/admin/broadcasts/*").await;
    let path: String = serde_json::from_value(browser.eval("location.pathname").await).unwrap();
    let id = path.trim_start_matches("/admin/broadcasts/").to_owned();
    app.tick().await;
    assert_eq!(app.email.send_due().await.unwrap(), 1, "Ada's");
    browser.open(&app.url(&path), &path).await;
    let report = expect_json(app.get(&format!("/api/v1/broadcasts/{id}/report")).await, StatusCode::OK).await;
    assert_eq!(report["totals"]["sent"], 1);
    assert_eq!(report["broadcast"]["subject"], "Hello {{ subscriber.first_name }}");
    let shown = figures(&mut browser).await;
    assert_eq!(shown["sent"], report["totals"]["sent"].to_string());
    assert_eq!(shown["skipped"], report["broadcast"]["skipped"].to_string());
}

/// Bad answers to the console's forms: each is refused (422) with what is wrong, in words, and
/// nothing is stored.
async fn bad_answers_to_the_consoles_forms_are_named_and_store_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("news").await;
    let editor = {
        let made = app.post("/api/v1/tokens", &json!({"name": "marketer", "role": "editor"})).await;
        expect_json(made, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned()
    };
    let cookie = log_in(&app, &editor).await;
    let token = form_token(&get_with(&app, "/admin/broadcasts/new", &cookie).await.text().await.unwrap());
    let client = no_redirects();
    let compose = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("form_token", token.as_str()), ("list", "news"), ("email", "on"), ("subject", "Hi")];
        pairs.extend([("source", "html"), ("html", "<p>Hi</p>"), ("action", "send")]);
        // An answer given again replaces the default.
        pairs.retain(|(name, _)| !extra.iter().any(|(other, _)| other == name));
        pairs.extend_from_slice(extra);
        form(client.post(app.url("/admin/broadcasts/new")).header("cookie", &cookie), &pairs).send()
    };
    for (extra, says) in [
        (vec![("condition", "{not json")], "condition: not a condition"),
        (vec![("send_at", "tomorrow")], "send at: a day and time"),
        (vec![("list", "nope")], "list: unknown list"),
        (vec![("html", "{% if %}")], "html: cannot be rendered"),
        (vec![("action", "preview"), ("preview_for", "nobody@example.com")], "no subscriber has the address"),
        (vec![("action", "test"), ("test_to", "not-an-address")], "test_to: is not an email address"),
    ] {
        let answer = compose(&extra).await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{says}");
        let page = answer.text().await.unwrap();
        assert!(page.contains(says), "{says}: {page}");
    }
    let post = |path: &'static str, pairs: Vec<(&'static str, &'static str)>| {
        let mut all = vec![("form_token", token.as_str())];
        all.extend(pairs);
        form(client.post(app.url(path)).header("cookie", &cookie), &all).send()
    };
    let list = post("/admin/lists", vec![("slug", "Bad Slug"), ("name", "Bad")]).await.unwrap();
    assert_eq!(list.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(list.text().await.unwrap().contains("slug:"));
    let person = post("/admin/subscribers", vec![("email", "not-an-address"), ("email_consent", "on")]).await.unwrap();
    assert_eq!(person.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(person.text().await.unwrap().contains("email:"));
    let upload = format!("--b0\r\nContent-Disposition: form-data; name=\"form_token\"\r\n\r\n{token}\r\n--b0--\r\n");
    let import = client
        .post(app.url("/admin/import"))
        .header("cookie", &cookie)
        .header("content-type", "multipart/form-data; boundary=b0")
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(import.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(import.text().await.unwrap().contains("Choose a CSV file"));

    assert_eq!(app.count("broadcasts").await, 0);
    assert_eq!(app.count("outbox").await, 0);
    assert_eq!(app.count("lists").await, 1);
    assert_eq!(app.count("subscribers").await, 0);
}
