//! The HTTP API on axum: routes, the layers around them (request ids, tracing, a request
//! timeout, latency metrics), authentication and body limits. Long-polls are futures, not
//! threads, so thousands of waiting agents cost little. Every request is authenticated from
//! its headers (a route layer) before its body is read (an extractor), and an address that
//! keeps failing to authenticate is refused (429) before any database access. Every error,
//! the framework's own included, is a JSON [`proto::ApiError`].
//!
//! [`router`] nests [`api_router`] under `/api/v1` beside the public documents,
//! `/metrics` and the web UI ([`crate::web::ui_router`]).

use super::guard::Refusal;
use super::ocsp;
use super::state::{ApiErr, ApiResult, State};
use crate::logging::session_span;
use crate::proto::{self, API};
use axum::Router;
use axum::extract::{Extension, FromRequest, OriginalUri, Path, RawQuery, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted from an operator (CSRs, manifests; a batch of 1,000
/// RSA-4096 CSRs is under 2 MiB).
pub const MAX_BODY: usize = 4 << 20;
/// Largest body from an agent or a stranger: a contribution is under 8 KiB.
pub const MAX_AGENT_BODY: usize = 64 << 10;
/// Most session ids an agent may ask a poll to skip.
pub const MAX_SKIP: usize = 64;
/// How long a client may take to send its headers, then its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest long-poll.
pub const MAX_WAIT: u64 = 60;
/// Longest any request may take, long-polls included: a backstop, never reached normally.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2 * MAX_WAIT + 30);

/// The address a connection comes from, put in each request's extensions by the accept
/// loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// An authenticated agent: the (CA, holder) its bearer was issued to.
#[derive(Clone, Debug)]
pub struct AgentCaller {
    pub ca_id: String,
    pub holder_id: String,
}

/// An authenticated operator: the name its API token was created for.
#[derive(Clone, Debug)]
pub struct OperatorCaller(pub String);

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        json(
            self.status,
            &proto::ApiError {
                error: self.message,
                code: self.code.to_owned(),
            },
        )
    }
}

fn document(content_type: &'static str, body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiErr::new(400, "bad-json", format!("malformed JSON body: {e}")))
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
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

/// `policy_revision=N`: the policy revision of the manifest the agent holds.
fn policy_revision_param(query: Option<&str>) -> Option<u32> {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("policy_revision="))
        .and_then(|v| v.parse().ok())
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

/// Runs a blocking piece of work (SQLite, signing) off the async workers, in the caller's
/// span (so its log lines keep the request's and the session's ids).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| ApiErr::new(500, "internal", e.to_string()))?
}

/// A JSON request body, read only after the caller is authenticated: at most
/// [`MAX_BODY`] from an operator, [`MAX_AGENT_BODY`] from anyone else, within
/// [`READ_TIMEOUT`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiErr;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiErr> {
        let RawBody(body) = RawBody::from_request(req, state).await?;
        parse(&body).map(JsonBody)
    }
}

/// A raw request body (an OCSP request, a form), read like [`JsonBody`] is: after
/// authentication, within the caller's limit and [`READ_TIMEOUT`].
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiErr;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiErr> {
        let limit = if req.extensions().get::<OperatorCaller>().is_some() {
            MAX_BODY
        } else {
            MAX_AGENT_BODY
        };
        read_body(req.into_body(), limit).await.map(RawBody)
    }
}

async fn read_body(body: axum::body::Body, limit: usize) -> ApiResult<Bytes> {
    match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiErr::new(
                413,
                "too-large",
                format!("request body over {limit} bytes"),
            ))
        }
        Ok(Err(e)) => Err(ApiErr::new(
            400,
            "bad-request",
            format!("reading the body: {e}"),
        )),
        Err(_) => Err(ApiErr::new(
            408,
            "timeout",
            "the request body was not sent in time",
        )),
    }
}

// ---- layers -----------------------------------------------------------------------

