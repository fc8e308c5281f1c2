//! Looks for secrets in a live process's memory: reads every readable mapping through
//! `/proc/PID/maps` and `/proc/PID/mem` and reports each needle found, naming the value,
//! its encoding, the mapping and the address.
//!
//! Every secret is searched as 32-byte pieces of each encoding (a value longer than 32
//! bytes gives one piece per 32 bytes, so a copy half overwritten is still found); every
//! piece carries at least 64 secret bits, so none occurs by chance. What is searched for an RSA key, an EC key, a
//! KEK and a share is built by [`rsa_key`], [`ec_key`], [`kek`] and [`share`].

use memchr::memmem::Finder;
use num_bigint::BigUint;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};

/// Length of every piece searched.
const PIECE: usize = 32;
/// How much of a mapping is read at once.
const CHUNK: usize = 4 << 20;

/// One piece of one encoding of one secret.
pub struct Needle {
    /// The secret, e.g. `RSA p`.
    pub value: String,
    /// The encoding, e.g. `little-endian` or `hex`.
    pub form: String,
    /// Offset of the piece within the encoding.
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// Where a needle was found.
pub struct Hit {
    pub value: String,
    pub form: String,
    /// Where the whole encoding would start (the piece's address less its offset): pieces
    /// of one copy share it.
    pub start: u64,
    pub offset: usize,
    /// The mapping: its path, `[heap]`, `[stack]`, `anonymous: thread stack`, …
    pub region: String,
    pub region_start: u64,
}

/// What one scan found.
pub struct Report {
    pub pid: u32,
    pub bytes_read: u64,
    pub regions: usize,
    pub unreadable: usize,
    pub hits: Vec<Hit>,
}

impl Report {
    /// Distinct copies per secret (and encoding), e.g. `RSA p (little-endian)` → 2.
    pub fn copies(&self) -> BTreeMap<String, usize> {
        let mut starts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for h in &self.hits {
            let v = starts
                .entry(format!("{} ({})", h.value, h.form))
                .or_default();
            if !v.contains(&h.start) {
                v.push(h.start);
            }
        }
        starts.into_iter().map(|(k, v)| (k, v.len())).collect()
    }

    /// Whether anything of the secrets whose name starts with `prefix` was found.
    pub fn found(&self, prefix: &str) -> bool {
        self.hits.iter().any(|h| h.value.starts_with(prefix))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "process {}: {} readable mappings, {} MiB read, {} unreadable",
            self.pid,
            self.regions,
            self.bytes_read >> 20,
            self.unreadable
        )?;
        if self.hits.is_empty() {
            return writeln!(f, "  nothing found");
        }
        for (value, n) in self.copies() {
            writeln!(f, "  {value}: {n} copies")?;
        }
        for h in &self.hits {
            writeln!(
                f,
                "    {} ({}) bytes {}..{} at {:#x} in {} (+{:#x})",
                h.value,
                h.form,
                h.offset,
                h.offset + PIECE,
                h.start + h.offset as u64,
                h.region,
                h.start + h.offset as u64 - h.region_start
            )?;
        }
        Ok(())
    }
}

/// Splits one encoding into pieces: every 32 bytes, and the last 32.
pub fn pieces(value: &str, form: &str, bytes: &[u8]) -> Vec<Needle> {
    assert!(
        bytes.len() >= PIECE,
        "{value} ({form}) is too short to search"
    );
    let mut offsets: Vec<usize> = (0..=bytes.len() - PIECE).step_by(PIECE).collect();
    if bytes.len() % PIECE != 0 {
        offsets.push(bytes.len() - PIECE);
    }
    offsets
        .into_iter()
        .map(|offset| Needle {
            value: value.to_owned(),
            form: form.to_owned(),
            offset,
            bytes: bytes[offset..offset + PIECE].to_vec(),
        })
        .collect()
}

/// A number of `width` bytes, big- and little-endian (little-endian is also how 64-bit
/// limbs lie in memory).
pub fn number(value: &str, n: &BigUint, width: usize) -> Vec<Needle> {
    let mut be = n.to_bytes_be();
    assert!(be.len() <= width, "{value} is wider than {width} bytes");
    let mut padded = vec![0u8; width - be.len()];
    padded.append(&mut be);
    let mut le = padded.clone();
    le.reverse();
    let mut out = pieces(value, "big-endian", &padded);
    out.extend(pieces(value, "little-endian", &le));
    out
}

