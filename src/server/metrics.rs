//! The server's metrics (prometheus-client), served in the Prometheus text format at
//! `/metrics`: sessions by CA, kind and outcome, refused contributions by code,
//! unauthenticated refusals, request latency by route, and gauges read when scraped (holders
//! online per CA, seconds to each CA's CRL nextUpdate, the process's resident memory).
//! Labels are CA ids, kinds, codes and route templates only: never a holder's request or a
//! secret.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    ca: String,
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabels {
    ca: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … about 82 s: quick calls, signing, and long-polls up to a minute
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric the server keeps, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Counter>,
    refused: Family<CodeLabels, Counter>,
    accepted: Counter,
    auth_refusals: Family<CodeLabels, Counter>,
    latency: HistogramFamily,
    holders_online: Family<CaLabels, Gauge>,
    crl_next_update: Family<CaLabels, Gauge>,
    memory: Gauge,
    event_streams: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nkpki");
        let sessions = Family::<SessionLabels, Counter>::default();
        registry.register(
            "sessions",
            "Signing sessions by CA, kind and outcome (opened, signed, expired, declined, \
             failed, cancelled)",
            sessions.clone(),
        );
        let refused = Family::<CodeLabels, Counter>::default();
        registry.register(
            "contributions_refused",
            "Contributions refused, by error code",
            refused.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "contributions_accepted",
            "Contributions whose share the session worker accepted",
            accepted.clone(),
        );
        let auth_refusals = Family::<CodeLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Unauthenticated refusals (unknown bearer, failed login or enrollment, rate-limited)",
            auth_refusals.clone(),
        );
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route (long-polls included)",
            latency.clone(),
        );
        let holders_online = Family::<CaLabels, Gauge>::default();
        registry.register(
            "holders_online",
            "Holders whose agent polled in the last 90 seconds, per CA",
            holders_online.clone(),
        );
        let crl_next_update = Family::<CaLabels, Gauge>::default();
        registry.register(
            "crl_next_update_seconds",
            "Seconds until the nextUpdate of the CA's latest CRL (negative: overdue)",
            crl_next_update.clone(),
        );
        let memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            memory.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams",
            "Session event streams (server push) open now",
            event_streams.clone(),
        );
        Metrics {
            registry,
            sessions,
            refused,
            accepted,
            auth_refusals,
            latency,
            holders_online,
            crl_next_update,
            memory,
            event_streams,
        }
    }
}

impl Metrics {
    /// A session of `ca` and `kind` was opened or ended with `outcome`.
    pub fn session(&self, ca: &str, kind: &str, outcome: &str) {
        self.sessions
            .get_or_create(&SessionLabels {
                ca: ca.to_owned(),
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A contribution was refused with `code`.
    pub fn contribution_refused(&self, code: &str) {
        self.refused
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn contribution_accepted(&self) {
        self.accepted.inc();
    }

    /// An unauthenticated request was refused (`kind`: unknown-bearer, failed-login…).
    pub fn auth_refused(&self, kind: &str) {
        self.auth_refusals
            .get_or_create(&CodeLabels {
                code: kind.to_owned(),
            })
            .inc();
    }

    pub fn observe_request(&self, method: &str, route: &str, took: Duration) {
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn set_holders_online(&self, ca: &str, n: i64) {
        self.holders_online
            .get_or_create(&CaLabels { ca: ca.to_owned() })
            .set(n);
    }

    pub fn set_event_streams(&self, n: usize) {
        self.event_streams.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_crl_next_update(&self, ca: &str, seconds: i64) {
        self.crl_next_update
            .get_or_create(&CaLabels { ca: ca.to_owned() })
            .set(seconds);
    }

    /// Everything, in the Prometheus text format (0.0.4), with the process's memory read
    /// now.
    pub fn encode(&self) -> String {
        if let Some(bytes) = resident_memory() {
            self.memory.set(bytes);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Resident memory in bytes (`VmRSS` of /proc/self/status), where the system has it.
fn resident_memory() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Seconds from `now` to the nextUpdate of the CRL `der` (None: unreadable or no
/// nextUpdate).
pub fn crl_seconds_left(der: &[u8], now: i64) -> Option<i64> {
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    Some(crl.next_update()?.timestamp() - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_encoded_with_their_labels() {
        let m = Metrics::default();
        m.session("ca1", "issue", "opened");
        m.session("ca1", "issue", "opened");
        m.contribution_refused("bad-share");
        m.set_crl_next_update("ca1", -5);
        m.observe_request("GET", "/api/v1/agent/poll", Duration::from_millis(20));
        let text = m.encode();
        assert!(
            text.contains(r#"nkpki_sessions_total{ca="ca1",kind="issue",outcome="opened"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nkpki_contributions_refused_total{code="bad-share"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nkpki_crl_next_update_seconds{ca="ca1"} -5"#),
            "{text}"
        );
        assert!(
            text.contains("nkpki_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("nkpki_process_resident_memory_bytes "),
            "{text}"
        );
    }
}
