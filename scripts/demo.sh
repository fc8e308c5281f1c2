#!/usr/bin/env bash
# The main job end to end on one machine: a 3-of-5 key ceremony, a CSR made by OpenSSL,
# offline signing with three holders' shares, and OpenSSL verifying the result.
# Everything happens in a temporary directory that is removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nkpki=${NKPKI:-$root/target/debug/nkpki}
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Five holders each make an age key pair (their private key stays with them)"
holders=(NK001:Alice:Paris NK002:Bruno:Lyon NK003:Chloe:Remote NK004:David:Paris NK005:Emma:Lyon)
entries=()
for h in "${holders[@]}"; do
    IFS=: read -r id name site <<<"$h"
    age-keygen -o "$id.key" 2>/dev/null
    recipient=$(grep -o 'age1[0-9a-z]*' "$id.key")
    echo "  $id  $name ($site)  $recipient"
    entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"$name\",\"holder_email\":\"${name,,}@example.org\",\"location\":\"$site\",\"age_recipient\":\"$recipient\"}")
done
(IFS=,; echo "[${entries[*]}]") > holders.json

step "Key ceremony: 3-of-5, ECDSA P-384 CA key (use --key rsa-4096 for RSA)"
run "$nkpki" ca-init --name "nkpki Demo Root CA" --org "nkpki Demo" --country FR \
    --key ecdsa-p384 --validity-years 10 --threshold 3 --holders holders.json --out ca
run ls -l ca ca/shares

step "The manifest is public and signed; no file holds a secret in clear"
run head -c 400 ca/manifest.json; echo " …"

step "A server makes its key and CSR with OpenSSL"
run openssl req -new -newkey rsa:2048 -nodes -keyout server.key -subj "/CN=www.example.org/O=Example" \
    -addext "subjectAltName=DNS:www.example.org,DNS:example.org,IP:192.0.2.10" -out server.csr 2>/dev/null

step "Offline signing with three of the five shares (NK001, NK003, NK005)"
run "$nkpki" sign --offline --manifest ca/manifest.json --csr server.csr --profile server --days 90 \
    --share ca/shares/NK001.age --share ca/shares/NK003.age --share ca/shares/NK005.age \
    --identity NK001.key --identity NK003.key --identity NK005.key --out server.crt --chain

step "Two shares are not enough"
if "$nkpki" sign --offline --manifest ca/manifest.json --csr server.csr --profile server --days 90 \
    --share ca/shares/NK002.age --share ca/shares/NK004.age \
    --identity NK002.key --identity NK004.key --out refused.crt; then
    echo "unexpected: two shares signed" >&2
    exit 1
fi

step "OpenSSL verifies the certificate against the CA"
run openssl x509 -in server.crt -noout -subject -issuer -ext subjectAltName,extendedKeyUsage
run openssl verify -CAfile ca/ca.crt server.crt

printf '\n\033[1mDemo complete.\033[0m (temporary files in %s are removed now)\n' "$work"