/// Refuses (429) an address that keeps failing to authenticate, before anything else.
async fn rate_limit(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Peer(peer)): Extension<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if !state.limiter.allows(peer) {
        state.refused(
            peer,
            Refusal::RateLimited,
            None,
            "auth-refused",
            "too many failed authentications",
        );
        return ApiErr::new(
            429,
            "rate-limited",
            format!(
                "too many failed authentications from {peer}; try again in a minute \
                 (hint: check the agent's configuration or the operator's API token)"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Counts a presented but unknown bearer as an unauthenticated refusal of `peer`.
fn count_bogus(state: &State, peer: IpAddr, presented: bool, e: &ApiErr) {
    if presented && e.code == "unauthorized" {
        state.refused(
            peer,
            Refusal::BogusBearer,
            None,
            "auth-refused",
            "unknown bearer token",
        );
    }
}

/// Lets through only a logged-in agent, from its headers alone.
async fn require_agent(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Peer(peer)): Extension<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = bearer(&req);
    match state.agent(token.as_deref()) {
        Ok((ca_id, holder_id)) => {
            req.extensions_mut()
                .insert(AgentCaller { ca_id, holder_id });
            next.run(req).await
        }
        Err(e) => {
            count_bogus(&state, peer, token.is_some(), &e);
            e.into_response()
        }
    }
}

/// Lets through only an operator with a valid API token, from its headers alone.
async fn require_operator(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Peer(peer)): Extension<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = bearer(&req);
    let presented = token.is_some();
    let s = state.clone();
    match blocking(move || s.operator(token.as_deref())).await {
        Ok(name) => {
            req.extensions_mut().insert(OperatorCaller(name));
            next.run(req).await
        }
        Err(e) => {
            count_bogus(&state, peer, presented, &e);
            e.into_response()
        }
    }
}

/// Lets through a logged-in agent or an operator with a valid API token (an agent bearer
/// is tried first: it is in memory).
async fn require_agent_or_operator(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Peer(peer)): Extension<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = bearer(&req);
    if let Ok((ca_id, holder_id)) = state.agent(token.as_deref()) {
        req.extensions_mut()
            .insert(AgentCaller { ca_id, holder_id });
        return next.run(req).await;
    }
    let presented = token.is_some();
    let s = state.clone();
    match blocking(move || s.operator(token.as_deref())).await {
        Ok(name) => {
            req.extensions_mut().insert(OperatorCaller(name));
            next.run(req).await
        }
        Err(e) => {
            count_bogus(&state, peer, presented, &e);
            e.into_response()
        }
    }
}

/// Records each request's latency by route (the framework's route template).
async fn observe_latency(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .observe_request(method.as_str(), &route, started.elapsed());
    response
}

