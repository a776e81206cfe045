//! Outage readiness: the reachability drill against a hand count, and (with `reach: first`) one
//! message per person on the first channel that works.

use reqwest::StatusCode;
use sea_orm::ActiveModelTrait;
use sea_orm::ActiveValue::Set;
use serde_json::{Value, json};

use crate::helpers::{BOUNCE_SECRET, Backend, TestApp, expect_json, expect_problem, with_each_backend};
use ownlist::core::clock::Clock;
use ownlist::core::values::{OutboxChannel, OutboxStatus};
use ownlist::store::entities::outbox;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::smtp_sink::SmtpSink;

with_each_backend!(
    the_drill_matches_a_hand_count,
    reach_first_sends_each_person_one_message_on_the_first_channel_that_works,
    reach_first_moves_on_when_a_channel_stays_down_past_fallback_after,
    a_message_step_reaches_each_person_once_on_the_first_channel_that_works,
    reach_first_tries_a_channel_down_past_fallback_after_last,
);

/// Seeds people with every mix of channels, then checks each figure against a count by hand.
///
/// | who | channels that work | source    | lists     |
/// |-----|--------------------|-----------|-----------|
/// | ada | email              | instagram | shop      |
/// | bob | email, sms         | instagram | shop, vip |
/// | cy  | sms                | instagram | shop      |
/// | dan | none (no consent)  | instagram |           |
/// | eve | sms (email refused)| tiktok    | shop      |
/// | gus | sms (email bounced)| (none)    | vip       |
/// | hal | unsubscribed: not in the audience       |
async fn the_drill_matches_a_hand_count(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("shop").await;
    app.create_list("vip").await;
    let person = |email: Option<&str>, phone: Option<&str>, consent: Value, lists: &[&str], source: Option<&str>| {
        let mut body = json!({"consent": consent, "lists": lists});
        if let Some(email) = email {
            body["email"] = json!(email);
        }
        if let Some(phone) = phone {
            body["phone"] = json!(phone);
        }
        if let Some(source) = source {
            body["attribution"] = json!({"source": source});
        }
        body
    };
    let both = json!({"email": true, "sms": true});
    let seeds = [
        person(Some("ada@example.com"), None, json!({"email": true}), &["shop"], Some("instagram")),
        person(Some("bob@example.com"), Some("+393331000002"), both.clone(), &["shop", "vip"], Some("Instagram")),
        person(None, Some("+393331000003"), json!({"sms": true}), &["shop"], Some("instagram")),
        person(Some("dan@example.com"), None, json!({}), &[], Some("instagram")),
        person(Some("eve@example.com"), Some("+393331000005"), json!({"sms": true}), &["shop"], Some("tiktok")),
        person(Some("gus@example.com"), Some("+393331000006"), both.clone(), &["vip"], None),
        person(Some("hal@example.com"), None, json!({"email": true}), &["shop"], Some("instagram")),
    ];
    let mut ids = Vec::new();
    for seed in seeds {
        ids.push(app.create_subscriber(seed).await["id"].as_str().unwrap().to_owned());
    }
    let bounce = json!({"address": "gus@example.com", "type": "hard", "reason": "550 5.1.1 no such user"});
    let reported = reqwest::Client::new()
        .post(app.url("/webhooks/bounces"))
        .bearer_auth(BOUNCE_SECRET)
        .json(&bounce)
        .send()
        .await
        .unwrap();
    assert_eq!(reported.status(), StatusCode::OK);
    let hal = app.patch(&format!("/api/v1/subscribers/{}", ids[6]), &json!({"status": "unsubscribed"})).await;
    assert_eq!(hal.status(), StatusCode::OK);

    // Broadcast deliveries of the last 30 days: ten emails over 9 s, ten SMS over 18 s.
    let now = app.clock.now();
    for (channel, step) in [(OutboxChannel::Email, 1), (OutboxChannel::Sms, 2)] {
        let broadcast = uuid::Uuid::now_v7();
        for i in 0..10 {
            let at = now - chrono::Duration::days(2) + chrono::Duration::seconds(i * step);
            let id = uuid::Uuid::now_v7();
            outbox::ActiveModel {
                id: Set(id),
                idempotency_key: Set(format!("seed:{id}")),
                subscriber_id: Set(uuid::Uuid::parse_str(&ids[0]).unwrap()),
                channel: Set(channel),
                recipient: Set("seed".into()),
                status: Set(OutboxStatus::Sent),
                attempts: Set(1),
                sent_at: Set(Some(at)),
                due_at: Set(at),
                created_at: Set(at),
                updated_at: Set(at),
                broadcast_id: Set(Some(broadcast)),
                ..Default::default()
            }
            .insert(app.db.conn())
            .await
            .unwrap();
        }
    }

    let figures = |g: &Value| {
        ["audience", "reachable", "unreachable", "one_channel", "several_channels"].map(|k| g[k].as_u64().unwrap())
    };
    let today = drill(&app, "").await;
    assert_eq!(figures(&today["total"]), [6, 5, 1, 4, 1], "{today:#}");
    assert_eq!(today["total"]["reached_on"], json!({"email": 2, "sms": 3, "whatsapp": 0}));
    assert_eq!(today["rates"]["email"], json!({"per_second": 1.1, "messages": 10}));
    assert_eq!(today["rates"]["sms"], json!({"per_second": 0.6, "messages": 10}));
    // Three SMS at 0.6/s outlast two emails at 1.1/s (channels send side by side).
    assert_eq!(today["total"]["outage_message_seconds"], json!(5.0));
    assert_eq!(today["multi_channel_share"], json!(0.1667));
    assert_eq!(today["weakest"], json!({"lose": "sms", "unreachable": 3, "share": 0.5}));
    let group = |report: &Value, part: &str, name: &str| {
        report[part].as_array().unwrap().iter().find(|g| g["name"] == name).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(figures(&group(&today, "sources", "instagram")), [4, 3, 1, 2, 1]);
    assert_eq!(figures(&group(&today, "sources", "tiktok")), [1, 1, 0, 1, 0]);
    assert_eq!(figures(&group(&today, "sources", "direct")), [1, 1, 0, 1, 0]);
    assert_eq!(figures(&group(&today, "lists", "shop")), [4, 4, 0, 3, 1]);
    assert_eq!(figures(&group(&today, "lists", "vip")), [2, 2, 0, 1, 1]);

    let no_sms = drill(&app, "sms").await;
    assert_eq!(no_sms["lost_channels"], json!(["sms"]));
    assert_eq!(figures(&no_sms["total"]), [6, 2, 4, 2, 0]);
    assert_eq!(no_sms["total"]["reached_on"], json!({"email": 2, "sms": 0, "whatsapp": 0}));
    assert_eq!(no_sms["total"]["outage_message_seconds"], json!(1.8));
    assert_eq!(figures(&group(&no_sms, "lists", "shop")), [4, 2, 2, 2, 0]);
    assert_eq!(figures(&group(&no_sms, "lists", "vip")), [2, 1, 1, 1, 0]);

    let instagram = drill(&app, "source:instagram").await;
    assert_eq!(instagram["lost_channels"], json!([]));
    assert_eq!(figures(&instagram["total"]), [4, 3, 1, 2, 1]);
    assert_eq!(instagram["sources"].as_array().unwrap().len(), 1);
    assert_eq!(figures(&group(&instagram, "lists", "shop")), [3, 3, 0, 2, 1], "eve came from tiktok");
    assert_eq!(figures(&group(&instagram, "lists", "vip")), [1, 1, 0, 0, 1]);

    let everything = drill(&app, "email,sms").await;
    assert_eq!(figures(&everything["total"]), [6, 0, 6, 0, 0]);
    assert_eq!(everything["total"]["outage_message_seconds"], Value::Null);

    let unknown = expect_problem(
        app.get("/api/v1/reachability?without=fax").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(unknown.to_string().contains("'fax' is not a channel"), "{unknown}");

    // The dashboard's overview shows the share on two channels and the weakest point.
    let cookie = crate::dashboard::log_in(&app, &app.token).await;
    let overview = crate::dashboard::get_with(&app, "/admin", &cookie).await.text().await.unwrap();
    assert!(overview.contains("data-figure=\"multi-channel\">16.7%"), "{overview}");
    assert!(overview.contains("data-figure=\"weakest\">sms"), "{overview}");
}

async fn drill(app: &TestApp, without: &str) -> Value {
    expect_json(app.get(&format!("/api/v1/reachability?without={without}")).await, StatusCode::OK).await
}

/// Every message a subscriber was written, oldest first, as (channel, status).
async fn sent_to(app: &TestApp, id: &str) -> Vec<(String, String)> {
    outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(uuid::Uuid::parse_str(id).unwrap()))
        .order_by_asc(outbox::Column::CreatedAt)
        .order_by_asc(outbox::Column::Id)
        .all(app.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.channel.as_str().to_owned(), m.status.as_str().to_owned()))
        .collect()
}

