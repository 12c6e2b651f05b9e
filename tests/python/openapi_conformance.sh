#!/usr/bin/env bash
# REST conformance: schemathesis (from PyPI) drives every route of a real `crm serve`'s
# /openapi.json with an admin token: responses must match their documented schemas, status
# codes and content types, schema-violating requests must be refused, undeclared methods must
# get 405 with the path's own Allow, and so on (all checks). The seed is fixed, so a run is
# repeatable.
#
# Every check runs, positive_data_acceptance included: a request the document calls valid
# must succeed. The document is exact from the protos' annotations (field behaviour: required,
# output only, immutable; crm.common.v1.rules: formats, bounds, the values a request may write,
# rules across a resource's fields and a list's items), so the generator makes valid requests
# itself. schemathesis_hooks.py beside this script says what no JSON Schema can: an idempotency
# key names one request (the hooks make a new key for a new request, as a client does), some
# values are semantic (a page token only the list issued, a filter's values, a reference to a
# record that must exist, a phone number of its country's plan), and a few rules compare two
# values of one request (a record merged into itself, a portfolio given to the user it is
# taken from, duplicate stage names or emails, a mask naming a field the body leaves out). For
# schema-valid requests the 400 that names only such a field, with the value the request
# gave it, is the documented answer; any other rejection fails the run.
#
# The filter_too_much health check is off: a pipeline's stages must hold exactly one won and
# one lost stage (the schema says so with `contains`, `minContains` and `maxContains`), and
# Hypothesis finds such lists by generating and discarding many; what it keeps is tested.
#
# Usage: openapi_conformance.sh PATH_TO_CRM_BINARY PATH_TO_SCHEMATHESIS [EXAMPLES]
set -euo pipefail
CRM=$1
SCHEMATHESIS=$2
EXAMPLES=${3:-10}
DATA=$(mktemp -d)
LOG="$DATA/serve.log"
# Ports the system picks (a fixed port inside the ephemeral range can be taken by any
# connection's local end); the banner says which.
"$CRM" serve --data-dir "$DATA" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
BASE=""
for _ in $(seq 1 60); do
    BASE=$(grep -o 'REST on http://[0-9.:]*' "$LOG" | head -1 | sed 's/^REST on //' || true)
    [ -n "$BASE" ] && curl -sf "$BASE/readyz" >/dev/null && break
    sleep 0.5
done
{ [ -n "$BASE" ] && curl -sf "$BASE/readyz" >/dev/null; } || { cat "$LOG"; exit 1; }
HOOKS="$(cd "$(dirname "$0")" && pwd)/schemathesis_hooks.py"
TOKEN=$("$CRM" token --data-dir "$DATA" --tenant conformance --user alice --role admin)
SCHEMATHESIS_HOOKS="$HOOKS" "$SCHEMATHESIS" run "$BASE/openapi.json" \
    -H "Authorization: Bearer $TOKEN" \
    --checks all \
    --suppress-health-check=filter_too_much \
    --seed 42 --max-examples "$EXAMPLES" --no-color
