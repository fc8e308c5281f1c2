#!/usr/bin/env bash
# Remakes the fuzz fixtures and the named seeds from real runs (docs/fuzzing.md): openssl
# CSRs of several shapes, a 2-of-3 ceremony with packages, its shares, `split` files, age
# files sealed to the fixed test identity, wire bodies built from real values.
# Usage: scripts/fuzz-seeds.sh [path/to/nkpki]. Needs openssl, age, age-keygen, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
nkpki=$(realpath "${1:-target/debug/nkpki}")
fuzz=$PWD/fuzz
seeds=$fuzz/seeds
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir -p "$seeds"/{csr,share,manifest,package,wire,age,pkcs11_uri,holders}

# the fixed identity the age and package targets decrypt with (kept once made)
if [ ! -f "$fuzz/fixtures/fuzz-identity.txt" ]; then
    mkdir -p "$fuzz/fixtures"
    age-keygen 2>/dev/null | sed '1i # The fuzz targets'"'"' fixed age identity: a published test key that protects nothing.' \
        >"$fuzz/fixtures/fuzz-identity.txt"
fi
fixed=$(sed -n 's/^# public key: //p' "$fuzz/fixtures/fuzz-identity.txt")

# CSRs
S=$seeds/csr
req() { openssl req -new -nodes -keyout key.pem "$@" 2>/dev/null; }
req -newkey rsa:2048 -subj "/CN=www.example.org/O=Example/C=FR" \
    -addext "subjectAltName=DNS:www.example.org,DNS:example.org" -out "$S/ok-rsa2048-sans.pem"
openssl req -in "$S/ok-rsa2048-sans.pem" -outform DER -out "$S/ok-rsa2048-sans.der"
req -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj "/CN=host.example.org/OU=Ops/L=Paris/ST=IDF/emailAddress=ops@example.org" \
    -addext "subjectAltName=DNS:host.example.org,IP:192.0.2.7,IP:2001:db8::7,email:ops@example.org,URI:https://example.org/" \
    -addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=serverAuth,clientAuth" \
    -addext "subjectKeyIdentifier=hash" -out "$S/ok-p256-every-san-and-extensions.pem"
openssl req -in "$S/ok-p256-every-san-and-extensions.pem" -outform DER \
    -out "$S/ok-p256-every-san-and-extensions.der"
req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -subj "/CN=Sub CA/O=Example" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -out "$S/ok-p384-sub-ca.pem"
openssl x509 -req -in "$S/ok-p384-sub-ca.pem" -key key.pem -days 1 \
    -out "$S/bad-certificate-not-request.pem" 2>/dev/null
req -newkey ed25519 -subj "/CN=alice@example.org" \
    -addext "subjectAltName=email:alice@example.org,DNS:*.example.org" -out "$S/ok-ed25519-client.pem"
sed 's/CERTIFICATE REQUEST/NEW CERTIFICATE REQUEST/' "$S/ok-ed25519-client.pem" \
    >"$S/ok-ed25519-new-certificate-request-label.pem"
req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/" -outform DER -out "$S/ok-p256-empty-subject.der"
req -newkey rsa:1024 -subj "/CN=weak" -out "$S/bad-rsa1024-weak.pem"
req -newkey rsa:2048 -subj "/CN=pss" -sigopt rsa_padding_mode:pss -out "$S/bad-rsa-pss-signed.pem"
req -newkey ec -pkeyopt ec_paramgen_curve:secp256k1 -subj "/CN=k1" -out "$S/bad-secp256k1.pem"
python3 - "$S" <<'PY'
import sys
S = sys.argv[1] + '/'
d = bytearray(open(S + 'ok-rsa2048-sans.der', 'rb').read())
d[d.find(b'www.example.org')] ^= 1
open(S + 'bad-signature-broken.der', 'wb').write(d)
open(S + 'bad-trailing-byte.der', 'wb').write(open(S + 'ok-rsa2048-sans.der', 'rb').read() + b'\0')
PY

# a 2-of-3 ceremony with packages: the fixture manifest, shares, packages
for i in 1 2 3; do age-keygen -o "h$i.key" 2>/dev/null; done
r() { sed -n 's/^# public key: //p' "h$1.key"; }
cat >holders.json <<JSON
[
  {"nitrokey_id": "NK001", "holder_name": "Holder NK001", "holder_email": "nk001@example.org", "location": "Paris", "age_recipient": "$(r 1)"},
  {"nitrokey_id": "NK002", "holder_name": "Holder NK002", "holder_email": "nk002@example.org", "location": "Paris", "age_recipient": "$(r 2)"},
  {"nitrokey_id": "NK003", "holder_name": "Holder NK003", "holder_email": "nk003@example.org", "location": "Paris", "age_recipient": "$(r 3)"}
]
JSON
cp holders.json "$seeds/holders/ok-three-holders-with-recipients.json"
ceremony() {
    "$nkpki" ca-init --name "Fuzz Root CA" --org "nkpki fuzzing" --country FR --key "$1" \
        --validity-years 30 --threshold 2 --holders holders.json --out "$2" "${@:3}" >/dev/null
}
ceremony ecdsa-p256 ca --package --server-url https://pki.example.org:8443
ceremony rsa-2048 ca-rsa
cp ca/manifest.json "$fuzz/fixtures/manifest.json"
cp ca/manifest.json "$seeds/manifest/ok-ecdsa-p256.json"
cp ca-rsa/manifest.json "$seeds/manifest/ok-rsa-2048.json"
for i in 1 2 3; do
    mkdir "p$i"
    age -d -i "h$i.key" "ca/packages/NK00$i.nkpkg" >"p$i.tar"
    tar -C "p$i" -xf "p$i.tar"
