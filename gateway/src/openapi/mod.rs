//! The OpenAPI document: every transcoded route generated from its HTTP rule and the
//! descriptors (typed request and response bodies, path patterns, query parameters, the
//! comments of the protos as descriptions), the hand-written routes from their handlers, and
//! the problem+json answer of every status a route can give.

mod rules;

use std::collections::{BTreeMap, BTreeSet};

use crm_proto::prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use crm_proto::prost_types::FileDescriptorProto;
use serde_json::{Map, Value, json};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::problem::{ProblemBody, Violation};
use crate::rest::check::{immutable, output_only};
use crate::rest::rules::Binding;
use crate::rest::template::ID_PATTERN;
use crate::routes::{bulk, events, inbox, ops, users};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The hand-written routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "CRM suite REST API", description = "REST/JSON mirror of the suite's gRPC APIs. JSON field names are proto3 JSON (lowerCamelCase); enum values are accepted by their full name or, where unambiguous, without their type's prefix (`CUSTOMER` for `LIFECYCLE_STAGE_CUSTOMER`); errors are application/problem+json."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        bulk::export, bulk::import, bulk::import_deals, events::stream, inbox::watch, users::transfer_portfolio,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(ProblemBody, Violation, bulk::ImportSummary, bulk::DealImportSummary, users::TransferRequest, users::TransferResponse, users::TransferShare)),
)]
pub struct ApiDoc;

/// Statuses every authenticated route may answer with a problem, and why.
const PROBLEMS: &[(&str, &str)] = &[
    (
        "400",
        "the request is invalid: every wrong field is named in `violations`",
    ),
    ("401", "no valid bearer token"),
    ("403", "the caller's role may not make this call"),
    ("404", "no such resource (or route)"),
    (
        "409",
        "the request conflicts with the current state (a duplicate, an aborted transaction)",
    ),
    ("412", "the `If-Match` etag is not the resource's current one"),
    ("413", "the request body is too large"),
    ("429", "too many requests or a quota is exhausted; retry later"),
    ("503", "a service the route needs is unavailable; retry later"),
    ("504", "the request took longer than its deadline"),
];

/// The whole document as JSON.
pub fn document() -> Result<Value, String> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    let pool = crm_proto::json::descriptors()?;
    let mut generator = Generator::new(pool);
    let mut tags = BTreeSet::new();
    let mut paths = Map::new();
    let mut seen_ids = BTreeSet::new();
    for binding in crate::rest::bindings()? {
        let tag = binding.template.collection().unwrap_or("other").to_owned();
        tags.insert(tag.clone());
        let mut id = binding.method.name().to_owned();
        let mut n = 2;
        while !seen_ids.insert(id.clone()) {
            id = format!("{}{n}", binding.method.name());
            n += 1;
        }
        let operation = generator.operation(binding, &tag, &id);
        let path = paths
            .entry(binding.template.openapi_path())
            .or_insert_with(|| Value::Object(Map::new()));
        path[binding.http.as_str().to_ascii_lowercase()] = operation;
    }
    hand_written(&mut doc, &mut generator, pool)?;
    let doc_paths = doc["paths"].as_object_mut().ok_or("the document has no paths")?;
    for (path, item) in paths {
        doc_paths.insert(path, item);
    }
    users_by_id(doc_paths);
    for item in doc_paths.values_mut() {
        for operation in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            with_problems(operation);
        }
    }
    let components = doc["components"]
        .as_object_mut()
        .ok_or("the document has no components")?;
    let schemas = components.entry("schemas").or_insert_with(|| Value::Object(Map::new()));
    for (name, schema) in generator.finish() {
        schemas[name] = schema;
    }
    let mut responses = Map::new();
    for (status, why) in PROBLEMS {
        responses.insert(
            format!("Problem{status}"),
            json!({
                "description": why,
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
            }),
        );
    }
    components.insert("responses".into(), Value::Object(responses));
    // The hand-written routes' tags, each once (a transcoded route may share one).
    let mut names: Vec<String> = tags.into_iter().collect();
    for extra in ["events", "users", "operations"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    doc["tags"] = Value::Array(names.into_iter().map(|name| json!({ "name": name })).collect());
    Ok(doc)
}

