//! WhatsApp as a channel of its own (never the only one): consent apart from SMS, messages to a
//! Twilio-compatible provider at `whatsapp:` addresses (as text, or in an approved template),
//! delivery reports and STOP as for SMS, and a failure that falls through to an owned channel.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::fake_sms::FakeProvider;
use crate::helpers::{Backend, TestApp, expect_json, kinds, with_each_backend};
use ownlist::config::SmsProviderConfig;
use ownlist::delivery::sms::twilio_signature;
use ownlist::store::entities::outbox;

with_each_backend!(
    whatsapp_messages_reach_a_twilio_compatible_provider_at_whatsapp_addresses,
    a_whatsapp_stop_withdraws_whatsapp_alone_and_a_yes_confirms_a_pages_whatsapp_signup,
    the_add_channel_page_takes_a_number_and_starts_its_confirmation,
    an_ask_channel_step_asks_only_those_who_lack_the_channel,
);

const AUTH_TOKEN: &str = "twilio-auth-token-for-whatsapp";

fn twilio(fake: &FakeProvider) -> SmsProviderConfig {
    SmsProviderConfig::Twilio {
        base_url: url::Url::parse(&fake.base).unwrap(),
        account_sid: "AC0123".into(),
        auth_token: AUTH_TOKEN.into(),
        from: "+15005550006".into(),
    }
}

async fn twilio_post(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let owned: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let signature = twilio_signature(AUTH_TOKEN, &format!("http://127.0.0.1:8080{path}"), &owned);
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish())
        .send()
        .await
        .unwrap()
}

async fn view(app: &TestApp, id: &str) -> Value {
    expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await
}

async fn messages_of(app: &TestApp, id: &str) -> Vec<outbox::Model> {
    outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(uuid::Uuid::parse_str(id).unwrap()))
        .order_by_asc(outbox::Column::CreatedAt)
        .order_by_asc(outbox::Column::Id)
        .all(app.db.conn())
        .await
        .unwrap()
}

