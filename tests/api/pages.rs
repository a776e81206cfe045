//! Landing pages: the page itself, signups with double opt-in by email and by SMS, consent
//! records, attribution, bots, floods, bad input and enumeration.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::fake_sms::FakeProvider;
use crate::helpers::{Backend, TestApp, expect_json, expect_problem, kinds, with_each_backend};
use ownlist::config::SmsProviderConfig;
use ownlist::delivery::sms::twilio_signature;
use ownlist::store::entities::{consent, outbox, subscriber};

with_each_backend!(
    a_page_is_one_small_self_contained_accessible_response,
    pages_name_the_business_and_link_its_privacy_policy,
    an_email_signup_is_pending_until_its_link_is_followed_once,
    expired_and_forged_links_fail_and_a_repeat_signup_changes_nothing,
    bots_get_the_same_answer_as_people_and_are_counted,
    invalid_input_shows_the_form_again_with_the_values_and_writes_nothing,
    the_answer_never_tells_who_is_subscribed_and_one_confirmation_a_day_is_sent,
    past_the_per_ip_limit_a_signup_gets_429_with_retry_after,
    a_texted_yes_confirms_an_sms_signup,
    a_single_opt_in_page_takes_json_from_the_origins_it_lists,
    the_preference_page_switches_lists_and_channels_and_records_each_change,
    the_preference_page_cannot_switch_on_a_channel_its_owner_never_confirmed,
    addresses_no_message_could_reach_are_refused_at_the_form,
    the_funnel_counts_views_signups_and_confirmations_by_page_source_and_day,
);

const GUIDE: &str = "pages:
  - slug: guide
    title: Get the free guide
    description: Ten pages on moving your shop off the social networks.
    list: guide-leads
    fields: [email, first_name, phone, attributes.shop]
    required: [email]
    channels: [email, sms]
    default_country: US
    consent_text: \"Send me the guide and occasional tips. Unsubscribe anytime.\"
    goal: purchased
";

const WELCOME: &str = "name: Welcome\ntrigger: { subscribed: guide-leads }\nsteps:\n  - id: tag\n    tag: welcomed\n";

async fn spawn(backend: Backend, adjust: impl FnOnce(&mut ownlist::config::Config)) -> Option<TestApp> {
    let app = TestApp::spawn_with(backend, adjust).await?;
    app.create_list("guide-leads").await;
    app.install_workflow("pages", GUIDE).await;
    Some(app)
}

/// A browser that does not follow redirects (the tests look at them).
pub(crate) fn browser() -> reqwest::Client {
    crate::helpers::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (iPhone; test phone) Instagram")
        .build()
        .unwrap()
}

pub(crate) async fn page_html(app: &TestApp, path: &str) -> (StatusCode, String) {
    let response = browser().get(app.url(path)).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The value of the hidden input `name` in a page.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// Opens the page (`query` appended), waits like a person, and posts `fields` with its hidden ones.
pub(crate) async fn sign_up(app: &TestApp, slug: &str, query: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let (_, html) = page_html(app, &format!("/p/{slug}{query}")).await;
    app.clock.advance(chrono::Duration::seconds(5));
    post_form(app, slug, &html, fields).await
}

pub(crate) async fn post_form(app: &TestApp, slug: &str, html: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for name in ["_form", "utm_source", "utm_campaign", "fbclid", "referrer"] {
        if html.contains(&format!("name=\"{name}\" value=\"")) {
            pairs.push((name.to_owned(), decode(&hidden(html, name))));
        }
    }
    pairs.extend(fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    browser()
        .post(app.url(&format!("/p/{slug}")))
        .header("user-agent", "Mozilla/5.0 (test phone)")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&pairs))
        .send()
        .await
        .unwrap()
}

pub(crate) fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
        .finish()
}

pub(crate) async fn form(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
    browser()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(pairs))
        .send()
        .await
        .unwrap()
}

pub(crate) fn decode(attribute: &str) -> String {
    attribute.replace("&amp;", "&").replace("&#x2F;", "/").replace("&#47;", "/").replace("&quot;", "\"")
}

pub(crate) fn location(response: &reqwest::Response) -> String {
    response.headers()[reqwest::header::LOCATION].to_str().unwrap().to_owned()
}

pub(crate) async fn person_by_email(app: &TestApp, email: &str) -> subscriber::Model {
    subscriber::Entity::find()
        .filter(subscriber::Column::EmailKey.eq(email.to_lowercase()))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no subscriber {email}"))
}

pub(crate) async fn view(app: &TestApp, id: uuid::Uuid) -> Value {
    expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await
}

/// The confirmation messages queued for a subscriber (oldest first).
pub(crate) async fn confirmations(app: &TestApp, id: uuid::Uuid) -> Vec<outbox::Model> {
    let mut rows: Vec<outbox::Model> = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(id))
        .filter(outbox::Column::IdempotencyKey.starts_with("confirm:"))
        .all(app.db.conn())
        .await
        .unwrap();
    rows.sort_by_key(|r| r.id);
    rows
}

