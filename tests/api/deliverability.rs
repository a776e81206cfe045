//! What mailbox providers see of the shipped emails: every one, rendered as sent (the layout, its
//! footer, the tracking pixel, the headers), scored by SpamAssassin with its shipped rules.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp, expect_json};

/// The shipped email templates, each with the subject its shipped workflow gives it.
const SHIPPED: &[(&str, &str)] = &[
    ("emails/welcome.html", "Welcome aboard"),
    ("emails/story.html", "How we started"),
    ("emails/ask.html", "What would help you most?"),
    ("emails/guide.html", "Your guide, {{ subscriber.first_name | default(value='friend') }}"),
    ("emails/upsell.html", "A next step"),
    ("emails/last.html", "Last chance"),
    ("emails/digest.html", "This week, {{ subscriber.first_name | default(value='friend') }}"),
];

/// SpamAssassin's score of a message (`spamassassin -L -t`: local rules only), with the rules
/// that fired.
fn score(message: &[u8]) -> (f64, String) {
    let mut child = Command::new("spamassassin")
        .args(["-L", "-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = report.lines().find(|l| l.starts_with("X-Spam-Status:")).unwrap_or_else(|| panic!("{report}"));
    let score: f64 = status.split("score=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    let rules = report.split("Content analysis details:").nth(1).unwrap_or_default().to_owned();
    (score, rules)
}

#[tokio::test]
async fn every_shipped_email_scores_under_one_with_spamassassin() {
    if !crate::tools::spamassassin("every_shipped_email_scores_under_one_with_spamassassin") {
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.base_url = url::Url::parse("https://news.bottega-rossi.it/").unwrap();
        c.business.name = "Bottega Rossi".into();
        c.business.postal_address = Some("Via Roma 1, 20121 Milano, Italy".into());
        // What the default sender is for this base URL and name (see the configuration's tests).
        c.email_from = "Bottega Rossi <noreply@news.bottega-rossi.it>".parse().unwrap();
    })
    .await
    .unwrap();
    app.create_list("news").await;
    app.create_subscriber(
        json!({"email": "giulia@example.com", "first_name": "Giulia", "lists": ["news"], "consent": {"email": true}}),
    )
    .await;
    for (template, subject) in SHIPPED {
        let body = json!({"list": "news", "subject": subject, "template": template});
        expect_json(app.post("/api/v1/broadcasts", &body).await, StatusCode::CREATED).await;
    }
    // And the confirmation a landing page sends.
    app.install_workflow("pages", "pages:\n  - slug: guide\n    title: Get the free guide\n    list: news\n").await;
    let signup =
        crate::pages::sign_up(&app, "guide", "", &[("email", "marco@example.com"), ("consent_email", "on")]).await;
    assert_eq!(signup.status(), StatusCode::SEE_OTHER);
    app.tick().await;
    while app.email.send_due().await.unwrap() > 0 {}
    let mut files: Vec<_> = std::fs::read_dir(app.data_dir.join("mail")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), SHIPPED.len() + 1, "one message per shipped template, and the confirmation");
    let mut report = String::new();
    for file in &files {
        let message = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("From: Bottega Rossi <noreply@news.bottega-rossi.it>"), "{text}");
        assert!(text.contains("List-Id: <news.news.bottega-rossi.it>"), "{text}");
        assert!(text.contains("Via Roma 1, 20121 Milano, Italy"), "the postal address in every message: {text}");
        let subject = text.lines().find(|l| l.starts_with("Subject:")).unwrap_or_default().to_owned();
        let (score, rules) = score(&message);
        report.push_str(&format!("{subject}: {score}\n{rules}\n"));
        assert!(score < 1.0, "{subject} scores {score}:\n{rules}");
    }
    eprintln!("{report}");
}
