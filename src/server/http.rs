//! HTTP/1.1 (and HTTPS) on hyper: connection handling, limits, routing to [`State`].
//! Long-polls are futures, not threads, so thousands of waiting agents cost little; header
//! and body read timeouts keep clients that send nothing from holding anything but a socket.
//! Every request is authenticated from its headers before its body is read, and an address
//! that keeps failing to authenticate is refused (429) before any database access.

use super::guard::Refusal;
use super::ocsp;
use super::state::{ApiErr, ApiResult, State};
use crate::proto::{self, API};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted from an operator (CSRs, manifests).
pub const MAX_BODY: usize = 1 << 20;
/// Largest body from an agent or a stranger: a contribution is under 8 KiB.
pub const MAX_AGENT_BODY: usize = 64 << 10;
/// Most session ids an agent may ask a poll to skip.
pub const MAX_SKIP: usize = 64;
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

/// `skip=ID,ID,…`: offers the agent saw and will not answer (hex session ids).
fn skip_param(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("skip="))
        .flat_map(|v| v.split(','))
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .take(MAX_SKIP)
        .map(str::to_owned)
        .collect()
}

/// Runs a blocking piece of work (SQLite, signing) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiErr::new(500, "internal", e.to_string()))?
}

/// Who must be calling an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Nobody,
    Agent,
    Operator,
}

fn need(method: &Method, api: &[&str]) -> Need {
    match (method, api) {
        (&Method::GET, ["agent", "poll"])
        | (&Method::POST, ["sessions", _, "contribute" | "decline"]) => Need::Agent,
        (&Method::POST, ["sessions"])
        | (&Method::GET, ["sessions", _])
        | (&Method::POST, ["sessions", _, "cancel"])
        | (&Method::POST | &Method::GET, ["cas"])
        | (&Method::PUT, ["cas", _, "urls"]) => Need::Operator,
        _ => Need::Nobody,
    }
}

/// The authenticated caller.
#[derive(Debug)]
enum Caller {
    Nobody,
    Agent { ca_id: String, holder_id: String },
    Operator(String),
}

async fn authenticate(
    state: &Arc<State>,
    peer: IpAddr,
    need: Need,
    token: Option<String>,
) -> ApiResult<Caller> {
    let presented = token.is_some();
    let result = match need {
        Need::Nobody => return Ok(Caller::Nobody),
        Need::Agent => state
            .agent(token.as_deref())
            .map(|(ca_id, holder_id)| Caller::Agent { ca_id, holder_id }),
        Need::Operator => {
            let s = state.clone();
            blocking(move || s.operator(token.as_deref()))
                .await
                .map(Caller::Operator)
        }
    };
    if let Err(e) = &result
        && presented
        && e.code == "unauthorized"
    {
        state.refused(
            peer,
            Refusal::BogusBearer,
            None,
            "auth-refused",
            "unknown bearer token",
        );
    }
    result
}