done
cp p1.tar "$seeds/package/ok-NK001.tar"
cp p1/share.json "$seeds/share/ok-NK001.json"
cp p2/share.json "$seeds/share/ok-NK002.json"
age -d -i h3.key ca-rsa/shares/NK003.age >"$seeds/share/bad-share-of-another-ca.json"
printf 'the secret' | "$nkpki" split --threshold 2 --shares 3 --out split >/dev/null
cp split/share-1 "$seeds/share/ok-split-share-file.json"

# age files as contributions arrive: the share sealed to the fixed identity
age -r "$fixed" -a -o "$seeds/age/ok-armored-share.age" p1/share.json
age -r "$fixed" -o "$seeds/age/ok-binary-share.age" p2/share.json
age -r "$fixed" -r "$(r 1)" -a -o "$seeds/age/ok-two-recipients.age" p3/share.json
age -r "$(r 1)" -a -o "$seeds/age/bad-other-recipient.age" p1/share.json
printf '{"not": "a share"}' | age -r "$fixed" -a -o "$seeds/age/bad-plaintext-not-a-share.age"
age -r "$fixed" -a -o "$seeds/age/bad-share-of-another-ca.age" "$seeds/share/bad-share-of-another-ca.json"
head -c 300 "$seeds/age/ok-armored-share.age" >"$seeds/age/bad-truncated.age"

# the bad shapes, derived from the real ones
python3 - "$seeds" "$fuzz/fixtures/manifest.json" p1.tar <<'PY'
import io, json, sys, tarfile
seeds, manifest_path, tar_path = sys.argv[1:]
def put(path, data):
    open(seeds + '/' + path, 'w' if isinstance(data, str) else 'wb').write(data)
m = json.load(open(manifest_path))
m2 = json.loads(json.dumps(m)); m2['signed']['ca']['name'] = 'Other CA'
put('manifest/bad-altered-after-signing.json', json.dumps(m2, indent=2))
m3 = json.loads(json.dumps(m)); m3['signed']['holders'] = m3['signed']['holders'][:2]
put('manifest/bad-holder-missing.json', json.dumps(m3))
m4 = dict(m, comment='x'); put('manifest/bad-unknown-field.json', json.dumps(m4))
share = json.load(open(seeds + '/share/ok-NK001.json'))
s = dict(share, value='00' * 32); put('share/bad-zero-value.json', json.dumps(s))
s = dict(share, value=share['value'][:-1] + ('0' if share['value'][-1] != '0' else '1'))
put('share/bad-commitment-mismatch.json', json.dumps(s))
s = dict(share, index=9); put('share/bad-index-out-of-range.json', json.dumps(s))
s = dict(share, holder='NK002'); put('share/bad-wrong-holder.json', json.dumps(s))
s = dict(share, version=2); put('share/bad-version-2.json', json.dumps(s))
members = {}
with tarfile.open(tar_path) as t:
    for info in t.getmembers():
        members[info.name] = (info, t.extractfile(info).read())
def tar(name, entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    put('package/' + name, buf.getvalue())
def entry(name, data, kind=tarfile.REGTYPE, link=''):
    info = tarfile.TarInfo(name); info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind; info.linkname = link; info.mode = 0o644
    return info, (data if kind == tarfile.REGTYPE else None)
# open() does not read the QR code: a 1x1 PNG keeps these seeds small (the real one is ~70 KB)
import struct, zlib
def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
png = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 1, 0, 0, 0, 0))
       + chunk(b'IDAT', zlib.compress(b'\0\0')) + chunk(b'IEND', b''))
real = [entry(i.name, png if i.name == 'fingerprint.png' else d) for i, d in members.values()]
tar('ok-NK001-small-qr.tar', real)
tar('bad-path-traversal.tar', [entry('../share.json', members['share.json'][1])] + real)
tar('bad-symlink.tar', [entry('share.json', b'', tarfile.SYMTYPE, '/etc/passwd')] + real[1:])
tar('bad-duplicate-entry.tar', real + [real[0]])
tar('bad-share-missing.tar', [e for e in real if e[0].name != 'share.json'])
agent = json.loads(members['agent.json'][1]); agent['holder_id'] = 'NK002'
tar('bad-agent-names-another-holder.tar',
    [e if e[0].name != 'agent.json' else entry('agent.json', json.dumps(agent).encode()) for e in real])
