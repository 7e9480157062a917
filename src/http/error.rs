//! HTTP errors: a status and a message for the client, and an internal cause
//! that is logged but never sent (no paths or SQL leak to clients).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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

    /// A failure on rackboot's side; `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> HttpError {
        HttpError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            public: "internal error; see the rackboot log".into(),
            internal: Some(cause.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for HttpError {
    fn from(e: crate::store::StoreError) -> HttpError {
        match e {
            crate::store::StoreError::NoSuchNode(mac) => {
                HttpError::not_found(format!("no node with MAC {mac}"))
            }
            other => HttpError::internal(other),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            tracing::error!(status = %self.status, %cause, "{}", self.public);
        } else {
            tracing::info!(status = %self.status, "{}", self.public);
        }
        (self.status, format!("error: {}\n", self.public)).into_response()
    }
}