pub async fn handle(
    state: Arc<State>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let api: Vec<&str> = path
        .strip_prefix(API)
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .map(|p| p.trim_start_matches('/').split('/').collect())
        .unwrap_or_default();
    let need = need(&method, &api);
    if !api.is_empty() && !state.limiter.allows(peer) {
        state.refused(
            peer,
            Refusal::RateLimited,
            None,
            "auth-refused",
            "too many failed authentications",
        );
        return Ok(error(ApiErr::new(
            429,
            "rate-limited",
            format!(
                "too many failed authentications from {peer}; try again in a minute \
                 (hint: check the agent's configuration or the operator's API token)"
            ),
        )));
    }
    let caller = match authenticate(&state, peer, need, bearer(&req)).await {
        Ok(c) => c,
        Err(e) => return Ok(error(e)),
    };
    let limit = if need == Need::Operator {
        MAX_BODY
    } else {
        MAX_AGENT_BODY
    };
    let body =
        match tokio::time::timeout(READ_TIMEOUT, Limited::new(req.into_body(), limit).collect())
            .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                    && path.starts_with("/ocsp/") =>
            {
                let status = x509_ocsp::OcspResponseStatus::MalformedRequest;
                return Ok(document(ocsp::CONTENT_TYPE, ocsp::error_der(status)));
            }
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Ok(error(ApiErr::new(
                    413,
                    "too-large",
                    format!("request body over {limit} bytes"),
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
    let request = Authenticated {
        method,
        path: &path,
        api: &api,
        query: query.as_deref(),
        peer,
        caller,
        body,
    };
    let result = route(state, request).await;
    Ok(result.unwrap_or_else(error))
}

/// A request whose caller is authenticated and whose body is read.
struct Authenticated<'a> {
    method: Method,
    path: &'a str,
    api: &'a [&'a str],
    query: Option<&'a str>,
    peer: IpAddr,
    caller: Caller,
    body: Bytes,
}

fn wrong_caller() -> ApiErr {
    ApiErr::new(
        500,
        "internal",
        "endpoint reached without its authentication",
    )
}

async fn route(state: Arc<State>, r: Authenticated<'_>) -> ApiResult<Resp> {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let s = state.clone();
    let (agent, operator) = match r.caller {
        Caller::Agent { ca_id, holder_id } => (Some((ca_id, holder_id)), None),
        Caller::Operator(name) => (None, Some(name)),
        Caller::Nobody => (None, None),
    };
    let agent = || agent.clone().ok_or_else(wrong_caller);
    let operator = || operator.clone().ok_or_else(wrong_caller);
    let peer = r.peer;
    let body = r.body;
    match (&r.method, segments.as_slice(), r.api) {
        (&Method::GET, ["healthz"], _) => Ok(json(
            200,
            &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        )),
        (&Method::GET, ["ca", file], _) if file.ends_with(".crt") => {
            let id = file.trim_end_matches(".crt").to_owned();
            let pem = blocking(move || s.ca_certificate(&id)).await?;
            Ok(document("application/x-pem-file", pem.into_bytes()))
        }
        (&Method::GET, ["ca", file], _) if file.ends_with(".der") => {
            let id = file.trim_end_matches(".der").to_owned();
            let der = blocking(move || s.ca_certificate_der(&id)).await?;
            Ok(document("application/pkix-cert", der))
        }
        (&Method::POST, ["ocsp", ca], _) => {
            let (ca, body) = ((*ca).to_owned(), body.to_vec());
            let answer = blocking(move || Ok(ocsp::ocsp_answer(&s, &ca, &body))).await?;
            Ok(document(ocsp::CONTENT_TYPE, answer))
        }
        (&Method::GET, ["ocsp", ca, rest @ ..], _) if !rest.is_empty() => {
            let answer = match ocsp::decode_get(&rest.join("/")) {
                Some(der) => {
                    let ca = (*ca).to_owned();
                    blocking(move || Ok(ocsp::ocsp_answer(&s, &ca, &der))).await?
                }
                None => ocsp::error_der(x509_ocsp::OcspResponseStatus::MalformedRequest),
            };
            Ok(document(ocsp::CONTENT_TYPE, answer))
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
            blocking(move || s.enroll(req, peer)).await?;
            Ok(json(200, &serde_json::json!({"enrolled": true})))
        }
        (&Method::POST, _, ["agent", "challenge"]) => {
            let req = parse(&body)?;
            Ok(json(200, &state.challenge(req)?))
        }
        (&Method::POST, _, ["agent", "login"]) => {
            let req = parse(&body)?;
            Ok(json(200, &blocking(move || s.login(req, peer)).await?))
        }
        (&Method::GET, _, ["agent", "poll"]) => {
            let (ca_id, holder_id) = agent()?;
            let wait = wait_param(r.query);
            let skip = skip_param(r.query);
            let mut offered = state.subscribe_offers(&ca_id);
            state.seen(&ca_id, &holder_id);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let sessions = state.offers(&ca_id, &holder_id, &skip);
                if !sessions.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(json(200, &proto::Poll { sessions }));
                }
                if tokio::time::timeout_at(deadline, offered.changed())
                    .await
                    .is_err()
                {
                    return Ok(json(200, &proto::Poll::default()));
                }
            }
        }
        (&Method::POST, _, ["sessions", id, "contribute"]) => {
            let (ca_id, holder_id) = agent()?;
            let req = parse(&body)?;
            let id = (*id).to_owned();
            Ok(json(
                200,
                &blocking(move || s.contribute(&ca_id, &holder_id, &id, req)).await?,
            ))
        }
        (&Method::POST, _, ["sessions", id, "decline"]) => {
            let (ca_id, holder_id) = agent()?;
            let req = parse(&body)?;
            let id = (*id).to_owned();
            Ok(json(
                200,
                &blocking(move || s.decline(&ca_id, &holder_id, &id, req)).await?,
            ))
        }
        (&Method::POST, _, ["sessions"]) => {
            let operator = operator()?;
            let req = parse(&body)?;
            Ok(json(
                201,
                &blocking(move || s.create_session(&operator, req)).await?,
            ))
        }
        (&Method::GET, _, ["sessions", id]) => {
            operator()?;
            let id = (*id).to_owned();
            let wait = wait_param(r.query);
            let mut changes = state.subscribe();
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
            let operator = operator()?;
            let id = (*id).to_owned();
            Ok(json(
                200,
                &blocking(move || s.cancel(&operator, &id)).await?,
            ))
        }
        (&Method::POST, _, ["cas"]) => {
            let operator = operator()?;
            let req = parse(&body)?;
            Ok(json(
                201,
                &blocking(move || s.register_ca(&operator, req)).await?,
            ))
        }
        (&Method::PUT, _, ["cas", id, "urls"]) => {
            let operator = operator()?;
            let req = parse(&body)?;
            let id = (*id).to_owned();
            Ok(json(
                200,
                &blocking(move || s.set_ca_urls(&operator, &id, req)).await?,
            ))
        }
        (&Method::GET, _, ["cas"]) => {
            operator()?;
            Ok(json(200, &blocking(move || s.cas()).await?))
        }
        _ => Err(ApiErr::new(
            404,
            "not-found",
            format!("no endpoint {} {}", r.method, r.path),
        )),
    }
}
