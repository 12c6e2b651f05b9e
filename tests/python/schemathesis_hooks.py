"""Schemathesis hooks for the REST conformance run (openapi_conformance.sh).

Some request values are valid only by what the server holds or did before, and a few rules
relate two values of one request; no JSON Schema can state either, so the generator cannot
make them valid by itself. Everything else a request must be is in /openapi.json.

* An idempotency key (the `Idempotency-Key` header, or `requestId` in the query) names one
  request: a retry with the same key returns the first result, and the same key with a
  different body is refused (400 REQUEST_ID_REUSED). A client makes a new key for each new
  request; `before_call` does the same for the schema-valid (positive) requests that would
  reuse a key of this run for a different request. A retry of the same request keeps its key.

`filter_failure` accepts, for schema-valid requests only, the documented 400 (an
application/problem+json INVALID_FIELD) when each of its violations names one of these, with
the value the request gave it; any other rejection of a schema-valid request fails the run:

* Semantic values. A page token is opaque: only a `nextPageToken` the list answered is one. A
  `filter` matches the grammar of the suite's filter language (the pattern the document states)
  but its values are semantic (an enum value, a timestamp, a resource name, as the parameter's
  description states). A reference (a field whose schema has `x-reference`, the
  `resource:<collection>` format of the protos) must name a record of the tenant that exists.
  A phone number must be one of its country's numbering plan (the pattern states the form). A
  stage id names a stage of the pipeline (none when it is created).

* Rules across values of one request, which JSON Schema cannot state (it cannot compare one
  value with another): a record is not merged into itself (`merged` naming the path's record);
  a survivorship choice names the survivor or a merged record;
  a portfolio is not reassigned to the user it is taken from (`toUsers` holding `fromUser`, or
  the path's user); an event stream's `types` are those of its `source` feed; stage names and
  ids are unique within a pipeline, email addresses within a contact, columns within an
  import's header (after its mapping, which may skip them all); an import's `format` agrees
  with the body's Content-Type; and an update mask that names a field the body does not give
  clears it, which a required field (an owner, a pipeline's stages) refuses. A metric query
  groups a metric by one of the groupings the catalogue gives it, a period of dates ends
  after it starts and spans at most ten years, forecast accuracy and quota attainment take a forecast period (a month or
  a quarter), and a goal's baseline ends before the day it is set, its due date is after it,
  and its target is one its metric can reach. A notification rule names event types of the
  feeds' catalogue, a condition on their payloads' fields, and recipients of the tenant; a
  webhook endpoint's URL is one that can receive webhooks; an email template is one of the
  template language, and a preview's sample is a payload of one of the rule's event types. A
  user's time zone is one of the IANA database, and their quiet hours end at another time
  than they start.

A path parameter of another type (an array, a number) reaches the server as the URL spells it:
when that text is valid by the parameter's pattern (the array [null, null] spelt `null,null`
is a valid user id), the server cannot tell, and `filter_failure` does not count its
acceptance as a schema-violating request accepted.
"""

import json
import re
import urllib.parse
import uuid

import schemathesis

# The import routes: a CSV header's columns are unique, which no pattern states.
IMPORTS = ("/v1/contacts:import", "/v1/deals:import")

# The routes that take a drafted rule (or an endpoint): their values name what the server knows.
RULE_DRAFTS = ("/v1/rules", "/v1/rules:previewEmail", "/v1/rules:backtest", "/v1/webhookEndpoints")

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


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _segments(path):
    """`deal.lineItems[0].product` -> ["deal", "lineItems", 0, "product"]."""
    return [name if name else int(index) for name, index in _SEGMENT.findall(path)]


def _resolve(case, schema):
    """The schema behind `$ref`s and the `allOf` a description wraps a reference in."""
    raw = case.operation.schema.raw_schema
    for _ in range(10):
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            node = raw
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node.get(part, {})
            schema = node
        elif "allOf" in schema and "properties" not in schema and "items" not in schema:
            refs = [s for s in schema["allOf"] if isinstance(s, dict) and "$ref" in s]
            if not refs:
                return schema
            schema = refs[0]
        else:
            return schema
    return {}


