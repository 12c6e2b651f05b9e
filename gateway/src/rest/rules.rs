//! The REST bindings of the suite's gRPC methods, read from their `google.api.http` options:
//! adding a service's REST routes is annotating its proto.

use crm_proto::google::api::HttpRule;
use crm_proto::google::api::http_rule::Pattern;
use crm_proto::prost_reflect::{DescriptorPool, MethodDescriptor};
use http::{Method, StatusCode};

use super::template::Template;

/// One REST binding of one gRPC method.
#[derive(Debug, Clone)]
pub struct Binding {
    pub http: Method,
    pub template: Template,
    pub method: MethodDescriptor,
    /// The request field the body becomes (`*` for all fields not bound by the path).
    pub body: Option<String>,
    /// The response field returned as the body.
    pub response_body: Option<String>,
}

impl Binding {
    /// The gRPC path, `/crm.contact.v1.ContactService/GetContact`.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.method.parent_service().full_name(), self.method.name())
    }

    /// Whether the request has a top-level field of this name.
    pub fn has_field(&self, name: &str) -> bool {
        self.method.input().get_field_by_name(name).is_some()
    }

    /// A POST to a collection that takes an idempotency key creates: 201 with a Location.
    pub fn creates(&self) -> bool {
        self.http == Method::POST && self.template.verb.is_none() && self.has_field("request_id")
    }

    /// The status of a success.
    pub fn status(&self) -> StatusCode {
        if self.creates() {
            StatusCode::CREATED
        } else if self.http == Method::DELETE && self.method.output().fields().len() == 0 {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::OK
        }
    }

    /// Where an `If-Match` etag goes: the body resource's `etag` of an update, else the
    /// request's own `etag` (deletes, custom methods); a create has none.
    pub fn if_match_target(&self) -> Option<IfMatch> {
        let input = self.method.input();
        let resource = self
            .body
            .as_deref()
            .filter(|f| *f != "*" && !self.creates())
            .and_then(|f| input.get_field_by_name(f))
            .filter(|f| match f.kind() {
                crm_proto::prost_reflect::Kind::Message(m) => m.get_field_by_name("etag").is_some(),
                _ => false,
            });
        match resource {
            Some(field) => Some(IfMatch::Resource(field.json_name().to_owned())),
            None if self.has_field("etag") => Some(IfMatch::Request),
            None => None,
        }
    }

    /// The request fields the path binds.
    pub fn path_fields(&self) -> impl Iterator<Item = &str> {
        self.template.variables.iter().map(|v| v.field.as_str())
    }
}

/// Where a request's `If-Match` etag goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// The `etag` of the body resource (its JSON field name).
    Resource(String),
    /// The request's own `etag`.
    Request,
}

/// Every binding of every unary method of the pool that has an HTTP rule.
pub fn bindings(pool: &DescriptorPool) -> Result<Vec<Binding>, String> {
    let Some(http) = pool.get_extension_by_name("google.api.http") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let where_ = method.full_name().to_owned();
            if method.is_client_streaming() || method.is_server_streaming() {
                return Err(format!("{where_}: HTTP rules on streaming methods are not supported"));
            }
            let rule: HttpRule = options
                .get_extension(&http)
                .as_message()
                .ok_or_else(|| format!("{where_}: the HTTP rule is not a message"))?
                .transcode_to()
                .map_err(|e| format!("{where_}: {e}"))?;
            for binding in std::iter::once(&rule).chain(&rule.additional_bindings) {
                out.push(bind(&method, binding).map_err(|e| format!("{where_}: {e}"))?);
            }
        }
    }
    Ok(out)
}

fn bind(method: &MethodDescriptor, rule: &HttpRule) -> Result<Binding, String> {
    let (http, path) = match &rule.pattern {
        Some(Pattern::Get(path)) => (Method::GET, path),
        Some(Pattern::Post(path)) => (Method::POST, path),
        Some(Pattern::Patch(path)) => (Method::PATCH, path),
        Some(Pattern::Delete(path)) => (Method::DELETE, path),
        Some(Pattern::Put(path)) => (Method::PUT, path),
        Some(Pattern::Custom(_)) | None => {
            return Err("only get, post, patch, put and delete rules are supported".into());
        }
    };
    let template = Template::parse(path)?;
    let input = method.input();
    for variable in &template.variables {
        if json_path(&input, &variable.field).is_none() {
            return Err(format!(
                "path variable `{}` is not a field of {}",
                variable.field,
                input.full_name()
            ));
        }
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let body = non_empty(&rule.body);
    if let Some(field) = body.as_deref().filter(|f| *f != "*")
        && input.get_field_by_name(field).is_none()
    {
        return Err(format!("body `{field}` is not a field of {}", input.full_name()));
    }
    let response_body = non_empty(&rule.response_body);
    if let Some(field) = &response_body
        && method.output().get_field_by_name(field).is_none()
    {
        return Err(format!(
            "response_body `{field}` is not a field of {}",
            method.output().full_name()
        ));
    }
    Ok(Binding {
        http,
        template,
        method: method.clone(),
        body,
        response_body,
    })
}

/// The field a dotted parameter names (`pageSize`, `page_size`, `a.b`) and its path in JSON
/// names.
pub fn json_path(
    input: &crm_proto::prost_reflect::MessageDescriptor,
    key: &str,
) -> Option<(crm_proto::prost_reflect::FieldDescriptor, Vec<String>)> {
    let mut message = input.clone();
    let mut path = Vec::new();
    let mut segments = key.split('.').peekable();
    while let Some(segment) = segments.next() {
        let field = message
            .get_field_by_json_name(segment)
            .or_else(|| message.get_field_by_name(segment))?;
        path.push(field.json_name().to_owned());
        if segments.peek().is_none() {
            return Some((field, path));
        }
        match field.kind() {
            crm_proto::prost_reflect::Kind::Message(inner) if !field.is_list() && !field.is_map() => message = inner,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_annotated_method_has_a_valid_binding() {
        let pool = crm_proto::json::descriptors().expect("descriptors");
        let bindings = super::bindings(pool).expect("bindings");
        let find = |grpc: &str| {
            bindings
                .iter()
                .find(|b| b.grpc_path() == grpc)
                .unwrap_or_else(|| panic!("no binding of {grpc}"))
        };
        let create = find("/crm.contact.v1.ContactService/CreateContact");
        assert_eq!(create.status(), http::StatusCode::CREATED);
        assert_eq!(create.body.as_deref(), Some("contact"));
        let delete = find("/crm.contact.v1.ContactService/DeleteContact");
        assert_eq!(delete.status(), http::StatusCode::NO_CONTENT);
        let quota = find("/crm.pipeline.v1.ForecastService/SetQuota");
        assert_eq!(quota.status(), http::StatusCode::OK, "a set is not a create");
        let listed = bindings
            .iter()
            .filter(|b| b.grpc_path() == "/crm.contact.v1.ContactService/ListInteractions")
            .count();
        assert_eq!(listed, 2, "the additional binding is read");
    }
}
