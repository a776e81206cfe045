//! Every public page and every shipped email in a real browser, as shipped (the repository's own
//! workflow file and templates): axe-core finds no accessibility violation on any page, nothing
//! runs off a phone's screen, and screenshots at 390 and 1280 px are saved in
//! `target/tmp/public-screenshots/` for a person to look at.

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{Backend, TestApp, expect_json};
use ownlist::core::clock::Clock;
use ownlist::core::links::Purpose;
use ownlist::store::entities::outbox;
use sea_orm::EntityTrait;

const FOLDER: &str = "public-screenshots";

/// The checks every public page passes, then its screenshots at a laptop's and a phone's width.
async fn check(browser: &mut Browser, axe: &str, name: &str) {
    let found = browser.axe_violations(axe).await;
    assert!(found.is_empty(), "{name}: axe-core finds {found:?}");
    let shape = browser
        .eval("[document.documentElement.lang, document.querySelectorAll('main').length, document.scripts.length]")
        .await;
    assert_eq!(shape[1], 1, "{name}: one <main>");
    assert_eq!(shape[2], 0, "{name}: no script");
    assert!(shape[0].as_str().is_some_and(|l| l.len() >= 2), "{name}: <html lang> is set");
    browser.screenshot_in(FOLDER, &format!("{name}-1280")).await;
    browser.resize(390, 844, true).await;
    let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth + 1").await;
    assert_eq!(fits, true, "{name}: nothing runs off a phone's screen");
    let found = browser.axe_violations(axe).await;
    assert!(found.is_empty(), "{name} on a phone: axe-core finds {found:?}");
    browser.screenshot_in(FOLDER, &format!("{name}-390")).await;
    browser.resize(1280, 900, false).await;
}

#[tokio::test]
async fn every_public_page_and_shipped_email_is_accessible_and_one_brand() {
    let test = "every_public_page_and_shipped_email_is_accessible_and_one_brand";
    if !crate::tools::chromium(test) {
        return;
    }
    let Some(axe_path) = crate::tools::axe(test) else { return };
    let axe = std::fs::read_to_string(axe_path).unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.business.name = "Bottega Rossi".into();
        c.business.postal_address = Some("Via Roma 1, 20121 Milano".into());
        c.business.privacy_url = Some("https://bottega.example/privacy".into());
        c.business.support_email = Some("ciao@bottega.example".into());
        c.business.accent_color = "#b4236b".into();
    })
    .await
    .unwrap();
    // The product as shipped: the repository's own landing page and its workflow.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/instagram-guide.yaml");
    app.install_workflow("instagram-guide", &std::fs::read_to_string(shipped).unwrap()).await;
    let mut browser = Browser::start().await;

    browser.open(&app.url("/p/guide"), "/p/guide").await;
    check(&mut browser, &axe, "landing").await;
    // Sent empty: the form again with its errors.
    app.clock.advance(chrono::Duration::seconds(5));
    browser.submit("form", "/p/guide").await;
    assert_eq!(browser.eval("document.querySelectorAll('[aria-invalid=true]').length").await, 1);
    check(&mut browser, &axe, "landing-errors").await;
    browser.open(&app.url("/p/guide/thanks"), "/p/guide/thanks").await;
    check(&mut browser, &axe, "thank-you").await;

    // A signup, its confirmation and its second click.
    let response =
        crate::pages::sign_up(&app, "guide", "", &[("email", "ada@example.com"), ("consent_email", "on")]).await;
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
    let ada = crate::pages::person_by_email(&app, "ada@example.com").await;
    let confirmation = crate::pages::confirmations(&app, ada.id).await.remove(0);
    let path = crate::pages::confirm_path(&app, &confirmation).await;
    browser.open(&app.url(&path), &path).await;
    check(&mut browser, &axe, "confirmed").await;
    browser.open(&app.url(&path), &path).await;
    check(&mut browser, &axe, "already-confirmed").await;

    let (signer, _) = app.engine.links();
    let later = app.clock.now() + chrono::Duration::days(30);
    let unsubscribe = format!("/u/{}", signer.sign(Purpose::Unsubscribe, ada.id, later));
    browser
        .open(&app.url(&format!("{unsubscribe}?list=guide-leads")), &format!("{unsubscribe}?list=guide-leads"))
        .await;
    check(&mut browser, &axe, "unsubscribe").await;
    browser.submit("form", &format!("{unsubscribe}?list=guide-leads")).await;
    let said = browser.eval("document.querySelector('h1').textContent").await;
    assert_eq!(said, "You are unsubscribed");
    check(&mut browser, &axe, "unsubscribed").await;
    let preferences = format!("/preferences/{}", signer.sign(Purpose::Preferences, ada.id, later));
    browser.open(&app.url(&preferences), &preferences).await;
    check(&mut browser, &axe, "preferences").await;
    browser.eval("const f = document.createElement('form'); f.id = 'empty'; f.method = 'post'; document.body.append(f); true").await;
    browser.submit("#empty", &preferences).await;
    assert_eq!(browser.eval("document.querySelector('h1').textContent").await, "Nothing was changed");
    check(&mut browser, &axe, "notice").await;
    let expired =
        format!("/u/{}", signer.sign(Purpose::Unsubscribe, ada.id, app.clock.now() - chrono::Duration::days(1)));
    browser.open(&app.url(&expired), &expired).await;
    check(&mut browser, &axe, "expired").await;
    browser.open(&app.url("/c/not-a-link"), "/c/not-a-link").await;
    check(&mut browser, &axe, "invalid-link").await;
    browser.open(&app.url("/p/nowhere"), "/p/nowhere").await;
    check(&mut browser, &axe, "not-found").await;

    // Every shipped email as it is sent, in the same layout.
    let subscriber = json!({"email": "giulia@example.com", "first_name": "Giulia", "lists": ["guide-leads"], "consent": {"email": true}});
    app.create_subscriber(subscriber).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/emails");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".html") && !n.starts_with('_'))
        .collect();
    names.sort();
    for name in &names {
        let body = json!({"list": "guide-leads", "subject": name, "template": format!("emails/{name}")});
        expect_json(app.post("/api/v1/broadcasts", &body).await, reqwest::StatusCode::CREATED).await;
    }
    app.tick().await;
    let rows = outbox::Entity::find().all(app.db.conn()).await.unwrap();
    let pages = tempfile::tempdir().unwrap();
    let mut shown = 0;
    for row in rows.iter().filter(|r| r.recipient == "giulia@example.com") {
        let (html, _) = crate::helpers::bodies(&app, row.id).await;
        let html = html.unwrap();
        assert!(html.contains("Bottega Rossi · Via Roma 1, 20121 Milano"), "{html}");
        let name = row.subject.clone().unwrap_or_default().trim_end_matches(".html").to_owned();
        let file = pages.path().join(format!("{name}.html"));
        std::fs::write(&file, html).unwrap();
        let url = format!("file://{}", file.display());
        browser.open(&url, &file.display().to_string()).await;
        browser.screenshot_in(FOLDER, &format!("email-{name}-1280")).await;
        browser.resize(390, 844, true).await;
        let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth + 1").await;
        assert_eq!(fits, true, "email {name}: nothing runs off a phone's screen");
        browser.screenshot_in(FOLDER, &format!("email-{name}-390")).await;
        browser.resize(1280, 900, false).await;
        shown += 1;
    }
    assert_eq!(shown, names.len(), "one message per shipped email");
}

