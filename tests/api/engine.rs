use chrono::{Duration, TimeZone, Utc};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_json, expect_problem, kinds, on_both_databases, timeline};
use ownlist::core::clock::Clock;
use ownlist::store::entities::{enrollment, outbox};

on_both_databases!(
    a_two_week_drip_runs_on_the_test_clock,
    an_event_ends_a_wait_for_early,
    exit_when_ends_the_enrollment_as_soon_as_it_holds,
    filter_and_reentry_decide_who_enters_and_say_why,
    an_unsubscribed_subscriber_gets_no_further_email,
    the_send_window_holds_messages_until_it_opens,
    editing_a_live_workflow_moves_enrollments_by_step,
    an_invalid_edit_is_refused_and_the_last_version_keeps_running,
    a_paused_workflow_holds_everyone_until_resumed,
    a_schedule_enrolls_every_member_once_per_tick,
    plan_shows_where_enrollments_would_go_without_moving_them,
    birthdays_enroll_once_a_year_at_the_local_time,
    a_step_coming_due_runs_before_an_older_backlog,
    a_big_backlog_drains_in_storage_order_in_passes,
);

const DRIP: &str = r#"name: Guide drip
trigger:
  subscribed: guide-leads
  filter: { source: instagram }
exit_when: { tag: customer }
reentry: never
timezone: Europe/Rome
steps:
  - id: deliver-guide
    email:
      subject: "Your guide, {{ subscriber.first_name | default(value='friend') }}"
      template: emails/guide.html
  - id: pause
    wait: 2d
  - id: opened-guide
    if: { opened: deliver-guide }
    then:
      - id: upsell
        email: { subject: "A next step", template: emails/upsell.html }
    else:
      - id: nudge-sms
        sms: { text: "Hi {{ subscriber.first_name }}, your guide is waiting." }
  - id: buy
    wait_for: { event: purchased, timeout: 7d }
    on_timeout:
      - id: last-chance
        email: { subject: "Last chance", template: emails/last.html }
  - id: done
    tag: nurtured
"#;

async fn join(app: &TestApp, email: &str, source: &str) -> String {
    let created = app
        .create_subscriber(json!({
            "email": email, "first_name": "Ada", "lists": ["guide-leads"],
            "consent": {"email": true}, "attribution": {"source": source}
        }))
        .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn messages(app: &TestApp, subscriber: &str) -> Vec<(String, String)> {
    let id = uuid::Uuid::parse_str(subscriber).unwrap();
    outbox::Entity::find()
        .filter(outbox::Column::SubscriberId.eq(id))
        .order_by_asc(outbox::Column::Id)
        .all(app.db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.step_id.unwrap_or_default(), m.channel.as_str().to_owned()))
        .collect()
}

async fn enrollment_of(app: &TestApp, subscriber: &str) -> enrollment::Model {
    let id = uuid::Uuid::parse_str(subscriber).unwrap();
    enrollment::Entity::find()
        .filter(enrollment::Column::SubscriberId.eq(id))
        .order_by_desc(enrollment::Column::CreatedAt)
        .one(app.db.conn())
        .await
        .unwrap()
        .unwrap()
}

