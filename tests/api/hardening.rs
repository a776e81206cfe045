//! What an internet-facing service must withstand: idle and slow sockets, too many connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, with_each_backend};

with_each_backend!(
    idle_and_slow_connections_are_closed_and_excess_ones_refused_at_once,
    webhooks_refuse_a_caller_from_its_headers_before_reading_a_body,
    the_dashboard_login_refuses_other_sites_and_never_follows_a_bad_next,
    consent_pages_are_never_framed_and_an_empty_post_changes_nothing,
    made_up_sources_are_folded_past_a_daily_budget_and_never_become_metric_labels,
    empty_query_values_are_taken_as_left_out,
    nul_characters_are_refused_or_dropped_never_a_500,
);

/// Reads what the server sends until it closes the connection (within `within`).
async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open for more than {within:?}");
    String::from_utf8_lossy(&out).into_owned()
}

async fn idle_and_slow_connections_are_closed_and_excess_ones_refused_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.header_timeout = chrono::Duration::seconds(1);
        c.max_connections = 4;
    })
    .await
    else {
        return;
    };
    let address = app.base.trim_start_matches("http://").to_owned();

    // Headers that never end: the connection is closed after the header timeout.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    until_closed(&mut slow, Duration::from_secs(5)).await;

    // A keep-alive connection left idle after its answer is closed after the same time.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answered = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // Four connections that send nothing hold every slot: the fifth is answered 503 at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    let mut fifth = TcpStream::connect(&address).await.unwrap();
    let refused = until_closed(&mut fifth, Duration::from_millis(900)).await;
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains("Retry-After: 1"), "{refused}");

    // Once they go, the service answers again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(response) = app.client.get(app.url("/healthz")).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/healthz did not answer after the connections closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a request's headers (announcing a large body that never comes) and returns the answer.
async fn headers_only(address: &str, head: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer)).await;
    let n = read.expect("answered before the body was sent").unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

async fn webhooks_refuse_a_caller_from_its_headers_before_reading_a_body(backend: Backend) {
    let provider = ownlist::config::SmsProviderConfig::Twilio {
        base_url: url::Url::parse("http://127.0.0.1:9/").unwrap(),
        account_sid: "AC0123".into(),
        auth_token: "twilio-auth-token".into(),
        from: "+14155550100".into(),
    };
    let Some(app) = TestApp::spawn_with(backend, |c| c.sms_providers = vec![provider]).await else { return };
    let address = app.base.trim_start_matches("http://").to_owned();
    let big = "Content-Length: 1000000\r\n";
    let bounces = format!("POST /webhooks/bounces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{big}\r\n");
    assert!(headers_only(&address, &bounces).await.starts_with("HTTP/1.1 401"), "no secret: refused at once");
    let twilio = format!(
        "POST /webhooks/sms/twilio HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n{big}\r\n"
    );
    assert!(headers_only(&address, &twilio).await.starts_with("HTTP/1.1 403"), "no signature: refused at once");
    let status =
        format!("POST /webhooks/sms/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{big}\r\n");
    assert!(headers_only(&address, &status).await.starts_with("HTTP/1.1 403"), "no provider token: refused at once");
    // A signed-looking Twilio request may not send more than 64 KiB.
    let signed = format!(
        "POST /webhooks/sms/twilio HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n{big}\r\n",
        "A".repeat(27) + "="
    );
    assert!(headers_only(&address, &signed).await.starts_with("HTTP/1.1 413"), "too large for a Twilio webhook");
    let secret = crate::helpers::BOUNCE_SECRET;
    let authorised = format!(
        "POST /webhooks/bounces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    );
    assert!(headers_only(&address, &authorised).await.starts_with("HTTP/1.1 413"), "over 1 MiB");
}

async fn the_dashboard_login_refuses_other_sites_and_never_follows_a_bad_next(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let client = crate::helpers::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = |next: &str, origin: Option<&str>| {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("token", app.token.as_str()), ("next", next)])
            .finish();
        let mut request =
            client.post(app.url("/admin/login")).header("content-type", "application/x-www-form-urlencoded").body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin).header("sec-fetch-site", "cross-site");
        }
        request.send()
    };
    // A form on another site cannot log a visitor in: refused before any session is stored.
    let forged = login("/admin", Some("https://evil.example")).await.unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());
    assert_eq!(app.count("admin_sessions").await, 0);
    // A `next` with a line break, a NUL or a climb out of /admin is replaced by /admin.
    for next in ["/admin/\r\nSet-Cookie: stolen=1", "/admin/\u{0}", "/admin/../../p/guide", "/admin/%2e%2e/p/guide"] {
        let response = login(next, None).await.unwrap();
        assert_eq!(response.status(), 303, "{next:?}");
        assert_eq!(response.headers()["location"], "/admin", "{next:?}");
    }
}