/// A user is named by their user id, not a UUID: the `{id}` of every path under `/v1/users/`
/// (whose portfolio moves, whose notification preferences these are).
fn users_by_id(paths: &mut Map<String, Value>) {
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/users/{id}") {
            continue;
        }
        for operation in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            for parameter in operation["parameters"].as_array_mut().into_iter().flatten() {
                if parameter["name"] == "id" && parameter["in"] == "path" {
                    parameter["schema"] = rules::format_schema("user");
                }
            }
        }
    }
}

/// The hand-written routes' values that mirror a proto's fields take those fields' schemas:
/// export's `filter` and `orderBy` (ExportContacts), transferPortfolio's `toUsers`
/// (ReassignOwner); `events:stream`'s `types` lists event types of the feeds; an import's CSV
/// starts with a header row of export columns, its mapping maps columns to them.
fn hand_written(doc: &mut Value, generator: &mut Generator, pool: &DescriptorPool) -> Result<(), String> {
    let field = |message: &str, name: &str| {
        pool.get_message_by_name(message)
            .and_then(|m| m.get_field_by_name(name))
            .ok_or_else(|| format!("{message} has no field {name}"))
    };
    let export = &mut doc["paths"]["/v1/contacts:export"]["get"]["parameters"];
    for parameter in export.as_array_mut().into_iter().flatten() {
        let name = match parameter["name"].as_str() {
            Some("filter") => "filter",
            Some("orderBy") => "order_by",
            _ => continue,
        };
        if let Some(schema) = generator.query_schema(&field("crm.contact.v1.ExportContactsRequest", name)?) {
            parameter["schema"] = schema;
        }
    }
    let to_users = generator.field_schema(&field("crm.contact.v1.ReassignOwnerRequest", "to_users")?, false);
    doc["components"]["schemas"]["TransferRequest"]["properties"]["toUsers"] = to_users;
    let import = &mut doc["paths"]["/v1/contacts:import"]["post"];
    import["requestBody"]["content"]["text/csv"]["schema"] =
        rules::csv_schema(crate::table::CONTACT_COLUMNS, crate::table::IGNORED_COLUMNS);
    for parameter in import["parameters"].as_array_mut().into_iter().flatten() {
        if parameter["name"] == "mapping" {
            parameter["schema"] = rules::mapping_schema(crate::table::CONTACT_COLUMNS);
        }
    }
    let import = &mut doc["paths"]["/v1/deals:import"]["post"];
    // Any of the columns, one of them `external_id` (rows are matched on it).
    let deal_columns: Vec<&str> = [crate::import::deals::DEAL_COLUMNS, crate::import::deals::DEAL_IGNORED].concat();
    let not_key: Vec<&str> = deal_columns.iter().copied().filter(|c| *c != "external_id").collect();
    import["requestBody"]["content"]["text/csv"]["schema"] = rules::csv_schema(&deal_columns, &not_key);
    for parameter in import["parameters"].as_array_mut().into_iter().flatten() {
        if parameter["name"] == "mapping" {
            parameter["schema"] = rules::mapping_schema(crate::import::deals::DEAL_COLUMNS);
        }
    }
    let stream = &mut doc["paths"]["/v1/events:stream"]["get"]["parameters"];
    for parameter in stream.as_array_mut().into_iter().flatten() {
        if parameter["name"] == "types" {
            parameter["schema"] = rules::types_schema(&event_types(pool));
        }
    }
    Ok(())
}

