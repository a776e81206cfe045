//! Every error leaves as `application/problem+json` (RFC 9457), with a stable `code`.
//!
//! This is the one place where a domain error becomes an HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::core::error::{Error, FieldError};

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:ownlist:problem:{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable: what went wrong.
    pub code: String,
    /// For a person: what went wrong and how to fix it.
    pub detail: String,
    /// The input field at fault, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every invalid field, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The subscriber that already has this address, for `subscriber_exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<Uuid>,
    /// What was stored before an operation stopped part way, for `import_interrupted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stored: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
    field: Option<String>,
    errors: Vec<FieldError>,
    /// The members few problems have, boxed so that every `Result` stays small.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    existing_id: Option<Uuid>,
    stored: Option<serde_json::Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { status, code: code.into(), detail: detail.into(), field: None, errors: Vec::new(), extra: None }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid admin token as 'Authorization: Bearer TOKEN' (create one with `ownlist tokens create NAME`)",
        )
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// What was stored before the request stopped part way.
    pub fn stored(mut self, done: serde_json::Value) -> Self {
        self.extra.get_or_insert_default().stored = Some(done);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(errors) => {
                let detail = error_text(&errors);
                Self {
                    field: errors.first().map(|e| e.field.clone()),
                    errors,
                    ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail)
                }
            }
            Error::Malformed { code, detail } => Self::new(StatusCode::BAD_REQUEST, code, detail),
            Error::NotFound { what } => {
                Self::new(StatusCode::NOT_FOUND, format!("{what}_not_found"), format!("no such {what}"))
            }
            Error::Conflict { code, detail, existing_id, field } => {
                let extra = Some(Box::new(Extra { existing_id, stored: None }));
                Self { extra, field: field.map(str::to_owned), ..Self::new(StatusCode::CONFLICT, code, detail) }
            }
            Error::Database(e) if crate::store::is_storage_full(&e) => {
                crate::store::count_error(&e);
                tracing::error!(error = %e, "the database's storage is full");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the database's disk is full: nothing of this request was stored; send it again once there is space",
                )
            }
            Error::Database(e) => {
                crate::store::count_error(&e);
                internal(&e)
            }
            Error::Interrupted { done, cause } => {
                let why = match &*cause {
                    Error::Database(e) if crate::store::is_storage_full(e) => "the database's disk is full".to_owned(),
                    other => other.to_string(),
                };
                let status = Self::from(*cause).status;
                let detail = format!(
                    "stopped part way ({why}): what `stored` counts was stored, no row after it; send it again \
                     once fixed (what was stored is updated, not duplicated)"
                );
                Self::new(status, "import_interrupted", detail).stored(done)
            }
            Error::Other(e) => internal(&*e),
        }
    }
}

fn error_text(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}

fn internal(error: &dyn std::error::Error) -> ApiError {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %chain, "request failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "something went wrong on our side; it has been logged",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("urn:ownlist:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail,
            field: self.field,
            errors: self.errors,
            existing_id: self.extra.as_ref().and_then(|e| e.existing_id),
            stored: self.extra.and_then(|e| e.stored),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
