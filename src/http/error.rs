//! HTTP errors: a status and a message for the client, and an internal cause
//! that is logged but never sent (no paths or SQL leak to clients). Boot and
//! node endpoints answer in plain text (iPXE and shell scripts print it); the
//! API answers `{"error": "..."}` ([`ApiError`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::StoreError;

#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub public: String,
    pub internal: Option<String>,
}

impl HttpError {
    pub fn new(status: StatusCode, public: impl Into<String>) -> HttpError {
        HttpError {
            status,
            public: public.into(),
            internal: None,
        }
    }

    pub fn bad_request(public: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, public)
    }

    pub fn not_found(public: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, public)
    }

    pub fn conflict(public: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::CONFLICT, public)
    }

    /// Well-formed input that cannot be applied (an unknown bootenv, a bad field).
    pub fn unprocessable(public: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, public)
    }

    pub(crate) fn log(&self) {
        if let Some(cause) = &self.internal {
            tracing::error!(status = %self.status, %cause, "{}", self.public);
        } else {
            tracing::info!(status = %self.status, "{}", self.public);
        }
    }

    /// A failure on rackboot's side; `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> HttpError {
        HttpError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            public: "internal error; see the rackboot log".into(),
            internal: Some(cause.to_string()),
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        match e {
            StoreError::NoSuchNode(mac) => HttpError::not_found(format!("no node with MAC {mac}")),
            StoreError::Refused(why) => HttpError::conflict(why.to_string()),
            StoreError::Conflict(why) => HttpError::conflict(why),
            // Nothing wrong with the request: the disk under the state
            // directory is full or failing. Not done, so never a 2xx; 503
            // tells a client to try again later.
            e @ StoreError::Unsaved(_) => HttpError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                public: "not saved: rackboot cannot write to its state directory (full?); \
                         try again once it can (rackboot_store_unsaved_changes in /metrics)"
                    .into(),
                internal: Some(e.to_string()),
            },
            // The database of a shared store is away: nothing was done, and
            // the same request may succeed shortly.
            e if e.is_unavailable() => HttpError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                public: "the store cannot take this change now (is its database reachable? see \
                         /healthz); nothing was changed, try again"
                    .into(),
                internal: Some(e.to_string()),
            },
            other => HttpError::internal(other),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        self.log();
        (self.status, format!("error: {}\n", self.public)).into_response()
    }
}

/// An [`HttpError`] as the API sends it: `{"error": "..."}`, and
/// `WWW-Authenticate: Bearer` on a 401 (RFC 6750).
#[derive(Debug)]
pub struct ApiError(pub HttpError);

/// The body of every API error.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What failed and what to do about it.
    pub error: String,
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> ApiError {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        e.log();
        let mut resp = (e.status, axum::Json(ErrorBody { error: e.public })).into_response();
        if e.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StoreError;

    /// A write the store could not make durable is never answered as done,
    /// and the client is told to come back rather than that it erred.
    #[test]
    fn an_unsaved_write_is_a_503_without_the_cause() {
        let e = HttpError::from(StoreError::Unsaved(
            "cannot journal /var/lib/rackboot: No space left on device".into(),
        ));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.public.contains("/var/lib"), "{}", e.public);
        assert!(e.internal.unwrap().contains("No space left"));
        let e = HttpError::from(StoreError::Commit("disk I/O error".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
