//! Names a certificate may carry: DNS suffix rules, CIDR ranges and e-mail domains, shared
//! by a CA policy's SAN rules and a constrained sub-CA's nameConstraints (RFC 5280 §4.2.1.10).

use super::{PkiError, San};
use rcgen::ExtendedKeyUsagePurpose;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP range, `10.0.0.0/8` or `2001:db8::/32`, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a CIDR range (e.g. 10.0.0.0/8 or 2001:db8::/32)");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: the prefix is longer than {max} bits"));
        }
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "{s:?} has host bits set (hint: write {}/{prefix})",
                cidr.network()
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn mask_bits(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    fn network(&self) -> IpAddr {
        Self::mask_bits(self.addr, self.prefix)
    }

    /// Whether `ip` is in the range (an IPv4 address is never in an IPv6 range).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && Self::mask_bits(*ip, self.prefix) == self.addr
    }

    fn rcgen(&self) -> rcgen::CidrSubnet {
        rcgen::CidrSubnet::from_addr_prefix(self.addr, self.prefix)
    }
}

/// Whether a DNS name falls under a suffix rule: `example.org` allows the name itself and
/// every name below it; `.example.org` only names below it. Case does not matter.
pub fn dns_within(name: &str, rule: &str) -> bool {
    let (name, rule) = (name.to_ascii_lowercase(), rule.to_ascii_lowercase());
    match rule.strip_prefix('.') {
        Some(_) => name.len() > rule.len() && name.ends_with(&rule),
        None => name == rule || name.ends_with(&format!(".{rule}")),
    }
}

/// Whether an e-mail address falls under a rule: `user@example.org` (that mailbox),
/// `example.org` (any mailbox at that host) or `.example.org` (any host below it), as
/// RFC 5280 §4.2.1.10 reads rfc822Name constraints.
pub fn email_within(addr: &str, rule: &str) -> bool {
    let addr = addr.to_ascii_lowercase();
    let rule = rule.to_ascii_lowercase();
    if rule.contains('@') {
        return addr == rule;
    }
    let Some((_, host)) = addr.rsplit_once('@') else {
        return false;
    };
    match rule.strip_prefix('.') {
        Some(_) => host.len() > rule.len() && host.ends_with(&rule),
        None => host == rule,
    }
}

/// Checks a DNS suffix rule as a policy or constraint writes it.
pub fn check_dns_rule(rule: &str) -> Result<(), String> {
    let body = rule.strip_prefix('.').unwrap_or(rule);
    let ok = !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{rule:?} is not a DNS suffix (e.g. example.org or .example.org)"
        ))
    }
}

/// Checks an e-mail constraint: a mailbox, a host or `.`-prefixed domain.
pub fn check_email_rule(rule: &str) -> Result<(), String> {
    let host = match rule.rsplit_once('@') {
        Some((local, host)) if !local.is_empty() && !local.contains(char::is_whitespace) => host,
        Some(_) => return Err(format!("{rule:?} is not an e-mail address or domain")),
        None => rule,
    };
    check_dns_rule(host).map_err(|_| format!("{rule:?} is not an e-mail address or domain"))
}

/// Extended key usages a policy may allow a sub-CA, by the names OpenSSL prints.
pub const EKU_NAMES: [&str; 6] = [
    "serverAuth",
    "clientAuth",
    "codeSigning",
    "emailProtection",
    "timeStamping",
    "OCSPSigning",
];

pub(super) fn eku_from_name(name: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match name {
        "serverAuth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientAuth" => ExtendedKeyUsagePurpose::ClientAuth,
        "codeSigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "emailProtection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timeStamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "OCSPSigning" => ExtendedKeyUsagePurpose::OcspSigning,
        _ => return None,
    })
}

/// What a constrained sub-CA certificate carries: permitted subtrees (critical
/// nameConstraints) and the extended key usages it may issue for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubCaConstraints {
    pub dns: Vec<String>,
    pub ip: Vec<Cidr>,
    pub email: Vec<String>,
    /// EKU names from [`EKU_NAMES`]; empty: no extendedKeyUsage extension.
    pub ekus: Vec<String>,
}

impl SubCaConstraints {
    /// Whether any permitted subtree is set (else the sub-CA is unconstrained by name).
    pub fn constrains_names(&self) -> bool {
        !(self.dns.is_empty() && self.ip.is_empty() && self.email.is_empty())
    }

    /// The permitted subtrees as the certificate view shows them.
    pub fn view_lines(&self) -> Vec<String> {
        let dns = self.dns.iter().map(|d| format!("DNS:{d}"));
        let ip = self.ip.iter().map(|c| format!("IP:{c}"));
        let email = self.email.iter().map(|e| format!("email:{e}"));
        dns.chain(ip).chain(email).collect()
    }