/// 32 secret bytes in both byte orders and as hex text in both cases.
pub fn secret32(value: &str, bytes: &[u8; 32]) -> Vec<Needle> {
    let mut out = number(value, &BigUint::from_bytes_be(bytes), 32);
    out.extend(pieces(value, "hex", hex::encode(bytes).as_bytes()));
    out.extend(pieces(value, "HEX", hex::encode_upper(bytes).as_bytes()));
    out
}

/// A share's value.
pub fn share(index: u8, value: &[u8; 32]) -> Vec<Needle> {
    secret32(&format!("share {index}"), value)
}

/// The KEK and the AEAD key derived from it (as `sss::wrap` derives it).
pub fn kek(kek: &[u8; 32]) -> Vec<Needle> {
    let mut aead = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, kek)
        .expand(b"nkpki kek -> aead key v1", &mut aead)
        .unwrap();
    let mut out = secret32("KEK", kek);
    out.extend(secret32("KEK-derived AEAD key", &aead));
    out
}

/// The secret part of a PKCS#8 DER, from 8 bytes of DER before the first secret byte
/// (`secret` is the big-endian encoding of the first private field) to 8 bytes past
/// `secret_end` bytes after it: the rest (the algorithm header, the modulus, the public
/// point) is public and would be found in any process that holds the certificate.
fn pkcs8_secret_part(pkcs8: &[u8], secret: &[u8], secret_len: usize) -> Vec<Needle> {
    let at = memchr::memmem::find(pkcs8, secret).expect("the private field in the PKCS#8");
    let from = at.saturating_sub(8);
    let to = (at + secret_len + 8).min(pkcs8.len());
    pieces("CA key PKCS#8", "DER", &pkcs8[from..to])
}

/// An EC CA key: the private part of its PKCS#8 DER, and its scalar.
pub fn ec_key(pkcs8: &[u8], scalar: &[u8; 32]) -> Vec<Needle> {
    let mut out = pkcs8_secret_part(pkcs8, scalar, scalar.len());
    out.extend(secret32("CA scalar", scalar));
    out
}

/// An RSA CA key: the private part of its PKCS#8 DER; d, p, q, dp, dq, qinv; and the Montgomery values rsa
/// 0.10 keeps (crypto-bigint's `BoxedMontyParams` of p and q: R mod p and R² mod p,
/// R = 2^(64·limbs), and qinv in Montgomery form qinv·R mod p), each at its limb width.
pub fn rsa_key(pkcs8: &[u8]) -> Vec<Needle> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let key = rsa::PrivateKey::from_pkcs8_der(pkcs8).unwrap();
    let big = |u: &rsa::BoxedUint| BigUint::from_bytes_be(&u.to_be_bytes());
    let n = big(key.n().as_ref());
    let d = big(key.d());
    let p = big(key.primes()[0].as_ref());
    let q = big(key.primes()[1].as_ref());
    let one = BigUint::from(1u8);
    let dp = &d % (&p - &one);
    let dq = &d % (&q - &one);
    let qinv = q.modpow(&(&p - 2u8), &p);
    // crypto-bigint sizes every value to whole 64-bit limbs of its modulus
    let limbs = |m: &BigUint| m.bits().div_ceil(64) as usize;
    let width = |m: &BigUint| limbs(m) * 8;
    let r = |m: &BigUint| (BigUint::from(1u8) << (64 * limbs(m))) % m;
    let r2 = |m: &BigUint| (r(m) * r(m)) % m;
    // d, p, q, dp, dq and qinv follow the public n and e to the end of the DER
    let d_be = d.to_bytes_be();
    let mut out = pkcs8_secret_part(pkcs8, &d_be, pkcs8.len());
    out.extend(number("RSA d", &d, width(&n)));
    for (name, v, m) in [
        ("RSA p", &p, &p),
        ("RSA q", &q, &q),
        ("RSA dp", &dp, &p),
        ("RSA dq", &dq, &q),
        ("RSA qinv", &qinv, &p),
    ] {
        out.extend(number(name, v, width(m)));
    }
    let monty = [
        ("RSA R mod p (Montgomery one of p)", r(&p), &p),
        ("RSA R^2 mod p", r2(&p), &p),
        ("RSA R mod q (Montgomery one of q)", r(&q), &q),
        ("RSA R^2 mod q", r2(&q), &q),
        (
            "RSA qinv*R mod p (qinv in Montgomery form)",
            (&qinv * r(&p)) % &p,
            &p,
        ),
    ];
    for (name, v, m) in monty {
        out.extend(number(name, &v, width(m)));
    }
    out
}

