//! A CA's issuance policy: per profile, how many holders must approve (at least M), who
//! must be among them, and what a certificate may say. Part of the signed manifest, so the
//! server, the agents and the offline laptop all judge a request by the same rules.
//!
//! The format is in `docs/policy.md`; `examples/policy.toml` is a complete example.

use crate::pki::CertificateView;
use crate::pki::constraints::{self, Cidr, EKU_NAMES, SubCaConstraints};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The only policy format version this nkpki reads.
pub const VERSION: u32 = 1;

/// Subject attributes nkpki issues (what a policy may allow).
pub const SUBJECT_ATTRIBUTES: [&str; 6] = ["CN", "O", "OU", "L", "ST", "C"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("the policy file is not valid: {0}")]
    Syntax(String),
    #[error("policy version {0} is not supported (this nkpki reads version {VERSION})")]
    Version(u32),
    #[error("policy key `{key}`: {why}")]
    Invalid { key: String, why: String },
    #[error(
        "policy key `{key}` asks for {approvals} approval(s), fewer than this CA's threshold \
         M = {threshold}: M holders are the cryptographic minimum, a policy can only ask for \
         more (hint: set {key} = {threshold} or more)"
    )]
    BelowThreshold {
        key: String,
        approvals: u8,
        threshold: u8,
    },
}

fn invalid(key: impl Into<String>, why: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        key: key.into(),
        why: why.into(),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The policy, as a TOML file states it and the manifest records it (as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<IssueRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IssueRule>,
    #[serde(
        default,
        rename = "sub-ca",
        alias = "sub_ca",
        skip_serializing_if = "Option::is_none"
    )]
    pub sub_ca: Option<SubCaRule>,
    /// `revoke` sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<QuorumRule>,
    /// `crl` sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<QuorumRule>,
}

/// Who must approve.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumRule {
    /// Approvals required, at least M.
    pub approvals: u8,
    /// Holders (Nitrokey ids) that must be among the approvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_holders: Vec<String>,
}

/// The rules of an end-entity profile (`server`, `client`). An empty list allows anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRule {
    pub approvals: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_holders: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_days: Option<u32>,
    /// DNS suffix rules: `example.org` (it and below) or `.example.org` (below only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_domains: Vec<String>,
    /// CIDR ranges IP subjectAltNames must fall in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<String>,
    /// E-mail rules (`example.org`, `.example.org`, `alice@example.org`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_domains: Vec<String>,
    /// Subject attribute types allowed (`CN`, `O`, `OU`, `L`, `ST`, `C`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_attributes: Vec<String>,
    /// Subject key types allowed: `rsa-2048`, `rsa-3072`, `rsa-4096`, `ecdsa-p256`,
    /// `ecdsa-p384`, `ed25519`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_types: Vec<String>,
}

/// The rules of the `sub-ca` profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubCaRule {
    pub approvals: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_holders: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_attributes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_types: Vec<String>,
    /// Permitted subtrees written into the sub-CA's nameConstraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_ip: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_email: Vec<String>,
    /// Extended key usages written into the sub-CA certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extended_key_usages: Vec<String>,
    /// No name constraint at all: must be said explicitly.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unconstrained: bool,
}

/// What a request is, for [`verdict`].
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// A certificate, as it will be issued (the same view the holders approve).
    Issue(&'a CertificateView),
    Revoke,
    Crl,
}

/// One rule a request breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The policy key, e.g. `server.max_days`.
    pub rule: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy rule `{}`: {}", self.rule, self.message)
    }
}