PY

# wire bodies with real values
python3 - "$seeds/wire" "$seeds/csr/ok-rsa2048-sans.pem" ca/manifest.json ca/enrollment.json \
    "$seeds/age/ok-armored-share.age" <<'PY'
import hashlib, json, sys
out, csr_path, manifest_path, enrollment_path, age_path = sys.argv[1:]
csr = open(csr_path).read()
manifest = open(manifest_path).read()
ca_id = json.loads(manifest)['signed']['ca_id']
def put(name, v):
    open(out + '/' + name, 'w').write(json.dumps(v, indent=1))
put('ok-create-session-issue.json', {"ca_id": ca_id, "kind": "issue", "csr_pem": csr,
    "profile": "server", "days": 90})
put('ok-create-session-revoke.json', {"ca_id": ca_id, "kind": "revoke",
    "serial": "3f1a2b", "reason": "keyCompromise"})
view = {"profile": "server", "serial": "3f1a2b4c5d6e7f80", "subject": [["CN", "www.example.org"],
    ["O", "Example"], ["C", "FR"]], "sans": ["DNS:www.example.org", "DNS:example.org"],
    "key": "RSA-2048", "not_before": 1795000000, "not_after": 1802776000, "days": 90,
    "is_ca": False, "path_len": None, "key_usage": ["digitalSignature", "keyEncipherment"],
    "extended_key_usage": ["serverAuth"], "name_constraints": [], "dropped": []}
summary = {"profile": "server", "days": 90, "not_before": 1795000000,
    "serial": "3f1a2b4c5d6e7f80", "reason": None, "certificate": view}
offer = {"session_id": "4f9c0a1e7d2b", "ca_id": ca_id, "ca_name": "Fuzz Root CA",
    "kind": "issue", "requester": "operator", "request": csr,
    "request_sha256": hashlib.sha256(csr.encode()).hexdigest(), "summary": summary,
    "nonce": "9e" * 16, "expires_at": 1795000000,
    "recipient": "age1k4kjsv42v5h4yenptturx4kjndk4hxk4jfw9nxfqd25g4ge5f4vsada2k3"}
put('ok-session-offer.json', offer)
put('ok-poll.json', {"sessions": [offer, dict(offer, kind="crl", request="sign a fresh CRL",
    summary=dict(summary, profile="crl", days=7, serial=None, certificate=None))]})
put('ok-offer-summary.json', summary)
envelope = {"ca_id": ca_id, "session_id": "4f9c0a1e7d2b", "nonce": "9e" * 16,
    "expires_at": 1795000000, "holder_id": "NK001", "request_sha256": "ab" * 32,
    "profile": "server", "days": 90, "certificate_sha256": "ef" * 32,
    "ciphertext_sha256": "cd" * 32}
put('ok-envelope.json', envelope)
put('ok-contribution.json', {"envelope": envelope, "ciphertext": open(age_path).read(),
    "signature": "MEUCIQD" + "A" * 89})
put('ok-decline.json', {"holder_id": "NK002", "reason": "I do not know this requester"})
put('ok-challenge-request.json', {"ca_id": ca_id, "holder_id": "NK001"})
put('ok-challenge.json', {"challenge": "5a" * 32, "expires_at": 1795000060})
put('ok-login.json', {"ca_id": ca_id, "holder_id": "NK001", "challenge": "5a" * 32,
    "signature": "MEQCIA" + "B" * 90})
put('ok-login-ok.json', {"bearer": "c3" * 32, "expires_at": 1795003600})
put('ok-enroll.json', {"ca_id": ca_id, "holder_id": "NK001",
    "enrollment_code": "ABCDE-FGHJK-LMNPQ-RSTUV",
    "public_key_pem": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
    "signature": "MEUCIQ" + "C" * 90})
put('ok-api-error.json', {"error": "the session is no longer open", "code": "not-waiting"})
put('ok-register-ca.json', {"manifest": manifest, "enrollment": open(enrollment_path).read(),
    "expected_fingerprint": json.loads(manifest)['signed']['certificate_sha256']})
put('ok-session-status.json', {"session_id": "4f9c0a1e7d2b", "ca_id": ca_id, "kind": "issue",
    "state": "signed", "requester": "operator", "threshold": 2, "approved": ["NK001", "NK003"],
    "declined": ["NK002"], "refused": [], "expires_at": 1795000000, "seconds_left": 0,
    "serial": "3f1a2b", "certificate_pem": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"})
put('bad-create-session-unknown-field.json', {"ca_id": ca_id, "kind": "issue", "pin": "123456"})
put('bad-envelope-negative-days.json', dict(envelope, days=-1))
put('bad-unknown-kind.json', {"ca_id": ca_id, "kind": "destroy"})
PY
echo "seeds and fixtures remade under $fuzz"