async fn consent_pages_are_never_framed_and_an_empty_post_changes_nothing(backend: Backend) {
    use ownlist::core::clock::Clock;
    use ownlist::core::links::Purpose;
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("news").await;
    let ada = app
        .create_subscriber(
            serde_json::json!({"email": "ada@example.com", "lists": ["news"], "consent": {"email": true}}),
        )
        .await;
    let id: uuid::Uuid = ada["id"].as_str().unwrap().parse().unwrap();
    let expires = app.clock.now() + chrono::Duration::days(30);
    let (signer, _) = app.engine.links();
    let preferences = format!("/preferences/{}", signer.sign(Purpose::Preferences, id, expires));
    let unsubscribe = format!("/u/{}", signer.sign(Purpose::Unsubscribe, id, expires));
    for path in [preferences.as_str(), unsubscribe.as_str(), "/c/not-a-token"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
        assert_eq!(response.headers()["content-security-policy"], "frame-ancestors 'none'", "{path}");
    }
    // A post with neither the page's save nor its "everything" button changes nothing.
    let empty = app
        .client
        .post(app.url(&preferences))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400);
    let after = app.get(&format!("/api/v1/subscribers/{id}")).await.json::<serde_json::Value>().await.unwrap();
    assert_eq!(after["channels"]["email"], "subscribed", "{after}");
    assert_eq!(after["lists"][0]["status"], "confirmed", "{after}");
}

async fn made_up_sources_are_folded_past_a_daily_budget_and_never_become_metric_labels(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_list("leads").await;
    app.install_workflow("pages", "pages:\n  - slug: join\n    title: Join\n    list: leads\n").await;
    let budget = ownlist::rollups::funnel::SOURCES_PER_PAGE_AND_DAY;
    let visits = budget + 30;
    for i in 0..visits {
        let path = format!("/p/join?utm_source=person{i}%40example.com");
        let page = app.client.get(app.url(&path)).header("user-agent", "Mozilla/5.0 test").send().await.unwrap();
        assert_eq!(page.status(), 200);
    }
    let rows = app.count("funnel_daily WHERE page = 'join'").await;
    assert_eq!(rows, i64::try_from(budget + 1).unwrap(), "the budget's sources and one 'other'");
    assert_eq!(app.count("funnel_daily WHERE page = 'join' AND source = 'other'").await, 1);
    let funnel = app.get("/api/v1/stats/funnel").await.json::<serde_json::Value>().await.unwrap();
    assert_eq!(funnel["totals"]["views"], visits, "every view is counted: {funnel}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("example.com"), "no visitor's value is a label");
}

/// `?from=` and the like, as forms and generated clients send them, mean "not given".
async fn empty_query_values_are_taken_as_left_out(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    for path in [
        "/api/v1/subscribers?list=&q=&cursor=",
        "/api/v1/audit?cursor=",
        "/api/v1/stats/funnel?from=&to=&format=&by=",
        "/api/v1/stats/delivery?from=&format=",
    ] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    let bad = app.get("/api/v1/stats/funnel?from=yesterday").await;
    assert_eq!(bad.status(), 422, "a value that is given must still be right");
}

/// PostgreSQL stores no NUL character in text or JSON: one sent anywhere is refused (API) or
/// dropped (a visitor's link), never a 500.
async fn nul_characters_are_refused_or_dropped_never_a_500(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let query = app.get("/api/v1/stats/funnel?source=a%00b&format=csv").await;
    assert_eq!(query.status(), 422);
    let problem: serde_json::Value = query.json().await.unwrap();
    assert_eq!(problem["field"], "source", "{problem}");
    let body = serde_json::json!({"email": "ada@example.com", "attributes": {"note": "a\u{0}b"}});
    let refused = app.post("/api/v1/subscribers", &body).await;
    assert_eq!(refused.status(), 422);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["field"], "attributes.note", "{problem}");
    let key = serde_json::json!({"email": "ada@example.com", "attributes": {"a\u{0}": 1}});
    assert_eq!(app.post("/api/v1/subscribers", &key).await.status(), 422);
    app.create_list("guide-leads").await;
    std::fs::write(
        app.workflows_dir.join("pages.yaml"),
        "pages:\n  - slug: guide\n    title: Guide\n    list: guide-leads\n    fields: [email]\n    consent_text: Yes please\n",
    )
    .unwrap();
    let reload = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());
    let page = app
        .client
        .get(app.url("/p/guide?utm_source=in%00sta&utm_campaign=%00"))
        .header("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let funnel = app.get("/api/v1/stats/funnel").await.json::<serde_json::Value>().await.unwrap();
    assert_eq!(funnel["totals"]["views"], 1, "{funnel}");
    assert_eq!(funnel["by_source"][0]["key"], "instagram", "the NUL is dropped, 'insta' is read: {funnel}");
}
