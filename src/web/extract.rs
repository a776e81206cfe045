//! Extractors whose rejections are problem+json like every other error, and the client's address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::config::Config;

/// The client's address: the socket's, or behind a trusted proxy (`trust_proxy`) the last
/// `X-Forwarded-For` entry. `None` when neither is known (a router served without a socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

impl ClientAddress {
    pub fn new(trust_proxy: bool, headers: &HeaderMap, socket: Option<SocketAddr>) -> Self {
        if trust_proxy
            && let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
            && let Some(last) = forwarded.rsplit(',').next().and_then(|ip| ip.trim().parse().ok())
        {
            return Self(Some(last));
        }
        Self(socket.map(|addr| addr.ip()))
    }
}

impl<S> FromRequestParts<S> for ClientAddress
where
    Arc<Config>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let socket = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
        Ok(Self::new(Arc::<Config>::from_ref(state).trust_proxy, &parts.headers, socket))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_client_is_the_socket_unless_a_trusted_proxy_says_otherwise() {
        let socket: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let headers = forwarded("203.0.113.9, 198.51.100.4");
        // Not behind a proxy: a header anyone can send changes nothing.
        assert_eq!(ClientAddress::new(false, &headers, Some(socket)).0, Some(socket.ip()));
        // Behind one: the last entry, the one the proxy itself added.
        assert_eq!(ClientAddress::new(true, &headers, Some(socket)).0, "198.51.100.4".parse().ok());
        // A header that is no address falls back to the socket.
        assert_eq!(ClientAddress::new(true, &forwarded("unknown"), Some(socket)).0, Some(socket.ip()));
        assert_eq!(ClientAddress::new(true, &HeaderMap::new(), None).0, None);
    }
}