def _body_schema(case):
    content = (case.operation.definition.raw.get("requestBody") or {}).get("content") or {}
    return _resolve(case, (content.get("application/json") or {}).get("schema"))


def _lookup(case, path):
    """The schema and the request's value of the body field a violation names (its first
    segment may be the body's own field, `deal.` of CreateDeal)."""
    segments = _segments(path)
    body = case.body if isinstance(case.body, dict) else {}
    if segments and segments[0] not in body and len(segments) > 1:
        segments = segments[1:]
    schema, value = _body_schema(case), body
    for segment in segments:
        if isinstance(segment, int):
            schema = _resolve(case, schema.get("items"))
            value = value[segment] if isinstance(value, list) and segment < len(value) else None
        else:
            schema = _resolve(case, (schema.get("properties") or {}).get(segment))
            value = value.get(segment) if isinstance(value, dict) else None
    return schema, value


def _named(schema, key):
    return key in schema or key in (schema.get("items") or {})


def _record(case):
    """The name of the record the path names, `contacts/{id}` of /v1/contacts/{id}:merge."""
    collection = case.operation.path.split("/")[2]
    return f"{collection}/{(case.path_parameters or {}).get('id')}"


def _explained(case, violation):
    field = violation.get("field") or ""
    description = violation.get("description") or ""
    query = case.query or {}
    body = case.body if isinstance(case.body, dict) else {}
    if field in SEMANTIC_QUERY_PARAMETERS:
        return bool(query.get(field))
    if field == "body" and case.operation.path in IMPORTS:
        # A CSV header naming one column twice, or its mapping skipping every column (or, for
        # history, the external id rows are matched on).
        mapping = dict(
            (p.split(":", 1)[0].strip(), p.split(":", 1)[1].strip())
            for p in (query.get("mapping") or "").split(",")
            if ":" in p
        )
        header = [c.strip() for c in str(case.body or "").split("\n", 1)[0].strip().split(",")]
        names = [mapping.get(c, c) for c in header]
        held = [n for n in names if n != "-"]
        if description.startswith("two columns hold"):
            return len(held) != len(set(held))
        if description.startswith("the file needs an `external_id` column"):
            return "external_id" not in held
        return description.startswith("no column holds") and bool(mapping)
    if field == "format" and case.operation.path in IMPORTS:
        # `format` naming the other format than the body's Content-Type.
        return description == "contradicts the body's Content-Type"
    if field == "types" and case.operation.path == "/v1/events:stream":
        # A type of another feed than the `source` named.
        source = query.get("source")
        return bool(source) and any(
            t.strip().rsplit(".", 1)[0] != source for t in (query.get("types") or "").split(",") if t.strip()
        )
    if description.endswith(("ends before it starts", "is longer than ten years")):
        # A period of dates (`YYYY-MM-DD..YYYY-MM-DD`) whose last day is before its first, or
        # more than ten years after it (the bound of a query's work).
        return True
    if case.operation.path == "/v1/goals" and case.method == "POST":
        # A goal's baseline is measured (it ends before today), its due date is after today, and
        # its target is one the metric can reach from the baseline the data gives: rules of the
        # day the goal is set, of the target's kind and of the data, which no schema states.
        return field in ("goal.baselinePeriod", "goal.dueDate", "goal.target") and any(
            phrase in description
            for phrase in (
                "must end before today",
                "must be after today",
                "target is",
                "is a ratio",
                # Against the baseline the data gives: none or 0 for a relative target, or the
                # target's own value already.
                "target needs a baseline",
                "no progress could be measured",
            )
        )
    if case.operation.path in RULE_DRAFTS and case.method == "POST":
        # A rule's or a webhook endpoint's values name what the server knows: an event type of
        # the feeds' catalogue, a condition on the fields of those types' payloads, recipients
        # of the tenant, a URL that can receive webhooks (http or https, a host, no
        # credentials); an email template is one in the template language, and a preview's
        # sample is a payload of one of the rule's event types.
        return field.startswith(
            (
                "rule.eventTypes",
                "rule.condition",
                "rule.recipients",
                "rule.emailTemplate",
                "sampleEventType",
                "samplePayload",
                "webhookEndpoint.eventTypes",
                "webhookEndpoint.url",
            )
        )
    if case.operation.path.endswith("/notificationPreferences"):
        # A time zone must be one of the IANA database (the pattern states the form); quiet
        # hours end at another time than they start.
        return field in ("notificationPreferences.timeZone", "notificationPreferences.quietHours.end")
    if case.operation.path.endswith(":query"):
        # A metric is split only by the groupings the catalogue gives it (GET /v1/metrics); a
        # period of dates ends after it starts.
        if field in ("group_by", "groupBy"):
            return "cannot be grouped this way" in description
        if field == "period":
            return "is over a forecast period" in description
    schema, value = _lookup(case, field)
    if case.method == "PATCH":
        # A field the update mask names but the body leaves out is cleared, which a required
        # field (or one an update may not clear, or a pipeline's stages) refuses.
        mask = (query.get("updateMask") or "").split(",")
        top = _segments(field)[1:2]
        if top and top[0] in mask and body.get(top[0]) in (None, "", []):
            return True
    if value in (None, "", []) and not field.startswith(("fieldSources", "field_sources")):
        return False
    if _named(schema, "x-reference"):
        return True
    if "phone" in field.lower() and "phone number" in description:
        return True
    base = field.split("[")[0]
    if base == "merged" and case.operation.path.endswith(":merge"):
        return _record(case) in (value if isinstance(value, list) else [value])
    if base == "toUsers":
        users = body.get("toUsers") or []
        if case.operation.path.endswith(":transferPortfolio"):
            return (case.path_parameters or {}).get("id") in users
        return body.get("fromUser") in users
    if field.endswith("].address") and description == "is listed twice":
        # An email address listed twice in one contact (compared in lower case).
        emails = body.get("emails") or []
        addresses = [str(e.get("address", "")).strip().lower() for e in emails if isinstance(e, dict)]
        return addresses.count(str(value).strip().lower()) > 1
    if field.endswith("].id") and "is not a stage of this pipeline" in description:
        # A stage id names a stage the pipeline has (none, when it is created).
        return True
    if base in ("fieldSources", "field_sources") and "must name the survivor or one of" in description:
        allowed = set(body.get("merged") or []) | {_record(case)}
        return any(source not in allowed for source in (body.get("fieldSources") or {}).values())
    if base.endswith("stages") and "is used twice" in description:
        stages = [s for s in value if isinstance(s, dict)]
        names = [str(s.get("displayName", "")).strip().lower() for s in stages]
        ids = [str(s.get("id")).lower() for s in stages if s.get("id")]
        return len(names) != len(set(names)) or len(ids) != len(set(ids))
    return False