struct Region {
    start: u64,
    end: u64,
    name: String,
}

/// glibc's per-thread malloc arenas are 64 MiB reservations, aligned to their size.
const ARENA: u64 = 64 << 20;

/// The readable mappings of `pid`, named by path, or for anonymous ones by their shape:
/// a per-thread malloc arena starts on a 64 MiB boundary, below the reserved rest of it; a
/// thread stack sits just above its guard page.
fn readable_regions(pid: u32) -> Vec<Region> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let all: Vec<(u64, u64, String, String)> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.to_owned();
            let path = fields.nth(3).unwrap_or("").to_owned();
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
                perms,
                path,
            ))
        })
        .collect();
    let guard = |i: Option<&(u64, u64, String, String)>| {
        i.is_some_and(|(_, _, perms, path)| perms == "---p" && path.is_empty())
    };
    all.iter()
        .enumerate()
        .filter_map(|(i, (start, end, perms, path))| {
            // [vvar] and [vsyscall] are kernel pages that /proc/PID/mem does not serve
            let special = matches!(path.as_str(), "[vvar]" | "[vvar_vclock]" | "[vsyscall]");
            if !perms.starts_with('r') || special {
                return None;
            }
            let before = i.checked_sub(1).and_then(|j| all.get(j));
            let after = all.get(i + 1);
            let name = if !path.is_empty() {
                path.clone()
            } else if start % ARENA == 0 && guard(after) && after.is_some_and(|a| a.0 == *end) {
                "anonymous: malloc arena".to_owned()
            } else if guard(before) && before.is_some_and(|b| b.1 == *start && b.1 - b.0 <= 65536) {
                "anonymous: thread stack".to_owned()
            } else {
                "anonymous".to_owned()
            };
            Some(Region {
                start: *start,
                end: *end,
                name,
            })
        })
        .collect()
}

/// Reads every readable mapping of process `pid` (root, or CAP_SYS_PTRACE, reads even a
/// non-dumpable process) and finds every needle.
pub fn scan(pid: u32, needles: &[Needle]) -> Report {
    let finders: Vec<Finder> = needles.iter().map(|n| Finder::new(&n.bytes)).collect();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap_or_else(|e| {
        panic!(
            "cannot open /proc/{pid}/mem: {e}\nhint: nkpki processes are non-dumpable: \
                 the memory tests need root (or CAP_SYS_PTRACE)"
        )
    });
    let mut report = Report {
        pid,
        bytes_read: 0,
        regions: 0,
        unreadable: 0,
        hits: Vec::new(),
    };
    let mut buf = vec![0u8; CHUNK + PIECE];
    for region in readable_regions(pid) {
        report.regions += 1;
        // chunks overlap by a piece's length, so nothing straddling a boundary is missed;
        // a hit in the overlap is counted once, by the chunk it starts in
        let mut at = region.start;
        while at < region.end {
            let len = ((region.end - at) as usize).min(CHUNK + PIECE);
            let ok =
                mem.seek(SeekFrom::Start(at)).is_ok() && mem.read_exact(&mut buf[..len]).is_ok();
            if !ok {
                report.unreadable += 1;
                at += CHUNK as u64;
                continue;
            }
            report.bytes_read += len.min(CHUNK) as u64;
            let hay = &buf[..len];
            for (needle, finder) in needles.iter().zip(&finders) {
                for pos in finder.find_iter(hay) {
                    if pos >= CHUNK {
                        continue;
                    }
                    report.hits.push(Hit {
                        value: needle.value.clone(),
                        form: needle.form.clone(),
                        start: at + pos as u64 - needle.offset as u64,
                        offset: needle.offset,
                        region: region.name.clone(),
                        region_start: region.start,
                    });
                }
            }
            at += CHUNK as u64;
        }
    }
    report
}