/// Gives every error the framework or a layer answers on its own (timeouts, rejections)
/// the JSON shape and stable code of the API's errors.
async fn json_errors(req: Request, next: Next) -> Response {
    // pages answer their errors as pages
    let page = crate::web::is_ui_path(req.uri().path());
    let response = next.run(req).await;
    if page {
        return response;
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status.as_u16() {
        400 | 415 | 422 => "bad-request",
        401 => "unauthorized",
        404 | 405 => "not-found",
        408 => "timeout",
        413 => "too-large",
        429 => "rate-limited",
        503 => "unavailable",
        _ => "internal",
    };
    let text = match Limited::new(response.into_body(), 4096).collect().await {
        Ok(c) => String::from_utf8_lossy(&c.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    ApiErr::new(status.as_u16(), code, message).into_response()
}

async fn no_endpoint(method: Method, OriginalUri(uri): OriginalUri) -> ApiErr {
    ApiErr::new(
        404,
        "not-found",
        format!("no endpoint {method} {}", uri.path()),
    )
}

// ---- routers ----------------------------------------------------------------------

/// The whole server: the API under `/api/v1`, the public documents, `/healthz`,
/// `/metrics` (operators only), and the layers every request passes.
pub fn router(state: Arc<State>) -> Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // the path only: no header (Authorization) and no query is recorded
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ca/{file}", get(ca_certificate))
        .route("/crl/{file}", get(crl))
        .route("/ocsp/{ca}", post(ocsp_post))
        .route("/ocsp/{ca}/{*request}", get(ocsp_get))
        .merge(metrics_router(state.clone()))
        .merge(crate::web::ui_router(state.clone()))
        .nest(API, api_router(state.clone()))
        .fallback(no_endpoint)
        .method_not_allowed_fallback(no_endpoint)
        // innermost first: the timeout's 408 is made JSON too, and still measured
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe_latency,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// `/api/v1`: public (enrollment, agent login), agent and operator routes, each group
/// behind its authentication layer, all behind the per-address failure limit.
pub fn api_router(state: Arc<State>) -> Router<Arc<State>> {
    let public = Router::new()
        .route("/enroll", post(enroll))
        .route("/agent/challenge", post(challenge))
        .route("/agent/login", post(login));
    let agent = Router::new()
        .route("/agent/poll", get(poll))
        .route("/sessions/{id}/contribute", post(contribute))
        .route("/sessions/{id}/decline", post(decline))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_agent));
    let operator = Router::new()
        .route("/sessions", post(create_session))
        .route("/sessions/preview", post(preview))
        .route("/sessions/{id}", get(status))
        .route("/sessions/{id}/certificates", get(certificates))
        .route("/sessions/{id}/cancel", post(cancel))
        .route("/sessions/{id}/events", get(events))
        .route("/sessions/{id}/packages", get(reshare_packages))
        .route("/reshare", post(open_reshare))
        .route("/cas", post(register_ca).get(cas))
        .route("/cas/{id}/urls", put(set_ca_urls))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ));
    let agent_or_operator = Router::new()
        .route("/cas/{id}/manifest", get(ca_manifest))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_agent_or_operator,
        ));
    Router::new()
        .merge(public)
        .merge(agent)
        .merge(operator)
        .merge(agent_or_operator)
        .fallback(no_endpoint)
        .method_not_allowed_fallback(no_endpoint)
        .layer(middleware::from_fn_with_state(state, rate_limit))
}

/// `/metrics` for operators (any valid API token), behind the per-address failure limit.
fn metrics_router(state: Arc<State>) -> Router<Arc<State>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ))
        .layer(middleware::from_fn_with_state(state, rate_limit))
}

/// `/metrics` with no authentication, for `--metrics-listen` (an address only the
/// monitoring system reaches).
pub fn open_metrics_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(no_endpoint)
        .method_not_allowed_fallback(no_endpoint)
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

// ---- handlers ---------------------------------------------------------------------

type AppState = axum::extract::State<Arc<State>>;

async fn healthz() -> Response {
    json(
        200,
        &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    )
}