/// Ada (email), Cy (phone), Bob, Gus (`gone@`) and Lea (`late@`) with both, on `news`.
async fn people(app: &TestApp) -> [String; 5] {
    let both = json!({"email": true, "sms": true});
    let seeds = [
        json!({"email": "ada@example.com", "consent": {"email": true}, "lists": ["news"]}),
        json!({"phone": "+393331000003", "consent": {"sms": true}, "lists": ["news"]}),
        json!({"email": "bob@example.com", "phone": "+393331000002", "consent": both, "lists": ["news"]}),
        json!({"email": "gone@example.com", "phone": "+393331000004", "consent": both, "lists": ["news"]}),
        json!({"email": "late@example.com", "phone": "+393331000005", "consent": both, "lists": ["news"]}),
    ];
    let mut ids = Vec::new();
    for seed in seeds {
        ids.push(app.create_subscriber(seed).await["id"].as_str().unwrap().to_owned());
    }
    ids.try_into().unwrap()
}

async fn reach_first(app: &TestApp) -> Value {
    let body = json!({"list": "news", "channels": ["email", "sms"], "reach": "first", "subject": "We are still here",
                      "html": "<p>Our pages are down today; we are open as usual.</p>",
                      "sms_text": "Our pages are down today; we are open as usual."});
    let created = expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    assert_eq!(created["reach"], "first");
    app.tick().await;
    created
}

