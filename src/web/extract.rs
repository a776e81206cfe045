//! Extractors whose rejections are problem+json like every other error.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// JSON that does not parse is a 400; JSON that parses but does not fit (a missing field, a
    /// number for a string, an unknown kind of condition) is a 422 that names the field.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(&rejection)),
        };
        if let Some(field) = nul_at(&value, "") {
            let detail = format!("{field}: contains a NUL character, which cannot be stored");
            let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail);
            return Err(if field.is_empty() { error } else { error.with_field(field) });
        }
        serde_path_to_error::deserialize(value).map(Self).map_err(|e| {
            let field = e.path().to_string();
            let detail = e.into_inner().to_string();
            let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", format!("{field}: {detail}"));
            if field == "." { error } else { error.with_field(field) }
        })
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than 1 MiB")
        }
        other => ApiError::new(other.status(), "invalid_body", other.body_text()),
    }
}

/// Where a NUL character is in a JSON value (in a string or a key), as a field path.
fn nul_at(value: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(at.to_owned()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_at(v, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if k.contains('\0') { Some(path) } else { nul_at(v, &path) }
        }),
        _ => None,
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A NUL character fits a string's shape, but nothing stored has one (PostgreSQL cannot
        // even compare with it): a 422 naming the parameter.
        if let Some(query) = parts.uri.query().filter(|q| q.contains("%00"))
            && let Some((name, _)) =
                url::form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(crate::core::error::Error::field(
                name.replace('\0', ""),
                "contains a NUL character (%00), which no stored value has",
            )
            .into());
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let detail = e.body_text();
                let detail = detail.strip_prefix("Failed to deserialize query string: ").unwrap_or(&detail).to_owned();
                Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail))
            }
            Err(other) => Err(ApiError::new(other.status(), "invalid_query", other.body_text())),
        }
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
            }
            Err(other) => Err(ApiError::new(other.status(), "invalid_path", other.body_text())),
        }
    }
}

/// A request's body, read only up to `limit` bytes: more is a 413, a body that breaks off a 400.
/// Call it after the request is authenticated from its headers.
pub async fn body_at_most(request: axum::extract::Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit).await.map_err(|e| {
        let length_limit = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if length_limit {
            too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", "the body could not be read whole")
        }
    })
}