async fn a_two_week_drip_runs_on_the_test_clock(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;

    let first = messages(&app, &ada).await;
    assert_eq!(first, [("deliver-guide".to_owned(), "email".to_owned())]);
    let message = outbox::Entity::find().one(app.db.conn()).await.unwrap().unwrap();
    assert_eq!(message.subject.as_deref(), Some("Your guide, Ada"));
    assert_eq!(message.recipient, "ada@example.com");
    let (html, text) = crate::helpers::bodies(&app, message.id).await;
    assert!(html.as_deref().unwrap().contains("Here is your guide"));
    assert_eq!(text, "", "derived from the HTML when sent");
    assert_eq!(app.email.send_due().await.unwrap(), 1);
    let text = crate::helpers::sent_text(&app, message.id);
    assert!(text.contains("Download it here: the free guide (https://example.com/guide.pdf)"), "{text}");
    assert!(html.as_deref().unwrap().contains("/u/"), "an unsubscribe link is rendered");

    let e = enrollment_of(&app, &ada).await;
    assert_eq!(e.step_id.as_deref(), Some("pause"));
    assert_eq!(e.next_run_at.unwrap(), app.clock.now() + Duration::days(2));

    // Nothing happens before the wait is over.
    assert_eq!(app.advance(Duration::days(1)).await.advanced, 0);
    // After two days: not opened, so the else branch; SMS is skipped (no phone), then wait_for.
    app.advance(Duration::days(1)).await;
    assert_eq!(enrollment_of(&app, &ada).await.step_id.as_deref(), Some("buy"));
    // Seven days without the event: the last-chance email, the tag, done.
    app.advance(Duration::days(7)).await;
    let all = messages(&app, &ada).await;
    assert_eq!(all, [("deliver-guide".into(), "email".into()), ("last-chance".into(), "email".into())]);
    let e = enrollment_of(&app, &ada).await;
    assert_eq!(e.status, "completed");
    assert!(e.ended_at.is_some());

    let subscriber = expect_json(app.get(&format!("/api/v1/subscribers/{ada}")).await, StatusCode::OK).await;
    assert_eq!(subscriber["tags"], json!(["nurtured"]));

    // The timeline explains every decision.
    let events = timeline(&app, &ada).await;
    let find = |kind: &str| {
        events.iter().find(|e| e["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind} in {events:#?}"))
    };
    assert_eq!(find("workflow_entered")["data"]["workflow"], "guide");
    assert_eq!(find("branch_taken")["data"]["branch"], "else");
    assert!(find("branch_taken")["data"]["because"].as_str().unwrap().contains("opened 'deliver-guide' is false"));
    let skipped = find("step_skipped");
    assert_eq!(skipped["data"]["step"], "nudge-sms");
    assert!(skipped["data"]["reason"].as_str().unwrap().contains("no phone number"), "{skipped}");
    assert_eq!(find("wait_timed_out")["data"]["step"], "buy");
    assert_eq!(find("workflow_completed")["data"]["workflow"], "guide");

    // Nothing more, ever.
    assert_eq!(app.advance(Duration::days(30)).await.advanced, 0);
    assert_eq!(messages(&app, &ada).await.len(), 2);
}

async fn an_event_ends_a_wait_for_early(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    app.advance(Duration::days(2)).await;
    assert_eq!(enrollment_of(&app, &ada).await.step_id.as_deref(), Some("buy"));

    let response = app
        .post(
            "/api/v1/events",
            &json!({"email": "ADA@example.com", "name": "purchased", "properties": {"sku": "course"}}),
        )
        .await;
    let event = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(event["kind"], "event:purchased");
    app.tick().await;
    let e = enrollment_of(&app, &ada).await;
    assert_eq!(e.status, "completed");
    assert_eq!(messages(&app, &ada).await.len(), 1, "no last-chance email after a purchase");
    assert!(kinds(&app, &ada).await.contains(&"event_received".to_owned()));

    expect_problem(
        app.post("/api/v1/events", &json!({"email": "nobody@example.com", "name": "purchased"})).await,
        StatusCode::NOT_FOUND,
        "subscriber_not_found",
    )
    .await;
    let problem = expect_problem(
        app.post("/api/v1/events", &json!({"email": "ada@example.com", "name": "bad name!"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "name");
}

async fn exit_when_ends_the_enrollment_as_soon_as_it_holds(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    app.patch(&format!("/api/v1/subscribers/{ada}"), &json!({"tags": ["customer"]})).await;
    app.advance(Duration::days(2)).await;
    let e = enrollment_of(&app, &ada).await;
    assert_eq!(e.status, "exited");
    assert_eq!(e.end_reason.as_deref(), Some("goal reached: tag 'customer'"));
    assert_eq!(messages(&app, &ada).await.len(), 1);
}

async fn filter_and_reentry_decide_who_enters_and_say_why(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let bob = join(&app, "bob@example.com", "facebook").await;
    app.tick().await;
    assert!(messages(&app, &bob).await.is_empty());
    let events = timeline(&app, &bob).await;
    let refused = events.iter().find(|e| e["kind"] == "workflow_not_entered").unwrap();
    assert!(refused["data"]["reason"].as_str().unwrap().contains("filter"), "{refused}");

    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    app.patch(&format!("/api/v1/subscribers/{ada}"), &json!({"tags": ["customer"]})).await;
    app.tick().await;
    // Leave and join again: `reentry: never` keeps her out.
    app.patch(&format!("/api/v1/subscribers/{ada}"), &json!({"lists": [], "tags": []})).await;
    app.patch(&format!("/api/v1/subscribers/{ada}"), &json!({"lists": ["guide-leads"]})).await;
    app.tick().await;
    let refused: Vec<Value> =
        timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "workflow_not_entered").collect();
    assert!(refused.last().unwrap()["data"]["reason"].as_str().unwrap().contains("never"), "{refused:?}");
    assert_eq!(messages(&app, &ada).await.len(), 1);
}

async fn an_unsubscribed_subscriber_gets_no_further_email(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    app.patch(&format!("/api/v1/subscribers/{ada}"), &json!({"consent": {"email": false}})).await;
    app.advance(Duration::days(9)).await;
    assert_eq!(messages(&app, &ada).await.len(), 1, "only the email sent before unsubscribing");
    let skipped: Vec<Value> = timeline(&app, &ada).await.into_iter().filter(|e| e["kind"] == "step_skipped").collect();
    let last_chance = skipped.iter().find(|e| e["data"]["step"] == "last-chance").unwrap();
    assert!(last_chance["data"]["reason"].as_str().unwrap().contains("unsubscribed"), "{last_chance}");
}

async fn the_send_window_holds_messages_until_it_opens(app: TestApp) {
    app.create_list("guide-leads").await;
    let windowed = DRIP.replace(
        "timezone: Europe/Rome\n",
        "timezone: Europe/Rome\nsend_window: { days: [mon, tue, wed, thu, fri], between: [\"09:00\", \"18:00\"] }\n",
    );
    app.install_workflow("guide", &windowed).await;
    // Saturday 7 March 2026, 12:00 UTC: the window opens on Monday at 09:00 in Rome (08:00 UTC).
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap());
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    assert!(messages(&app, &ada).await.is_empty());
    let e = enrollment_of(&app, &ada).await;
    assert_eq!(e.step_id.as_deref(), Some("deliver-guide"));
    assert_eq!(e.next_run_at.unwrap(), Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap());
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap());
    app.tick().await;
    assert_eq!(messages(&app, &ada).await.len(), 1);
}

