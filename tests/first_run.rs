//! A newcomer's first hour, as the README tells it: the repository's own `workflows/` and
//! `templates/` in an empty folder, the built binary started there with no setting at all, and
//! then what a visitor does: open every shipped landing page, sign up through the real form,
//! open the confirmation email the service wrote under `data/mail/`, follow its link, and end up
//! enrolled in the shipped funnel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::Process;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The shipped folders copied into an empty one.
fn a_fresh_folder() -> tempfile::TempDir {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo.join("workflows"), &dir.path().join("workflows"));
    copy_dir(&repo.join("templates"), &dir.path().join("templates"));
    dir
}

/// `ownlist` in `dir` with no `OWNLIST_*` setting from the environment.
fn ownlist(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ownlist"));
    command.current_dir(dir);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OWNLIST_")) {
        command.env_remove(key);
    }
    command
}

/// Starts `ownlist` with no argument and no setting, as a newcomer does, and returns it with the
/// address it serves on. The default address is 127.0.0.1:8080; only when something else on this
/// machine holds that port (or `anywhere`) is the port, and nothing else, chosen by the system.
fn serve(dir: &Path, anywhere: bool) -> (Process, String) {
    let mut command = ownlist(dir);
    if anywhere || std::net::TcpListener::bind("127.0.0.1:8080").is_err() {
        if !anywhere {
            eprintln!("first run: 127.0.0.1:8080 is taken on this machine; serving on a free port instead");
        }
        command.env("OWNLIST_LISTEN", "127.0.0.1:0");
    }
    let mut child = Process(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(line)) = lines.next() else {
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
        panic!("`ownlist` in a fresh folder did not serve:\n{said}");
    };
    assert!(line.contains("ownlist is serving"), "{line}");
    let address = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    // Its output goes on being read: the process neither blocks on a full pipe nor writes into a
    // closed one.
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    std::thread::spawn(move || lines.for_each(drop));
    (child, address)
}

/// The form of a page: where it posts, and its fields' names and values as served.
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let form = html.split("<form").nth(1).expect("the page has a form");
    let action = attribute(form.split('>').next().unwrap(), "action").unwrap_or_default();
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = input.split('>').next().unwrap();
        if let Some(name) = attribute(tag, "name") {
            let kind = attribute(tag, "type").unwrap_or_default();
            let value = if kind == "checkbox" { String::new() } else { attribute(tag, "value").unwrap_or_default() };
            fields.push((name, value));
        }
    }
    (action.replace("&amp;", "&"), fields)
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_owned())
}

