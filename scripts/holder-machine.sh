#!/usr/bin/env bash
# Usage: holder-machine.sh NKPKI LABEL
# Run in a directory holding a SoftHSM token directory `tokens/` (and SOFTHSM2_CONF set for
# it). Makes `machine-LABEL/`, a SoftHSM configuration that sees only a copy of token LABEL,
# as a holder's own machine sees only its own token (several processes on one SoftHSM
# directory race), and prints that configuration's path.
set -euo pipefail
nkpki=$1 label=$2
serial=$("$nkpki" token list --json |
    python3 -c "import json,sys; print([t['serial'] for t in json.load(sys.stdin) if t['label']=='$label'][0])")
mkdir -p "machine-$label/tokens"
for d in tokens/*; do
    # a SoftHSM token directory's name ends with the token's serial
    if [[ "$(basename "$d" | tr -d -)" == *"$serial" ]]; then cp -a "$d" "machine-$label/tokens/"; fi
done
printf 'directories.tokendir = %s/machine-%s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$PWD" "$label" > "machine-$label/softhsm2.conf"
echo "$PWD/machine-$label/softhsm2.conf"
