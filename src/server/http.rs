//! HTTP/1.1 (and HTTPS) on hyper: connection handling, limits, routing to [`State`].
//! Long-polls are futures, not threads, so hundreds of waiting agents cost little; header
//! and body read timeouts keep clients that send nothing from holding anything but a socket.

use super::state::{ApiErr, ApiResult, State};
use crate::proto::{self, API};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// How long a client may take to send its headers, then its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest long-poll.
pub const MAX_WAIT: u64 = 60;

type Resp = Response<Full<Bytes>>;

fn json<T: Serialize>(status: u16, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(e: ApiErr) -> Resp {
    json(
        e.status,
        &proto::ApiError {
            error: e.message,
            code: e.code.to_owned(),
        },
    )
}

fn document(content_type: &str, body: Vec<u8>) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiErr::new(400, "bad-json", format!("malformed JSON body: {e}")))
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

fn wait_param(query: Option<&str>) -> u64 {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_WAIT)
}

/// Runs a blocking piece of work (SQLite, signing) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiErr::new(500, "internal", e.to_string()))?
}

pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let token = bearer(&req);
    let body = match tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Ok(error(ApiErr::new(
                413,
                "too-large",
                format!("request body over {MAX_BODY} bytes"),
            )));
        }
        Ok(Err(e)) => {
            return Ok(error(ApiErr::new(
                400,
                "bad-request",
                format!("reading the body: {e}"),
            )));
        }
        Err(_) => {
            return Ok(error(ApiErr::new(
                408,
                "timeout",
                "the request body was not sent in time",
            )));
        }
    };
    let result = route(state, method, &path, query.as_deref(), token, body).await;
    Ok(result.unwrap_or_else(error))
}

async fn route(
    state: Arc<State>,
    method: Method,
    path: &str,
    query: Option<&str>,
    token: Option<String>,
    body: Bytes,
) -> ApiResult<Resp> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let api: Vec<&str> = path
        .strip_prefix(API)
        .map(|p| p.trim_start_matches('/').split('/').collect())
        .unwrap_or_default();
    let s = state.clone();
    match (&method, segments.as_slice(), api.as_slice()) {
        (&Method::GET, ["healthz"], _) => Ok(json(
            200,
            &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        )),
        (&Method::GET, ["ca", file], _) if file.ends_with(".crt") => {
            let id = file.trim_end_matches(".crt").to_owned();
            let pem = blocking(move || s.ca_certificate(&id)).await?;
            Ok(document("application/x-pem-file", pem.into_bytes()))
        }
        (&Method::GET, ["crl", file], _) if file.ends_with(".crl") || file.ends_with(".pem") => {
            let pem_wanted = file.ends_with(".pem");
            let id = file
                .trim_end_matches(".crl")
                .trim_end_matches(".pem")
                .to_owned();
            let (der, pem) = blocking(move || s.crl(&id)).await?;
            Ok(if pem_wanted {
                document("application/x-pem-file", pem.into_bytes())
            } else {
                document("application/pkix-crl", der)
            })
        }
        (&Method::POST, _, ["enroll"]) => {
            let req = parse(&body)?;
            blocking(move || s.enroll(req)).await?;
            Ok(json(200, &serde_json::json!({"enrolled": true})))
        }
        (&Method::POST, _, ["agent", "challenge"]) => {
            let req = parse(&body)?;
            Ok(json(200, &blocking(move || s.challenge(req)).await?))
        }
        (&Method::POST, _, ["agent", "login"]) => {
            let req = parse(&body)?;
            Ok(json(200, &blocking(move || s.login(req)).await?))
        }
        (&Method::GET, _, ["agent", "poll"]) => {
            let (ca_id, holder_id) = state.agent(token.as_deref())?;
            let wait = wait_param(query);
            let mut changes = state.subscribe();
            let (c, h) = (ca_id.clone(), holder_id.clone());
            blocking(move || {
                s.seen(&c, &h);
                Ok(())
            })
            .await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let sessions = state.offers(&ca_id, &holder_id);
                if !sessions.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(json(200, &proto::Poll { sessions }));
                }
                if tokio::time::timeout_at(deadline, changes.changed())
                    .await
                    .is_err()
                {
                    return Ok(json(200, &proto::Poll::default()));
                }
            }
        }
        (&Method::POST, _, ["sessions", id, "contribute"]) => {
            let (ca_id, holder_id) = state.agent(token.as_deref())?;
            let req = parse(&body)?;
            let id = (*id).to_owned();
            Ok(json(
                200,
                &blocking(move || s.contribute(&ca_id, &holder_id, &id, req)).await?,
            ))
        }
        (&Method::POST, _, ["sessions", id, "decline"]) => {
            let (ca_id, holder_id) = state.agent(token.as_deref())?;
            let req = parse(&body)?;
            let id = (*id).to_owned();
            Ok(json(
                200,
                &blocking(move || s.decline(&ca_id, &holder_id, &id, req)).await?,
            ))
        }
        (&Method::POST, _, ["sessions"]) => {
            let operator = blocking(move || s.operator(token.as_deref())).await?;
            let req = parse(&body)?;
            let s = state.clone();
            Ok(json(
                201,
                &blocking(move || s.create_session(&operator, req)).await?,
            ))
        }
        (&Method::GET, _, ["sessions", id]) => {
            let id = (*id).to_owned();
            blocking(move || s.operator(token.as_deref())).await?;
            let wait = wait_param(query);
            let mut changes = state.subscribe();
            let s = state.clone();
            let i = id.clone();
            let first = blocking(move || s.status(&i)).await?;
            if wait == 0 || first.state != proto::SessionState::Waiting {
                return Ok(json(200, &first));
            }
            let _ = tokio::time::timeout(Duration::from_secs(wait), changes.changed()).await;
            let s = state.clone();
            Ok(json(200, &blocking(move || s.status(&id)).await?))
        }
        (&Method::POST, _, ["sessions", id, "cancel"]) => {
            let id = (*id).to_owned();
            let operator = blocking(move || s.operator(token.as_deref())).await?;
            let s = state.clone();
            Ok(json(
                200,
                &blocking(move || s.cancel(&operator, &id)).await?,
            ))
        }
        (&Method::POST, _, ["cas"]) => {
            let operator = blocking(move || s.operator(token.as_deref())).await?;
            let req = parse(&body)?;
            let s = state.clone();
            Ok(json(
                201,
                &blocking(move || s.register_ca(&operator, req)).await?,
            ))
        }
        (&Method::GET, _, ["cas"]) => {
            blocking(move || s.operator(token.as_deref())).await?;
            let s = state.clone();
            Ok(json(200, &blocking(move || s.cas()).await?))
        }
        _ => Err(ApiErr::new(
            404,
            "not-found",
            format!("no endpoint {method} {path}"),
        )),
    }
}