/// The event types of the feeds: the messages of `crm/{service}/v1/events.proto`, by feed,
/// and the usage reports every feed carries (`crm.events.v1` itself is the envelope, no feed).
fn event_types(pool: &DescriptorPool) -> Vec<Vec<String>> {
    use crm_proto::prost::Name;
    let envelope = <crm_proto::crm::events::v1::Event as Name>::PACKAGE;
    let usage = crm_proto::crm::events::v1::UsageReported::full_name();
    let mut feeds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in pool.all_messages() {
        let file = message.parent_file();
        if file.name().starts_with("crm/")
            && file.name().ends_with("/events.proto")
            && file.package_name() != envelope
            && message.parent_message().is_none()
        {
            feeds
                .entry(file.package_name().to_owned())
                .or_default()
                .push(message.full_name().to_owned());
        }
    }
    feeds
        .into_values()
        .map(|mut types| {
            types.push(usage.clone());
            types
        })
        .collect()
}

/// Adds the problem answers an operation does not declare itself. The open operations
/// (`security: [{}]`) answer no 401 or 403.
fn with_problems(operation: &mut Value) {
    let open = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(Map::is_empty)));
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    if open {
        responses
            .entry("503")
            .or_insert_with(|| json!({ "$ref": "#/components/responses/Problem503" }));
        return;
    }
    for (status, _) in PROBLEMS {
        responses.insert(
            (*status).to_owned(),
            json!({ "$ref": format!("#/components/responses/Problem{status}") }),
        );
    }
}

/// Makes the schemas of the messages the routes use.
struct Generator {
    /// Short names used by more than one message: those go by their full name.
    ambiguous: BTreeSet<String>,
    /// Messages to make schemas of, and whether as the body of an update (no field required).
    wanted: Vec<(MessageDescriptor, bool)>,
    done: BTreeMap<String, Value>,
}

