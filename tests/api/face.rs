//! What prospects and subscribers see: every public page a template in the business's colours
//! and words, in the page's or the person's language, personal pages kept out of search engines,
//! preview tags on landing pages, and unsubscribe links that leave the list a message came from.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp, expect_json, with_each_backend};
use crate::pages::{browser, confirm_path, confirmations, decode, encode, hidden, location, person_by_email};
use ownlist::core::clock::Clock;
use ownlist::core::links::{Purpose, Signer};
use ownlist::store::entities::consent;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

with_each_backend!(
    a_page_speaks_its_own_language_and_so_do_its_form_errors_and_confirmation,
    without_a_page_language_the_browser_chooses_and_the_words_agreed_to_are_recorded_as_shown,
    landing_pages_carry_preview_tags_and_personal_pages_stay_out_of_search_engines,
    an_operator_overrides_a_page_and_a_broken_one_falls_back_to_the_shipped_one,
    an_operator_adds_a_language_by_adding_a_file,
    the_unsubscribe_link_of_list_mail_leaves_that_list_and_offers_everything_second,
    an_email_speaks_its_subscribers_language_in_its_layout_and_offers_one_way_out,
);

const PAGES: &str = "pages:
  - slug: corso
    title: Il corso gratuito
    description: Dieci lezioni per portare il pubblico del tuo negozio fuori dai social.
    image: https://cdn.bottega.example/corso.jpg
    image_alt: Una pagina del corso
    bullets: [Perché un solo social è un punto debole, Tre modi per portare i follower nella tua lista]
    cta: Voglio il corso
    locale: it
    list: news
    fields: [email, first_name]
    required: [email, first_name]
  - slug: plain
    title: Plain page
    list: news
    fields: [email]
";

async fn spawn(backend: Backend, adjust: impl FnOnce(&mut ownlist::config::Config)) -> Option<TestApp> {
    let app = TestApp::spawn_with(backend, |c| {
        c.business.name = "Bottega Rossi".into();
        c.business.postal_address = Some("Via Roma 1, 20121 Milano".into());
        c.business.accent_color = "#b4236b".into();
        c.business.privacy_url = Some("https://bottega.example/privacy".into());
        adjust(c);
    })
    .await?;
    app.create_list("news").await;
    app.install_workflow("pages", PAGES).await;
    Some(app)
}

/// `GET path` as a browser whose language is `accept` (none: no header).
async fn get_page(app: &TestApp, path: &str, accept: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = browser().get(app.url(path));
    if let Some(accept) = accept {
        request = request.header("accept-language", accept);
    }
    let response = request.send().await.unwrap();
    let headers = response.headers().clone();
    (response.status(), headers, response.text().await.unwrap())
}

/// Opens a page as a browser of language `accept`, waits like a person, and posts `fields` with
/// the form's hidden ones (its token and language).
async fn sign_up_in(app: &TestApp, slug: &str, accept: &str, fields: &[(&str, &str)]) -> (StatusCode, String, String) {
    let (_, _, html) = get_page(app, &format!("/p/{slug}"), Some(accept)).await;
    app.clock.advance(chrono::Duration::seconds(5));
    let mut pairs =
        vec![("_form".to_owned(), decode(&hidden(&html, "_form"))), ("lang".to_owned(), hidden(&html, "lang"))];
    pairs.extend(fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let response = browser()
        .post(app.url(&format!("/p/{slug}")))
        .header("accept-language", accept)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&pairs))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let to = response.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, to, response.text().await.unwrap())
}

async fn consents_of(app: &TestApp, id: uuid::Uuid) -> Vec<consent::Model> {
    consent::Entity::find().filter(consent::Column::SubscriberId.eq(id)).all(app.db.conn()).await.unwrap()
}