async fn editing_a_live_workflow_moves_enrollments_by_step(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    let started = app.clock.now();
    app.advance(Duration::hours(1)).await;

    // A shorter wait is recomputed from when the wait began.
    let reloaded = app.install_workflow("guide", &DRIP.replace("wait: 2d", "wait: 1d")).await;
    assert_eq!(reloaded["moves"][0]["wait_changed"], true, "{reloaded}");
    let e = enrollment_of(&app, &ada).await;
    assert_eq!(e.version, 2);
    assert_eq!(e.next_run_at.unwrap(), started + Duration::days(1));

    // The step they wait at disappears: they continue at the next step of the old order.
    let without_pause = DRIP.replace("  - id: pause\n    wait: 2d\n", "");
    let reloaded = app.install_workflow("guide", &without_pause).await;
    assert_eq!(reloaded["moves"][0]["to_step"], "opened-guide", "{reloaded}");
    let e = enrollment_of(&app, &ada).await;
    assert_eq!((e.version, e.step_id.as_deref()), (3, Some("opened-guide")));
    assert!(kinds(&app, &ada).await.contains(&"workflow_updated".to_owned()));

    let workflows = expect_json(app.get("/api/v1/workflows").await, StatusCode::OK).await;
    assert_eq!(workflows["data"][0]["version"], 3);
    assert_eq!(workflows["data"][0]["enrollments"]["at_step"]["opened-guide"], 1);

    // Reloading the same files stores nothing new.
    let again = app.install_workflow("guide", &without_pause).await;
    assert_eq!(again["moves"], json!([]));
    assert_eq!(expect_json(app.get("/api/v1/workflows/guide").await, StatusCode::OK).await["version"], 3);
}