impl Generator {
    fn new(pool: &DescriptorPool) -> Self {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for message in pool.all_messages() {
            *count.entry(message.name().to_owned()).or_default() += 1;
        }
        Generator {
            ambiguous: count
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(name, _)| name)
                .collect(),
            wanted: Vec::new(),
            done: BTreeMap::new(),
        }
    }

    fn schema_name(&self, message: &MessageDescriptor, update: bool) -> String {
        let name = if self.ambiguous.contains(message.name()) {
            message.full_name()
        } else {
            message.name()
        };
        if update {
            format!("{name}Update")
        } else {
            name.to_owned()
        }
    }

    /// A `$ref` to the message's schema, made later.
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        self.reference_as(message, false)
    }

    /// A `$ref` to the schema of the message as an update's body: any subset of its fields
    /// (none: an update that changes nothing answers the resource as it is, AIP-134).
    fn reference_as(&mut self, message: &MessageDescriptor, update: bool) -> Value {
        let name = self.schema_name(message, update);
        if !self.done.contains_key(&name) {
            self.wanted.push((message.clone(), update));
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn operation(&mut self, binding: &Binding, tag: &str, id: &str) -> Value {
        let method = &binding.method;
        let input = method.input();
        let output = method.output();
        let mut parameters = Vec::new();
        // A resource named by a slug (its field's format `slug:<collection>`) has slugs for
        // ids, the ones its `write_values` list when it lists them (a catalogue's entries);
        // every other resource, UUIDs.
        let slug = binding
            .path_fields()
            .filter_map(|path| input.get_field_by_name(path).and_then(|f| rules::rules(&f)))
            .find(|r| r.format.starts_with("slug:"));
        let id_schema = match slug {
            Some(r) if !r.write_values.is_empty() => json!({"type": "string", "enum": r.write_values}),
            Some(_) => json!({"type": "string", "pattern": format!("^{}$", rules::SLUG_PATTERN)}),
            None => json!({"type": "string", "pattern": format!("^{ID_PATTERN}$")}),
        };
        for name in binding.template.parameters() {
            parameters.push(json!({
                "name": name, "in": "path", "required": true, "schema": id_schema,
            }));
        }
        let path_tops: BTreeSet<&str> = binding
            .path_fields()
            .map(|f| f.split('.').next().unwrap_or(f))
            .collect();
        let body_field = binding.body.as_deref();
        if body_field != Some("*") {
            for field in input.fields() {
                if path_tops.contains(field.name()) || body_field == Some(field.name()) {
                    continue;
                }
                let schema = if field.name() == "update_mask" {
                    updatable(binding, &input).map(|fields| rules::mask_schema(&fields))
                } else {
                    self.query_schema(&field)
                };
                if let Some(schema) = schema {
                    let mut parameter = json!({ "name": field.json_name(), "in": "query", "schema": schema });
                    if rules::required(&field) {
                        parameter["required"] = Value::Bool(true);
                    }
                    if let Some(text) = field_comment(&field) {
                        parameter["description"] = Value::String(text);
                    }
                    parameters.push(parameter);
                }
            }
        }
        if binding.if_match_target().is_some() {
            parameters.push(json!({
                "name": "If-Match", "in": "header", "required": false,
                "description": "the etag the call is conditional on (strong comparison)",
                "schema": {"type": "string", "pattern": r#"^("[0-9]{1,18}"|[0-9]{1,18})$"#},
            }));
        }
        if binding.has_field("request_id") {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "makes retries safe: a retry with the same key returns the first result",
                "schema": rules::request_id_header_schema(),
            }));
        }
        let mut operation = json!({
            "tags": [tag],
            "operationId": id,
            "parameters": parameters,
        });
        if let Some(text) = comment(method.parent_service().parent_file_descriptor_proto(), method.path()) {
            let summary = text.lines().next().unwrap_or_default().to_owned();
            operation["summary"] = Value::String(summary);
            operation["description"] = Value::String(text);
        }
        match body_field {
            Some("*") => {
                let schema = self.message_schema(&input, &path_tops, false);
                let required = schema.get("required").is_some();
                operation["requestBody"] = json!({
                    "required": required,
                    "content": {"application/json": {"schema": schema}},
                });
            }
            Some(field) => {
                if let Some(Kind::Message(resource)) = input.get_field_by_name(field).map(|f| f.kind()) {
                    let update = binding.http == http::Method::PATCH;
                    operation["requestBody"] = json!({
                        "required": true,
                        "content": {"application/json": {"schema": self.reference_as(&resource, update)}},
                    });
                }
            }
            None => {}
        }
        let status = binding.status();
        let response = if status == http::StatusCode::NO_CONTENT {
            json!({ "description": "done" })
        } else {
            let body = match binding
                .response_body
                .as_deref()
                .and_then(|f| output.get_field_by_name(f))
            {
                Some(field) => match field.kind() {
                    Kind::Message(m) => self.reference(&m),
                    kind => self.kind_schema(&kind),
                },
                None => self.reference(&output),
            };
            let mut headers = Map::new();
            headers.insert(
                "ETag".into(),
                json!({ "schema": {"type": "string"}, "description": "the resource's etag, for If-Match" }),
            );
            if status == http::StatusCode::CREATED {
                headers.insert(
                    "Location".into(),
                    json!({ "schema": {"type": "string"}, "description": "the created resource" }),
                );
            }
            json!({
                "description": status.canonical_reason().unwrap_or("OK"),
                "headers": headers,
                "content": {"application/json": {"schema": body}},
            })
        };
        operation["responses"] = json!({ status.as_str(): response });
        operation
    }

    /// The schema of a query parameter: scalars, enums and lists of them.
    fn query_schema(&mut self, field: &FieldDescriptor) -> Option<Value> {
        let kind = field.kind();
        let scalar = match &kind {
            Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => json!({ "type": "string" }),
            Kind::Message(_) => return None,
            kind => self.kind_schema(kind),
        };
        if field.is_map() {
            return None;
        }
        let mut schema = self.with_rules(field, scalar);
        // A string that names an entry of a catalogue (a segment) is one of those listed, or
        // empty (none).
        if let Some(r) = rules::rules(field)
            && !r.write_values.is_empty()
            && matches!(kind, Kind::String)
            && !field.is_list()
        {
            let mut values = r.write_values.clone();
            values.push(String::new());
            schema["enum"] = json!(values);
        }
        Some(schema)
    }

    fn finish(mut self) -> BTreeMap<String, Value> {
        while let Some((message, update)) = self.wanted.pop() {
            let name = self.schema_name(&message, update);
            if self.done.contains_key(&name) {
                continue;
            }
            self.done.insert(name.clone(), Value::Null);
            let schema = self.message_schema(&message, &BTreeSet::new(), update);
            self.done.insert(name, schema);
        }
        self.done
    }

    /// An object of the message's fields (less `skip`), its required fields required unless it
    /// is an update's body. A message that is one oneof is one of its members.
    fn message_schema(&mut self, message: &MessageDescriptor, skip: &BTreeSet<&str>, update: bool) -> Value {
        // An update's body holds what an update may change (and the etag it is conditional on):
        // output only and immutable fields are the resource's answer, not part of an update.
        let fields: Vec<FieldDescriptor> = message
            .fields()
            .filter(|f| !skip.contains(f.name()))
            .filter(|f| !update || f.name() == "etag" || !(output_only(f) || immutable(f)))
            .collect();
        let all_one_of =
            message.oneofs().len() == 1 && !fields.is_empty() && fields.iter().all(|f| f.containing_oneof().is_some());
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in &fields {
            if !update && rules::required(field) {
                required.push(Value::String(field.json_name().to_owned()));
            }
            let mut schema = self.field_schema(field, update);
            if let (Some(text), Some(object)) = (field_comment(field), schema.as_object_mut()) {
                if object.contains_key("$ref") {
                    schema = json!({ "allOf": [schema], "description": text });
                } else {
                    object.insert("description".into(), Value::String(text));
                }
            }
            // A resource's etag is the output of a create and the input of an update (AIP-154).
            if output_only(field) || (!update && field.name() == "etag" && is_resource(message)) {
                schema["readOnly"] = Value::Bool(true);
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = if all_one_of {
            let members: Vec<Value> = properties
                .into_iter()
                .map(|(name, schema)| {
                    json!({
                        "type": "object",
                        "properties": { name.clone(): schema },
                        "required": [name],
                        "additionalProperties": false,
                    })
                })
                .collect();
            json!({ "oneOf": members })
        } else {
            json!({ "type": "object", "properties": properties, "additionalProperties": false })
        };
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        if !update {
            let across = rules::across_fields(message, &fields);
            if !across.is_empty() {
                schema["allOf"] = Value::Array(across);
            }
        }
        if let Some(text) = comment(message.parent_file_descriptor_proto(), message.path()) {
            schema["description"] = Value::String(text);
        }
        schema
    }

    /// A field's schema; `update`: as a field of an update's body.
    fn field_schema(&mut self, field: &FieldDescriptor, update: bool) -> Value {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => self.kind_schema(&entry.map_entry_value_field().kind()),
                _ => json!({}),
            };
            let mut value = value;
            let rules = rules::rules(field);
            if let Some(rules) = rules.filter(|r| !r.value_format.is_empty()) {
                let value_rules = crm_proto::crm::common::v1::FieldRules {
                    format: rules.value_format.clone(),
                    ..Default::default()
                };
                rules::apply_to_value(&mut value, &value_rules, false);
            }
            let mut schema = json!({ "type": "object", "additionalProperties": value });
            if let Some(rules) = rules {
                rules::apply_to_collection(&mut schema, rules, true);
                let fields_of = rules.format.strip_prefix("fields:");
                if let Some(message) = fields_of.and_then(|m| field.parent_pool().get_message_by_name(m)) {
                    let names: Vec<String> = message
                        .fields()
                        .filter(|f| f.name() != "name" && f.name() != "etag" && !output_only(f) && !immutable(f))
                        .map(|f| f.json_name().to_owned())
                        .collect();
                    schema["propertyNames"] = json!({ "enum": names });
                } else if !rules.format.is_empty() {
                    let mut keys = json!({ "type": "string" });
                    let key_rules = crm_proto::crm::common::v1::FieldRules {
                        format: rules.format.clone(),
                        ..Default::default()
                    };
                    rules::apply_to_value(&mut keys, &key_rules, false);
                    schema["propertyNames"] = keys;
                }
            }
            return schema;
        }
        let value = self.kind_schema(&field.kind());
        let mut schema = self.with_rules(field, value);
        let write_values = rules::rules(field).map_or(&[][..], |r| &r.write_values[..]);
        // A request that is not a resource's body (CloseDeal's outcome), and an update, may
        // set only the values a request may write; a resource's own schema says the rest
        // (across_fields).
        if !write_values.is_empty()
            && (update || !is_resource(field.parent_message()))
            && let Kind::Enum(descriptor) = field.kind()
        {
            let item = if field.is_list() {
                &mut schema["items"]
            } else {
                &mut schema
            };
            item["enum"] = rules::enum_names(&descriptor, write_values);
        }
        // A string that names an entry of a catalogue (a metric) is one of those listed.
        if !write_values.is_empty() && field.kind() == Kind::String && !field.is_list() {
            schema["enum"] = json!(write_values);
        }
        if update && rules::rules(field).is_some_and(|r| r.keep_on_update) {
            // An update may not clear it: not the empty string.
            if let Some(pattern) = schema["pattern"].as_str() {
                let pattern = pattern.strip_prefix("^$|").unwrap_or(pattern).to_owned();
                schema["pattern"] = Value::String(pattern);
            }
            schema["minLength"] = json!(1);
        }
        schema
    }

    /// A field's schema from its value's: an array of them for a list, and the field's rules.
    fn with_rules(&mut self, field: &FieldDescriptor, mut value: Value) -> Value {
        let rules = rules::rules(field);
        if let (Some(rules), Kind::Message(m)) = (&rules, field.kind())
            && m.full_name() == "google.protobuf.Duration"
        {
            value["pattern"] = json!(rules::duration_pattern(rules.minimum, rules.maximum));
        }
        if let Some(rules) = &rules {
            let optional = !field.is_list() && !rules::required(field) && rules.min_length == 0;
            rules::apply_to_value(&mut value, rules, optional);
        }
        if !field.is_list() {
            return value;
        }
        let mut schema = json!({ "type": "array", "items": value });
        if let Some(rules) = &rules {
            rules::apply_to_collection(&mut schema, rules, false);
            if let Kind::Message(item) = field.kind() {
                rules::apply_counts(&mut schema, rules, &item);
            }
        }
        schema
    }

    /// The proto3 JSON schema of a value: 64-bit integers as decimal strings (numbers also
    /// accepted), enums by name, well-known types by their JSON forms.
    fn kind_schema(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "format": "byte" }),
            Kind::Double | Kind::Float => json!({ "type": "number" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer", "format": "int32" }),
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({ "type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]{1,19}$" })
            }
            Kind::Enum(descriptor) => json!({ "type": "string", "enum": rules::enum_names(descriptor, &[]) }),
            Kind::Message(message) => match message.full_name() {
                "google.protobuf.Timestamp" => {
                    // The suite stores times of the years 1900 to 9999.
                    json!({ "type": "string", "format": "date-time", "pattern": "^(19[0-9]{2}|[2-9][0-9]{3})-" })
                }
                "google.protobuf.Duration" => {
                    json!({ "type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,9})?s$" })
                }
                "google.protobuf.FieldMask" => json!({ "type": "string" }),
                "google.protobuf.Struct" | "google.protobuf.Any" | "google.protobuf.Empty" => {
                    json!({ "type": "object" })
                }
                "google.protobuf.Value" => json!({}),
                "google.protobuf.ListValue" => json!({ "type": "array" }),
                _ => self.reference(message),
            },
        }
    }
}

