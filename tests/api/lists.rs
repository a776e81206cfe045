use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, expect_json, expect_problem, on_both_databases};

on_both_databases!(
    lists_are_created_read_changed_and_deleted,
    invalid_lists_are_refused_with_the_field_named,
    malformed_bodies_get_clear_4xx,
    lists_declared_in_workflow_files_are_created_and_kept_as_declared,
    an_invalid_file_keeps_its_workflow_and_pages_while_valid_files_load,
    a_list_in_use_by_a_page_or_a_workflow_cannot_be_deleted,
);

async fn a_list_in_use_by_a_page_or_a_workflow_cannot_be_deleted(app: TestApp) {
    app.install_workflow("shop", DECLARES).await;
    app.install_workflow("hello", USES).await;
    let refused = expect_problem(app.delete("/api/v1/lists/leads").await, StatusCode::CONFLICT, "list_in_use").await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("page 'join'") && detail.contains("workflow 'hello'"), "{detail}");
    let page = app.client.get(app.url("/p/join")).header("user-agent", "Mozilla/5.0 test").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the page still works");
    // Once nothing uses it, it can go.
    std::fs::remove_file(app.workflows_dir.join("shop.yaml")).unwrap();
    std::fs::remove_file(app.workflows_dir.join("hello.yaml")).unwrap();
    app.install_workflow("other", "lists:\n  - { slug: other, name: Other }\n").await;
    assert_eq!(app.delete("/api/v1/lists/leads").await.status(), StatusCode::NO_CONTENT);
}

const DECLARES: &str = "lists:
  - slug: leads
    name: Leads
    description: From the shop's Instagram
pages:
  - slug: join
    title: Join us
    list: leads
";

const USES: &str = "name: Hello
trigger: { subscribed: leads }
steps:
  - id: hello
    email: { subject: Hello, template: emails/welcome.html }
";

async fn lists_declared_in_workflow_files_are_created_and_kept_as_declared(app: TestApp) {
    // A workflow in one file uses the list another file declares: both load on an empty database.
    std::fs::write(app.workflows_dir.join("hello.yaml"), USES).unwrap();
    let loaded = app.install_workflow("shop", DECLARES).await;
    assert_eq!(loaded["lists_created"], json!(["leads"]), "{loaded}");
    assert_eq!(loaded["workflows"], json!(["hello"]), "{loaded}");
    let list = expect_json(app.get("/api/v1/lists/leads").await, StatusCode::OK).await;
    assert_eq!(list["name"], "Leads");
    assert_eq!(list["description"], "From the shop's Instagram");
    assert_eq!(list["double_opt_in"], true);
    app.create_subscriber(json!({"email": "ada@example.com", "lists": ["leads"], "consent": {"email": true}})).await;

    // A change in the file is applied to the list; its members stay.
    let renamed = DECLARES
        .replace("name: Leads", "name: Shop leads")
        .replace("    description: From the shop's Instagram\n", "    double_opt_in: false\n");
    let loaded = app.install_workflow("shop", &renamed).await;
    assert_eq!(loaded["lists_updated"], json!(["leads"]), "{loaded}");
    let list = expect_json(app.get("/api/v1/lists/leads").await, StatusCode::OK).await;
    assert_eq!(
        (list["name"].as_str(), list["description"].is_null(), list["double_opt_in"].as_bool()),
        (Some("Shop leads"), true, Some(false))
    );
    assert_eq!(list["members"]["confirmed"], 1);

    // Loading the same files again changes nothing; dropping the declaration deletes nothing.
    let again = app.install_workflow("shop", &renamed).await;
    assert_eq!((again["lists_created"].clone(), again["lists_updated"].clone()), (json!([]), json!([])));
    app.install_workflow("shop", "pages:\n  - slug: join\n    title: Join us\n    list: leads\n").await;
    let list = expect_json(app.get("/api/v1/lists/leads").await, StatusCode::OK).await;
    assert_eq!(list["members"]["confirmed"], 1, "the list and its members stay");

    // A list neither stored nor declared is an error at its line, with a hint from the declared ones.
    std::fs::write(app.workflows_dir.join("typo.yaml"), USES.replace("leads", "laeds").replace("hello", "typo"))
        .unwrap();
    let response = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(problem["errors"][0]["field"].as_str().unwrap().ends_with("typo.yaml:2:24"), "{problem}");
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("unknown list 'laeds' (did you mean 'leads'?)"), "{message}");
    std::fs::remove_file(app.workflows_dir.join("typo.yaml")).unwrap();

    // Declared twice with other settings: the second file is reported and changes nothing.
    app.install_workflow("shop", &renamed).await;
    std::fs::write(app.workflows_dir.join("zz.yaml"), "lists:\n  - slug: leads\n    name: Other\n").unwrap();
    let response = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("also declared in"), "{problem}");
    assert_eq!(expect_json(app.get("/api/v1/lists/leads").await, StatusCode::OK).await["name"], "Shop leads");
}