async fn metrics(axum::extract::State(s): AppState) -> ApiResult<Response> {
    let text = blocking(move || s.metrics_text()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}

async fn ca_certificate(
    axum::extract::State(s): AppState,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    if let Some(id) = file.strip_suffix(".der").map(str::to_owned) {
        let der = blocking(move || s.ca_certificate_der(&id)).await?;
        return Ok(document("application/pkix-cert", der));
    }
    let Some(id) = file.strip_suffix(".crt").map(str::to_owned) else {
        return Err(no_endpoint(method, OriginalUri(uri)).await);
    };
    let pem = blocking(move || s.ca_certificate(&id)).await?;
    Ok(document("application/x-pem-file", pem.into_bytes()))
}

/// OCSP over POST (RFC 6960 A.1): an oversized or unreadable request gets the OCSP
/// `malformedRequest` answer, not an API error.
async fn ocsp_post(
    axum::extract::State(s): AppState,
    Path(ca): Path<String>,
    req: Request,
) -> Response {
    ocsp_document(s, ca, read_body(req.into_body(), MAX_AGENT_BODY).await.ok()).await
}

/// OCSP over GET: the DER request, base64 then URL-encoded, is the rest of the path.
async fn ocsp_get(
    axum::extract::State(s): AppState,
    Path((ca, request)): Path<(String, String)>,
) -> Response {
    ocsp_document(s, ca, ocsp::decode_get(&request)).await
}

/// The OCSP answer to `request` (None: it could not be read, `malformedRequest`).
async fn ocsp_document(
    s: Arc<State>,
    ca: String,
    request: Option<impl AsRef<[u8]> + Send + 'static>,
) -> Response {
    use x509_ocsp::OcspResponseStatus::{InternalError, MalformedRequest};
    let answer = match request {
        Some(der) => blocking(move || Ok(ocsp::ocsp_answer(&s, &ca, der.as_ref())))
            .await
            .unwrap_or_else(|_| ocsp::error_der(InternalError)),
        None => ocsp::error_der(MalformedRequest),
    };
    document(ocsp::CONTENT_TYPE, answer)
}

async fn crl(
    axum::extract::State(s): AppState,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let (id, pem_wanted) = match (file.strip_suffix(".crl"), file.strip_suffix(".pem")) {
        (Some(id), _) => (id.to_owned(), false),
        (None, Some(id)) => (id.to_owned(), true),
        (None, None) => return Err(no_endpoint(method, OriginalUri(uri)).await),
    };
    let (der, pem) = blocking(move || s.crl(&id)).await?;
    Ok(if pem_wanted {
        document("application/x-pem-file", pem.into_bytes())
    } else {
        document("application/pkix-crl", der)
    })
}

async fn enroll(
    axum::extract::State(s): AppState,
    Extension(Peer(peer)): Extension<Peer>,
    JsonBody(req): JsonBody<proto::Enroll>,
) -> ApiResult<Response> {
    Ok(json(200, &blocking(move || s.enroll_any(req, peer)).await?))
}

async fn challenge(
    axum::extract::State(s): AppState,
    JsonBody(req): JsonBody<proto::ChallengeRequest>,
) -> ApiResult<Response> {
    Ok(json(200, &s.challenge(req)?))
}

async fn login(
    axum::extract::State(s): AppState,
    Extension(Peer(peer)): Extension<Peer>,
    JsonBody(req): JsonBody<proto::Login>,
) -> ApiResult<Response> {
    Ok(json(200, &blocking(move || s.login(req, peer)).await?))
}

async fn poll(
    axum::extract::State(state): AppState,
    Extension(agent): Extension<AgentCaller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let wait = wait_param(query.as_deref());
    let skip = skip_param(query.as_deref());
    let known = policy_revision_param(query.as_deref());
    let mut offered = state.subscribe_offers(&agent.ca_id);
    state.seen(&agent.ca_id, &agent.holder_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let sessions = state.offers(&agent.ca_id, &agent.holder_id, &skip);
        let manifest = state.manifest_news(&agent.ca_id, known);
        if !sessions.is_empty() || manifest.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(json(200, &proto::Poll { sessions, manifest }));
        }
        if tokio::time::timeout_at(deadline, offered.changed())
            .await
            .is_err()
        {
            return Ok(json(200, &proto::Poll::default()));
        }
    }
}

async fn contribute(
    axum::extract::State(s): AppState,
    Extension(agent): Extension<AgentCaller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<proto::Contribution>,
) -> ApiResult<Response> {
    let span = session_span(&id, &agent.ca_id);
    let status = blocking(move || {
        let _in = span.enter();
        s.contribute(&agent.ca_id, &agent.holder_id, &id, req)
    })
    .await?;
    Ok(json(200, &status))
}

async fn decline(
    axum::extract::State(s): AppState,
    Extension(agent): Extension<AgentCaller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<proto::Decline>,
) -> ApiResult<Response> {
    let span = session_span(&id, &agent.ca_id);
    let status = blocking(move || {
        let _in = span.enter();
        s.decline(&agent.ca_id, &agent.holder_id, &id, req)
    })
    .await?;
    Ok(json(200, &status))
}

async fn create_session(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    JsonBody(req): JsonBody<proto::CreateSession>,
) -> ApiResult<Response> {
    Ok(json(
        201,
        &blocking(move || s.create_session(&operator, req)).await?,
    ))
}

