//! Every error leaves as `application/problem+json` (RFC 9457), with a stable `code`.
//!
//! This is the one place where a domain error becomes an HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, FieldError};

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
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
    field: Option<String>,
    errors: Vec<FieldError>,
    existing_id: Option<Uuid>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { status, code: code.into(), detail: detail.into(), field: None, errors: Vec::new(), existing_id: None }
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
                Self { existing_id, field: field.map(str::to_owned), ..Self::new(StatusCode::CONFLICT, code, detail) }
            }
            Error::Database(e) => internal(&e),
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
            existing_id: self.existing_id,
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
