//! The OpenAPI 3 document of the admin API, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ownlist admin API", description = "Subscribers, lists, consent, import and export, workflows and broadcasts. Every error is application/problem+json with a stable `code`."),
    paths(
        super::public::health::healthz,
        super::public::health::readyz,
        super::api::audit::list,
        super::api::stats::funnel,
        super::api::stats::workflow,
        super::api::stats::delivery,
        super::api::reach::reachability,
        super::api::lists::create,
        super::api::lists::all,
        super::api::lists::one,
        super::api::lists::update,
        super::api::lists::remove,
        super::api::subscribers::create,
        super::api::subscribers::list,
        super::api::subscribers::one,
        super::api::subscribers::update,
        super::api::subscribers::erase,
        super::api::subscribers::timeline,
        super::api::subscribers::export,
        super::api::transfer::import_csv,
        super::api::transfer::export_csv,
        super::api::workflows::all,
        super::api::workflows::one,
        super::api::workflows::pause,
        super::api::workflows::resume,
        super::api::workflows::reload,
        super::api::workflows::record_event,
        super::api::broadcasts::create,
        super::api::broadcasts::all,
        super::api::broadcasts::one,
        super::api::broadcasts::report,
        super::api::broadcasts::cancel,
        super::api::tokens::all,
        super::api::tokens::create,
        super::api::tokens::revoke,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "lists", description = "Named audiences with their opt-in rule"),
        (name = "subscribers", description = "The people you own a way to reach"),
        (name = "import and export", description = "CSV in and out; export then import round-trips"),
        (name = "workflows", description = "Drip workflows in force, their enrollments, and events that drive them"),
        (name = "broadcasts", description = "One-off messages to a list, through the same outbox as workflows"),
        (name = "stats", description = "Funnel, workflow and delivery figures from daily rollups; any of them as CSV"),
        (name = "tokens", description = "Admin tokens and their roles: viewer reads, editor changes and sends, admin also manages tokens and reads the audit log"),
        (name = "operations", description = "Health"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token from `ownlist tokens create NAME`"))
                    .build(),
            ),
        );
    }
}

pub fn routes() -> Router<AppState> {
    let document = std::sync::Arc::new(document());
    Router::new().route("/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
}

/// The document as served: the annotations' output with what holds for every operation written
/// in once: each `operationId` unique (the resource, then the handler: `lists_create`), every
/// error an `application/problem+json` body, a 401 on each operation that wants a token, a 400
/// (and 422) where a path or query parameter can be malformed, and a 400, 413, 415 and 422 on each
/// that takes a JSON body.
pub fn document() -> serde_json::Value {
    use serde_json::{Value, json};
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let problem = json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}});
    let error = |description: &str| json!({"description": description, "content": problem.clone()});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for (path, item) in paths.iter_mut() {
        let resource = path.trim_start_matches("/api/v1/").split('/').next().unwrap_or_default().replace('-', "_");
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut().filter_map(Value::as_object_mut) {
            if let Some(Value::String(id)) = operation.get_mut("operationId")
                && !path.starts_with(&format!("/{id}"))
                && !id.starts_with(&format!("{resource}_"))
            {
                *id = format!("{resource}_{id}");
            }
            let secured = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
            let takes_json = operation
                .get("requestBody")
                .and_then(|b| b.get("content"))
                .and_then(Value::as_object)
                .is_some_and(|c| c.contains_key("application/json"));
            let parameters_in = |place: &str| {
                operation
                    .get("parameters")
                    .and_then(Value::as_array)
                    .is_some_and(|ps| ps.iter().any(|p| p.get("in").and_then(Value::as_str) == Some(place)))
            };
            let (queried, addressed) = (parameters_in("query"), parameters_in("path"));
            let responses = operation.entry("responses").or_insert_with(|| json!({}));
            let Some(responses) = responses.as_object_mut() else { continue };
            for (status, response) in responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if let (true, Some(content)) = (is_error, response.get_mut("content").and_then(Value::as_object_mut))
                    && let Some(body) = content.remove("application/json")
                {
                    content.insert("application/problem+json".into(), body);
                }
            }
            if secured {
                responses.entry("401").or_insert_with(|| error("No token, or one that is not valid"));
            }
            if queried {
                responses.entry("400").or_insert_with(|| error("A query parameter is not valid"));
                responses.entry("422").or_insert_with(|| error("A query parameter is out of range; `field` names it"));
            }
            if addressed {
                responses
                    .entry("400")
                    .or_insert_with(|| error("A path parameter is not valid (an id that is no UUID)"));
            }
            if takes_json {
                responses.entry("400").or_insert_with(|| error("The body is not JSON"));
                responses.entry("413").or_insert_with(|| error("The body is larger than the limit"));
                responses.entry("415").or_insert_with(|| error("The body is not application/json"));
                responses.entry("422").or_insert_with(|| error("A field is not valid; `errors` names each"));
            }
        }
    }
    link_created(&mut doc, "/api/v1/subscribers", "subscribers", &["one", "update", "erase", "export", "timeline"]);
    link_created(&mut doc, "/api/v1/broadcasts", "broadcasts", &["one", "cancel"]);
    link_created(&mut doc, "/api/v1/lists", "lists", &["one", "update", "remove"]);
    doc
}