    /// The constraints a certificate view describes (what [`Self::view_lines`] wrote).
    pub fn from_view(lines: &[String], ekus: &[String]) -> Result<Self, PkiError> {
        let bad = |what: String| PkiError::Build(format!("certificate view: {what}"));
        let mut c = SubCaConstraints {
            ekus: ekus.to_vec(),
            ..Default::default()
        };
        for line in lines {
            match line.split_once(':') {
                Some(("DNS", d)) => c.dns.push(d.to_owned()),
                Some(("IP", r)) => c.ip.push(r.parse().map_err(bad)?),
                Some(("email", e)) => c.email.push(e.to_owned()),
                _ => return Err(bad(format!("name constraint {line:?}"))),
            }
        }
        for eku in ekus {
            eku_from_name(eku).ok_or_else(|| bad(format!("extended key usage {eku:?}")))?;
        }
        Ok(c)
    }

    /// Whether a name the sub-CA's CSR asks for lies inside its constraints: a DNS name or
    /// an IP address must be inside a permitted subtree of its kind (a kind with none is
    /// excluded entirely, see [`Self::rcgen`]); an e-mail address is constrained only when
    /// e-mail subtrees are given.
    pub fn permits(&self, san: &San) -> bool {
        if !self.constrains_names() {
            return true;
        }
        match san {
            San::Dns(d) => self.dns.iter().any(|r| dns_within(d, r)),
            San::Ip(ip) => self.ip.iter().any(|r| r.contains(ip)),
            San::Email(e) => self.email.is_empty() || self.email.iter().any(|r| email_within(e, r)),
            San::Other(_) => true,
        }
    }

    /// The nameConstraints extension. Under RFC 5280 a name kind with no permitted subtree
    /// would be unconstrained, so a kind the policy does not permit is excluded whole (as
    /// the CA/Browser Forum asks of technically constrained sub-CAs): a zero-length
    /// dNSName, and 0.0.0.0/0 and ::/0.
    pub(super) fn rcgen(&self) -> Option<rcgen::NameConstraints> {
        use rcgen::GeneralSubtree;
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        if !self.constrains_names() {
            return None;
        }
        let dns = self.dns.iter().map(|d| GeneralSubtree::DnsName(d.clone()));
        let ip = self.ip.iter().map(|c| GeneralSubtree::IpAddress(c.rcgen()));
        let email = self
            .email
            .iter()
            .map(|e| GeneralSubtree::Rfc822Name(e.clone()));
        let mut excluded = Vec::new();
        if self.dns.is_empty() {
            excluded.push(GeneralSubtree::DnsName(String::new()));
        }
        if self.ip.is_empty() {
            for any in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                excluded.push(GeneralSubtree::IpAddress(
                    rcgen::CidrSubnet::from_addr_prefix(any, 0),
                ));
            }
        }
        Some(rcgen::NameConstraints {
            permitted_subtrees: dns.chain(ip).chain(email).collect(),
            excluded_subtrees: excluded,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cidr_ranges_parse_strictly_and_contain_their_addresses() {
        let r: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(r.contains(&"10.1.200.3".parse().unwrap()));
        assert!(!r.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!r.contains(&"::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(&"2001:db8:1::5".parse().unwrap()));
        assert!(
            "10.1.0.1/16"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("host bits")
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn suffix_rules_match_whole_labels_only() {
        assert!(dns_within("example.org", "example.org"));
        assert!(dns_within("www.Example.org", "example.org"));
        assert!(!dns_within("badexample.org", "example.org"));
        assert!(!dns_within("example.org", ".example.org"));
        assert!(dns_within("a.example.org", ".example.org"));
        assert!(email_within("alice@example.org", "example.org"));
        assert!(!email_within("alice@mail.example.org", "example.org"));
        assert!(email_within("alice@mail.example.org", ".example.org"));
        assert!(email_within("alice@example.org", "alice@example.org"));
        assert!(!email_within("bob@example.org", "alice@example.org"));
    }

    #[test]
    fn view_lines_round_trip() {
        let c = SubCaConstraints {
            dns: vec!["example.org".into()],
            ip: vec!["10.0.0.0/8".parse().unwrap()],
            email: vec![".example.org".into()],
            ekus: vec!["serverAuth".into()],
        };
        let back = SubCaConstraints::from_view(&c.view_lines(), &c.ekus).unwrap();
        assert_eq!(back, c);
    }
}