/// Lighthouse's scores of a page, by category (`performance`, `accessibility`, `best-practices`,
/// `seo`), with the audits that fell short.
fn lighthouse(bin: &std::path::Path, url: &str) -> (serde_json::Map<String, Value>, Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report.json");
    let chrome = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| {
            let found = std::process::Command::new("sh").args(["-c", &format!("command -v {name}")]).output().ok()?;
            found.status.success().then(|| String::from_utf8_lossy(&found.stdout).trim().to_owned())
        })
        .unwrap();
    let status = std::process::Command::new(bin)
        .arg(url)
        .args(["--quiet", "--output=json", "--chrome-flags=--headless=new --no-sandbox"])
        .arg(format!("--output-path={}", report.display()))
        .env("CHROME_PATH", chrome)
        .status()
        .unwrap();
    assert!(status.success(), "lighthouse {url}: {status}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let mut scores = serde_json::Map::new();
    let mut short = Vec::new();
    for (name, category) in report["categories"].as_object().unwrap() {
        scores.insert(name.clone(), category["score"].clone());
        for audit in category["auditRefs"].as_array().unwrap() {
            let result = &report["audits"][audit["id"].as_str().unwrap()];
            if audit["weight"].as_f64().unwrap_or(0.0) > 0.0 && result["score"].as_f64().is_some_and(|s| s < 1.0) {
                short.push(format!("{name}: {}", audit["id"]));
            }
        }
    }
    (scores, short)
}

/// Lighthouse's accessibility, best-practices and SEO scores of the shipped landing page and its
/// thank-you page are 100 (its performance score depends on the machine's speed: it is measured
/// by `benches/lighthouse.sh`, not here).
#[tokio::test]
async fn the_landing_and_thank_you_pages_score_100_in_lighthouse() {
    let test = "the_landing_and_thank_you_pages_score_100_in_lighthouse";
    let Some(bin) = crate::tools::lighthouse(test) else { return };
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.business.name = "Bottega Rossi".into();
        c.business.postal_address = Some("Via Roma 1, 20121 Milano".into());
        c.business.privacy_url = Some("https://bottega.example/privacy".into());
    })
    .await
    .unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/instagram-guide.yaml");
    app.install_workflow("instagram-guide", &std::fs::read_to_string(shipped).unwrap()).await;
    for path in ["/p/guide", "/p/guide/thanks"] {
        let (url, bin) = (app.url(path), bin.clone());
        let (scores, short) = tokio::task::spawn_blocking(move || lighthouse(&bin, &url)).await.unwrap();
        for category in ["accessibility", "best-practices", "seo"] {
            assert_eq!(scores[category].as_f64(), Some(1.0), "{path}: {category} {scores:?}; short: {short:?}");
        }
    }
}