async fn an_invalid_edit_is_refused_and_the_last_version_keeps_running(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    std::fs::write(app.workflows_dir.join("guide.yaml"), DRIP.replace("wait: 2d", "wait: 2 days")).unwrap();
    let response = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let field = problem["errors"][0]["field"].as_str().unwrap();
    assert!(field.ends_with("guide.yaml:14:11"), "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("unknown unit"));
    let current = expect_json(app.get("/api/v1/workflows/guide").await, StatusCode::OK).await;
    assert_eq!(current["version"], 1);
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    assert_eq!(messages(&app, &ada).await.len(), 1, "the last valid version keeps running");
    expect_problem(app.get("/api/v1/workflows/nope").await, StatusCode::NOT_FOUND, "workflow_not_found").await;
}

async fn a_paused_workflow_holds_everyone_until_resumed(app: TestApp) {
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    let paused = expect_json(app.post("/api/v1/workflows/guide/pause", &json!({})).await, StatusCode::OK).await;
    assert_eq!(paused["status"], "paused");
    let ada = join(&app, "ada@example.com", "instagram").await;
    app.tick().await;
    assert!(messages(&app, &ada).await.is_empty(), "enrolled, but held");
    assert_eq!(enrollment_of(&app, &ada).await.step_id.as_deref(), Some("deliver-guide"));
    let resumed = expect_json(app.post("/api/v1/workflows/guide/resume", &json!({})).await, StatusCode::OK).await;
    assert_eq!(resumed["status"], "active");
    app.tick().await;
    assert_eq!(messages(&app, &ada).await.len(), 1);
}

async fn a_schedule_enrolls_every_member_once_per_tick(app: TestApp) {
    app.create_list("newsletter").await;
    // Wednesday 4 March 2026, 09:00 UTC.
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 4, 9, 0, 0).unwrap());
    let mut readers = Vec::new();
    for n in 0..250 {
        let created = app
            .create_subscriber(
                json!({"email": format!("reader{n}@example.com"), "lists": ["newsletter"], "consent": {"email": true}}),
            )
            .await;
        readers.push(created["id"].as_str().unwrap().to_owned());
    }
    app.patch(&format!("/api/v1/subscribers/{}", readers[0]), &json!({"status": "unsubscribed"})).await;
    let digest =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/weekly-digest.yaml"))
            .unwrap();
    app.install_workflow("weekly-digest", &digest).await;
    app.tick().await;
    assert_eq!(app.count("outbox").await, 0, "no broadcast before the first tick");

    // Monday 9 March, 09:00 in Rome is 08:00 UTC.
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap());
    app.tick().await;
    app.tick().await;
    assert_eq!(app.count("outbox").await, 249, "every member but the one who left, once");
    assert!(messages(&app, &readers[0]).await.is_empty());

    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 16, 8, 0, 0).unwrap());
    app.tick().await;
    assert_eq!(app.count("outbox").await, 498, "the next Monday, everyone again (reentry: always)");
    assert_eq!(messages(&app, &readers[1]).await.len(), 2);
}

async fn plan_shows_where_enrollments_would_go_without_moving_them(app: TestApp) {
    use ownlist::workflow::templates::TemplateChecker;
    app.create_list("guide-leads").await;
    app.install_workflow("guide", DRIP).await;
    join(&app, "ada@example.com", "instagram").await;
    join(&app, "bob@example.com", "instagram").await;
    app.tick().await;
    let templates = TemplateChecker::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"));
    let context = ownlist::workflow::Context {
        templates: &templates,
        lists: None,
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    let edited = DRIP.replace("  - id: pause\n    wait: 2d\n", "");
    let workflow = ownlist::workflow::check(std::path::Path::new("guide.yaml"), &edited, &context).unwrap();
    let moves = app.engine.registry().plan(&[workflow]).await.unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].step.as_deref(), Some("pause"));
    assert_eq!(moves[0].enrollments, 2);
    assert_eq!(moves[0].to_step.as_deref(), Some("opened-guide"));
    let ada = app.get("/api/v1/workflows/guide").await;
    let view = expect_json(ada, StatusCode::OK).await;
    assert_eq!(view["version"], 1, "planning changes nothing");
    assert_eq!(view["enrollments"]["at_step"]["pause"], 2);
}