async fn preview(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    JsonBody(req): JsonBody<proto::CreateSession>,
) -> ApiResult<Response> {
    Ok(json(
        200,
        &blocking(move || super::preview::preview(&s, &operator, &req)).await?,
    ))
}

async fn status(
    axum::extract::State(state): AppState,
    Extension(_): Extension<OperatorCaller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let wait = wait_param(query.as_deref());
    let mut changes = state.subscribe();
    let (s, i) = (state.clone(), id.clone());
    let first = blocking(move || s.status(&i)).await?;
    if wait == 0 || first.state != proto::SessionState::Waiting {
        return Ok(json(200, &first));
    }
    let _ = tokio::time::timeout(Duration::from_secs(wait), changes.changed()).await;
    Ok(json(200, &blocking(move || state.status(&id)).await?))
}

/// `GET /api/v1/sessions/{id}/certificates`: a session's certificates, in order (a batch's
/// every one, PEM once signed; an `issue` session's once signed; none for other kinds).
async fn certificates(
    axum::extract::State(state): AppState,
    Extension(_): Extension<OperatorCaller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let status = blocking(move || state.status(&id)).await?;
    Ok(json(200, &session_certificates(status)))
}

/// What `GET /api/v1/sessions/{id}/certificates` answers for a session's status.
fn session_certificates(status: proto::SessionStatus) -> proto::SessionCertificates {
    let certificates = match status.kind {
        proto::SessionKind::IssueBatch => status.certificates,
        proto::SessionKind::Issue => match (&status.serial, &status.certificate_pem) {
            (Some(serial), Some(pem)) => vec![proto::BatchCertificate {
                serial: serial.clone(),
                subject: status
                    .certificate
                    .as_ref()
                    .map(|v| v.subject_string())
                    .unwrap_or_default(),
                pem: Some(pem.clone()),
            }],
            _ => Vec::new(),
        },
        proto::SessionKind::Revoke
        | proto::SessionKind::Crl
        | proto::SessionKind::Policy
        | proto::SessionKind::Reshare => Vec::new(),
    };
    proto::SessionCertificates {
        session_id: status.session_id,
        state: status.state,
        certificates,
    }
}

async fn events(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(super::push::session_events(s, &operator, &id)
        .await?
        .into_response())
}

async fn cancel(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(json(
        200,
        &blocking(move || s.cancel(&operator, &id)).await?,
    ))
}

async fn open_reshare(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    JsonBody(req): JsonBody<proto::OpenReshare>,
) -> ApiResult<Response> {
    Ok(json(
        201,
        &blocking(move || s.open_reshare(&operator, req)).await?,
    ))
}

async fn reshare_packages(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(json(
        200,
        &blocking(move || s.reshare_download(&operator, &id)).await?,
    ))
}

async fn register_ca(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    JsonBody(req): JsonBody<proto::RegisterCa>,
) -> ApiResult<Response> {
    Ok(json(
        201,
        &blocking(move || s.register_ca(&operator, req)).await?,
    ))
}

async fn cas(
    axum::extract::State(s): AppState,
    Extension(_): Extension<OperatorCaller>,
) -> ApiResult<Response> {
    Ok(json(200, &blocking(move || s.cas()).await?))
}

/// The CA's registered manifest (an agent: its own CA's only).
async fn ca_manifest(
    axum::extract::State(s): AppState,
    agent: Option<Extension<AgentCaller>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some(Extension(agent)) = agent
        && agent.ca_id != id
    {
        return Err(ApiErr::new(
            403,
            "forbidden",
            "an agent reads its own CA's manifest only",
        ));
    }
    let text = blocking(move || s.manifest_json(&id)).await?;
    Ok(document("application/json", text.into_bytes()))
}

async fn set_ca_urls(
    axum::extract::State(s): AppState,
    Extension(OperatorCaller(operator)): Extension<OperatorCaller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<proto::CaUrls>,
) -> ApiResult<Response> {
    Ok(json(
        200,
        &blocking(move || s.set_ca_urls(&operator, &id, req)).await?,
    ))
}
