//! What keeps one client from stalling the others: per-address connection and failure
//! limits, counters for unauthenticated refusals (instead of an audit row each), and the
//! cheap shape check a contribution's ciphertext passes before anything decrypts it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Most addresses any per-address table remembers; beyond it, the idle ones are forgotten.
const MAX_ADDRESSES: usize = 16_384;

/// Authentication failures an address may make in a burst before it gets 429s.
pub const FAILURE_BURST: f64 = 20.0;
/// Failures forgiven per second once the burst is spent.
pub const FAILURES_PER_SEC: f64 = 0.5;

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * FAILURES_PER_SEC).min(FAILURE_BURST);
        self.at = now;
    }
}

/// A token bucket per address, spent by authentication failures (bogus bearers, failed
/// logins and enrollments). Checked in memory before any database access.
#[derive(Default)]
pub struct FailureLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailureLimiter")
    }
}

impl FailureLimiter {
    /// Whether `ip` may still try to authenticate.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let mut buckets = lock(&self.buckets);
        match buckets.get_mut(&ip) {
            Some(b) => {
                b.refill(Instant::now());
                b.tokens >= 1.0
            }
            None => true,
        }
    }

    /// Spends one failure of `ip`'s allowance.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < FAILURE_BURST
            });
            if buckets.len() >= MAX_ADDRESSES {
                // every remembered address is still penalised: forget the oldest half
                let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
                ages.sort();
                if let Some(cut) = ages.get(ages.len() / 2).copied() {
                    buckets.retain(|_, b| b.at > cut);
                }
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: FAILURE_BURST,
            at: now,
        });
        b.refill(now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

/// Open connections per address (or open event streams per operator: any key), capped.
#[derive(Debug)]
pub struct ConnectionLimiter<K: Eq + Hash + Clone = IpAddr> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    per_address: usize,
}

/// One open connection; counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot<K: Eq + Hash + Clone = IpAddr> {
    open: Arc<Mutex<HashMap<K, usize>>>,
    ip: K,
}

impl<K: Eq + Hash + Clone> Drop for ConnectionSlot<K> {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl<K: Eq + Hash + Clone> ConnectionLimiter<K> {
    /// At most `per_address` connections per address (0: no limit).
    pub fn new(per_address: usize) -> Self {
        ConnectionLimiter {
            open: Arc::default(),
            per_address,
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it has too many.
    pub fn admit(&self, ip: K) -> Option<ConnectionSlot<K>> {
        let mut open = lock(&self.open);
        let n = open.entry(ip.clone()).or_insert(0);
        if self.per_address > 0 && *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            open: self.open.clone(),
            ip,
        })
    }
}

/// Why an unauthenticated request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    BogusBearer,
    BadLogin,
    BadEnrollment,
    RateLimited,
}

impl Refusal {
    /// The label of the refusal in metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::BogusBearer => "unknown-bearer",
            Refusal::BadLogin => "failed-login",
            Refusal::BadEnrollment => "failed-enrollment",
            Refusal::RateLimited => "rate-limited",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Refusal::BogusBearer => "unknown bearer",
            Refusal::BadLogin => "failed login",
            Refusal::BadEnrollment => "failed enrollment",
            Refusal::RateLimited => "rate-limited",
        }
    }
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    by_address: HashMap<IpAddr, HashMap<Refusal, u64>>,
    /// (kind, CA, holder) already written to the audit log in this window.
    audited: std::collections::HashSet<(Refusal, String, String)>,
    total: u64,
}

/// Counters of unauthenticated refusals, per minute. The first refusal per address and
/// minute is logged; the first per holder and minute that names a registered holder is
/// audited; the rest become one summary row a minute.
#[derive(Default)]
pub struct Refusals {
    window: Mutex<Window>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refusals")
    }
}

/// What to do with one refusal besides counting it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub log: bool,
    pub audit: bool,
}

impl Refusals {
    /// Counts a refusal; `holder` is the (CA, holder) it names, when that holder is known.
    pub fn count(&self, ip: IpAddr, kind: Refusal, holder: Option<(&str, &str)>) -> Sample {
        let mut w = lock(&self.window);
        w.started.get_or_insert_with(Instant::now);
        w.total += 1;
        let first_from_address = !w.by_address.contains_key(&ip);
        if first_from_address && w.by_address.len() >= MAX_ADDRESSES {
            return Sample::default();
        }
        *w.by_address.entry(ip).or_default().entry(kind).or_insert(0) += 1;
        let audit = match holder {
            Some((ca, h)) if w.audited.len() < MAX_ADDRESSES => {
                w.audited.insert((kind, ca.to_owned(), h.to_owned()))
            }
            _ => false,
        };
        Sample {
            log: first_from_address,
            audit,
        }
    }

    /// The past minute's summary, once a minute has passed since its first refusal.
    pub fn summary_due(&self) -> Option<String> {
        let mut w = lock(&self.window);
        let started = w.started?;
        if started.elapsed().as_secs() < 60 {
            return None;
        }
        let w = std::mem::take(&mut *w);
        let mut by: Vec<(IpAddr, u64, String)> = w
            .by_address
            .into_iter()
            .map(|(ip, kinds)| {
                let n = kinds.values().sum();
                let mut parts: Vec<String> = kinds
                    .into_iter()
                    .map(|(k, n)| format!("{n} {}", k.as_str()))
                    .collect();
                parts.sort();
                (ip, n, parts.join(", "))
            })
            .collect();
        by.sort_by_key(|b| std::cmp::Reverse(b.1));
        let addresses = by.len();
        let top: Vec<String> = by
            .into_iter()
            .take(5)
            .map(|(ip, _, parts)| format!("{ip}: {parts}"))
            .collect();
        Some(format!(
            "{} unauthenticated refusals from {addresses} address(es) in the last minute; {}{}",
            w.total,
            top.join("; "),
            if addresses > 5 { "; …" } else { "" }
        ))
    }
}