async fn an_invalid_file_keeps_its_workflow_and_pages_while_valid_files_load(app: TestApp) {
    app.install_workflow("shop", DECLARES).await;
    app.install_workflow("hello", USES).await;
    // The shop's file breaks, the hello workflow changes: hello loads, the shop's page stays up.
    std::fs::write(app.workflows_dir.join("shop.yaml"), "lists: [\n").unwrap();
    std::fs::write(app.workflows_dir.join("hello.yaml"), USES.replace("subject: Hello", "subject: Hi")).unwrap();
    let response = app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(problem["errors"][0]["field"].as_str().unwrap().contains("shop.yaml:"), "{problem}");
    assert_eq!(expect_json(app.get("/api/v1/workflows/hello").await, StatusCode::OK).await["version"], 2);
    let page = app.client.get(app.url("/p/join")).header("user-agent", "Mozilla/5.0 test").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the broken file's page stays up");
    let ready = expect_json(app.get("/readyz").await, StatusCode::OK).await;
    assert!(ready["workflow_problems"][0]["at"].as_str().unwrap().contains("shop.yaml:"), "{ready}");

    // The broken file's workflow keeps its version; a workflow never valid does not run.
    std::fs::write(app.workflows_dir.join("hello.yaml"), "name: Hello\ntrigger: { subscribed: leads }\nsteps: []\n")
        .unwrap();
    std::fs::write(
        app.workflows_dir.join("never.yaml"),
        "name: Never\ntrigger: { event: x }\nsteps:\n  - id: a\n    wait: forever\n",
    )
    .unwrap();
    app.request(reqwest::Method::POST, "/api/v1/workflows/reload").send().await.unwrap();
    let listed = expect_json(app.get("/api/v1/workflows").await, StatusCode::OK).await;
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["hello"], "{listed}");
    assert_eq!(listed["data"][0]["version"], 2);
    assert_eq!(listed["data"][0]["status"], "active");
    assert_eq!(listed["problems"].as_array().unwrap().len(), 3, "{listed}");

    // Mended, and the file gone: its pages go with it.
    std::fs::remove_file(app.workflows_dir.join("shop.yaml")).unwrap();
    std::fs::write(app.workflows_dir.join("hello.yaml"), USES).unwrap();
    std::fs::remove_file(app.workflows_dir.join("never.yaml")).unwrap();
    let loaded = app.install_workflow("hello", USES).await;
    assert_eq!(loaded["problems"], json!([]));
    let gone = app.client.get(app.url("/p/join")).header("user-agent", "Mozilla/5.0 test").send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

async fn lists_are_created_read_changed_and_deleted(app: TestApp) {
    let response = app
        .post("/api/v1/lists", &json!({"slug": "guide-leads", "name": "Guide leads", "description": "From Instagram"}))
        .await;
    assert_eq!(response.headers()["location"], "/api/v1/lists/guide-leads");
    let created = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(created["slug"], "guide-leads");
    assert_eq!(created["double_opt_in"], true, "double opt-in is the safe default");
    assert_eq!(created["members"]["confirmed"], 0);

    app.create_subscriber(json!({"email": "a@example.com", "lists": ["guide-leads"]})).await;
    let one = expect_json(app.get("/api/v1/lists/guide-leads").await, StatusCode::OK).await;
    assert_eq!(one["members"]["confirmed"], 1);

    let changed = expect_json(
        app.patch("/api/v1/lists/guide-leads", &json!({"name": "Guide", "description": null, "double_opt_in": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["name"], "Guide");
    assert_eq!(changed["description"], serde_json::Value::Null);
    assert_eq!(changed["double_opt_in"], false);

    let renamed =
        expect_json(app.patch("/api/v1/lists/guide-leads", &json!({"slug": "guide"})).await, StatusCode::OK).await;
    assert_eq!(renamed["slug"], "guide");
    expect_problem(app.get("/api/v1/lists/guide-leads").await, StatusCode::NOT_FOUND, "list_not_found").await;

    app.create_list("news").await;
    let all = expect_json(app.get("/api/v1/lists").await, StatusCode::OK).await;
    let slugs: Vec<&str> = all["data"].as_array().unwrap().iter().map(|l| l["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["guide", "news"]);

    let response = app.delete("/api/v1/lists/guide").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_problem(app.get("/api/v1/lists/guide").await, StatusCode::NOT_FOUND, "list_not_found").await;
    expect_problem(app.delete("/api/v1/lists/guide").await, StatusCode::NOT_FOUND, "list_not_found").await;
    assert_eq!(app.count("memberships").await, 0, "deleting a list deletes its memberships");
    assert_eq!(app.count("subscribers").await, 1, "…but not its subscribers");
}

async fn invalid_lists_are_refused_with_the_field_named(app: TestApp) {
    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "Guide Leads", "name": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "slug");

    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "ok", "name": "  "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["field"], "name");

    app.create_list("taken").await;
    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "taken", "name": "again"})).await,
        StatusCode::CONFLICT,
        "list_exists",
    )
    .await;
    assert_eq!(problem["field"], "slug");
    app.create_list("other").await;
    expect_problem(
        app.patch("/api/v1/lists/other", &json!({"slug": "taken"})).await,
        StatusCode::CONFLICT,
        "list_exists",
    )
    .await;
    assert_eq!(app.count("lists").await, 2);
}

async fn malformed_bodies_get_clear_4xx(app: TestApp) {
    let response = app
        .request(reqwest::Method::POST, "/api/v1/lists")
        .header("content-type", "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;

    let response = app.request(reqwest::Method::POST, "/api/v1/lists").body("slug=x").send().await.unwrap();
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "x", "name": "x", "colour": "red"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");

    let problem = expect_problem(
        app.post("/api/v1/lists", &json!({"slug": "x", "name": 7})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    assert_eq!(problem["field"], "name");

    let huge = "x".repeat(2 * 1024 * 1024);
    let response = app.post("/api/v1/lists", &json!({"slug": "x", "name": huge})).await;
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    expect_problem(app.get("/api/v1/nowhere").await, StatusCode::NOT_FOUND, "route_not_found").await;
    let response = app.request(reqwest::Method::PUT, "/api/v1/lists").send().await.unwrap();
    expect_problem(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_eq!(app.count("lists").await, 0, "nothing was written by a bad request");
}