/// Ada has email only, Cy a phone only, Bob both, Gus both with an address the relay refuses
/// (550 5.1.1), and Lea both with an address that bounces after it was taken (a bounce report
/// comes later): each gets exactly one message that arrives, on the first channel that works.
async fn reach_first_sends_each_person_one_message_on_the_first_channel_that_works(backend: Backend) {
    let relay = SmtpSink::start().await;
    relay.refuse_recipient("gone@example.com", "550 5.1.1 <gone@example.com>: no such user");
    let url = relay.url();
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_relays = vec![url]).await else { return };
    app.create_list("news").await;
    let [ada, cy, bob, gus, lea] = people(&app).await;
    let created = reach_first(&app).await;
    let standby = || ("sms".to_owned(), "standby".to_owned());
    assert_eq!(sent_to(&app, &bob).await, [("email".to_owned(), "queued".to_owned()), standby()]);
    assert_eq!(sent_to(&app, &cy).await, [("sms".to_owned(), "queued".to_owned())]);
    let chosen = crate::helpers::timeline(&app, &cy).await.into_iter().find(|e| e["kind"] == "reach_chosen").unwrap();
    assert_eq!(chosen["data"]["channel"], "sms");
    assert_eq!(chosen["data"]["passed_over"], json!([{"channel": "email", "reason": "they have no email address"}]));

    assert_eq!(app.email.send_due().await.unwrap(), 4);
    // Gus's address does not exist: his text message goes instead, in the same transaction.
    assert_eq!(
        sent_to(&app, &gus).await,
        [("email".to_owned(), "failed".to_owned()), ("sms".to_owned(), "queued".to_owned())]
    );
    let fallback =
        crate::helpers::timeline(&app, &gus).await.into_iter().find(|e| e["kind"] == "reach_fallback").unwrap();
    assert_eq!((fallback["data"]["from"].as_str(), fallback["data"]["to"].as_str()), (Some("email"), Some("sms")));
    assert!(fallback["data"]["reason"].as_str().unwrap().contains("5.1.1"), "{fallback}");
    assert_eq!(app.sms.send_due().await.unwrap(), 2, "Cy's and Gus's");

    // Lea's mailbox bounces later: her text message goes then.
    let bounce = json!({"address": "late@example.com", "type": "hard", "reason": "550 5.1.1 mailbox gone"});
    let reported =
        reqwest::Client::new().post(app.url("/webhooks/bounces")).bearer_auth(BOUNCE_SECRET).json(&bounce).send().await;
    assert_eq!(reported.unwrap().status(), StatusCode::OK);
    assert_eq!(app.sms.send_due().await.unwrap(), 1, "Lea's");
    // Nothing more: a bounce report again changes nothing, and Bob's kept-back text stays so.
    let again = reqwest::Client::new().post(app.url("/webhooks/bounces")).bearer_auth(BOUNCE_SECRET).json(&bounce);
    assert_eq!(again.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.email.send_due().await.unwrap() + app.sms.send_due().await.unwrap(), 0);

    let sent = ("sent".to_owned(), "sent".to_owned());
    let on = |channel: &str| (channel.to_owned(), sent.1.clone());
    assert_eq!(sent_to(&app, &ada).await, [on("email")]);
    assert_eq!(sent_to(&app, &cy).await, [on("sms")]);
    assert_eq!(sent_to(&app, &bob).await, [on("email"), standby()]);
    assert_eq!(sent_to(&app, &gus).await, [("email".to_owned(), "failed".to_owned()), on("sms")]);
    assert_eq!(sent_to(&app, &lea).await, [on("email"), on("sms")], "her email never arrived");
    assert_eq!(relay.taken().len(), 3, "Ada's, Bob's and Lea's emails");
    let texts = std::fs::read_dir(app.data_dir.join("sms")).unwrap().count();
    assert_eq!(texts, 3, "Cy's, Gus's and Lea's texts");

    let report =
        expect_json(app.get(&format!("/api/v1/broadcasts/{}", created["id"].as_str().unwrap())).await, StatusCode::OK)
            .await;
    assert_eq!(report["progress"]["sms"]["standby"], 1, "{report}");
    assert_eq!(report["progress"]["sms"]["sent"], 3);
}

