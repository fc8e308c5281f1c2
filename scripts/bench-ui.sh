#!/usr/bin/env bash
# The web UI's render times: the CA page of a CA with 10,000 issued certificates (first,
# middle and last page, searches by CN, SAN and serial), the Overview and the Audit page,
# as a signed-in browser on loopback sees them. Prints; asserts nothing.
# Usage: scripts/bench-ui.sh [target/release/nkpki]  (UI_CERTIFICATES=N to change the count)
set -euo pipefail
nkpki=$(realpath "${1:-target/release/nkpki}")
echo
echo "==> web UI: pages of a CA with ${UI_CERTIFICATES:-10000} issued certificates"
"$(dirname "$nkpki")/examples/bench_ui" "$nkpki" --certificates "${UI_CERTIFICATES:-10000}"
