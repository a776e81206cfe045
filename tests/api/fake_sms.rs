//! A fake SMS provider on loopback: records each request and answers as told (by default
//! `201 {"sid": "SM1"}`, `SM2`, …, the shape both Twilio and the generic provider accept).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub authorization: String,
    pub content_type: String,
    pub body: String,
}

impl Request {
    /// A form field of the request.
    pub fn field(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    answers: Mutex<VecDeque<(u16, Value)>>,
}

pub struct FakeProvider {
    pub base: String,
    shared: Arc<Shared>,
}

async fn take(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let request = Request {
        path: uri.path().to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let count = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(request);
        requests.len()
    };
    let (status, body) = shared
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((201, json!({"sid": format!("SM{count}"), "id": format!("SM{count}")})));
    (StatusCode::from_u16(status).unwrap(), axum::Json(body))
}

impl FakeProvider {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(take).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, shared }
    }

    /// Answers the next request with this status and JSON body (then back to taking).
    pub fn answer(&self, status: u16, body: Value) {
        self.shared.answers.lock().unwrap().push_back((status, body));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }
}
