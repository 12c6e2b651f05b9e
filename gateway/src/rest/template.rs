//! HTTP rule path templates (`/v1/{name=contacts/*}:erase`): their axum route, and the request
//! fields their variables bind.

/// One segment of a template: a literal, or a `*` wildcard captured as an axum parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Wildcard,
}

/// A variable: the request field it binds (`name`, `contact.name`) and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub field: String,
    /// Index of its first part and the number of parts.
    first: usize,
    len: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    pub variables: Vec<Variable>,
    /// The custom verb (`erase` of `...:erase`).
    pub verb: Option<String>,
}

impl Template {
    /// Parses the subset of the HTTP rule grammar the suite uses: literals, `*` and
    /// `{field=pattern}` / `{field}` variables, and a trailing `:verb`.
    pub fn parse(template: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("path template `{template}`: {why}");
        let rest = template.strip_prefix('/').ok_or_else(|| invalid("must start with /"))?;
        let (path, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(['/', '}']) => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        let mut parts = Vec::new();
        let mut variables = Vec::new();
        let mut remaining = path;
        while !remaining.is_empty() {
            if let Some(inner) = remaining.strip_prefix('{') {
                let end = inner.find('}').ok_or_else(|| invalid("unclosed {"))?;
                let (field, pattern) = inner[..end].split_once('=').unwrap_or((&inner[..end], "*"));
                let first = parts.len();
                for segment in pattern.split('/') {
                    parts.push(part(segment).ok_or_else(|| invalid("** is not supported"))?);
                }
                variables.push(Variable {
                    field: field.to_owned(),
                    first,
                    len: parts.len() - first,
                });
                remaining = inner[end + 1..].strip_prefix('/').unwrap_or(&inner[end + 1..]);
            } else {
                let end = remaining.find('/').unwrap_or(remaining.len());
                parts.push(part(&remaining[..end]).ok_or_else(|| invalid("** is not supported"))?);
                remaining = remaining[end..].strip_prefix('/').unwrap_or("");
            }
        }
        Ok(Template { parts, variables, verb })
    }

    /// Names of the parameters of the wildcards, in order: the first is `id`, each later one
    /// the singular of the collection before it (`/v1/contacts/{id}/interactions/{interaction}`).
    pub fn parameters(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if *part != Part::Wildcard {
                continue;
            }
            let name = match (names.is_empty(), i.checked_sub(1).map(|j| &self.parts[j])) {
                (false, Some(Part::Literal(collection))) => singular(collection),
                _ => format!(
                    "id{}",
                    if names.is_empty() {
                        String::new()
                    } else {
                        (names.len() + 1).to_string()
                    }
                ),
            };
            names.push(name);
        }
        names
    }

    /// Whether the verb is matched by axum (after a literal) or by the handler (after a
    /// wildcard, whose parameter then ends in `:verb`).
    pub fn verb_in_parameter(&self) -> bool {
        self.verb.is_some() && matches!(self.parts.last(), Some(Part::Wildcard))
    }

    /// The axum route: wildcards become their [`parameters`](Self::parameters); a verb after a
    /// literal stays in it.
    pub fn route(&self) -> String {
        self.render(!self.verb_in_parameter())
    }

    /// The OpenAPI path: as the route, with the verb always shown.
    pub fn openapi_path(&self) -> String {
        self.render(true)
    }

    fn render(&self, with_verb: bool) -> String {
        let names = self.parameters();
        let mut names = names.iter();
        let mut out = String::new();
        for part in &self.parts {
            out.push('/');
            match part {
                Part::Literal(literal) => out.push_str(literal),
                Part::Wildcard => {
                    out.push('{');
                    out.push_str(names.next().map_or("id", String::as_str));
                    out.push('}');
                }
            }
        }
        if let (true, Some(verb)) = (with_verb, &self.verb) {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// The collection the path is about: its first literal after the version
    /// (`contacts` of `/v1/{name=contacts/*}:erase`, of `/v1/contacts:search`).
    pub fn collection(&self) -> Option<&str> {
        self.parts.iter().skip(1).find_map(|part| match part {
            Part::Literal(literal) => Some(literal.as_str()),
            Part::Wildcard => None,
        })
    }

    /// The verb a request's last parameter carries, and the parameters without it.
    pub fn split_verb(values: &[String]) -> (Option<&str>, Vec<&str>) {
        let mut values: Vec<&str> = values.iter().map(String::as_str).collect();
        let mut verb = None;
        if let Some(last) = values.last_mut()
            && let Some((value, suffix)) = last.split_once(':')
        {
            verb = Some(suffix);
            *last = value;
        }
        (verb, values)
    }

    /// The value of each variable, given the wildcards' values in order
    /// (`contacts/0190...`).
    pub fn bind(&self, wildcard_values: &[&str]) -> Vec<(String, String)> {
        let mut next = 0;
        let mut rendered = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            rendered.push(match part {
                Part::Literal(literal) => literal.clone(),
                Part::Wildcard => {
                    let value = wildcard_values.get(next).copied().unwrap_or_default().to_owned();
                    next += 1;
                    value
                }
            });
        }
        self.variables
            .iter()
            .map(|v| (v.field.clone(), rendered[v.first..v.first + v.len].join("/")))
            .collect()
    }
}

/// Every id of the suite is a UUID, written in lower case.
pub const ID_PATTERN: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/// `interactions` -> `interaction`, `companies` -> `company`.
fn singular(collection: &str) -> String {
    if let Some(stem) = collection.strip_suffix("ies") {
        format!("{stem}y")
    } else {
        collection.strip_suffix('s').unwrap_or(collection).to_owned()
    }
}

fn part(segment: &str) -> Option<Part> {
    match segment {
        "**" => None,
        "*" => Some(Part::Wildcard),
        literal => Some(Part::Literal(literal.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::Template;

    #[test]
    fn templates_become_routes_and_bind_their_fields() {
        let t = Template::parse("/v1/{name=contacts/*/interactions/*}").expect("parse");
        assert_eq!(t.route(), "/v1/contacts/{id}/interactions/{interaction}");
        assert_eq!(
            t.bind(&["a", "b"]),
            vec![("name".to_owned(), "contacts/a/interactions/b".to_owned())]
        );

        let t = Template::parse("/v1/{name=contacts/*}:erase").expect("parse");
        assert_eq!(t.route(), "/v1/contacts/{id}");
        assert_eq!(t.openapi_path(), "/v1/contacts/{id}:erase");
        assert!(t.verb_in_parameter());
        let values = vec!["0190:erase".to_owned()];
        let (verb, values) = Template::split_verb(&values);
        assert_eq!((verb, values), (Some("erase"), vec!["0190"]));

        let t = Template::parse("/v1/contacts:search").expect("parse");
        assert_eq!(t.route(), "/v1/contacts:search");
        assert!(!t.verb_in_parameter());
        assert!(t.variables.is_empty());

        let t = Template::parse("/v1/{contact.name=contacts/*}").expect("parse");
        assert_eq!(t.variables[0].field, "contact.name");

        let t = Template::parse("/v1/{parent=companies/*}/history").expect("parse");
        assert_eq!(t.route(), "/v1/companies/{id}/history");
        assert!(Template::parse("v1/x").is_err());
        assert!(Template::parse("/v1/{name=**}").is_err());
    }
}