def _path_values_valid(case, response):
    """Whether every path parameter, as the URL the server received spells it, is valid by
    its schema's pattern. A value of another type that a URL spells as a valid string (the
    array [null, null] as `null,null`, a valid user id) is that string: no server can tell."""
    template = case.operation.path.split("/")
    sent = urllib.parse.urlsplit(response.request.url).path.split("/")
    if len(template) != len(sent):
        return False
    schemas = {
        p.get("name"): _resolve(case, p.get("schema"))
        for p in case.operation.definition.raw.get("parameters") or []
        if p.get("in") == "path"
    }
    for part, value in zip(template, sent):
        for name in re.findall(r"\{(\w+)\}", part):
            pattern = schemas.get(name, {}).get("pattern")
            prefix, _, suffix = part.partition("{" + name + "}")
            text = urllib.parse.unquote(value)
            if not (pattern and text.startswith(prefix) and text.endswith(suffix)):
                return False
            if not re.search(pattern, text[len(prefix) : len(text) - len(suffix)]):
                return False
    return True


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code == "ST201" and "in path - incorrect type" in str(failure.message):
        return not _path_values_valid(case, response)
    if failure.code != "ST202" or not _positive(case) or response.status_code != 400:
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    if problem.get("reason") != "INVALID_FIELD":
        return True
    violations = problem.get("violations") or []
    return not (violations and all(_explained(case, v) for v in violations))