/// The fields a PATCH of `binding` may name in its update mask: those of the resource that
/// are neither output only nor immutable, less its name and etag. None: not an update.
fn updatable(binding: &Binding, input: &MessageDescriptor) -> Option<Vec<String>> {
    if binding.http != http::Method::PATCH {
        return None;
    }
    let field = input.get_field_by_name(binding.body.as_deref()?)?;
    let Kind::Message(resource) = field.kind() else {
        return None;
    };
    Some(
        resource
            .fields()
            .filter(|f| f.name() != "name" && f.name() != "etag" && !output_only(f) && !immutable(f))
            .map(|f| f.json_name().to_owned())
            .collect(),
    )
}

/// Whether a message is a resource: its `name` is output only.
fn is_resource(message: &MessageDescriptor) -> bool {
    message.get_field_by_name("name").is_some_and(|name| output_only(&name))
}

/// A field's leading comment in its proto.
fn field_comment(field: &FieldDescriptor) -> Option<String> {
    comment(field.parent_message().parent_file_descriptor_proto(), field.path())
}

/// The leading comment of the element at `path` of a proto file.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let location = file
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_transcoded_route_has_typed_bodies_and_its_problems() {
        let doc = super::document().expect("document");
        let create = &doc["paths"]["/v1/contacts"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Contact"
        );
        assert!(create["responses"]["201"]["headers"]["Location"].is_object());
        for status in ["401", "403", "404", "409", "412", "429"] {
            assert!(create["responses"][status].is_object(), "{status}");
        }
        let deal = &doc["components"]["schemas"]["Deal"];
        assert_eq!(deal["type"], "object");
        assert_eq!(deal["properties"]["name"]["readOnly"], true);
        let get = &doc["paths"]["/v1/deals/{id}"]["get"];
        assert!(get["parameters"][0]["schema"]["pattern"].is_string());
        let stage = &doc["components"]["schemas"]["Contact"]["properties"]["lifecycleStage"]["enum"];
        let names: Vec<&str> = stage
            .as_array()
            .expect("enum")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(names.contains(&"LIFECYCLE_STAGE_CUSTOMER") && names.contains(&"CUSTOMER"));
        assert!(doc["paths"]["/v1/contacts/{id}:erase"]["post"].is_object());
        assert!(
            doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null(),
            "open routes need no token"
        );
    }

    #[test]
    fn an_update_states_only_what_it_may_change() {
        let doc = super::document().expect("document");
        let update = &doc["components"]["schemas"]["DealUpdate"]["properties"];
        for field in ["displayName", "amount", "lineItems", "etag"] {
            assert!(update[field].is_object(), "{field}");
        }
        for field in [
            "name",
            "closeTime",
            "status",
            "pipeline",
            "stage",
            "owner",
            "createTime",
        ] {
            assert!(update[field].is_null(), "{field} is output only or immutable");
        }
        let mask = doc["paths"]["/v1/deals/{id}"]["patch"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "updateMask")
            .expect("updateMask")["schema"]["pattern"]
            .as_str()
            .expect("pattern")
            .to_owned();
        assert!(mask.contains("lineItems") && !mask.contains("closeTime"), "{mask}");
        let owner = &doc["components"]["schemas"]["ContactUpdate"]["properties"]["owner"];
        assert_eq!(owner["minLength"], 1, "an update may not clear the owner");
        let status = &doc["components"]["schemas"]["LeadUpdate"]["properties"]["status"]["enum"];
        assert!(
            !status
                .as_array()
                .expect("enum")
                .contains(&serde_json::json!("CONVERTED"))
        );
    }

    #[test]
    fn durations_are_bounded_in_whole_seconds() {
        assert_eq!(
            super::rules::duration_pattern(Some(0), Some(604800)),
            "^(0|[1-9][0-9]{0,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)(\\.[0-9]{1,9})?s$"
        );
    }
}