/// `fallback_after` (10 minutes by default): Bob's email fails for now (the relay answers 451);
/// it is tried once more ten minutes later, and failing then his text message goes instead.
/// Ada, with email only, keeps being retried as any message is.
async fn reach_first_moves_on_when_a_channel_stays_down_past_fallback_after(backend: Backend) {
    let relay = SmtpSink::start().await;
    relay.refuse(Some("451 4.3.0 try again later"));
    let url = relay.url();
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_relays = vec![url]).await else { return };
    app.create_list("news").await;
    let [ada, _cy, bob, gus, lea] = people(&app).await;
    reach_first(&app).await;
    app.email.send_due().await.unwrap();
    let queued = ("email".to_owned(), "queued".to_owned());
    let standby = ("sms".to_owned(), "standby".to_owned());
    assert_eq!(sent_to(&app, &bob).await, [queued.clone(), standby.clone()]);
    app.clock.advance(chrono::Duration::minutes(9));
    assert_eq!(app.email.send_due().await.unwrap(), 1, "Ada's retry (after a minute); Bob's waits ten");
    assert_eq!(sent_to(&app, &bob).await, [queued.clone(), standby]);
    app.clock.advance(chrono::Duration::minutes(1));
    app.email.send_due().await.unwrap();
    assert_eq!(
        sent_to(&app, &bob).await,
        [("email".to_owned(), "failed".to_owned()), ("sms".to_owned(), "queued".to_owned())]
    );
    assert_eq!(sent_to(&app, &ada).await, [queued], "no other channel: retried until retry_max_age");
    // The relay's breaker is open now: Gus's and Lea's emails each wait for its cool-down (20 s),
    // are tried once more, and fail over too.
    for _ in 0..4 {
        app.clock.advance(chrono::Duration::seconds(30));
        app.email.send_due().await.unwrap();
    }
    for id in [&gus, &lea] {
        assert_eq!(
            sent_to(&app, id).await,
            [("email".to_owned(), "failed".to_owned()), ("sms".to_owned(), "queued".to_owned())]
        );
    }
    assert_eq!(app.sms.send_due().await.unwrap(), 4, "Cy's, and Bob's, Gus's and Lea's instead of their emails");
}

