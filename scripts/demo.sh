#!/usr/bin/env bash
# The whole flow on one machine: a 3-of-5 key ceremony with deployment packages, five
# SoftHSM tokens (stand-ins for Nitrokey HSM 2), each holder deploying onto its token and
# running the fire drill, offline signing with three tokens, then the server, three holder
# agents, online signing of an OpenSSL CSR, OpenSSL verifying, and the audit chain checked.
# Everything happens in a temporary directory removed at the end, processes included.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nkpki=${NKPKI:-$root/target/debug/nkpki}
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-demo.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# SoftHSM2 tokens live in this directory only; the real thing is OpenSC's module.
mkdir tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$work" > softhsm2.conf
export SOFTHSM2_CONF=$work/softhsm2.conf NKPKI_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
umask 077
echo 123456 > pin.txt   # every demo token's user PIN; real holders type theirs

step "Five holders, each with a token (SoftHSM here, a Nitrokey HSM 2 in real life) and an age key"
holders=(NK001:Alice:Paris NK002:Bruno:Lyon NK003:Chloe:Remote NK004:David:Paris NK005:Emma:Lyon)
entries=()
for h in "${holders[@]}"; do
    IFS=: read -r id name site <<<"$h"
    softhsm2-util --init-token --free --label "$id" --so-pin 12345678 --pin 123456 >/dev/null
    age-keygen -o "$id.key" 2>/dev/null
    recipient=$(grep -o 'age1[0-9a-z]*' "$id.key")
    echo "  $id  $name ($site)  $recipient"
    entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"$name\",\"holder_email\":\"${name,,}@example.org\",\"location\":\"$site\",\"age_recipient\":\"$recipient\"}")
done
(IFS=,; echo "[${entries[*]}]") > holders.json
run "$nkpki" token list

step "Key ceremony: 3-of-5, ECDSA P-384 CA key, one deployment package per holder"
run "$nkpki" ca-init --name "nkpki Demo Root CA" --org "nkpki Demo" --country FR \
    --key ecdsa-p384 --validity-years 10 --threshold 3 --holders holders.json --out ca \
    --package --server-url https://pki.example.org:8443
run ls -l ca ca/packages

step "Each holder deploys its package onto its own token, expecting the fingerprint handed over apart"
for h in "${holders[@]}"; do
    id=${h%%:*}
    # the text of the QR code ca/qr/$id.png (zbarimg --raw reads it); here from the ceremony log
    fp=$(grep -o "for $id .*fingerprint nkpki1:[^;]*" ca/ceremony.log | sed 's/.*fingerprint //')
    run "$nkpki" deploy "ca/packages/$id.nkpkg" --token "$id" --identity "$id.key" --pin-file pin.txt \
        --config-dir "holder-$id" --expect-fingerprint "$fp"
done

step "The QR code handed over at the ceremony says the same fingerprint"
if command -v zbarimg >/dev/null; then run zbarimg --quiet --raw ca/qr/NK002.png; fi

step "Fire drill on every token: PIN works, share matches the manifest, nothing revealed"
for h in "${holders[@]}"; do
    run "$nkpki" token drill --token "${h%%:*}" --manifest ca/manifest.json --pin-file pin.txt | tail -1
done

step "A server makes its key and CSR with OpenSSL"
run openssl req -new -newkey rsa:2048 -nodes -keyout server.key -subj "/CN=www.example.org/O=Example" \
    -addext "subjectAltName=DNS:www.example.org,DNS:example.org,IP:192.0.2.10" -out server.csr 2>/dev/null

step "Offline signing with three of the five tokens (NK001, NK003, NK005)"
run "$nkpki" sign --offline --manifest ca/manifest.json --csr server.csr --profile server --days 90 \
    --token NK001 --token NK003 --token NK005 --pin-file pin.txt --out server.crt --chain

step "Two tokens are not enough"
if "$nkpki" sign --offline --manifest ca/manifest.json --csr server.csr --profile server --days 90 \
    --token NK002 --token NK004 --pin-file pin.txt --out refused.crt; then
    echo "unexpected: two shares signed" >&2
    exit 1
fi

step "OpenSSL verifies the certificate against the CA"
run openssl x509 -in server.crt -noout -subject -issuer -ext subjectAltName,extendedKeyUsage
run openssl verify -CAfile ca/ca.crt server.crt

step "Online: the server registers the CA, an operator gets an API token"
fingerprint=$(openssl x509 -in ca/ca.crt -noout -fingerprint -sha256 | cut -d= -f2)
run "$nkpki" serve ca add --data-dir data --manifest ca/manifest.json --enrollment ca/enrollment.json \
    --expect-fingerprint "$fingerprint"
"$nkpki" serve token create --data-dir data --name operator 2>/dev/null > operator.token
"$nkpki" serve --listen 127.0.0.1:0 --data-dir data > serve.out 2> serve.log &
pids+=($!)
for _ in $(seq 50); do grep -q listening serve.out && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' serve.out)
ca_id=$(python3 -c "import json; print(json.load(open('ca/manifest.json'))['signed']['ca_id'])")
echo "server at $url, CA $ca_id"

step "Three holders start their agents (each machine sees only its own token)"
for id in NK002 NK003 NK004; do
    conf=$("$root/scripts/holder-machine.sh" "$nkpki" "$id")
    echo "$ nkpki agent --config holder-$id/$ca_id/agent.json --approve-profile server --approve-san-suffix .example.org"
    SOFTHSM2_CONF=$conf "$nkpki" agent --config "holder-$id/$ca_id/agent.json" \
        --pin-file pin.txt --server "$url" --insecure-http --approve-profile server --approve-san-suffix .example.org 2> "agent-$id.log" &
    pids+=($!)
done
for id in NK002 NK003 NK004; do
    for _ in $(seq 100); do grep -q 'connected to' "agent-$id.log" && break; sleep 0.1; done
    tail -1 "agent-$id.log"
done

step "An operator signs online: the three holders' agents approve that exact CSR"
run openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout api.key -subj "/CN=api.example.org" \
    -addext "subjectAltName=DNS:api.example.org" -out api.csr 2>/dev/null
run "$nkpki" sign --server "$url" --ca "$ca_id" --csr api.csr --profile server --days 30 \
    --api-token-file operator.token --out api.crt
run openssl verify -CAfile ca/ca.crt api.crt

step "The audit log: every step recorded, hash-chained"
run "$nkpki" audit verify --data-dir data
"$nkpki" audit export --data-dir data | python3 -c "import json,sys
for l in sys.stdin:
    e = json.loads(l); print('  %3d %-22s %s %s' % (e['seq'], e['event'], e['holder_id'] or '', e['detail'][:60]))"

printf '\n\033[1mDemo complete.\033[0m (temporary files in %s are removed now)\n' "$work"
