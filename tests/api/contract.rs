//! The API against its own OpenAPI document: the document is valid OpenAPI, and schemathesis,
//! generating requests from it (valid and invalid, alone and chained through its links), finds no
//! 5xx, no answer that breaks the document, nothing invalid accepted and nothing valid refused.

use std::time::Duration;

use crate::helpers::{Backend, TestApp, with_each_backend};
use crate::tools;

with_each_backend!(the_api_keeps_to_its_openapi_document);

/// Where `./test.sh` installs schemathesis and openapi-spec-validator.
fn tool(name: &str) -> String {
    let local = format!("{}/target/tools/bin/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::path::Path::new(&local).exists() { local } else { name.to_owned() }
}

async fn the_api_keeps_to_its_openapi_document(backend: Backend) {
    let test = "the_api_keeps_to_its_openapi_document";
    let (schemathesis, validator) = (tool("schemathesis"), tool("openapi-spec-validator"));
    let install = "./test.sh installs it in target/tools (python3 -m venv target/tools && target/tools/bin/pip install schemathesis openapi-spec-validator)";
    if !tools::present(test, &schemathesis, &["--version"], install)
        || !tools::present(test, &validator, &["--version"], install)
    {
        return;
    }
    let Some(app) = TestApp::spawn(backend).await else { return };
    let document = app.url("/api/v1/openapi.json");

    let file = tempfile::NamedTempFile::new().unwrap();
    let text = reqwest::get(&document).await.unwrap().text().await.unwrap();
    std::fs::write(file.path(), text).unwrap();
    let valid = std::process::Command::new(&validator).arg(file.path()).output().unwrap();
    assert!(valid.status.success(), "the document is not valid OpenAPI:\n{}", String::from_utf8_lossy(&valid.stdout));

    let config = format!("{}/tests/schemathesis.toml", env!("CARGO_MANIFEST_DIR"));
    // schemathesis keeps a cache (and replays what it cached) in its working directory: a fresh
    // one per run, outside the repository.
    let cache = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(&schemathesis);
    command
        .current_dir(cache.path())
        .args(["--config-file", &config, "run", &document, "--url", &app.base])
        .args(["-H", &format!("Authorization: Bearer {}", app.token)])
        // A fixed seed: the same requests on every run, so a failure here is this change's.
        .args(["--max-examples", "25", "--seed", "20261207", "--no-color"]);
    // The app answers on this thread's runtime while schemathesis runs on another thread.
    let run = tokio::task::spawn_blocking(move || command.output());
    let run = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis took over 10 minutes")
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "schemathesis found problems:\n{out}\n{}", String::from_utf8_lossy(&run.stderr));
    // It did test every operation (a document it could not read would test none).
    let tested = out.lines().find(|l| l.trim_start().starts_with("Tested:")).unwrap_or_default();
    let operations = app.get("/api/v1/openapi.json").await.json::<serde_json::Value>().await.unwrap()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(tested.trim(), format!("Tested: {operations}"), "{out}");
}