async fn a_page_speaks_its_own_language_and_so_do_its_form_errors_and_confirmation(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    // The page says Italian: a German browser gets Italian too (the page's words are Italian).
    let (status, _, html) = get_page(&app, "/p/corso", Some("de-DE,de;q=0.9")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.starts_with("<!doctype html>\n<html lang=\"it\">"), "{html}");
    for words in ["Nome</label>", "Restiamo in contatto", "Sì, tenetemi aggiornato.", "Voglio il corso</button>"] {
        assert!(html.contains(words), "{words}: {html}");
    }
    assert!(html.contains("<li>Perché un solo social è un punto debole</li>"), "the bullets: {html}");
    assert!(
        html.contains("<img class=\"hero\" src=\"https://cdn.bottega.example/corso.jpg\" alt=\"Una pagina del corso\"")
    );
    assert!(html.contains("Bottega Rossi · Via Roma 1, 20121 Milano"), "the business in the footer: {html}");
    assert!(html.contains(">Informativa sulla privacy</a>"), "{html}");
    assert!(html.contains("background:#b4236b;color:#ffffff"), "the button in the business's colour: {html}");

    // Refused: the form again, its errors in Italian.
    let (status, _, html) =
        sign_up_in(&app, "corso", "de", &[("email", "not-an-address"), ("consent_email", "on")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Inserisci un indirizzo email come nome@esempio.it."), "{html}");
    assert!(html.contains("Nome è obbligatorio."), "{html}");
    assert!(html.contains("Controlla i campi indicati qui sotto."), "{html}");

    let (status, to, _) = sign_up_in(
        &app,
        "corso",
        "de",
        &[("email", "giulia@example.com"), ("first_name", "Giulia"), ("consent_email", "on")],
    )
    .await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/p/corso/thanks"));
    let (_, _, thanks) = get_page(&app, "/p/corso/thanks", Some("de")).await;
    assert!(thanks.contains("<h1>Grazie!</h1>"), "{thanks}");
    let giulia = person_by_email(&app, "giulia@example.com").await;
    assert_eq!(giulia.locale.as_deref(), Some("it"), "the subscriber keeps the language they signed up in");
    let granted = consents_of(&app, giulia.id).await;
    assert_eq!(
        granted[0].consent_text.as_deref(),
        Some("Sì, tenetemi aggiornato. Posso annullare l'iscrizione in qualsiasi momento."),
        "the words shown are the words recorded"
    );
    let sent = confirmations(&app, giulia.id).await;
    assert_eq!(sent[0].subject.as_deref(), Some("Conferma la tua iscrizione: Il corso gratuito"));
    let (html, text) = crate::helpers::bodies(&app, sent[0].id).await;
    let html = html.unwrap();
    assert!(html.contains("<html lang=\"it\">") && html.contains("Ciao Giulia,"), "{html}");
    assert!(text.contains("Sì, iscrivimi") && !text.starts_with("Conferma"), "no title in the text part: {text}");
    // The confirmation page and its second click, in Italian too (no browser language at all).
    let path = confirm_path(&app, &sent[0]).await;
    let (status, headers, html) = get_page(&app, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<h1>Iscrizione confermata</h1>") && html.contains("sei iscritto a Il corso gratuito"),
        "{html}"
    );
    assert_eq!(headers["x-robots-tag"], "noindex");
    let (_, _, again) = get_page(&app, &path, None).await;
    assert!(again.contains("Già confermata"), "{again}");
}

async fn without_a_page_language_the_browser_chooses_and_the_words_agreed_to_are_recorded_as_shown(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    for (accept, lang, button) in [
        ("de-AT,de;q=0.9,en;q=0.5", "de", "Anmelden"),
        ("fr-CA,fr;q=0.8", "fr", "S&#39;inscrire"),
        ("es", "es", "Suscribirme"),
        ("ja,pt;q=0.5", "en", "Sign up"),
    ] {
        let (_, _, html) = get_page(&app, "/p/plain", Some(accept)).await;
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{accept}: {html}");
        assert!(html.contains(&format!("{button}</button>")), "{accept}: {html}");
    }
    let (status, _, _) =
        sign_up_in(&app, "plain", "de-DE", &[("email", "jonas@example.com"), ("consent_email", "on")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let jonas = person_by_email(&app, "jonas@example.com").await;
    assert_eq!(jonas.locale.as_deref(), Some("de"));
    assert_eq!(
        consents_of(&app, jonas.id).await[0].consent_text.as_deref(),
        Some("Ja, haltet mich auf dem Laufenden. Ich kann mich jederzeit abmelden.")
    );
    let (_, _, thanks) = get_page(&app, "/p/plain/thanks", Some("de-DE")).await;
    assert!(thanks.contains("<h1>Danke!</h1>"), "{thanks}");
    // A page that does not exist, asked for by a browser: a page, in its language.
    let (status, headers, html) = get_page(&app, "/p/nowhere", Some("es")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Página no encontrada") && html.contains("Bottega Rossi"), "{html}");
    assert_eq!(headers["x-robots-tag"], "noindex");
    let response = browser().get(app.url("/no/such/thing")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("<h1>Page not found</h1>"));
    let api = app.get("/api/v1/nothing-here").await;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(expect_json(api, StatusCode::NOT_FOUND).await["code"], "route_not_found", "the API keeps its JSON");
}

async fn landing_pages_carry_preview_tags_and_personal_pages_stay_out_of_search_engines(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    let (_, headers, html) = get_page(&app, "/p/corso", None).await;
    assert!(!headers.contains_key("x-robots-tag"), "a landing page is for everyone to find");
    assert!(!html.contains("name=\"robots\""));
    for tag in [
        "<meta name=\"description\" content=\"Dieci lezioni per portare il pubblico del tuo negozio fuori dai social.\">",
        "<meta property=\"og:title\" content=\"Il corso gratuito\">",
        "<meta property=\"og:image\" content=\"https://cdn.bottega.example/corso.jpg\">",
        "<meta property=\"og:site_name\" content=\"Bottega Rossi\">",
        "<meta name=\"twitter:card\" content=\"summary_large_image\">",
        "<link rel=\"icon\" href=\"/favicon.svg\">",
    ] {
        assert!(html.contains(tag), "{tag}: {html}");
    }
    assert!(
        html.contains(&format!("<meta property=\"og:url\" content=\"{}p/corso\">", "http://127.0.0.1:8080/")),
        "{html}"
    );

    let icon = browser().get(app.url("/favicon.svg")).send().await.unwrap();
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    let svg = icon.text().await.unwrap();
    assert!(
        svg.contains("fill=\"#b4236b\"") && svg.contains(">B</text>"),
        "the initial in the business's colour: {svg}"
    );
    let robots = browser().get(app.url("/robots.txt")).send().await.unwrap().text().await.unwrap();
    assert!(robots.contains("Disallow: /u/") && robots.contains("Allow: /p/"), "{robots}");
    let old = browser().get(app.url("/favicon.ico")).send().await.unwrap();
    assert_eq!((old.status(), location(&old)), (StatusCode::PERMANENT_REDIRECT, "/favicon.svg".to_owned()));

    // Every personal page: noindex in the page and the header, never framed.
    let id = uuid::Uuid::parse_str(
        expect_json(
            app.post("/api/v1/subscribers", &json!({"email": "ada@example.com", "lists": ["news"]})).await,
            StatusCode::CREATED,
        )
        .await["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let secret_signer = app_signer(&app);
    let expires = app.clock.now() + chrono::Duration::days(30);
    let personal = [
        format!("/u/{}", secret_signer.sign(Purpose::Unsubscribe, id, expires)),
        format!("/preferences/{}", secret_signer.sign(Purpose::Preferences, id, expires)),
        "/c/forged-link".to_owned(),
    ];
    for path in &personal {
        let (status, headers, html) = get_page(&app, path, None).await;
        assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{path}: {status}");
        assert_eq!(headers["x-robots-tag"], "noindex", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert!(html.contains("<meta name=\"robots\" content=\"noindex\">"), "{path}: {html}");
        assert!(html.contains("<main>") && html.contains("Bottega Rossi"), "{path}: {html}");
    }
}

/// The signer of the test app's links.
fn app_signer(app: &TestApp) -> Signer {
    app.engine.links().0.clone()
}

async fn an_operator_overrides_a_page_and_a_broken_one_falls_back_to_the_shipped_one(backend: Backend) {
    let templates = tempfile::tempdir().unwrap();
    copy_dir(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"), templates.path());
    std::fs::write(
        templates.path().join("pages/not-found.html"),
        "{% extends \"pages/_layout.html\" %}{% block content %}<h1>Nothing here, friend</h1>{% endblock content %}",
    )
    .unwrap();
    std::fs::write(
        templates.path().join("pages/expired.html"),
        "{% extends \"pages/_layout.html\" %}{% block content %}{{ nope.x }}{% endblock content %}",
    )
    .unwrap();
    let dir = templates.path().to_path_buf();
    let Some(app) = spawn(backend, |c| c.templates_dir = dir).await else { return };
    let (status, _, html) = get_page(&app, "/p/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("<h1>Nothing here, friend</h1>") && html.contains("Bottega Rossi"), "{html}");
    // An expired link with a broken expired.html: the shipped page, not an error.
    let id = uuid::Uuid::now_v7();
    let token = app_signer(&app).sign(Purpose::Unsubscribe, id, app.clock.now() - chrono::Duration::days(1));
    let (status, _, html) = get_page(&app, &format!("/u/{token}"), None).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("<h1>This link has expired</h1>"), "{html}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn an_operator_adds_a_language_by_adding_a_file(backend: Backend) {
    let templates = tempfile::tempdir().unwrap();
    copy_dir(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"), templates.path());
    std::fs::write(
        templates.path().join("locales/pt.toml"),
        "language_name = \"Português\"\nsign_up = \"Inscrever-me\"\nkeep_in_touch = \"Vamos manter contato\"\n",
    )
    .unwrap();
    let dir = templates.path().to_path_buf();
    let Some(app) = spawn(backend, |c| c.templates_dir = dir).await else { return };
    let (_, _, html) = get_page(&app, "/p/plain", Some("pt-BR,pt;q=0.9")).await;
    assert!(html.contains("<html lang=\"pt\">") && html.contains("Inscrever-me</button>"), "{html}");
    assert!(html.contains("Vamos manter contato"), "{html}");
    assert!(html.contains("Yes, keep me posted."), "English for a word the file lacks: {html}");
    // A page may name it; one naming a language nobody wrote is refused at its line.
    let reloaded =
        app.install_workflow("pt", "pages:\n  - slug: pt\n    title: Guia\n    locale: pt-BR\n    list: news\n").await;
    assert_eq!(reloaded["problems"].as_array().map(Vec::len).unwrap_or(0), 0, "{reloaded}");
    let ja = "pages:\n  - slug: ja\n    title: Guide\n    locale: ja\n    list: news\n";
    std::fs::write(app.workflows_dir.join("ja.yaml"), ja).unwrap();
    let refused = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let problem = expect_json(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("ja.yaml:4:13: no words in 'ja'"), "{detail}");
    assert!(detail.contains("add templates/locales/ja.toml"), "{detail}");
    std::fs::remove_file(app.workflows_dir.join("ja.yaml")).unwrap();
    // A locale file that does not parse: reported at its line, and its language keeps the shipped words.
    std::fs::write(templates.path().join("locales/fr.toml"), "sign_up = \"S'inscrire\"\nkeep_in_touch = [\n").unwrap();
    let refused = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let problem = expect_json(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("locales/fr.toml:2:") && detail.contains("these words are left out"), "{detail}");
    let (_, _, html) = get_page(&app, "/p/plain", Some("fr")).await;
    assert!(html.contains("Restons en contact"), "{html}");
}

async fn the_unsubscribe_link_of_list_mail_leaves_that_list_and_offers_everything_second(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else { return };
    expect_json(
        app.post("/api/v1/lists", &json!({"slug": "weekly", "name": "Weekly news"})).await,
        StatusCode::CREATED,
    )
    .await;
    let ada = expect_json(
        app.post(
            "/api/v1/subscribers",
            &json!({"email": "ada@example.com", "lists": ["weekly", "news"], "locale": "de", "consent": {"email": true}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = uuid::Uuid::parse_str(ada["id"].as_str().unwrap()).unwrap();
    let token = app_signer(&app).sign(Purpose::Unsubscribe, id, app.clock.now() + chrono::Duration::days(30));
    let path = format!("/u/{token}?list=weekly");

    // The page names the business and the list, in the subscriber's language, and changes nothing.
    let (status, _, html) = get_page(&app, &path, Some("en")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Weekly news von Bottega Rossi nicht mehr bekommen?"), "{html}");
    assert!(
        html.contains("Von Weekly news abmelden</button>") && html.contains("Von allen E-Mails abmelden</button>"),
        "{html}"
    );
    assert!(html.contains("/preferences/"), "and a way to choose instead: {html}");

    // A mail client's one click leaves the list the message came from, not all email.
    let one_click = browser()
        .post(app.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), StatusCode::OK);
    assert!(one_click.text().await.unwrap().contains("Du bekommst Weekly news nicht mehr."));
    let after = expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await;
    assert_eq!(after["channels"]["email"], "subscribed", "{after}");
    let lists: Vec<(String, String)> = after["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["list"].as_str().unwrap().to_owned(), l["status"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        lists.contains(&("weekly".into(), "unsubscribed".into()))
            && lists.contains(&("news".into(), "confirmed".into())),
        "{lists:?}"
    );
    let again = browser().post(app.url(&path)).body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert!(again.text().await.unwrap().contains("Du bist bereits abgemeldet"));

    // The page's second button: every email.
    let all = browser()
        .post(app.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("scope=all")
        .send()
        .await
        .unwrap();
    assert!(all.text().await.unwrap().contains("Du bekommst keine E-Mails mehr von Bottega Rossi."));
    let after = expect_json(app.get(&format!("/api/v1/subscribers/{id}")).await, StatusCode::OK).await;
    assert_eq!(after["channels"]["email"], "unsubscribed");
}

async fn an_email_speaks_its_subscribers_language_in_its_layout_and_offers_one_way_out(backend: Backend) {
    let templates = tempfile::tempdir().unwrap();
    copy_dir(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"), templates.path());
    std::fs::write(
        templates.path().join("emails/welcome.it.html"),
        "<p>Ciao {{ subscriber.first_name }}, benvenuta!</p>",
    )
    .unwrap();
    let dir = templates.path().to_path_buf();
    let Some(app) = spawn(backend, |c| c.templates_dir = dir).await else { return };
    for (email, locale) in [("giulia@example.com", "it"), ("ada@example.com", "en")] {
        let person =
            json!({"email": email, "first_name": "X", "locale": locale, "lists": ["news"], "consent": {"email": true}});
        app.create_subscriber(person).await;
    }
    let welcome = json!({"list": "news", "subject": "Benvenuti", "template": "emails/welcome.html"});
    expect_json(app.post("/api/v1/broadcasts", &welcome).await, StatusCode::CREATED).await;
    // Inline HTML that links its own way out: the footer does not add a second.
    let own = json!({"list": "news", "subject": "Own", "html": "<p>News.</p><p><a href=\"{{ unsubscribe_url }}\">Leave</a></p>"});
    expect_json(app.post("/api/v1/broadcasts", &own).await, StatusCode::CREATED).await;
    // A whole document of its own without a way out is refused.
    let bare = json!({"list": "news", "subject": "Bare", "html": "<html><body><p>No way out.</p></body></html>"});
    let refused = app.post("/api/v1/broadcasts", &bare).await;
    let problem = expect_json(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(problem.to_string().contains("link {{ unsubscribe_url }}"), "{problem}");
    app.tick().await;
    let rows = ownlist::store::entities::outbox::Entity::find().all(app.db.conn()).await.unwrap();
    assert_eq!(rows.len(), 4, "two broadcasts to two people");
    for row in &rows {
        let (html, _) = crate::helpers::bodies(&app, row.id).await;
        let html = html.unwrap();
        let italian = row.recipient == "giulia@example.com";
        assert!(html.contains(if italian { "<html lang=\"it\">" } else { "<html lang=\"en\">" }), "{html}");
        assert!(html.contains("Bottega Rossi · Via Roma 1, 20121 Milano"), "{html}");
        let ways_out = html.matches("/u/").count();
        assert_eq!(ways_out, 1, "one unsubscribe link: {html}");
        match (row.subject.as_deref(), italian) {
            (Some("Benvenuti"), true) => {
                assert!(html.contains("Ciao X, benvenuta!") && html.contains("Annulla l&#39;iscrizione</a>"), "{html}")
            }
            (Some("Benvenuti"), false) => {
                assert!(html.contains("Welcome!") && html.contains(">Unsubscribe</a>"), "{html}")
            }
            (_, _) => assert!(html.contains(">Leave</a>") && !html.contains(">Unsubscribe</a>"), "{html}"),
        }
    }
}