async fn birthdays_enroll_once_a_year_at_the_local_time(app: TestApp) {
    // Sunday 8 March 2026, 12:00 UTC.
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 8, 12, 0, 0).unwrap());
    let rome = app
        .create_subscriber(json!({"email": "rome@example.com", "timezone": "Europe/Rome", "attributes": {"birthday": "1990-03-10"}, "consent": {"email": true}}))
        .await;
    let tokyo = app
        .create_subscriber(json!({"email": "tokyo@example.com", "timezone": "Asia/Tokyo", "attributes": {"birthday": "03-10"}, "consent": {"email": true}}))
        .await;
    let other = app
        .create_subscriber(
            json!({"email": "other@example.com", "attributes": {"birthday": "1990-07-01"}, "consent": {"email": true}}),
        )
        .await;
    let workflow = "name: Birthday\ntrigger:\n  date: { attribute: birthday, offset: -1d, at: \"09:00\" }\nreentry: always\nsteps:\n  - id: card\n    email: { subject: \"Tomorrow is your day\", template: emails/welcome.html }\n";
    app.install_workflow("birthday", workflow).await;
    app.tick().await; // arms the trigger from now
    // Day by day: the day before 10 March at 09:00 local: Tokyo first (00:00 UTC), then Rome (08:00 UTC).
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 9, 0, 30, 0).unwrap());
    app.tick().await;
    assert_eq!(messages(&app, tokyo["id"].as_str().unwrap()).await.len(), 1);
    assert_eq!(messages(&app, rome["id"].as_str().unwrap()).await.len(), 0);
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 9, 8, 0, 0).unwrap());
    app.tick().await;
    assert_eq!(messages(&app, rome["id"].as_str().unwrap()).await.len(), 1);
    // Later that year nothing repeats; the next year it comes again.
    for day in 10..=20 {
        app.clock.set(Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0).unwrap());
        app.tick().await;
    }
    assert_eq!(messages(&app, rome["id"].as_str().unwrap()).await.len(), 1);
    assert!(messages(&app, other["id"].as_str().unwrap()).await.is_empty());
    app.clock.set(Utc.with_ymd_and_hms(2027, 3, 8, 12, 0, 0).unwrap());
    app.tick().await;
    app.clock.set(Utc.with_ymd_and_hms(2027, 3, 9, 12, 0, 0).unwrap());
    app.tick().await;
    assert_eq!(messages(&app, rome["id"].as_str().unwrap()).await.len(), 2, "again the next year");
}

async fn a_step_coming_due_runs_before_an_older_backlog(app: TestApp) {
    // A backlog of two batches and more: 4,100 members enrolled by a daily broadcast at 10:00,
    // each waiting an hour.
    app.create_list("everyone").await;
    let mut csv = String::from("email\n");
    for n in 0..4100 {
        csv.push_str(&format!("member{n}@example.com\n"));
    }
    let report = expect_json(app.post_csv("/api/v1/imports?list=everyone", csv).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 4100, "{report}");
    app.install_workflow(
        "backlog",
        "name: Backlog\ntrigger:\n  schedule: { cron: \"0 10 * * *\", timezone: UTC, list: everyone }\nsteps:\n  - id: hold\n    wait: 1h\n  - id: mark\n    tag: backlog-ran\n",
    )
    .await;
    app.install_workflow(
        "fresh",
        "name: Fresh\ntrigger: { event: ping }\nsteps:\n  - id: hold\n    wait: 30m\n  - id: mark\n    tag: fresh-ran\n",
    )
    .await;
    // A subscriber sends the `ping` event at `second` past 10:45, entering the "fresh" workflow.
    let ping_at = |email: &'static str, second: u32| {
        let app = &app;
        async move {
            let id = app.create_subscriber(json!({"email": email})).await["id"].as_str().unwrap().to_owned();
            app.clock.set(Utc.with_ymd_and_hms(2026, 3, 2, 10, 45, second).unwrap());
            let event = json!({"email": email, "name": "ping"});
            expect_json(app.post("/api/v1/events", &event).await, StatusCode::CREATED).await;
            app.tick().await;
            assert_eq!(enrollment_of(app, &id).await.workflow_id, "fresh");
            id
        }
    };
    app.tick().await; // arms the schedule; its first tick is at 10:00
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap());
    app.tick().await;
    assert_eq!(app.count("enrollments WHERE workflow_id = 'backlog'").await, 4100);
    let ada = ping_at("ada@example.com", 0).await;
    let bob = ping_at("bob@example.com", 3).await;

    // 11:15: the backlog has been due for a quarter of an hour (say the service was down), and
    // ada's step has just come due. One batch takes ada first, then the backlog.
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 2, 11, 15, 0).unwrap());
    let advanced = app.engine.run_due().await.unwrap();
    assert_eq!(advanced, 2000, "one full batch");
    assert_eq!(enrollment_of(&app, &ada).await.status, "completed", "the step that just came due ran at once");
    assert!(kinds(&app, &ada).await.contains(&"tag_added".to_owned()));
    let ran = app.count("subscriber_tags WHERE tag = 'backlog-ran'").await;
    assert_eq!(ran, 1999, "the rest of the batch is taken from the backlog");
    assert_eq!(enrollment_of(&app, &bob).await.status, "active", "bob's step is not due yet");

    // bob's step comes due at 11:15:03, while that batch runs; say it took five seconds. The next
    // batch still counts bob's step as just due: a slow batch does not push it behind the backlog.
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 2, 11, 15, 5).unwrap());
    assert_eq!(app.engine.run_due().await.unwrap(), 2000);
    assert_eq!(enrollment_of(&app, &bob).await.status, "completed", "the step that came due meanwhile ran");
    assert_eq!(app.count("subscriber_tags WHERE tag = 'backlog-ran'").await, 3998);
    app.tick().await;
    assert_eq!(app.count("subscriber_tags WHERE tag = 'backlog-ran'").await, 4100, "then the backlog drains");
}