/// OpenAPI links from a `201 Created` to the operations on what it created, so that a client
/// (or a tool such as schemathesis) knows where the new `id` (or a list's `slug`) goes.
fn link_created(doc: &mut serde_json::Value, path: &str, resource: &str, operations: &[&str]) {
    let key = if resource == "lists" { "slug" } else { "id" };
    let links: serde_json::Map<String, serde_json::Value> = operations
        .iter()
        .map(|op| {
            let link = serde_json::json!({
                "operationId": format!("{resource}_{op}"),
                "parameters": {key: format!("$response.body#/{key}")},
            });
            (op.to_string(), link)
        })
        .collect();
    if let Some(created) = doc.pointer_mut(&format!("/paths/{}/post/responses/201", path.replace('/', "~1")))
        && let Some(created) = created.as_object_mut()
    {
        created.insert("links".into(), links.into());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    /// Every `$ref` in `value`.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// What validators of OpenAPI 3.1 documents check, and what the document promises: path
    /// parameters that name a `{…}` of their path (and each such one declared), one operation per
    /// `operationId`, every `$ref` resolved, errors as problem+json, 401 where a token is wanted.
    #[test]
    fn the_document_is_consistent() {
        let doc = super::document();
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
        let schemas: BTreeSet<String> = doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| format!("#/components/schemas/{k}"))
            .collect();
        let mut all_refs = Vec::new();
        refs(&doc, &mut all_refs);
        for r in &all_refs {
            assert!(schemas.contains(r), "unresolved {r}");
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let templated: BTreeSet<&str> = path.split('{').skip(1).filter_map(|rest| rest.split('}').next()).collect();
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let in_path: BTreeSet<&str> =
                    params.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect();
                assert_eq!(in_path, templated, "{method} {path}: path parameters");
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        for content_type in
                            response["content"].as_object().map(|c| c.keys().collect()).unwrap_or(vec![])
                        {
                            assert_eq!(content_type, "application/problem+json", "{method} {path} {status}");
                        }
                    }
                }
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                assert_eq!(secured, op["responses"].get("401").is_some(), "{method} {path}: 401");
            }
        }
        // Every link leads to an operation that takes the parameter it fills.
        let mut links = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for response in op["responses"].as_object().unwrap().values() {
                    for link in response["links"].as_object().into_iter().flat_map(|l| l.values()) {
                        let target = doc["paths"]
                            .as_object()
                            .unwrap()
                            .values()
                            .flat_map(|i| i.as_object().unwrap().values())
                            .find(|o| o["operationId"] == link["operationId"])
                            .unwrap_or_else(|| panic!("no operation {}", link["operationId"]));
                        for name in link["parameters"].as_object().unwrap().keys() {
                            assert!(
                                target["parameters"].as_array().unwrap().iter().any(|p| p["name"] == *name),
                                "{} takes no {name}",
                                link["operationId"]
                            );
                        }
                        links += 1;
                    }
                }
            }
        }
        assert_eq!(links, 10);
        // Every pattern is one of those the parsers are tested against.
        let mut patterns = Vec::new();
        collect_patterns(&doc, &mut patterns);
        assert!(patterns.len() > 20, "{}", patterns.len());
        for pattern in patterns {
            assert!(crate::core::values::schema::ALL.contains(&pattern.as_str()), "unknown pattern {pattern}");
        }
    }

    fn collect_patterns(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("pattern", serde_json::Value::String(p)) => out.push(p.clone()),
                        _ => collect_patterns(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
            _ => {}
        }
    }
}
