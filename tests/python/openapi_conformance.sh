#!/usr/bin/env bash
# REST conformance: schemathesis (from PyPI) drives every route of a real `crm serve`'s
# /openapi.json with an admin token: responses must match their documented schemas, status
# codes and content types, schema-violating requests must be refused, undeclared methods must
# get 405 with the path's own Allow, and so on (all checks). The seed is fixed, so a run is
# repeatable.
#
# schemathesis_hooks.py beside this script says what no JSON Schema can: an idempotency key
# names one request (the hooks make a new key for a new request, as a client does), and a page
# token (only a nextPageToken the list answered is one) and the values inside a filter (its
# grammar is the documented pattern) are semantic, so for schema-valid requests the 400 that
# names `pageToken` or `filter`, and nothing else, is the documented answer.
#
# One check is still left out: positive_data_acceptance, which requires every schema-valid
# request to succeed. With the hooks its remaining failures are schema gaps still to close
# (fields an update cannot change, rules across fields, references to records that must
# exist, bounds of durations and enums narrower than their type); see issue 15.
#
# Usage: openapi_conformance.sh PATH_TO_CRM_BINARY PATH_TO_SCHEMATHESIS [EXAMPLES]
set -euo pipefail
CRM=$1
SCHEMATHESIS=$2
EXAMPLES=${3:-10}
DATA=$(mktemp -d)
LOG="$DATA/serve.log"
"$CRM" serve --data-dir "$DATA" --http-addr 127.0.0.1:38080 --grpc-addr 127.0.0.1:35051 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 60); do
    curl -sf http://127.0.0.1:38080/readyz >/dev/null && break
    sleep 0.5
done
curl -sf http://127.0.0.1:38080/readyz >/dev/null || { cat "$LOG"; exit 1; }
HOOKS="$(cd "$(dirname "$0")" && pwd)/schemathesis_hooks.py"
TOKEN=$("$CRM" token --data-dir "$DATA" --tenant conformance --user alice --role admin)
SCHEMATHESIS_HOOKS="$HOOKS" "$SCHEMATHESIS" run http://127.0.0.1:38080/openapi.json \
    -H "Authorization: Bearer $TOKEN" \
    --checks all --exclude-checks positive_data_acceptance \
    --seed 42 --max-examples "$EXAMPLES" --no-color