async fn a_big_backlog_drains_in_storage_order_in_passes(app: TestApp) {
    // 2,100 members enrolled twice: in "first" by a broadcast at 10:00 (due again at 11:00), then
    // in "second" at 10:05 (due at 10:35). At 11:15 all 4,200 are overdue (say after downtime);
    // "second" has been overdue longer, but "first" was enrolled first and is stored first.
    app.create_list("everyone").await;
    let mut csv = String::from("email\n");
    for n in 0..2100 {
        csv.push_str(&format!("member{n}@example.com\n"));
    }
    let report = expect_json(app.post_csv("/api/v1/imports?list=everyone", csv).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 2100, "{report}");
    let broadcast = |id: &str, minute: u32, hold: &str, steps: &str| {
        format!(
            "name: {id}\ntrigger:\n  schedule: {{ cron: \"{minute} 10 * * *\", timezone: UTC, list: everyone }}\nsteps:\n  - id: hold\n    wait: {hold}\n{steps}"
        )
    };
    let first_steps =
        "  - id: mark\n    tag: first-ran\n  - id: again\n    wait: 1m\n  - id: mark-again\n    tag: first-again\n";
    app.install_workflow("first", &broadcast("first", 0, "1h", first_steps)).await;
    app.install_workflow("second", &broadcast("second", 5, "30m", "  - id: mark\n    tag: second-ran\n")).await;
    app.tick().await; // arms both schedules
    for minute in [0, 5] {
        app.clock.set(Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, 0).unwrap());
        app.tick().await;
    }
    assert_eq!(app.count("enrollments").await, 4200);
    let tagged = |tag: &'static str| {
        let app = &app;
        async move { app.count(&format!("subscriber_tags WHERE tag = '{tag}'")).await }
    };
    let batch_at = |second: u32| {
        let app = &app;
        async move {
            app.clock.set(Utc.with_ymd_and_hms(2026, 3, 2, 11, 15, second).unwrap());
            app.engine.run_due().await.unwrap()
        }
    };

    // Pass one takes the backlog in the order it is stored: the first 2,000 of "first".
    assert_eq!(batch_at(0).await, 2000);
    assert_eq!(tagged("first-ran").await, 2000);
    assert_eq!(tagged("second-ran").await, 0, "not oldest-due first");
    let first_ids = "(SELECT id FROM enrollments WHERE workflow_id = 'first' ORDER BY id LIMIT 2000)";
    let moved = app.count(&format!("enrollments WHERE step_id = 'again' AND id IN {first_ids}")).await;
    assert_eq!(moved, 2000, "the 2,000 stored first");
    // Their one-minute wait counts from 11:00, so they are overdue again at once, behind the cursor.

    // The pass goes on from where it stopped: the last 100 of "first", then "second".
    assert_eq!(batch_at(1).await, 2000);
    assert_eq!((tagged("first-ran").await, tagged("second-ran").await), (2100, 1900));
    assert_eq!(tagged("first-again").await, 0, "what the pass has passed waits for the next one");

    // The pass ends with the last 200 of "second"; the rest of the batch is the oldest due.
    assert_eq!(batch_at(2).await, 2000);
    assert_eq!((tagged("second-ran").await, tagged("first-again").await), (2100, 1800));

    // A backlog smaller than a batch is simply taken whole.
    assert_eq!(batch_at(3).await, 300);
    assert_eq!(batch_at(4).await, 0);
    assert_eq!(tagged("first-again").await, 2100);
    assert_eq!(app.count("enrollments WHERE status = 'completed'").await, 4200);
    let ran = app.count("events WHERE kind = 'tag_added'").await;
    assert_eq!(ran, 3 * 2100, "each step ran exactly once");
}
