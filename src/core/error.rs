//! The domain's error type. HTTP status codes are chosen in one place, `http::error`.

use serde::Serialize;
use uuid::Uuid;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is well-formed but some fields are invalid.
    #[error("{}", describe_fields(.0))]
    Invalid(Vec<FieldError>),
    /// The input cannot be read at all (malformed CSV header, wrong encoding, …).
    #[error("{detail}")]
    Malformed { code: &'static str, detail: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The request contradicts what is stored (a duplicate address, a suppressed address, …).
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String, existing_id: Option<Uuid>, field: Option<&'static str> },
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// A long operation (an import) stopped part way: `done` is what was stored before `cause`.
    #[error("stopped part way: {cause}")]
    Interrupted { done: serde_json::Value, cause: Box<Error> },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

fn describe_fields(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}