/// What the policy says of one request: who must approve, and what it breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The policy section that applies (`server`, `sub-ca`, `revocation`, …).
    pub profile: String,
    /// Approvals the session needs (M when the policy says nothing).
    pub approvals: u8,
    pub required_holders: Vec<String>,
    /// Empty: allowed.
    pub violations: Vec<Violation>,
    /// The rule in a few lines, as holders are shown it.
    pub summary: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The verdict when there is no policy: M approvals, no rule.
    pub fn no_policy(profile: &str, threshold: u8) -> Self {
        Verdict {
            profile: profile.to_owned(),
            approvals: threshold,
            required_holders: Vec::new(),
            violations: Vec::new(),
            summary: vec![format!(
                "no CA policy: {threshold} approvals (the threshold M), no other rule"
            )],
        }
    }

    /// Every violation, one per line, for an error message.
    pub fn refusal(&self) -> String {
        self.violations
            .iter()
            .map(Violation::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Policy {
    /// Parses a policy file (TOML), strictly: an unknown key is an error naming it.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string().trim().into()))?;
        policy.check_format()?;
        Ok(policy)
    }

    /// Checks what can be checked without the CA: version, names, ranges, sizes.
    pub fn check_format(&self) -> Result<(), PolicyError> {
        if self.version != VERSION {
            return Err(PolicyError::Version(self.version));
        }
        for (name, rule) in [("server", &self.server), ("client", &self.client)] {
            if let Some(r) = rule {
                check_common(
                    name,
                    r.approvals,
                    r.max_days,
                    &r.subject_attributes,
                    &r.key_types,
                )?;
                for d in &r.dns_domains {
                    constraints::check_dns_rule(d)
                        .map_err(|w| invalid(key(name, "dns_domains"), w))?;
                }
                for c in &r.ip_ranges {
                    c.parse::<Cidr>()
                        .map_err(|w| invalid(key(name, "ip_ranges"), w))?;
                }
                for e in &r.email_domains {
                    constraints::check_email_rule(e)
                        .map_err(|w| invalid(key(name, "email_domains"), w))?;
                }
            }
        }
        if let Some(r) = &self.sub_ca {
            check_common(
                "sub-ca",
                r.approvals,
                r.max_days,
                &r.subject_attributes,
                &r.key_types,
            )?;
            let c = r
                .constraints()
                .map_err(|(k, w)| invalid(key("sub-ca", k), w))?;
            if r.unconstrained && c.constrains_names() {
                return Err(invalid(
                    "sub-ca.unconstrained",
                    "`unconstrained = true` and permitted subtrees contradict each other; keep one",
                ));
            }
            if !r.unconstrained && !c.constrains_names() {
                return Err(invalid(
                    "sub-ca",
                    "a sub-CA needs permitted subtrees (permitted_dns, permitted_ip, \
                     permitted_email) or an explicit `unconstrained = true`",
                ));
            }
        }
        for (name, rule) in [("revocation", &self.revocation), ("crl", &self.crl)] {
            if let Some(r) = rule {
                check_common(name, r.approvals, None, &[], &[])?;
            }
        }
        Ok(())
    }

    /// Checks the policy against the CA it governs: every quorum at least M and at most N,
    /// required holders among the CA's holders and no more than the quorum.
    pub fn check_for_ca(&self, threshold: u8, holders: &[String]) -> Result<(), PolicyError> {
        self.check_format()?;
        for (name, approvals, required) in self.quorums() {
            let k = key(name, "approvals");
            if approvals < threshold {
                return Err(PolicyError::BelowThreshold {
                    key: k,
                    approvals,
                    threshold,
                });
            }
            if usize::from(approvals) > holders.len() {
                return Err(invalid(
                    k,
                    format!(
                        "{approvals} approvals, but the CA has only {} holders",
                        holders.len()
                    ),
                ));
            }
            let k = key(name, "required_holders");
            for (i, h) in required.iter().enumerate() {
                if !holders.contains(h) {
                    return Err(invalid(
                        k,
                        format!(
                            "{h:?} is not a holder of this CA (holders: {})",
                            holders.join(", ")
                        ),
                    ));
                }
                if required[..i].contains(h) {
                    return Err(invalid(k, format!("{h:?} is listed twice")));
                }
            }
            if required.len() > usize::from(approvals) {
                return Err(invalid(
                    k,
                    format!(
                        "{} required holders, more than the {approvals} approvals asked",
                        required.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn quorums(&self) -> Vec<(&'static str, u8, &[String])> {
        let mut out: Vec<(&'static str, u8, &[String])> = Vec::new();
        if let Some(r) = &self.server {
            out.push(("server", r.approvals, &r.required_holders));
        }
        if let Some(r) = &self.client {
            out.push(("client", r.approvals, &r.required_holders));
        }
        if let Some(r) = &self.sub_ca {
            out.push(("sub-ca", r.approvals, &r.required_holders));
        }
        if let Some(r) = &self.revocation {
            out.push(("revocation", r.approvals, &r.required_holders));
        }
        if let Some(r) = &self.crl {
            out.push(("crl", r.approvals, &r.required_holders));
        }
        out
    }

    /// The constraints a sub-CA issued under this policy carries; `None` without a
    /// `sub-ca` section (the request is then refused by [`verdict`]).
    pub fn sub_ca_constraints(&self) -> Option<SubCaConstraints> {
        self.sub_ca.as_ref().and_then(|r| r.constraints().ok())
    }

    /// The policy as the manifest holds it (what `nkpki policy show` prints).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl SubCaRule {
    fn constraints(&self) -> Result<SubCaConstraints, (&'static str, String)> {
        for d in &self.permitted_dns {
            constraints::check_dns_rule(d).map_err(|w| ("permitted_dns", w))?;
        }
        for e in &self.permitted_email {
            constraints::check_email_rule(e).map_err(|w| ("permitted_email", w))?;
        }
        let ip = self
            .permitted_ip
            .iter()
            .map(|c| c.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|w| ("permitted_ip", w))?;
        for (i, eku) in self.extended_key_usages.iter().enumerate() {
            if !EKU_NAMES.contains(&eku.as_str()) {
                return Err((
                    "extended_key_usages",
                    format!("unknown usage {eku:?} (one of {})", EKU_NAMES.join(", ")),
                ));
            }
            if self.extended_key_usages[..i].contains(eku) {
                return Err(("extended_key_usages", format!("{eku:?} is listed twice")));
            }
        }
        Ok(SubCaConstraints {
            dns: self.permitted_dns.clone(),
            ip,
            email: self.permitted_email.clone(),
            ekus: self.extended_key_usages.clone(),
        })
    }
}

fn key(section: &str, name: &str) -> String {
    format!("{section}.{name}")
}

fn check_common(
    section: &str,
    approvals: u8,
    max_days: Option<u32>,
    attributes: &[String],
    key_types: &[String],
) -> Result<(), PolicyError> {
    if approvals == 0 {
        return Err(invalid(key(section, "approvals"), "must be at least 1"));
    }
    if max_days == Some(0) {
        return Err(invalid(key(section, "max_days"), "must be at least 1"));
    }
    for a in attributes {
        if !SUBJECT_ATTRIBUTES.contains(&a.as_str()) {
            return Err(invalid(
                key(section, "subject_attributes"),
                format!(
                    "unknown attribute {a:?} (one of {})",
                    SUBJECT_ATTRIBUTES.join(", ")
                ),
            ));
        }
    }
    for k in key_types {
        if !valid_key_type(k) {
            return Err(invalid(
                key(section, "key_types"),
                format!(
                    "unknown key type {k:?} (rsa-2048, rsa-3072, rsa-4096, rsa-<bits>, \
                     ecdsa-p256, ecdsa-p384, ed25519)"
                ),
            ));
        }
    }
    Ok(())
}

fn valid_key_type(k: &str) -> bool {
    if matches!(k, "ecdsa-p256" | "ecdsa-p384" | "ed25519") {
        return true;
    }
    k.strip_prefix("rsa-")
        .and_then(|b| b.parse::<u32>().ok())
        .is_some_and(|bits| (2048..=16384).contains(&bits) && bits % 8 == 0)
}

/// A certificate view's key (`RSA-2048`, `ECDSA P-256`) under the names a policy uses.
pub fn key_type_name(view_key: &str) -> String {
    match view_key {
        "ECDSA P-256" => "ecdsa-p256".into(),
        "ECDSA P-384" => "ecdsa-p384".into(),
        "Ed25519" => "ed25519".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// Judges one request against the policy: which rule applies, who must approve, what it
/// breaks. `threshold` is the CA's M.
pub fn verdict(policy: &Policy, threshold: u8, request: &Request<'_>) -> Verdict {
    let view = match request {
        Request::Issue(view) => view,
        Request::Revoke => {
            return quorum_verdict("revocation", policy.revocation.as_ref(), threshold);
        }
        Request::Crl => return quorum_verdict("crl", policy.crl.as_ref(), threshold),
    };
    let profile = view.profile.as_str();
    let missing = |profile: &str| Verdict {
        profile: profile.to_owned(),
        approvals: threshold,
        required_holders: Vec::new(),
        violations: vec![Violation {
            rule: profile.to_owned(),
            message: format!(
                "the CA policy has no [{profile}] section: this CA issues no {profile} \
                 certificate (hint: add the section with `nkpki policy set`)"
            ),
        }],
        summary: vec![format!("profile {profile}: not allowed by the CA policy")],
    };
    match profile {
        "server" | "client" => {
            let rule = if profile == "server" {
                policy.server.as_ref()
            } else {
                policy.client.as_ref()
            };
            match rule {
                Some(r) => issue_verdict(profile, r, view),
                None => missing(profile),
            }
        }
        "sub-ca" => match &policy.sub_ca {
            Some(r) => sub_ca_verdict(r, view),
            None => missing(profile),
        },
        // the server's own OCSP responder: M approvals, as without a policy
        _ => Verdict::no_policy(profile, threshold),
    }
}

/// Who must approve a change of the CA policy (an online `policy` session): the current
/// policy governs its own change, and a new policy can loosen any rule, so the change needs
/// what the strictest rule needs — the highest approval count of the current policy's
/// sections (at least M), with every holder any section requires (and at least as many
/// approvals as those). Without a policy: M approvals.
pub fn change_verdict(current: Option<&Policy>, threshold: u8) -> Verdict {
    let Some(policy) = current else {
        return Verdict::no_policy("policy", threshold);
    };
    let mut approvals = threshold;
    let mut required: Vec<String> = Vec::new();
    for (_, n, holders) in policy.quorums() {
        approvals = approvals.max(n);
        for h in holders {
            if !required.contains(h) {
                required.push(h.clone());
            }
        }
    }
    approvals = approvals.max(u8::try_from(required.len()).unwrap_or(u8::MAX));
    Verdict {
        profile: "policy".to_owned(),
        approvals,
        violations: Vec::new(),
        summary: vec![
            quorum_line("policy", approvals, &required),
            "a policy change needs the strictest quorum of the current policy".to_owned(),
        ],
        required_holders: required,
    }
}

fn quorum_verdict(profile: &str, rule: Option<&QuorumRule>, threshold: u8) -> Verdict {
    match rule {
        Some(r) => Verdict {
            profile: profile.to_owned(),
            approvals: r.approvals,
            required_holders: r.required_holders.clone(),
            violations: Vec::new(),
            summary: vec![quorum_line(profile, r.approvals, &r.required_holders)],
        },
        None => Verdict::no_policy(profile, threshold),
    }
}

/// Who must approve an online reshare: as for a policy change ([`change_verdict`]), the
/// strictest quorum of the current policy (at least M) with every holder a section
/// requires — a reshare replaces every share, the most sensitive change there is.
pub fn reshare_verdict(current: Option<&Policy>, threshold: u8) -> Verdict {
    let mut verdict = change_verdict(current, threshold);
    verdict.profile = "reshare".to_owned();
    verdict.summary = vec![
        quorum_line("reshare", verdict.approvals, &verdict.required_holders),
        "a reshare needs the strictest quorum of the current policy".to_owned(),
    ];
    verdict
}

fn quorum_line(profile: &str, approvals: u8, required: &[String]) -> String {
    if required.is_empty() {
        format!("policy [{profile}]: {approvals} approvals")
    } else {
        format!(
            "policy [{profile}]: {approvals} approvals, including {}",
            required.join(", ")
        )
    }
}

struct Judge<'a> {
    profile: &'a str,
    violations: Vec<Violation>,
    summary: Vec<String>,
}

impl Judge<'_> {
    fn refuse(&mut self, name: &str, message: String) {
        self.violations.push(Violation {
            rule: key(self.profile, name),
            message,
        });
    }

    fn common(
        &mut self,
        view: &CertificateView,
        max_days: Option<u32>,
        attributes: &[String],
        key_types: &[String],
    ) {
        if let Some(max) = max_days {
            self.summary.push(format!("at most {max} days"));
            if view.days > max {
                self.refuse(
                    "max_days",
                    format!("{} days asked, at most {max} allowed", view.days),
                );
            }
        }
        if !attributes.is_empty() {
            self.summary
                .push(format!("subject attributes {}", attributes.join(", ")));
            for (k, _) in &view.subject {
                if !attributes.contains(k) {
                    self.refuse(
                        "subject_attributes",
                        format!(
                            "subject attribute {k} is not allowed ({})",
                            attributes.join(", ")
                        ),
                    );
                }
            }
        }
        if !key_types.is_empty() {
            self.summary.push(format!("keys {}", key_types.join(", ")));
            let name = key_type_name(&view.key);
            if !key_types.contains(&name) {
                self.refuse(
                    "key_types",
                    format!("a {name} key is not allowed ({})", key_types.join(", ")),
                );
            }
        }
    }

    fn finish(self, approvals: u8, required: &[String]) -> Verdict {
        let mut summary = vec![quorum_line(self.profile, approvals, required)];
        summary.extend(self.summary);
        Verdict {
            profile: self.profile.to_owned(),
            approvals,
            required_holders: required.to_vec(),
            violations: self.violations,
            summary,
        }
    }
}

fn issue_verdict(profile: &str, r: &IssueRule, view: &CertificateView) -> Verdict {
    let mut j = Judge {
        profile,
        violations: Vec::new(),
        summary: Vec::new(),
    };
    j.common(view, r.max_days, &r.subject_attributes, &r.key_types);
    if !r.dns_domains.is_empty() {
        j.summary
            .push(format!("DNS names under {}", r.dns_domains.join(", ")));
    }
    if !r.ip_ranges.is_empty() {
        j.summary.push(format!("IPs in {}", r.ip_ranges.join(", ")));
    }
    if !r.email_domains.is_empty() {
        j.summary
            .push(format!("e-mail under {}", r.email_domains.join(", ")));
    }
    let ranges: Vec<Cidr> = r.ip_ranges.iter().filter_map(|c| c.parse().ok()).collect();
    for san in &view.sans {
        if let Some(name) = san.strip_prefix("DNS:") {
            if !r.dns_domains.is_empty()
                && !r
                    .dns_domains
                    .iter()
                    .any(|d| constraints::dns_within(name, d))
            {
                j.refuse(
                    "dns_domains",
                    format!("DNS name {name} is outside {}", r.dns_domains.join(", ")),
                );
            }
        } else if let Some(ip) = san.strip_prefix("IP:") {
            let inside = ip
                .parse()
                .is_ok_and(|ip| ranges.iter().any(|c| c.contains(&ip)));
            if !r.ip_ranges.is_empty() && !inside {
                j.refuse(
                    "ip_ranges",
                    format!("IP address {ip} is outside {}", r.ip_ranges.join(", ")),
                );
            }
        } else if let Some(addr) = san.strip_prefix("email:")
            && !r.email_domains.is_empty()
            && !r
                .email_domains
                .iter()
                .any(|d| constraints::email_within(addr, d))
        {
            j.refuse(
                "email_domains",
                format!(
                    "e-mail address {addr} is outside {}",
                    r.email_domains.join(", ")
                ),
            );
        }
    }
    // a client that finds no DNS name in a certificate falls back to its CN (OpenSSL's
    // host check does): a server certificate's CN must be one of the names judged above
    if profile == "server" && !(r.dns_domains.is_empty() && r.ip_ranges.is_empty()) {
        for (_, cn) in view.subject.iter().filter(|(k, _)| k == "CN") {
            let named = view.sans.iter().any(|san| {
                san.strip_prefix("DNS:")
                    .or_else(|| san.strip_prefix("IP:"))
                    .is_some_and(|name| name.eq_ignore_ascii_case(cn))
            });
            if !named {
                j.refuse(
                    "dns_domains",
                    format!(
                        "the common name {cn:?} is not one of the certificate's DNS names or IP \
                         addresses (a client may take it for a host name)"
                    ),
                );
            }
        }
    }
    j.finish(r.approvals, &r.required_holders)
}

fn sub_ca_verdict(r: &SubCaRule, view: &CertificateView) -> Verdict {
    let mut j = Judge {
        profile: "sub-ca",
        violations: Vec::new(),
        summary: Vec::new(),
    };
    j.common(view, r.max_days, &r.subject_attributes, &r.key_types);
    match r.constraints() {
        Ok(c) => {
            let expected = c.view_lines();
            if r.unconstrained {
                j.summary
                    .push("UNCONSTRAINED sub-CA (no name constraint)".to_owned());
            } else {
                j.summary
                    .push(format!("name constraints {}", expected.join(", ")));
            }
            // the certificate must carry exactly the policy's constraints and usages
            if view.name_constraints != expected || view.extended_key_usage != c.ekus {
                j.refuse(
                    "permitted_dns",
                    "the certificate's name constraints or extended key usages are not the \
                     policy's"
                        .to_owned(),
                );
            }
        }
        Err((k, why)) => j.refuse(k, why),
    }
    j.finish(r.approvals, &r.required_holders)
}

#[cfg(test)]
mod tests;
