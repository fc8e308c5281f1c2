#!/usr/bin/env bash
# Benchmarks of the ceremony-core operations, as medians of repeated runs of the real
# binary, with ratios against the closest OpenSSL (or ssss) operation. Prints; asserts
# nothing.
set -euo pipefail
nkpki=$(realpath "${1:-target/release/nkpki}")
scripts=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nkpki-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# shellcheck source=scripts/bench-lib.sh
. "$scripts/bench-lib.sh"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }

holders() {
    local n=$1 entries=()
    for i in $(seq "$n"); do
        id=$(printf 'NK%03d' "$i")
        [ -f "$id.key" ] || age-keygen -o "$id.key" 2>/dev/null
        r=$(grep -o 'age1[0-9a-z]*' "$id.key")
        entries+=("{\"nitrokey_id\":\"$id\",\"holder_name\":\"H$i\",\"holder_email\":\"h$i@example.org\",\"location\":\"L\",\"age_recipient\":\"$r\"}")
    done
    (IFS=,; echo "[${entries[*]}]") > holders.json
}

ceremony() {
    rm -rf "ca-$1"
    "$nkpki" ca-init --name Bench --org Bench --country FR --key "$1" --threshold 3 --holders holders.json --out "ca-$1"
}

holders 5
printf '%-52s %10s %10s %8s\n' operation nkpki_ms peer_ms ratio
for key in rsa-4096 rsa-2048 ecdsa-p256; do
    runs=5; [ "$key" = rsa-4096 ] && runs=7
    ours=$(median_ms $runs ceremony "$key")
    bits=${key#rsa-}
    if [ "$key" = ecdsa-p256 ]; then
        peer=$(median_ms $runs openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)
    else
        peer=$(median_ms $runs openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:"$bits")
    fi
    printf '%-52s %10s %10s %8s\n' "ca-init --key $key (3 of 5) vs openssl genpkey" "$ours" "$peer" "$(ratio "$ours" "$peer")"
done

ceremony ecdsa-p256 >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s.key -subj /CN=b.example.org \
    -addext subjectAltName=DNS:b.example.org -out s.csr 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=PeerCA -days 30 -out ca.pem 2>/dev/null
sign() {
    "$nkpki" sign --offline --manifest ca-ecdsa-p256/manifest.json --csr s.csr --days 30 --force --out s.crt \
        --share ca-ecdsa-p256/shares/NK001.age --share ca-ecdsa-p256/shares/NK002.age \
        --share ca-ecdsa-p256/shares/NK003.age --identity NK001.key --identity NK002.key --identity NK003.key
}
ours=$(median_ms 9 sign)
peer=$(median_ms 9 openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -days 30 -out p.crt)
printf '%-52s %10s %10s %8s\n' "sign --offline 3 shares vs openssl x509 -req" "$ours" "$peer" "$(ratio "$ours" "$peer")"

head -c 32 /dev/urandom > secret.bin
split() { rm -rf s; "$nkpki" split --threshold 15 --shares 20 --in secret.bin --out s; }
ours=$(median_ms 9 split)
files=$(printf 's/share-%d ' $(seq 6 20))
combine() { "$nkpki" combine $files --out out.bin --force; }
ours_c=$(median_ms 9 combine)
cmp -s secret.bin out.bin || { echo "combine did not recover the secret" >&2; exit 1; }
if command -v ssss-split >/dev/null; then
    hexsecret=$(xxd -p -c 64 secret.bin)
    peer=$(median_ms 9 bash -c "echo $hexsecret | ssss-split -t 15 -n 20 -x -q")
    printf '%-52s %10s %10s %8s\n' "split 15 of 20 (32 B) vs ssss-split" "$ours" "$peer" "$(ratio "$ours" "$peer")"
else
    printf '%-52s %10s %10s %8s\n' "split 15 of 20 (32 B)" "$ours" "-" "-"
fi
printf '%-52s %10s %10s %8s\n' "combine 15 of 20 (32 B)" "$ours_c" "-" "-"

# Tokens on SoftHSM2: deploy a package, run the fire drill, sign with three tokens.
mkdir -p tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$PWD" > softhsm2.conf
export SOFTHSM2_CONF=$PWD/softhsm2.conf NKPKI_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
echo 123456 > pin.txt
for i in 1 2 3; do softhsm2-util --init-token --free --label "NK00$i" --so-pin 12345678 --pin 123456 >/dev/null; done
rm -rf ca-pkg
"$nkpki" ca-init --name Bench --org Bench --country FR --key ecdsa-p256 --threshold 3 --holders holders.json \
    --out ca-pkg --package >/dev/null 2>&1
deploy() { "$nkpki" deploy ca-pkg/packages/NK001.nkpkg --token NK001 --identity NK001.key --pin-file pin.txt \
    --config-dir cfg --force; }
ours=$(median_ms 9 deploy)
printf '%-52s %10s %10s %8s\n' "deploy a package onto a SoftHSM token" "$ours" "-" "-"
for i in 2 3; do "$nkpki" deploy "ca-pkg/packages/NK00$i.nkpkg" --token "NK00$i" --identity "NK00$i.key" \
    --pin-file pin.txt --config-dir "cfg$i" >/dev/null 2>&1; done
drill() { "$nkpki" token drill --token NK001 --manifest ca-pkg/manifest.json --pin-file pin.txt; }
ours=$(median_ms 9 drill)
peer=$(median_ms 9 pkcs11-tool --module "$NKPKI_PKCS11_MODULE" --token-label NK001 --login --pin 123456 --list-objects)
printf '%-52s %10s %10s %8s\n' "token drill vs pkcs11-tool --list-objects" "$ours" "$peer" "$(ratio "$ours" "$peer")"
tsign() { "$nkpki" sign --offline --manifest ca-pkg/manifest.json --csr s.csr --days 30 --force --out t.crt \
    --token NK001 --token NK002 --token NK003 --pin-file pin.txt; }
ours=$(median_ms 9 tsign)
printf '%-52s %10s %10s %8s\n' "sign --offline with 3 SoftHSM tokens" "$ours" "-" "-"

# Online: server + three agents on SoftHSM tokens (each agent sees only a copy of its own
# token, as on a holder's machine); the time from `nkpki sign --server` to the certificate.
"$nkpki" serve ca add --data-dir data --manifest ca-pkg/manifest.json --enrollment ca-pkg/enrollment.json \
    --expect-fingerprint "$(openssl x509 -in ca-pkg/ca.crt -noout -fingerprint -sha256 | cut -d= -f2)" >/dev/null
"$nkpki" serve token create --data-dir data --name bench 2>/dev/null > op.token
"$nkpki" serve --listen 127.0.0.1:0 --data-dir data > serve.out 2>/dev/null &
serve_pid=$!
for _ in $(seq 50); do grep -q listening serve.out && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' serve.out)
ca_id=$(python3 -c "import json; print(json.load(open('ca-pkg/manifest.json'))['signed']['ca_id'])")
agent_pids=()
for i in 1 2 3; do
    conf=$("$scripts/holder-machine.sh" "$nkpki" "NK00$i")
    cfg=cfg; [ "$i" != 1 ] && cfg=cfg$i
    SOFTHSM2_CONF=$conf "$nkpki" agent --config "$cfg/$ca_id/agent.json" --pin-file pin.txt \
        --server "$url" --insecure-http --approve-profile server >/dev/null 2>&1 &
    agent_pids+=($!)
done
sleep 2
online() { "$nkpki" sign --server "$url" --ca "$ca_id" --csr s.csr --days 30 --api-token-file op.token --out o.crt --force; }
ours=$(median_ms 9 online)
printf '%-52s %10s %10s %8s\n' "sign --server, 3 agents on SoftHSM (to certificate)" "$ours" "-" "-"
kill "$serve_pid" "${agent_pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true

# Threshold RSA (Shoup). The safe-prime search of a threshold ceremony against OpenSSL
# finding the same two safe primes; then, per key size, one signature share with its proof,
# its verification and the combination of three, against OpenSSL signing with the whole key
# (`openssl speed`, in-process on both sides). The search is random: medians vary a lot.
threshold_ceremony() {
    rm -rf "ca-t$1"
    "$nkpki" ca-init --name Bench --org Bench --country FR --key "$1" --mode threshold --threshold 3 \
        --holders holders.json --out "ca-t$1"
}
safe_sizes=(rsa-2048); [ "${BENCH_SAFE_4096:-0}" = 1 ] && safe_sizes+=(rsa-4096)
for key in "${safe_sizes[@]}"; do
    half=$(( ${key#rsa-} / 2 ))
    runs=5; [ "$key" = rsa-4096 ] && runs=1
    ours=$(median_ms $runs threshold_ceremony "$key")
    peer=$(median_ms $runs bash -c "openssl prime -generate -safe -bits $half && openssl prime -generate -safe -bits $half")
    printf '%-52s %10s %10s %8s\n' "ca-init --mode threshold $key vs 2 openssl safe primes" "$ours" "$peer" "$(ratio "$ours" "$peer")"
done
[ "${BENCH_SAFE_4096:-0}" = 1 ] || echo "(rsa-4096 safe primes take minutes on both sides: BENCH_SAFE_4096=1 to include them)"
"$(dirname "$nkpki")/examples/threshold_bench" "$scripts/../tests/fixtures/threshold" |
while read -r bits deal share verify combine; do
    whole=$(openssl speed -elapsed -seconds 2 -mr "rsa$bits" 2>/dev/null | awk -F: '/^\+F2:/ {printf "%.3f", 1000 / $4}')
    printf '%-52s %10s %10s %8s\n' "rsa-$bits: signature share + proof vs openssl sign" "$share" "$whole" "$(ratio "$share" "$whole")"
    printf '%-52s %10s %10s %8s\n' "rsa-$bits: verify one proof vs openssl sign" "$verify" "$whole" "$(ratio "$verify" "$whole")"
    printf '%-52s %10s %10s %8s\n' "rsa-$bits: combine 3 (proofs checked) vs openssl sign" "$combine" "$whole" "$(ratio "$combine" "$whole")"
    printf '%-52s %10s %10s %8s\n' "rsa-$bits: deal 3 of 5 from the primes" "$deal" "-" "-"
done

"$scripts/bench-online-modes.sh" "$nkpki"
"$scripts/bench-reshare.sh" "$nkpki"
"$scripts/bench-batch.sh" "$nkpki"
"$scripts/bench-ui.sh" "$nkpki"