/// A workflow's `message:` step with `channels: [email, sms]` (reach first, the default): Ada
/// (email only) gets the email, Cy (phone only) the text, Bob (both) the email with the text kept
/// back, and Gus, whose address the relay refuses, the text instead; the step counts one message
/// per person.
async fn a_message_step_reaches_each_person_once_on_the_first_channel_that_works(backend: Backend) {
    let relay = SmtpSink::start().await;
    relay.refuse_recipient("gone@example.com", "550 5.1.1 <gone@example.com>: no such user");
    let url = relay.url();
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_relays = vec![url]).await else { return };
    let workflow = "name: Notice\ntrigger: { subscribed: news }\nsteps:\n  - id: notice\n    message:\n      channels: [email, sms]\n      subject: We are open\n      template: emails/ask.html\n      text: \"Hi {{ subscriber.first_name | default(value='there') }}, we are open.\"\n";
    app.create_list("news").await;
    app.install_workflow("notice", workflow).await;
    let [ada, cy, bob, gus, _lea] = people(&app).await;
    app.tick().await;
    let queued = |c: &str| (c.to_owned(), "queued".to_owned());
    assert_eq!(sent_to(&app, &ada).await, [queued("email")]);
    assert_eq!(sent_to(&app, &cy).await, [queued("sms")]);
    assert_eq!(sent_to(&app, &bob).await, [queued("email"), ("sms".to_owned(), "standby".to_owned())]);
    app.email.send_due().await.unwrap();
    assert_eq!(sent_to(&app, &gus).await, [("email".to_owned(), "failed".to_owned()), queued("sms")]);
    assert_eq!(app.sms.send_due().await.unwrap(), 2, "Cy's and Gus's");
    let on = |c: &str| (c.to_owned(), "sent".to_owned());
    assert_eq!(sent_to(&app, &cy).await, [on("sms")]);
    assert_eq!(sent_to(&app, &gus).await, [("email".to_owned(), "failed".to_owned()), on("sms")]);
    assert_eq!(sent_to(&app, &bob).await, [on("email"), ("sms".to_owned(), "standby".to_owned())]);
    let stats = expect_json(app.get("/api/v1/stats/workflows/notice").await, StatusCode::OK).await;
    assert_eq!(stats["steps"][0]["kind"], "message");
    assert_eq!(stats["steps"][0]["sent"], 5, "one per person: Ada, Cy, Bob, Gus and Lea");
}

/// The relay has refused every email for 11 minutes (past `fallback_after`): a new `reach: first`
/// broadcast on `[email, sms]` tries SMS first for those who have a phone (their email kept back
/// behind it), and says why in the timeline; Ada, with email only, still gets hers queued.
async fn reach_first_tries_a_channel_down_past_fallback_after_last(backend: Backend) {
    let relay = SmtpSink::start().await;
    relay.refuse(Some("451 4.3.0 try again later"));
    let url = relay.url();
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_relays = vec![url]).await else { return };
    app.create_list("news").await;
    let [ada, _cy, bob, _gus, _lea] = people(&app).await;
    reach_first(&app).await;
    app.email.send_due().await.unwrap();
    app.clock.advance(chrono::Duration::minutes(11));
    reach_first(&app).await;
    let second: Vec<(String, String)> = sent_to(&app, &bob).await.split_off(2);
    assert_eq!(second, [("sms".to_owned(), "queued".to_owned()), ("email".to_owned(), "standby".to_owned())]);
    let chosen: Vec<Value> =
        crate::helpers::timeline(&app, &bob).await.into_iter().filter(|e| e["kind"] == "reach_chosen").collect();
    let last = chosen.iter().find(|e| e["data"]["channel"] == "sms").expect("the second broadcast chose SMS");
    assert_eq!(last["data"]["tried_last"][0]["channel"], "email");
    assert!(last["data"]["tried_last"][0]["reason"].as_str().unwrap().contains("failing for 11 min"), "{last}");
    assert_eq!(sent_to(&app, &ada).await.last().unwrap(), &("email".to_owned(), "queued".to_owned()));
}
