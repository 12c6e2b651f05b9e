"""Schemathesis hooks for the REST conformance run (openapi_conformance.sh).

Two request values are valid only by what the server did before, which no JSON Schema can
state, so the generator cannot make them valid by itself:

* An idempotency key (the `Idempotency-Key` header, or `requestId` in the query) names one
  request: a retry with the same key returns the first result, and the same key with a
  different body is refused (400 REQUEST_ID_REUSED). A client makes a new key for each new
  request; `before_call` does the same for the schema-valid (positive) requests that would
  reuse a key of this run for a different request. A retry of the same request keeps its key.

* A page token is opaque: only a `nextPageToken` the list answered is one. A schema-valid
  `filter` matches the grammar of the suite's filter language (the pattern the document
  states) but its values are semantic (an enum value, a timestamp, a resource name, which
  the field's description states). `filter_failure` accepts, for schema-valid requests only,
  the documented 400 for such a value: an application/problem+json INVALID_FIELD whose
  violations name nothing but `pageToken` or `filter`, each of them given in the request.
  Any other rejection of a schema-valid request still fails the run.
"""

import json
import uuid

import schemathesis

# Parameters whose valid values the server alone knows (see above).
SEMANTIC_QUERY_PARAMETERS = {"pageToken", "filter"}

_KEYS = {}


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _positive(case):
        return
    request = json.dumps([case.operation.label, case.path_parameters, case.body], sort_keys=True, default=str)
    headers = case.headers or {}
    query = case.query or {}
    for container, name in ((headers, "Idempotency-Key"), (query, "requestId")):
        key = container.get(name)
        if not isinstance(key, str) or not key:
            continue
        first = _KEYS.setdefault(key, request)
        if first != request:
            fresh = str(uuid.uuid4())
            _KEYS[fresh] = request
            container[name] = fresh


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code != "ST202" or not _positive(case) or response.status_code != 400:
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    if problem.get("reason") != "INVALID_FIELD":
        return True
    fields = {violation.get("field") for violation in problem.get("violations") or []}
    query = case.query or {}
    semantic = fields and fields <= SEMANTIC_QUERY_PARAMETERS and all(query.get(f) for f in fields)
    return not semantic
