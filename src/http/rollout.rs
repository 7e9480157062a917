//! `/api/v1/rollouts`: start a rollout (a bootenv taken across a fleet, a
//! few nodes at a time), list and show them, and pause, resume or abort
//! one. The work is the control layer's (`control::rollout`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{HttpContext, HttpError};
use crate::control::admin::Actor;
use crate::control::rollout::{RolloutError, Start, Steer};
use crate::model::{Budget, Hook, Rollout, RolloutSpec};

/// How long a hook may run, unless the request says.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a node may take from its reboot to `installed`/`configured`,
/// unless the request says.
const DEADLINE: Duration = Duration::from_secs(3 * 3600);

/// What `POST /api/v1/rollouts` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// A label selector naming the fleet, e.g. `role=builder`.
    selector: String,
    /// The bootenv each node boots (once, unless `for`).
    bootenv: String,
    /// Boot it for this long (`2h`) instead of once.
    #[serde(rename = "for")]
    for_: Option<String>,
    /// How many nodes go first, alone (default 0).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    canary: u32,
    /// Nodes out of service at once, a count (`2`) or a share (`10%`),
    /// counting nodes of the fleet already failed or unreachable.
    max_unavailable: String,
    /// Failed nodes at which the rollout pauses itself (default 1).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    max_failed: Option<u32>,
    /// A hook named in `[rollout.hooks]`, or an http(s) URL POSTed the node.
    drain: Option<String>,
    undrain: Option<String>,
    /// How long a hook may run (default 30m).
    hook_timeout: Option<String>,
    /// How long a node may take from its reboot to `installed` or
    /// `configured` (default 3h).
    deadline: Option<String>,
}

/// A count as JSON Schema has it: any number with no fraction (`2`, `2.0`).
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = f64::deserialize(d)?;
    if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(serde::de::Error::custom(format!(
            "{n} is not a count (0, 1, 2…)"
        )))
    }
}

fn whole_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "whole")] u32);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

fn duration(field: &str, text: &Option<String>, default: Duration) -> Result<u64, HttpError> {
    let d = match text {
        None => default,
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            HttpError::unprocessable(format!(
                "field `{field}`: `{t}` is not a duration ({e}); e.g. 90m, 2h"
            ))
        })?,
    };
    if d.is_zero() {
        return Err(HttpError::unprocessable(format!(
            "field `{field}`: must be longer than 0"
        )));
    }
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<RolloutError> for HttpError {
    fn from(e: RolloutError) -> HttpError {
        match e {
            RolloutError::Invalid(m) => HttpError::unprocessable(m),
            RolloutError::NoSuch(id) => HttpError::not_found(format!("no rollout {id}")),
            e @ RolloutError::Refused { .. } => HttpError::conflict(e.to_string()),
            RolloutError::Store(e) => e.into(),
        }
    }
}

/// `POST /api/v1/rollouts`: starts a rollout. 201 with the rollout (its
/// nodes in the order they go, skipped ones with why); 400 for a body that
/// does not parse; 422, naming the field, for a bad value: an unknown
/// bootenv or hook, a selector that matches nothing, a bad duration or
/// budget.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts", request_body = RolloutRequest,
    responses((status = 201, body = Rollout, description = "The rollout, started"),
              (status = 400, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody, description = "A bad field, named")))]
pub async fn start(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let req: RolloutRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(format!(
            "expected {{\"selector\": \"role=builder\", \"bootenv\": \"…\", \"max_unavailable\": \"10%\", …}}: {e}"
        ))
    })?;
    let max_unavailable: Budget = req
        .max_unavailable
        .parse()
        .map_err(|e| HttpError::unprocessable(format!("field `max_unavailable`: {e}")))?;
    let spec = RolloutSpec {
        selector: req.selector,
        bootenv: req.bootenv,
        bootenv_for_ms: match &req.for_ {
            Some(_) => Some(duration("for", &req.for_, DEADLINE)?),
            None => None,
        },
        canary: req.canary,
        max_unavailable,
        max_failed: req.max_failed.unwrap_or(1),
        drain: req.drain.as_deref().map(Hook::parse),
        undrain: req.undrain.as_deref().map(Hook::parse),
        hook_timeout_ms: duration("hook_timeout", &req.hook_timeout, HOOK_TIMEOUT)?,
        deadline_ms: duration("deadline", &req.deadline, DEADLINE)?,
    };
    let rollout = ctx.control.start_rollout(&actor, Start { spec }).await?;
    Ok((StatusCode::CREATED, Json(rollout)).into_response())
}

/// `GET /api/v1/rollouts`: every rollout, oldest first.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts",
    responses((status = 200, body = Vec<Rollout>)))]
pub async fn list(State(ctx): State<Arc<HttpContext>>) -> Result<Json<Vec<Rollout>>, HttpError> {
    Ok(Json(ctx.control.rollouts().await?))
}

/// `GET /api/v1/rollouts/<id>`: 200, or 404.
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts",
    params(("id" = String, Path, description = "The rollout's id, e.g. r-3")),
    responses((status = 200, body = Rollout), (status = 404, body = super::error::ErrorBody)))]
pub async fn show(
    State(ctx): State<Arc<HttpContext>>,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, HttpError> {
    match ctx.control.rollout_shown(&id).await? {
        Some(r) => Ok(Json(r)),
        None => Err(RolloutError::NoSuch(id).into()),
    }
}

/// `POST /api/v1/rollouts/<id>/<pause|resume|abort>`: 200 with the rollout;
/// 404 for an unknown rollout or action; 409 when the rollout is over, or
/// already as asked. Pausing lets nodes in flight finish their step;
/// resuming counts failures afresh and puts failed canaries back in line;
/// aborting stops every node where it is.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/{action}", tag = "rollouts",
    params(("id" = String, Path, description = "The rollout's id"),
           ("action" = String, Path, description = "pause, resume or abort")),
    responses((status = 200, body = Rollout), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn steer(
    State(ctx): State<Arc<HttpContext>>,
    Extension(actor): Extension<Actor>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Rollout>, HttpError> {
    let steer = match action.as_str() {
        "pause" => Steer::Pause,
        "resume" => Steer::Resume,
        "abort" => Steer::Abort,
        other => {
            return Err(HttpError::not_found(format!(
                "no rollout action `{other}` (pause, resume, abort)"
            )));
        }
    };
    Ok(Json(ctx.control.steer_rollout(&actor, &id, steer).await?))
}