/// Largest armoured age ciphertext a contribution may carry: a share's JSON is about
/// 300 bytes, its armoured ciphertext to one recipient under 1 KiB.
pub const MAX_CIPHERTEXT: usize = 4096;

/// Checks, without decrypting, that `text` is a small age file with exactly one recipient
/// stanza, of type X25519 (and at most one "grease" stanza, as the age crate writes):
/// what an agent sends. age's own header parser is quadratic in
/// the number of stanzas, so nothing else may reach it.
pub fn check_ciphertext(text: &str) -> Result<(), String> {
    use base64::Engine;
    if text.len() > MAX_CIPHERTEXT {
        return Err(format!(
            "the ciphertext is {} bytes; a share's is under {MAX_CIPHERTEXT}",
            text.len()
        ));
    }
    const BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
    const END: &str = "-----END AGE ENCRYPTED FILE-----";
    let trimmed = text.trim();
    let binary: Vec<u8> = match trimmed
        .strip_prefix(BEGIN)
        .and_then(|t| t.strip_suffix(END))
    {
        Some(body) => {
            let b64: String = body.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "the ciphertext's armour is not base64".to_owned())?
        }
        None => return Err("the ciphertext is not an armoured age file".into()),
    };
    let mut lines = binary.split(|b| *b == b'\n');
    if lines.next() != Some(b"age-encryption.org/v1".as_slice()) {
        return Err("the ciphertext is not an age v1 file".into());
    }
    let mut stanzas = Vec::new();
    for line in lines {
        if line.starts_with(b"--- ") {
            break;
        }
        if let Some(args) = line.strip_prefix(b"-> ") {
            let kind = args.split(|b| *b == b' ').next().unwrap_or_default();
            stanzas.push(String::from_utf8_lossy(kind).into_owned());
        }
    }
    // the age crate adds one random "…-grease" stanza that every reader ignores
    let grease = stanzas.iter().filter(|k| k.ends_with("-grease")).count();
    let x25519 = stanzas.iter().filter(|k| *k == "X25519").count();
    match (stanzas.len(), x25519, grease) {
        (1, 1, 0) | (2, 1, 1) => Ok(()),
        (n, _, _) if n - grease == 1 => Err(format!(
            "the ciphertext's recipient stanza is {:?}; a contribution is sealed to the session's X25519 key",
            stanzas
                .iter()
                .find(|k| !k.ends_with("-grease"))
                .map_or("", String::as_str)
        )),
        (n, _, _) => Err(format!(
            "the ciphertext has {} recipient stanzas; a contribution has exactly one, X25519",
            n - grease.min(1)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_to(n: usize) -> String {
        let keys: Vec<age::x25519::Identity> =
            (0..n).map(|_| age::x25519::Identity::generate()).collect();
        let recipients: Vec<age::x25519::Recipient> = keys.iter().map(|k| k.to_public()).collect();
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .unwrap();
        let mut w = encryptor.wrap_output(armor).unwrap();
        std::io::Write::write_all(&mut w, &[b'x'; 300]).unwrap();
        w.finish().unwrap().finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_x25519_stanza_passes_and_more_are_refused() {
        let one = sealed_to(1);
        assert!(one.len() < 1024, "{}", one.len());
        check_ciphertext(&one).unwrap();
        let two = check_ciphertext(&sealed_to(2)).unwrap_err();
        assert!(two.contains("2 recipient stanzas"), "{two}");
        let many = check_ciphertext(&sealed_to(100)).unwrap_err();
        assert!(many.contains("bytes"), "{many}");
        let scrypt = {
            let r = age::scrypt::Recipient::new("p".to_owned().into());
            let e = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                .unwrap();
            let mut out = Vec::new();
            let armor =
                age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                    .unwrap();
            let w = e.wrap_output(armor).unwrap();
            w.finish().unwrap().finish().unwrap();
            String::from_utf8(out).unwrap()
        };
        let e = check_ciphertext(&scrypt).unwrap_err();
        assert!(e.contains("\"scrypt\""), "{e}");
        assert!(check_ciphertext("hello").is_err());
    }

    #[test]
    fn failures_spend_an_address_allowance_and_only_its_own() {
        let l = FailureLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..(FAILURE_BURST as usize) {
            assert!(l.allows(a));
            l.failed(a);
        }
        assert!(!l.allows(a));
        assert!(l.allows(b));
    }

    #[test]
    fn connections_are_counted_per_address_until_dropped() {
        let c = ConnectionLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let one = c.admit(a).unwrap();
        let _two = c.admit(a).unwrap();
        assert!(c.admit(a).is_none());
        assert!(c.admit("192.0.2.9".parse().unwrap()).is_some());
        drop(one);
        assert!(c.admit(a).is_some());
    }

    #[test]
    fn refusals_are_sampled_not_logged_one_by_one() {
        let r = Refusals::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            r.count(a, Refusal::BadEnrollment, Some(("ca", "NK001"))),
            Sample {
                log: true,
                audit: true
            }
        );
        for _ in 0..100 {
            assert_eq!(
                r.count(a, Refusal::BadEnrollment, Some(("ca", "NK001"))),
                Sample::default()
            );
        }
        assert!(
            r.count(a, Refusal::BadEnrollment, Some(("ca", "NK002")))
                .audit
        );
        assert!(r.summary_due().is_none(), "not before a minute");
    }
}