/// A quoted-printable or plain body made readable (soft line breaks joined, `=XX` decoded).
fn readable(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the first file in `dir` (the delivery worker writes it a moment after the signup).
fn first_file(dir: &Path) -> std::path::PathBuf {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = std::fs::read_dir(dir).ok().and_then(|mut d| d.next()).and_then(Result::ok) {
            return found.path();
        }
        assert!(Instant::now() < deadline, "nothing was written to {} within 20 s", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An admin API answer.
async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Makes an admin token with the command line, as the README says, and returns it.
fn admin_token(dir: &Path, name: &str) -> String {
    let made = ownlist(dir).args(["tokens", "create", name]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let printed = String::from_utf8_lossy(&made.stdout).into_owned();
    let token = printed.split_whitespace().find(|w| w.starts_with("ol_")).map(str::to_owned);
    token.unwrap_or_else(|| panic!("no token printed: {printed}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_folder_serves_the_shipped_funnel_from_signup_to_enrollment() {
    let dir = a_fresh_folder();
    let (_server, address) = serve(dir.path(), false);
    let base = format!("http://{address}");
    let client = reqwest::Client::builder()
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) first-run test")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    // Every landing page the shipped files declare answers with its form.
    let templates = ownlist::workflow::templates::TemplateChecker::load(&dir.path().join("templates"));
    let context = ownlist::workflow::Context {
        templates: &templates,
        lists: None,
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    let folder = ownlist::workflow::check_dir(&dir.path().join("workflows"), &context);
    assert!(folder.diagnostics.is_empty(), "{:#?}", folder.diagnostics);
    let slugs: Vec<String> = folder.pages.iter().map(|p| p.slug.clone()).collect();
    assert!(slugs.contains(&"guide".to_owned()), "{slugs:?}");
    for slug in &slugs {
        let page = client.get(format!("{base}/p/{slug}")).send().await.unwrap();
        assert_eq!(page.status(), 200, "/p/{slug}");
        assert!(page.text().await.unwrap().contains("<form"), "/p/{slug} has a form");
    }

    // A visitor from Instagram fills in the guide's form, as a person does (not faster than
    // the form's bot guard allows).
    let page = client.get(format!("{base}/p/guide?utm_source=instagram")).send().await.unwrap();
    let (action, served) = form_of(&page.text().await.unwrap());
    let mut form: Vec<(String, String)> = Vec::new();
    for (name, value) in served {
        let value = match name.as_str() {
            "email" => "newcomer@example.com".to_owned(),
            "first_name" => "Nina".to_owned(),
            "consent_email" => "on".to_owned(),
            "consent_sms" => continue,
            _ => value,
        };
        form.push((name, value));
    }
    assert!(form.iter().any(|(n, _)| n == "consent_email"), "{form:?}");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let action = if action.starts_with('/') { format!("{base}{action}") } else { action };
    let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
    let posted = client
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(posted.status() == 303 || posted.status() == 200, "{}", posted.status());

    // The confirmation email is a file under data/mail/; its link confirms.
    let eml = std::fs::read_to_string(first_file(&dir.path().join("data/mail"))).unwrap();
    assert!(eml.contains("newcomer@example.com"), "{eml}");
    let text = readable(&eml);
    let link = text.split("http://").find(|part| part.contains("/c/")).expect("a confirmation link");
    let path = &link[link.find("/c/").unwrap()..];
    let path: String = path.chars().take_while(|c| c.is_ascii_alphanumeric() || "/-_".contains(*c)).collect();
    let confirmed = client.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().await.unwrap().contains("you are subscribed"));

    // The newcomer makes an admin token, as the README says, and sees Nina in the funnel.
    let token = admin_token(dir.path(), "first-run");
    // The engine enrolls her on its next round (it runs every second or so).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let funnel = get_json(&client, &format!("{base}/api/v1/workflows/instagram-guide"), &token).await;
        let by_status = funnel["enrollments"]["by_status"].as_object().unwrap();
        let enrolled: u64 = by_status.values().filter_map(serde_json::Value::as_u64).sum();
        if enrolled == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not enrolled within 20 s: {funnel}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = get_json(&client, &format!("{base}/api/v1/subscribers?q=newcomer"), &token).await;
    assert_eq!(found["data"][0]["channels"]["email"], "subscribed", "{found}");
}

/// A workflow file with a syntax error (and a broken page template) does not take the public side
/// down: the server starts, the shipped page and an unsubscribe link keep working, and `/readyz`
/// names the problems.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_workflow_file_leaves_pages_and_unsubscribe_links_working() {
    let dir = a_fresh_folder();
    // The first start loads the shipped files; then the guide's file is broken and ownlist started again.
    let (mut first, _) = serve(dir.path(), true);
    first.kill().unwrap();
    first.wait().unwrap();
    let guide = dir.path().join("workflows/instagram-guide.yaml");
    let text = std::fs::read_to_string(&guide).unwrap();
    std::fs::write(&guide, text.replace("steps:\n", "steps:\n  - id: [unclosed\n")).unwrap();
    std::fs::write(dir.path().join("workflows/new.yaml"), "name: New\ntrigger: { event: x\n").unwrap();
    std::fs::write(dir.path().join("templates/pages/default.html"), "{% if %}<form>broken</form>").unwrap();

    let (_server, address) = serve(dir.path(), true);
    let base = format!("http://{address}");
    let client = reqwest::Client::builder().user_agent("Mozilla/5.0 first-run test").build().unwrap();
    let page = client.get(format!("{base}/p/guide")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page of a broken file stays up");
    let html = page.text().await.unwrap();
    assert!(html.contains("<form") && html.contains("name=\"email\""), "the built-in template: {html}");
    let ready: serde_json::Value = client.get(format!("{base}/readyz")).send().await.unwrap().json().await.unwrap();
    let problems = ready["workflow_problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["at"].as_str().unwrap().contains("instagram-guide.yaml:")), "{ready}");
    assert!(problems.iter().any(|p| p["at"].as_str().unwrap().contains("new.yaml:")), "{ready}");

    // A subscriber's unsubscribe link works.
    let token = admin_token(dir.path(), "ops");
    let created = client
        .post(format!("{base}/api/v1/subscribers"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"email": "reader@example.com", "lists": ["newsletter"], "consent": {"email": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // The link every email to them carries: signed with the secret this instance made itself.
    let secret = std::fs::read_to_string(dir.path().join("data/secret")).unwrap();
    let signer = ownlist::core::links::Signer::new(secret.trim());
    let id: uuid::Uuid = id.parse().unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::days(30);
    let link = format!("{base}/u/{}", signer.sign(ownlist::core::links::Purpose::Unsubscribe, id, expires));
    let unsubscribed = client.post(&link).body("").send().await.unwrap();
    assert_eq!(unsubscribed.status(), 200, "{link}");
    let after = get_json(&client, &format!("{base}/api/v1/subscribers/{id}"), &token).await;
    assert_eq!(after["channels"]["email"], "unsubscribed", "{after}");
}
