//! The domain's error type. HTTP status codes are chosen in one place, `web::error`; [`Reason`] is why
//! one value was refused, before anyone knows which field or file it came from.

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

/// Why one value was refused (a field, a setting, a line of a workflow, a message that cannot be
/// sent to someone), in words for whoever wrote it. The caller says where: a [`FieldError`]'s
/// field, a setting's name, a `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{0}")]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A [`Reason`] written as `format!` takes it: `Err(reason!("'{text}' is not a slug"))`.
macro_rules! reason {
    ($($arg:tt)*) => {
        $crate::core::error::Reason::new(format!($($arg)*))
    };
}
pub(crate) use reason;

impl std::ops::Deref for Reason {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.0
    }
}

fn describe_fields(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}