/// The path of the confirmation link in a confirmation email.
pub(crate) async fn confirm_path(app: &TestApp, message: &outbox::Model) -> String {
    let (html, text) = crate::helpers::bodies(app, message.id).await;
    let html = html.unwrap();
    assert!(text.contains("/c/"), "the plain part has the link too: {text}");
    let start = html.find("/c/").unwrap();
    html[start..].split(['"', '\'', '<', ' ']).next().unwrap().to_owned()
}

async fn pages_name_the_business_and_link_its_privacy_policy(backend: Backend) {
    let Some(app) = spawn(backend, |c| {
        c.business.name = "Bottega Rossi".into();
        c.business.privacy_url = Some("https://bottega.example/privacy".into());
        c.business.support_email = Some("ciao@bottega.example".into());
    })
    .await
    else {
        return;
    };
    let (status, html) = page_html(&app, "/p/guide").await;
    assert_eq!(status, StatusCode::OK);
    let footer = "<footer class=\"foot\">Bottega Rossi · <a href=\"https://bottega.example/privacy\">Privacy policy</a> · \
        <a href=\"mailto:ciao@bottega.example\">ciao@bottega.example</a></footer>";
    assert!(html.contains(footer), "{html}");
    let (status, html) = page_html(&app, "/p/guide/thanks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(footer), "the thank-you page too: {html}");
}

async fn a_page_is_one_small_self_contained_accessible_response(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let response = browser().get(app.url("/p/guide")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.len() < 30 * 1024, "the page and its assets under 30 KB: {} bytes", html.len());
    assert!(!html.contains("<script") && !html.contains("stylesheet"), "no scripts, no external styles or fonts");
    assert!(!html.contains("src=\"http") && !html.contains("url(http"), "nothing third-party");
    assert!(html.contains("<h1>Get the free guide</h1>") && html.contains("Ten pages on moving"));
    for (id, label) in [
        ("f-email", "Email"),
        ("f-first_name", "First name"),
        ("f-phone", "Mobile number"),
        ("f-attributes-shop", "Shop"),
    ] {
        assert!(html.contains(&format!("<label for=\"{id}\">{label}")), "{id} is labelled: {html}");
        assert!(html.contains(&format!("id=\"{id}\"")));
    }
    assert!(
        html.contains("type=\"email\"") && html.contains("type=\"tel\"") && html.contains("aria-required=\"true\"")
    );
    assert!(html.contains("Send me the guide and occasional tips. Unsubscribe anytime."), "the consent text is shown");
    assert!(html.contains("name=\"consent_email\"") && html.contains("name=\"consent_sms\""));
    assert!(html.contains("name=\"website\"") && html.contains("tabindex=\"-1\""), "a honeypot people never reach");
    assert!(html.contains("name=\"viewport\""), "made for phones");
    let (status, _) = page_html(&app, "/p/no-such-page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, thanks) = page_html(&app, "/p/guide/thanks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(thanks.contains("Thank you") && thanks.len() < 30 * 1024 && !thanks.contains("<script"));
}

async fn an_email_signup_is_pending_until_its_link_is_followed_once(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    app.install_workflow("welcome", WELCOME).await;
    let query = "?utm_source=ig&utm_campaign=spring&fbclid=IwAR0abc";
    let fields = [
        ("email", "Ada@Example.com"),
        ("first_name", "Ada"),
        ("attributes.shop", "Lovelace Prints"),
        ("consent_email", "on"),
    ];
    let response = sign_up(&app, "guide", query, &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/p/guide/thanks");

    let ada = person_by_email(&app, "ada@example.com").await;
    let v = view(&app, ada.id).await;
    assert_eq!(v["channels"]["email"], "pending");
    assert_eq!(v["channels"]["sms"], "none", "no SMS consent without its box ticked");
    assert_eq!(v["lists"][0]["status"], "pending");
    assert_eq!(v["attributes"]["shop"], "Lovelace Prints");
    assert_eq!(v["attribution"]["source"], "instagram");
    assert_eq!(v["attribution"]["campaign"], "spring");
    assert_eq!(v["attribution"]["click_id"], "fbclid=IwAR0abc");
    let given =
        consent::Entity::find().filter(consent::Column::SubscriberId.eq(ada.id)).all(app.db.conn()).await.unwrap();
    assert_eq!(given.len(), 1);
    let c = &given[0];
    assert_eq!((c.channel.as_str(), c.granted, c.method.as_str()), ("email", true, "form"));
    assert_eq!(c.consent_text.as_deref(), Some("Send me the guide and occasional tips. Unsubscribe anytime."));
    assert_eq!(c.page.as_deref(), Some("guide"));
    assert_eq!(c.page_version.as_ref().map(String::len), Some(12));
    assert_eq!(c.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.user_agent.as_deref(), Some("Mozilla/5.0 (test phone)"));
    let signed_up = crate::helpers::timeline(&app, &ada.id.to_string()).await;
    let entry = signed_up.iter().find(|e| e["kind"] == "signed_up").unwrap();
    assert_eq!(entry["data"]["attribution"]["source"], "instagram", "the touch is in the timeline");

    app.tick().await;
    assert_eq!(app.count("enrollments").await, 0, "no workflow starts before the confirmation");
    let sent = confirmations(&app, ada.id).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].recipient, "Ada@Example.com");
    assert_eq!(sent[0].subject.as_deref(), Some("Please confirm: Get the free guide"));
    // Mail about a list names it (List-Id), as list mail does.
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let mail = std::fs::read_to_string(app.data_dir.join("mail").join(format!("{}.eml", sent[0].id))).unwrap();
    assert!(mail.contains("List-Id: <guide-leads.localhost>\r\n"), "{mail}");
    let path = confirm_path(&app, &sent[0]).await;

    let (status, html) = page_html(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("You are confirmed"), "{html}");
    let v = view(&app, ada.id).await;
    assert_eq!(
        (v["channels"]["email"].as_str(), v["lists"][0]["status"].as_str()),
        (Some("subscribed"), Some("confirmed"))
    );
    let confirmed = consent::Entity::find()
        .filter(consent::Column::SubscriberId.eq(ada.id))
        .filter(consent::Column::Method.eq("double_opt_in"))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(confirmed.consent_text, c.consent_text, "the confirmation records the words shown on the page");
    assert_eq!((confirmed.page.clone(), confirmed.page_version.clone()), (c.page.clone(), c.page_version.clone()));
    app.tick().await;
    assert_eq!(app.count("enrollments").await, 1, "the confirmed signup starts the list's workflow");
    assert!(kinds(&app, &ada.id.to_string()).await.contains(&"signup_confirmed".to_owned()));

    let (status, html) = page_html(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "a second click is not an error");
    assert!(html.contains("Already confirmed"));
    assert_eq!(app.count("consents").await, 2, "and records nothing more");
    let export = expect_json(app.get(&format!("/api/v1/subscribers/{}/export", ada.id)).await, StatusCode::OK).await;
    let records = export["consents"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{export}");
    assert!(records.iter().all(|r| r["page"] == "guide" && r["page_version"] == c.page_version.clone().unwrap()));
    assert_eq!((records[0]["method"].as_str(), records[1]["method"].as_str()), (Some("form"), Some("double_opt_in")));
}

async fn expired_and_forged_links_fail_and_a_repeat_signup_changes_nothing(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let fields = [("email", "late@example.com"), ("first_name", "<i>Late</i>"), ("consent_email", "on")];
    let response = sign_up(&app, "guide", "", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let late = person_by_email(&app, "late@example.com").await;
    let (html, _) = crate::helpers::bodies(&app, confirmations(&app, late.id).await[0].id).await;
    let html = html.unwrap();
    assert!(html.contains("Hello &lt;i&gt;Late&lt;") && !html.contains("<i>Late"), "a name is text in email: {html}");
    let path = confirm_path(&app, &confirmations(&app, late.id).await[0]).await;
    app.clock.advance(chrono::Duration::days(8));
    let (status, html) = page_html(&app, &path).await;
    assert_eq!(status, StatusCode::GONE, "links expire after 7 days: {html}");
    assert!(html.contains("/p/guide"), "and say where to sign up again");
    assert_eq!(view(&app, late.id).await["channels"]["email"], "pending");
    let mut forged = path.clone();
    forged.pop();
    forged.push(if path.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(page_html(&app, &forged).await.0, StatusCode::NOT_FOUND);
    assert_eq!(page_html(&app, "/c/not-a-token").await.0, StatusCode::NOT_FOUND);

    // Signing up again after the link expired sends a new one, which works.
    let again = sign_up(&app, "guide", "", &[("email", "late@example.com"), ("consent_email", "on")]).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let sent = confirmations(&app, late.id).await;
    assert_eq!(sent.len(), 2);
    let fresh = confirm_path(&app, &sent[1]).await;
    assert_eq!(page_html(&app, &fresh).await.0, StatusCode::OK);
    assert_eq!(view(&app, late.id).await["channels"]["email"], "subscribed");

    // A repeat of a confirmed signup writes and sends nothing.
    let (events, consents, messages) =
        (app.count("events").await, app.count("consents").await, app.count("outbox").await);
    let repeat = sign_up(&app, "guide", "", &[("email", "late@example.com"), ("consent_email", "on")]).await;
    assert_eq!((repeat.status(), location(&repeat)), (StatusCode::SEE_OTHER, "/p/guide/thanks".to_owned()));
    assert_eq!(
        (app.count("events").await, app.count("consents").await, app.count("outbox").await),
        (events, consents, messages)
    );
}

async fn bots_get_the_same_answer_as_people_and_are_counted(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let person = [("email", "bot@example.com"), ("consent_email", "on")];
    let trap = sign_up(
        &app,
        "guide",
        "",
        &[("email", "bot@example.com"), ("consent_email", "on"), ("website", "http://spam")],
    )
    .await;
    let (_, html) = page_html(&app, "/p/guide").await;
    let hasty = post_form(&app, "guide", &html, &person).await;
    let forged_fields = [("email", "bot@example.com"), ("consent_email", "on"), ("_form", "AAAA")];
    let forged = form(&app, "/p/guide", &forged_fields).await;
    let tokenless = form(&app, "/p/guide", &person).await;
    for response in [&trap, &hasty, &forged, &tokenless] {
        assert_eq!((response.status(), location(response)), (StatusCode::SEE_OTHER, "/p/guide/thanks".to_owned()));
    }
    let replayed = {
        let (_, html) = page_html(&app, "/p/guide").await;
        app.clock.advance(chrono::Duration::hours(25));
        post_form(&app, "guide", &html, &person).await
    };
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("subscribers").await, 0, "nothing is written for a bot");
    assert_eq!(app.count("outbox").await, 0);
    let counted = |kind: &'static str| {
        let app = &app;
        async move { app.count(&format!("page_counts WHERE page = 'guide' AND kind = '{kind}'")).await }
    };
    let sum = app.count("page_counts").await;
    assert!(sum >= 3, "one counter row per page, day and reason");
    for kind in ["rejected_honeypot", "rejected_too_fast", "rejected_token", "rejected_stale"] {
        assert_eq!(counted(kind).await, 1, "{kind}");
    }
    use sea_orm::{ConnectionTrait, Statement};
    let sql = "SELECT CAST(SUM(n) AS BIGINT) AS n FROM page_counts WHERE kind = 'rejected_token'";
    let row = app.db.conn().query_one_raw(Statement::from_string(app.db.backend(), sql)).await.unwrap().unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 2, "the forged token and the missing one");
}

async fn invalid_input_shows_the_form_again_with_the_values_and_writes_nothing(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let response = sign_up(
        &app,
        "guide",
        "",
        &[("email", "not-an-address"), ("first_name", "<b>Ada</b>"), ("consent_email", "on")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await.unwrap();
    assert!(html.contains("Enter an email address like name@example.com."), "{html}");
    assert!(html.contains("aria-invalid=\"true\""));
    assert!(
        html.contains("value=\"&lt;b&gt;Ada&lt;&#x2F;b&gt;\"") || html.contains("value=\"&lt;b&gt;Ada&lt;/b&gt;\""),
        "the name is kept, as text: {html}"
    );
    assert!(!html.contains("<b>Ada</b>"), "never as HTML");
    assert!(html.contains("value=\"not-an-address\""), "the wrong value is kept to be corrected");
    assert!(html.contains("name=\"consent_email\" value=\"on\" checked"), "the ticked box stays ticked");

    let missing = sign_up(&app, "guide", "", &[("first_name", "Ada"), ("consent_email", "on")]).await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.text().await.unwrap().contains("Email is required."));
    let long = "x".repeat(201);
    let too_long =
        sign_up(&app, "guide", "", &[("email", "ada@example.com"), ("first_name", &long), ("consent_email", "on")])
            .await;
    assert_eq!(too_long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(too_long.text().await.unwrap().contains("First name is too long: at most 200 characters."));
    let no_box = sign_up(&app, "guide", "", &[("email", "ada@example.com")]).await;
    assert_eq!(no_box.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_box.text().await.unwrap().contains("Tick a box"));
    let bad_phone =
        sign_up(&app, "guide", "", &[("email", "ada@example.com"), ("phone", "12"), ("consent_sms", "on")]).await;
    assert_eq!(bad_phone.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_phone.text().await.unwrap().contains("Enter a mobile number"));

    // The JSON form names the fields.
    let token = expect_json(browser().get(app.url("/p/guide/token")).send().await.unwrap(), StatusCode::OK).await;
    app.clock.advance(chrono::Duration::seconds(5));
    let body = json!({"_form": token["token"], "email": "nope", "consent": ["email"]});
    let response = browser().post(app.url("/p/guide")).json(&body).send().await.unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
    let response = browser()
        .post(app.url("/p/guide"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!((app.count("subscribers").await, app.count("consents").await, app.count("outbox").await), (0, 0, 0));
}

async fn the_answer_never_tells_who_is_subscribed_and_one_confirmation_a_day_is_sent(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    app.create_subscriber(json!({"email": "known@example.com", "lists": ["guide-leads"], "consent": {"email": true}}))
        .await;
    let token = |app: &TestApp| {
        let url = app.url("/p/guide/token");
        async move { expect_json(browser().get(url).send().await.unwrap(), StatusCode::OK).await["token"].clone() }
    };
    let mut answers = Vec::new();
    for email in ["new@example.com", "new@example.com", "known@example.com"] {
        let t = token(&app).await;
        app.clock.advance(chrono::Duration::seconds(5));
        let body = json!({"_form": t, "email": email, "consent": ["email"]});
        let response = browser().post(app.url("/p/guide")).json(&body).send().await.unwrap();
        answers.push((response.status(), response.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert!(answers.iter().all(|a| *a == answers[0]), "new, pending and subscribed get the same answer: {answers:?}");
    let new = person_by_email(&app, "new@example.com").await;
    assert_eq!(confirmations(&app, new.id).await.len(), 1, "a second signup within a day sends no second message");
    let known = person_by_email(&app, "known@example.com").await;
    assert!(confirmations(&app, known.id).await.is_empty(), "a subscribed address is sent nothing");
    app.clock.advance(chrono::Duration::hours(25));
    let response = sign_up(&app, "guide", "", &[("email", "new@example.com"), ("consent_email", "on")]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(confirmations(&app, new.id).await.len(), 2, "a day later one more may go");
}

async fn past_the_per_ip_limit_a_signup_gets_429_with_retry_after(backend: Backend) {
    let Some(app) = spawn(backend, |c| c.signups_per_ip = 2).await else { return };
    for n in 0..2 {
        let email = format!("reader{n}@example.com");
        let response = sign_up(&app, "guide", "", &[("email", &email), ("consent_email", "on")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
    let response = sign_up(&app, "guide", "", &[("email", "reader9@example.com"), ("consent_email", "on")]).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = response.headers()[reqwest::header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(wait > 3000 && wait <= 3600, "{wait}");
    assert_eq!(app.count("subscribers").await, 2);
    app.clock.advance(chrono::Duration::hours(1));
    let response = sign_up(&app, "guide", "", &[("email", "reader9@example.com"), ("consent_email", "on")]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "an hour later the address may sign up again");
}

const AUTH_TOKEN: &str = "twilio-auth-token-for-pages";

async fn a_texted_yes_confirms_an_sms_signup(backend: Backend) {
    let fake = FakeProvider::start().await;
    let provider = SmsProviderConfig::Twilio {
        base_url: url::Url::parse(&fake.base).unwrap(),
        account_sid: "AC0123".into(),
        auth_token: AUTH_TOKEN.into(),
        from: "+15005550006".into(),
    };
    let Some(app) = spawn(backend, |c| c.sms_providers = vec![provider]).await else { return };
    let fields = [("email", "grace@example.com"), ("phone", "(415) 555-2671"), ("consent_sms", "on")];
    let response = sign_up(&app, "guide", "", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let grace = person_by_email(&app, "grace@example.com").await;
    assert_eq!(grace.phone.as_deref(), Some("+14155552671"), "normalised to E.164 with the page's country");
    let v = view(&app, grace.id).await;
    assert_eq!((v["channels"]["sms"].as_str(), v["channels"]["email"].as_str()), (Some("pending"), Some("none")));
    let sent = confirmations(&app, grace.id).await;
    assert_eq!((sent.len(), sent[0].channel.as_str()), (1, "sms"));
    let (_, text) = crate::helpers::bodies(&app, sent[0].id).await;
    assert!(text.contains("reply YES"), "{text}");

    let fields = [("MessageSid", "SMyes"), ("From", "+14155552671"), ("To", "+15005550006"), ("Body", "Yes")];
    let owned: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let signature = twilio_signature(AUTH_TOKEN, "http://127.0.0.1:8080/webhooks/sms/twilio", &owned);
    let response = reqwest::Client::new()
        .post(app.url("/webhooks/sms/twilio"))
        .header("x-twilio-signature", signature)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let v = view(&app, grace.id).await;
    assert_eq!(
        (v["channels"]["sms"].as_str(), v["lists"][0]["status"].as_str()),
        (Some("subscribed"), Some("confirmed"))
    );
    let confirmed = consent::Entity::find()
        .filter(consent::Column::SubscriberId.eq(grace.id))
        .filter(consent::Column::Granted.eq(true))
        .filter(consent::Column::Method.eq("sms_keyword"))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(confirmed.page.as_deref(), Some("guide"), "the YES records the page's words");
    assert!(kinds(&app, &grace.id.to_string()).await.contains(&"signup_confirmed".to_owned()));
}

const SHOP: &str = "pages:
  - slug: shop
    title: Shop news
    list: guide-leads
    double_opt_in: false
    cors: [https://shop.example.com]
    thank_you: { redirect: https://shop.example.com/thanks }
";

async fn a_single_opt_in_page_takes_json_from_the_origins_it_lists(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    app.install_workflow("shop", SHOP).await;
    app.install_workflow("welcome", WELCOME).await;
    let origin = "https://shop.example.com";
    let preflight = browser()
        .request(reqwest::Method::OPTIONS, app.url("/p/shop"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    let other = browser().get(app.url("/p/shop/token")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "CORS only for listed origins");
    let other = browser().get(app.url("/p/guide/token")).header("origin", origin).send().await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "and off unless a page lists them");
    let token = browser().get(app.url("/p/shop/token")).header("origin", origin).send().await.unwrap();
    assert_eq!(token.headers()["access-control-allow-origin"], origin);
    let token = expect_json(token, StatusCode::OK).await;
    app.clock.advance(chrono::Duration::seconds(5));
    let body =
        json!({"_form": token["token"], "email": "lin@example.com", "consent_email": true, "utm_source": "tiktok"});
    let response = browser().post(app.url("/p/shop")).header("origin", origin).json(&body).send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], origin);
    let answer = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(answer["status"], "received");
    assert_eq!(
        (answer["message"].as_str(), answer["lang"].as_str()),
        (Some("Thanks! You are subscribed."), Some("en"))
    );
    let lin = person_by_email(&app, "lin@example.com").await;
    let v = view(&app, lin.id).await;
    assert_eq!(
        (v["channels"]["email"].as_str(), v["lists"][0]["status"].as_str()),
        (Some("subscribed"), Some("confirmed"))
    );
    assert_eq!(v["attribution"]["source"], "tiktok");
    assert!(confirmations(&app, lin.id).await.is_empty(), "single opt-in sends no confirmation");
    app.tick().await;
    assert_eq!(app.count("enrollments").await, 1, "and starts the list's workflows at once");
    let form = sign_up(&app, "shop", "", &[("email", "kim@example.com"), ("consent_email", "on")]).await;
    assert_eq!((form.status(), location(&form)), (StatusCode::SEE_OTHER, "https://shop.example.com/thanks".to_owned()));
    // What an embedded form shows its visitor is in their language (the JSON `lang` may name it).
    let body = json!({"_form": token["token"], "email": "mia@example.com", "consent_email": true, "lang": "it"});
    let response = browser().post(app.url("/p/shop")).header("origin", origin).json(&body).send().await.unwrap();
    let answer = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!((answer["message"].as_str(), answer["lang"].as_str()), (Some("Grazie! Sei iscritto."), Some("it")));
    assert_eq!(person_by_email(&app, "mia@example.com").await.locale.as_deref(), Some("it"));
}

async fn the_preference_page_switches_lists_and_channels_and_records_each_change(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let news = json!({"slug": "news", "name": "Weekly <news>"});
    expect_json(app.post("/api/v1/lists", &news).await, StatusCode::CREATED).await;
    let body = json!({"email": "ada@example.com", "phone": "+14155552671", "first_name": "Ada",
        "lists": ["guide-leads", "news"], "consent": {"email": true, "sms": true}});
    let id: uuid::Uuid = app.create_subscriber(body).await["id"].as_str().unwrap().parse().unwrap();
    let secret = std::fs::read_to_string(app.data_dir.join("secret")).unwrap();
    let signer = ownlist::core::links::Signer::new(secret.trim());
    let base = url::Url::parse("http://127.0.0.1:8080/").unwrap();
    let expires = ownlist::core::clock::Clock::now(app.clock.as_ref()) + chrono::Duration::days(30);
    let url = signer.url(&base, "preferences", ownlist::core::links::Purpose::Preferences, id, expires);
    let path = url.trim_start_matches("http://127.0.0.1:8080");

    let (status, html) = page_html(&app, path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("value=\"news\" checked> Weekly &lt;news&gt;"), "{html}");
    assert!(html.contains("a•••@example.com") && !html.contains("ada@example.com"), "addresses are masked");
    assert!(html.contains("+1•••••2671"));

    let save = |fields: &'static [(&'static str, &'static str)]| {
        let app = &app;
        async move { form(app, path, fields).await }
    };
    let response = save(&[("save", "1"), ("list", "guide-leads"), ("channel", "email")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Your choices are saved."));
    let v = view(&app, id).await;
    let lists: Vec<(String, String)> = v["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["list"].as_str().unwrap().to_owned(), l["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(lists, [("guide-leads".into(), "confirmed".into()), ("news".into(), "unsubscribed".into())]);
    assert_eq!(
        (v["channels"]["email"].as_str(), v["channels"]["sms"].as_str()),
        (Some("subscribed"), Some("unsubscribed"))
    );
    let withdrawn = app.count("consents WHERE granted = false AND method = 'preferences' AND channel = 'sms'").await;
    assert_eq!(withdrawn, 1, "the withdrawal is a consent record");

    save(&[("save", "1"), ("list", "guide-leads"), ("list", "news"), ("channel", "email"), ("channel", "sms")]).await;
    let v = view(&app, id).await;
    assert_eq!(v["channels"]["sms"], "subscribed", "the person may switch a channel back on");
    assert_eq!(v["lists"][1]["status"], "confirmed");
    assert_eq!(app.count("consents WHERE granted = true AND method = 'preferences'").await, 1);

    let response = save(&[("everything", "off")]).await;
    assert!(response.text().await.unwrap().contains("unsubscribed from everything"));
    let v = view(&app, id).await;
    assert_eq!(
        (v["channels"]["email"].as_str(), v["channels"]["sms"].as_str()),
        (Some("unsubscribed"), Some("unsubscribed"))
    );
    assert_eq!(v["status"], "unsubscribed");
    assert!(v["lists"].as_array().unwrap().iter().all(|l| l["status"] == "unsubscribed"));

    let mut forged = path.to_owned();
    forged.pop();
    forged.push(if path.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(page_html(&app, &forged).await.0, StatusCode::NOT_FOUND);
    assert_eq!(form(&app, &forged, &[("everything", "off")]).await.status(), StatusCode::NOT_FOUND);
}

/// Someone signs up with their own email and another person's phone, ticking both boxes, and
/// confirms the email: the phone's owner never said YES, so no path through the preference page
/// may turn texts on (unticking withdraws the pending request; ticking again does nothing).
async fn the_preference_page_cannot_switch_on_a_channel_its_owner_never_confirmed(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let fields =
        [("email", "mallory@example.com"), ("phone", "(415) 555-2671"), ("consent_email", "on"), ("consent_sms", "on")];
    assert_eq!(sign_up(&app, "guide", "", &fields).await.status(), StatusCode::SEE_OTHER);
    let mallory = person_by_email(&app, "mallory@example.com").await;
    let email = confirmations(&app, mallory.id).await.into_iter().find(|m| m.channel == "email").unwrap();
    let confirmed = browser().get(app.url(&confirm_path(&app, &email).await)).send().await.unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    let v = view(&app, mallory.id).await;
    assert_eq!((v["channels"]["email"].as_str(), v["channels"]["sms"].as_str()), (Some("subscribed"), Some("pending")));

    let secret = std::fs::read_to_string(app.data_dir.join("secret")).unwrap();
    let signer = ownlist::core::links::Signer::new(secret.trim());
    let expires = ownlist::core::clock::Clock::now(app.clock.as_ref()) + chrono::Duration::days(30);
    let path = format!("/preferences/{}", signer.sign(ownlist::core::links::Purpose::Preferences, mallory.id, expires));
    form(&app, &path, &[("save", "1"), ("list", "guide-leads"), ("channel", "email")]).await;
    assert_eq!(view(&app, mallory.id).await["channels"]["sms"], "unsubscribed", "the pending request is withdrawn");
    let (_, html) = page_html(&app, &path).await;
    assert!(html.contains("value=\"sms\" disabled"), "texts cannot be ticked again here: {html}");
    form(&app, &path, &[("save", "1"), ("list", "guide-leads"), ("channel", "email"), ("channel", "sms")]).await;
    let v = view(&app, mallory.id).await;
    assert_eq!(v["channels"]["sms"], "unsubscribed", "never confirmed: not switched on: {v}");
    assert_eq!(app.count("consents WHERE granted = true AND method = 'preferences'").await, 0);
}

async fn addresses_no_message_could_reach_are_refused_at_the_form(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    for address in ["\"a b\"@example.com", "a@[127.0.0.1]"] {
        let response = sign_up(&app, "guide", "", &[("email", address), ("consent_email", "on")]).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{address}");
    }
    assert_eq!(app.count("subscribers").await, 0, "nothing was written");
}

async fn the_funnel_counts_views_signups_and_confirmations_by_page_source_and_day(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    app.install_workflow("shop", SHOP).await;
    // Two people from Instagram, one of whom signs up and confirms; one from TikTok on the shop page.
    page_html(&app, "/p/guide?utm_source=ig&utm_campaign=spring").await;
    let response = sign_up(
        &app,
        "guide",
        "?utm_source=ig&utm_campaign=spring",
        &[("email", "ada@example.com"), ("consent_email", "on")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let ada = person_by_email(&app, "ada@example.com").await;
    let path = confirm_path(&app, &confirmations(&app, ada.id).await[0]).await;
    assert_eq!(page_html(&app, &path).await.0, StatusCode::OK);
    page_html(&app, "/p/shop?ttclid=E.C.P").await;
    // Machines: a link previewer and a HEAD request.
    let preview = reqwest::Client::new()
        .get(app.url("/p/guide?utm_source=ig"))
        .header("user-agent", "facebookexternalhit/1.1")
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), StatusCode::OK);
    let head = browser().head(app.url("/p/guide")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // Ada's first email: opened twice and clicked; only her first open and click count.
    let guide = "name: Guide\ntrigger: { subscribed: guide-leads }\nsteps:\n  - id: deliver\n    email: { subject: Your guide, template: emails/guide.html }\n";
    app.install_workflow("guide-mail", guide).await;
    app.tick().await;
    let sent = outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(ada.id))
        .filter(outbox::Column::StepId.eq("deliver"))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    let html = crate::helpers::bodies(&app, sent.id).await.0.unwrap();
    let link = |marker: &str| crate::stats::link(&html, marker);
    let (pixel, click) = (link("/t/o/"), link("/t/c/"));
    for _ in 0..2 {
        assert_eq!(browser().get(app.url(&pixel)).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(browser().get(app.url(&click)).send().await.unwrap().status(), StatusCode::FOUND);
    assert_eq!(browser().get(app.url(&click)).send().await.unwrap().status(), StatusCode::FOUND);
    // She buys, twice: the page's goal, reached once.
    for _ in 0..2 {
        let bought = app.post("/api/v1/events", &json!({"email": "ada@example.com", "name": "purchased"})).await;
        assert_eq!(bought.status(), StatusCode::CREATED);
        app.tick().await;
    }
    assert_eq!(kinds(&app, &ada.id.to_string()).await.iter().filter(|k| *k == "goal_reached").count(), 1);

    let stages = |v: &Value| -> Vec<(String, i64)> {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["stage"].as_str().unwrap().to_owned(), s["count"].as_i64().unwrap()))
            .collect()
    };
    let all = expect_json(app.get("/api/v1/stats/funnel").await, StatusCode::OK).await;
    assert_eq!(
        stages(&all),
        [
            ("views".into(), 3),
            ("signups".into(), 1),
            ("confirmed".into(), 1),
            ("opened".into(), 1),
            ("clicked".into(), 1),
            ("goal_reached".into(), 1)
        ],
        "{all}"
    );
    assert_eq!(
        all["by_day"],
        json!([{"key": "2026-03-02", "views": 3, "signups": 1, "confirmed": 1, "opened": 1,
        "clicked": 1, "goals": 1, "bot_views": 2, "second_channel": 0, "conversion": 0.3333}])
    );
    let by_page: Vec<(&str, i64)> = all["by_page"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["views"].as_i64().unwrap()))
        .collect();
    assert_eq!(by_page, [("guide", 2), ("shop", 1)], "most viewed first");
    let by_source: Vec<(&str, i64)> = all["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["confirmed"].as_i64().unwrap()))
        .collect();
    assert!(by_source.contains(&("instagram", 1)) && by_source.contains(&("tiktok", 0)), "{by_source:?}");
    assert_eq!(all["bot_views"], 2, "machines are counted apart");
    assert_eq!(all["stages"][1]["conversion"], 0.3333);
    assert_eq!(all["stages"][2]["conversion"], 1.0);
    let guide = expect_json(app.get("/api/v1/stats/funnel?page=guide&source=instagram").await, StatusCode::OK).await;
    assert_eq!(stages(&guide)[..3], [("views".into(), 2), ("signups".into(), 1), ("confirmed".into(), 1)]);
    assert_eq!(guide["stages"][4]["conversion"], 1.0, "clicked of opened");
    let spring = expect_json(app.get("/api/v1/stats/funnel?campaign=spring&medium=").await, StatusCode::OK).await;
    assert_eq!(stages(&spring)[..3], [("views".into(), 2), ("signups".into(), 1), ("confirmed".into(), 1)]);
    assert_eq!(all["by_campaign"][0]["key"], "spring", "{all}");
    assert_eq!(all["by_campaign"][0]["views"], 2);
    let tiktok = expect_json(app.get("/api/v1/stats/funnel?source=tiktok").await, StatusCode::OK).await;
    assert_eq!(stages(&tiktok)[0], ("views".into(), 1));
    let earlier =
        expect_json(app.get("/api/v1/stats/funnel?from=2026-01-01&to=2026-03-01").await, StatusCode::OK).await;
    assert_eq!(stages(&earlier)[0], ("views".into(), 0), "outside the range: {earlier}");
    let today = expect_json(app.get("/api/v1/stats/funnel?from=2026-03-02&to=2026-03-02").await, StatusCode::OK).await;
    assert_eq!(stages(&today)[0], ("views".into(), 3));
    let csv = app.get("/api/v1/stats/funnel?page=guide&format=csv").await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.text().await.unwrap(),
        "stage,count,conversion\nviews,2,\nsignups,1,0.5\nconfirmed,1,1\nopened,1,1\nclicked,1,1\ngoal_reached,1,1\nbot_views,2,\n"
    );
    let csv = app.get("/api/v1/stats/funnel?by=source&source=instagram&format=csv").await;
    assert_eq!(
        csv.text().await.unwrap(),
        "source,views,signups,confirmed,opened,clicked,goal_reached,bot_views,second_channel,conversion\ninstagram,2,1,1,1,1,1,1,0,0.5\n"
    );
    let bad = app.get("/api/v1/stats/funnel?by=week").await;
    expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let bad = app.get("/api/v1/stats/funnel?from=yesterday").await;
    let problem = expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "from");
}