/// Ada agreed to WhatsApp and email, Bob to SMS and email only (his phone number is no consent
/// to WhatsApp). A `reach: first` broadcast on `[whatsapp, email]` goes to Ada on WhatsApp (to
/// `whatsapp:+1…` from `whatsapp:+1…`, the broadcast's text), to Bob by email. The provider then
/// reports Ada's number has no WhatsApp (63003): her WhatsApp is bounced and her email goes
/// instead. A broadcast naming an approved template sends it as `ContentSid` with the text as
/// its variable.
async fn whatsapp_messages_reach_a_twilio_compatible_provider_at_whatsapp_addresses(backend: Backend) {
    let fake = FakeProvider::start().await;
    let provider = twilio(&fake);
    let Some(app) = TestApp::spawn_with(backend, |c| c.whatsapp_providers = vec![provider]).await else { return };
    app.create_list("news").await;
    let ada = app
        .create_subscriber(json!({"email": "ada@example.com", "phone": "+14155552671", "first_name": "Ada",
            "lists": ["news"], "consent": {"whatsapp": true, "email": true}}))
        .await;
    assert_eq!(ada["channels"], json!({"email": "subscribed", "sms": "none", "whatsapp": "subscribed"}));
    let ada = ada["id"].as_str().unwrap().to_owned();
    let bob = app
        .create_subscriber(json!({"email": "bob@example.com", "phone": "+14155552672", "first_name": "Bob",
            "lists": ["news"], "consent": {"sms": true, "email": true}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"list": "news", "channels": ["whatsapp", "email"], "reach": "first",
        "subject": "Open as usual", "html": "<p>Open as usual.</p>",
        "sms_text": "Hi {{ subscriber.first_name }}, we are open as usual."});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    assert_eq!(app.whatsapp.send_due().await.unwrap(), 1, "Ada's");
    assert_eq!(app.sms.send_due().await.unwrap(), 0, "no text message: Bob has no WhatsApp consent");
    assert_eq!(app.email.send_due().await.unwrap(), 1, "Bob's");
    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/2010-04-01/Accounts/AC0123/Messages.json");
    assert_eq!(sent[0].field("To").as_deref(), Some("whatsapp:+14155552671"));
    assert_eq!(sent[0].field("From").as_deref(), Some("whatsapp:+15005550006"));
    assert_eq!(sent[0].field("Body").as_deref(), Some("Hi Ada, we are open as usual."));
    let channels: Vec<String> = messages_of(&app, &bob).await.iter().map(|m| m.channel.as_str().to_owned()).collect();
    assert_eq!(channels, ["email"]);

    // The provider reports her number has no WhatsApp account: her email goes instead.
    let report = [("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "63003")];
    assert_eq!(twilio_post(&app, "/webhooks/sms/status", &report).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(view(&app, &ada).await["channels"]["whatsapp"], "bounced");
    assert_eq!(view(&app, &ada).await["status"], "active", "her email still reaches her");
    assert!(kinds(&app, &ada).await.contains(&"reach_fallback".to_owned()));
    assert_eq!(app.email.send_due().await.unwrap(), 1, "Ada's email, instead");
    let ada_messages: Vec<(String, String)> = messages_of(&app, &ada)
        .await
        .iter()
        .map(|m| (m.channel.as_str().to_owned(), m.status.as_str().to_owned()))
        .collect();
    assert_eq!(ada_messages, [("whatsapp".to_owned(), "failed".to_owned()), ("email".to_owned(), "sent".to_owned())]);

    // An approved template: its id, and the text as its variable.
    let cy = app
        .create_subscriber(json!({"phone": "+14155552673", "first_name": "Cy", "lists": ["news"],
            "consent": {"whatsapp": true}}))
        .await;
    assert_eq!(cy["status"], "active");
    let body = json!({"list": "news", "channels": ["whatsapp"], "whatsapp_template": "HX0123abcd",
        "sms_text": "Hi {{ subscriber.first_name }}, the sale starts today."});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    assert_eq!(app.whatsapp.send_due().await.unwrap(), 1, "Cy's (Ada's WhatsApp bounced)");
    let templated = fake.requests().pop().unwrap();
    assert_eq!(templated.field("To").as_deref(), Some("whatsapp:+14155552673"));
    assert_eq!(templated.field("ContentSid").as_deref(), Some("HX0123abcd"));
    let variables: Value = serde_json::from_str(&templated.field("ContentVariables").unwrap()).unwrap();
    assert_eq!(variables, json!({"1": "Hi Cy, the sale starts today."}));
    assert_eq!(templated.field("Body"), None);

    // A template for a broadcast without WhatsApp, or WhatsApp without a text, is refused.
    let wrong = json!({"list": "news", "channels": ["email"], "subject": "x", "html": "<p>x</p>",
        "whatsapp_template": "HX1"});
    let problem = app.post("/api/v1/broadcasts", &wrong).await;
    assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let no_text = json!({"list": "news", "channels": ["whatsapp"]});
    let problem = expect_json(app.post("/api/v1/broadcasts", &no_text).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "sms_text", "{problem}");
}

/// STOP sent on WhatsApp withdraws WhatsApp consent and nothing else, and is confirmed on
/// WhatsApp; a landing page with a WhatsApp box sends its confirmation request there, and YES
/// on WhatsApp confirms it.
async fn a_whatsapp_stop_withdraws_whatsapp_alone_and_a_yes_confirms_a_pages_whatsapp_signup(backend: Backend) {
    let fake = FakeProvider::start().await;
    let provider = twilio(&fake);
    let Some(app) = TestApp::spawn_with(backend, |c| c.whatsapp_providers = vec![provider]).await else { return };
    app.create_list("guide-leads").await;
    let ada = app.create_subscriber(json!({"phone": "+14155552671", "consent": {"whatsapp": true, "sms": true}})).await
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stop =
        [("MessageSid", "SMin1"), ("From", "whatsapp:+14155552671"), ("To", "whatsapp:+15005550006"), ("Body", "STOP")];
    assert_eq!(twilio_post(&app, "/webhooks/sms/twilio", &stop).await.status(), StatusCode::OK);
    let v = view(&app, &ada).await;
    assert_eq!(
        (v["channels"]["whatsapp"].as_str(), v["channels"]["sms"].as_str()),
        (Some("unsubscribed"), Some("subscribed"))
    );
    assert!(kinds(&app, &ada).await.contains(&"whatsapp_received".to_owned()));
    assert_eq!(app.whatsapp.send_due().await.unwrap(), 1, "the confirmation of STOP, on WhatsApp");
    let reply = fake.requests().pop().unwrap();
    assert_eq!(reply.field("To").as_deref(), Some("whatsapp:+14155552671"));
    assert!(reply.field("Body").unwrap().contains("no more WhatsApp messages"), "{:?}", reply.field("Body"));

    let page = "pages:\n  - slug: guide\n    title: Get the guide\n    list: guide-leads\n    fields: [email, phone]\n    channels: [email, whatsapp]\n    default_country: US\n";
    app.install_workflow("pages", page).await;
    let (_, html) = crate::pages::page_html(&app, "/p/guide").await;
    assert!(html.contains("name=\"consent_whatsapp\""), "{html}");
    app.clock.advance(chrono::Duration::seconds(5));
    let fields = [("email", "grace@example.com"), ("phone", "(415) 555-2680"), ("consent_whatsapp", "on")];
    let response = crate::pages::post_form(&app, "guide", &html, &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let grace = crate::pages::person_by_email(&app, "grace@example.com").await;
    let v = crate::pages::view(&app, grace.id).await;
    assert_eq!((v["channels"]["whatsapp"].as_str(), v["channels"]["sms"].as_str()), (Some("pending"), Some("none")));
    assert_eq!(app.whatsapp.send_due().await.unwrap(), 1, "the confirmation request, on WhatsApp");
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.field("To").as_deref(), Some("whatsapp:+14155552680"));
    assert!(request.field("Body").unwrap().contains("reply YES"));
    let yes =
        [("MessageSid", "SMin2"), ("From", "whatsapp:+14155552680"), ("To", "whatsapp:+15005550006"), ("Body", "Yes")];
    assert_eq!(twilio_post(&app, "/webhooks/sms/twilio", &yes).await.status(), StatusCode::OK);
    let v = crate::pages::view(&app, grace.id).await;
    assert_eq!(
        (v["channels"]["whatsapp"].as_str(), v["lists"][0]["status"].as_str()),
        (Some("subscribed"), Some("confirmed"))
    );

    // She adds email through the add-channel page a message links: the funnel of the page she
    // came through counts her as become multi-channel, and the drill as grown.
    let body = json!({"list": "guide-leads", "channels": ["whatsapp"], "sms_text": "Email too? {{ add_channel_url }}"});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    app.whatsapp.send_due().await.unwrap();
    let link = fake.requests().pop().unwrap().field("Body").unwrap();
    let path = link_path(&link, "/add/");
    let (status, _) = form_post(&app, &path, &[("address", "grace@example.com"), ("channel", "email")]).await;
    assert_eq!(status, StatusCode::OK);
    let confirmation = crate::pages::confirmations(&app, grace.id).await;
    let confirm = crate::pages::confirm_path(&app, confirmation.last().unwrap()).await;
    assert_eq!(crate::pages::browser().get(app.url(&confirm)).send().await.unwrap().status(), StatusCode::OK);
    let funnel = expect_json(app.get("/api/v1/stats/funnel").await, StatusCode::OK).await;
    assert_eq!(funnel["totals"]["second_channel"], 1, "{funnel}");
    let reach = expect_json(app.get("/api/v1/reachability").await, StatusCode::OK).await;
    assert_eq!(reach["added_channel_30_days"], 1);
}

/// The path of a link in a message's HTML (`http://127.0.0.1:8080/add/…` → `/add/…`).
fn link_path(html: &str, prefix: &str) -> String {
    let start =
        html.find(&format!("http://127.0.0.1:8080{prefix}")).unwrap_or_else(|| panic!("no {prefix} link in {html}"));
    let rest = &html[start + "http://127.0.0.1:8080".len()..];
    rest.split(['"', '<', ' ']).next().unwrap().to_owned()
}

async fn form_post(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> (StatusCode, String) {
    let response = crate::pages::form(app, path, pairs).await;
    (response.status(), response.text().await.unwrap())
}

/// `{{ add_channel_url }}` in a broadcast leads Ada (email only) to a page that asks for her
/// mobile number: a bad number is refused on the page, a good one is kept pending and a text
/// asks her to reply YES; her YES makes her reachable on two channels, with the page's words
/// recorded. Bob (texts only) is asked for an email address, and confirms it by its link.
async fn the_add_channel_page_takes_a_number_and_starts_its_confirmation(backend: Backend) {
    let fake = FakeProvider::start().await;
    let provider = twilio(&fake);
    let Some(app) = TestApp::spawn_with(backend, |c| c.sms_providers = vec![provider]).await else { return };
    app.create_list("news").await;
    let ada = app.join("ada@example.com", "news").await;
    let bob = app
        .create_subscriber(json!({"phone": "+14155552672", "lists": ["news"], "consent": {"sms": true}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"list": "news", "subject": "Stay in touch", "tracking": false,
        "html": "<p><a href=\"{{ add_channel_url }}\">Add your mobile number</a></p>"});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    app.email.send_due().await.unwrap();
    let sent = messages_of(&app, &ada).await;
    let (html, _) = crate::helpers::bodies(&app, sent[0].id).await;
    let path = link_path(&html.unwrap(), "/add/");

    let (status, page) = crate::pages::page_html(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("type=\"tel\"") && page.contains("value=\"sms\"") && page.contains("value=\"whatsapp\""),
        "{page}"
    );
    let (status, refused) = form_post(&app, &path, &[("address", "not a number"), ("channel", "sms")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.contains("include the country code"), "{refused}");
    assert_eq!(view(&app, &ada).await["phone"], Value::Null, "nothing written");

    let (status, done) = form_post(&app, &path, &[("address", "+14155552671"), ("channel", "sms")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done.contains("reply YES"), "{done}");
    let v = view(&app, &ada).await;
    assert_eq!((v["phone"].as_str(), v["channels"]["sms"].as_str()), (Some("+14155552671"), Some("pending")));
    assert_eq!(app.sms.send_due().await.unwrap(), 1, "the confirmation request");
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.field("To").as_deref(), Some("+14155552671"));
    assert!(request.field("Body").unwrap().contains("reply YES"));
    let yes = [("MessageSid", "SMyes"), ("From", "+14155552671"), ("To", "+15005550006"), ("Body", "YES")];
    assert_eq!(twilio_post(&app, "/webhooks/sms/twilio", &yes).await.status(), StatusCode::OK);
    assert_eq!(view(&app, &ada).await["channels"]["sms"], "subscribed");
    let consent = ownlist::store::entities::consent::Entity::find()
        .filter(ownlist::store::entities::consent::Column::SubscriberId.eq(uuid::Uuid::parse_str(&ada).unwrap()))
        .filter(ownlist::store::entities::consent::Column::Channel.eq("sms"))
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(consent.page.as_deref(), Some("add-channel"));
    assert!(consent.consent_text.unwrap_or_default().contains("on the channels ticked"));
    let (_, nothing) = crate::pages::page_html(&app, &path).await;
    assert!(nothing.contains("nothing to add"), "{nothing}");

    // Bob, reached by text only, is asked for an email address and confirms it by its link.
    let body = json!({"list": "news", "channels": ["sms"], "sms_text": "Get us by email too: {{ add_channel_url }}"});
    expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    app.tick().await;
    assert_eq!(app.sms.send_due().await.unwrap(), 3, "the reply to her YES; Bob's, and Ada's now that she takes texts");
    let to_bob = fake.requests().into_iter().find(|r| r.field("To").as_deref() == Some("+14155552672")).unwrap();
    let token = link_path(&to_bob.field("Body").unwrap(), "/add/");
    let (_, page) = crate::pages::page_html(&app, &token).await;
    assert!(page.contains("type=\"email\"") && page.contains("value=\"email\""), "{page}");
    let (status, _) = form_post(&app, &token, &[("address", "bob@example.com"), ("channel", "email")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view(&app, &bob).await["channels"]["email"], "pending");
    let confirmation = crate::pages::confirmations(&app, uuid::Uuid::parse_str(&bob).unwrap()).await;
    let confirm = crate::pages::confirm_path(&app, &confirmation[0]).await;
    assert_eq!(crate::pages::browser().get(app.url(&confirm)).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(view(&app, &bob).await["channels"]["email"], "subscribed");

    // Both are on two channels now.
    let reach = expect_json(app.get("/api/v1/reachability").await, StatusCode::OK).await;
    assert_eq!(reach["total"]["several_channels"], 2, "{reach}");
    assert_eq!(reach["multi_channel_share"], 1.0);

    let forged = crate::pages::browser().get(app.url("/add/not-a-token")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
}

/// `ask_channel: sms` emails those reached by email only a link to add their mobile number;
/// `ask_channel: email` texts those reached by phone only a link to add their email address;
/// everyone else passes both steps, and the timeline says why.
async fn an_ask_channel_step_asks_only_those_who_lack_the_channel(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("news").await;
    let grow = "name: Grow\ntrigger: { subscribed: news }\nsteps:\n  - id: ask-phone\n    ask_channel: sms\n  - id: ask-email\n    ask_channel: email\n";
    app.install_workflow("grow", grow).await;
    let ada = app.join("ada@example.com", "news").await;
    let bob = app
        .create_subscriber(json!({"phone": "+14155552672", "lists": ["news"], "consent": {"sms": true}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cy = app
        .create_subscriber(json!({"email": "cy@example.com", "phone": "+14155552673", "lists": ["news"],
            "consent": {"sms": true, "email": true}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.tick().await;
    let channels = |messages: Vec<outbox::Model>| -> Vec<String> {
        messages.iter().map(|m| m.channel.as_str().to_owned()).collect()
    };
    assert_eq!(channels(messages_of(&app, &ada).await), ["email"]);
    assert_eq!(channels(messages_of(&app, &bob).await), ["sms"]);
    assert!(messages_of(&app, &cy).await.is_empty(), "two channels already: nothing to ask");
    let to_ada = &messages_of(&app, &ada).await[0];
    assert_eq!(to_ada.subject.as_deref(), Some("Can we also reach you by text?"));
    let (_, text) = crate::helpers::bodies(&app, to_ada.id).await;
    assert!(text.contains("http://127.0.0.1:8080/add/"), "{text}");
    let (_, text) = crate::helpers::bodies(&app, messages_of(&app, &bob).await[0].id).await;
    assert!(text.starts_with("Add your email address too") && text.contains("/add/"), "{text}");
    let stats = expect_json(app.get("/api/v1/stats/workflows/grow").await, StatusCode::OK).await;
    let step = |id: &str| stats["steps"].as_array().unwrap().iter().find(|s| s["step"] == id).unwrap().clone();
    assert_eq!(
        (step("ask-phone")["kind"].as_str(), step("ask-phone")["sent"].as_i64()),
        (Some("ask_channel"), Some(1))
    );
    assert_eq!(step("ask-phone")["skipped"], 2);
    assert_eq!(step("ask-email")["sent"], 1);
    let skipped = crate::helpers::timeline(&app, &cy).await;
    assert!(
        skipped.iter().any(|e| e["data"]["reason"].as_str().is_some_and(|r| r.contains("nothing to ask"))),
        "{skipped:?}"
    );
}
