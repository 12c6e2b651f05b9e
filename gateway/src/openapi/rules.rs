//! The JSON Schema a field's rules (`crm.common.v1.rules`) and behaviour (`REQUIRED`) state.

use crm_proto::crm::common::v1::FieldRules;
use crm_proto::prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

pub(super) use crate::rest::check::{enum_prefix, output_only, required, rules};
use crate::rest::template::ID_PATTERN;

/// Adds what `rules` say about one value (a scalar, or each item of a list) to its schema. The
/// format of an `optional` value also admits `""` (not set).
pub(super) fn apply_to_value(schema: &mut Value, rules: &FieldRules, optional: bool) {
    let Some(object) = schema.as_object_mut() else { return };
    if !rules.format.is_empty() {
        for (key, value) in format(&rules.format) {
            let value = match (key, value) {
                ("pattern", Value::String(pattern)) if optional => Value::String(format!("^$|{pattern}")),
                ("enum", Value::Array(mut values)) if optional => {
                    values.push(json!(""));
                    Value::Array(values)
                }
                (_, value) => value,
            };
            object.insert(key.to_owned(), value);
        }
    }
    if let Some(minimum) = rules.minimum {
        object.insert("minimum".into(), json!(minimum));
        // A 64-bit integer may come as a decimal string, which minimum and maximum do not
        // bound: its pattern does.
        if object.get("format") == Some(&json!("int64")) && minimum >= 0 {
            object.insert("pattern".into(), json!(decimal_pattern(minimum, rules.maximum)));
        }
    }
    if let Some(maximum) = rules.maximum {
        object.insert("maximum".into(), json!(maximum));
    }
    if rules.max_length > 0 {
        object.insert("maxLength".into(), json!(rules.max_length));
    }
    if rules.min_length > 0 {
        object.insert("minLength".into(), json!(rules.min_length));
        // The services trim text: a required one has something besides spaces.
        if object.get("type") == Some(&json!("string")) {
            object.insert("allOf".into(), json!([nonblank()]));
        }
    }
    if !rules.order_by.is_empty() {
        object.insert("pattern".into(), json!(order_by_pattern(&rules.order_by)));
    }
    if !rules.filter_fields.is_empty() {
        object.insert("pattern".into(), json!(filter_pattern(&rules.filter_fields)));
    }
    if !rules.examples.is_empty() {
        object.insert("examples".into(), json!(rules.examples));
    }
}

/// What the services read as whitespace between words (Rust's `char::is_whitespace`).
const SPACE: &str = r"[\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// An `order_by`: empty (the list's default order), or one of `fields`, optionally followed by
/// `asc` or `desc`.
fn order_by_pattern(fields: &[String]) -> String {
    format!(
        "^{SPACE}*(({}){SPACE}*|({0}){SPACE}+(asc|desc){SPACE}*)?$",
        fields.join("|")
    )
}

/// A filter in the suite's AIP-160 subset (`crm_platform::filter`): empty, or comparisons of
/// `fields` (`field op value`, the value a bare word or a double-quoted string with `\"` and
/// `\\` escapes) joined by `AND`. The values each field takes are semantic (an enum value, a
/// user, a timestamp): the field's description says which, and a wrong one is a 400 naming
/// `filter`.
fn filter_pattern(fields: &[String]) -> String {
    let word = r#"[^\s=!<>"():~][^\s=!<>"()]*"#;
    let quoted = r#""([^"\\]|\\["\\])*""#;
    let term = format!("({})( *(=|!=|<|<=|>|>=) *)({word}|{quoted})", fields.join("|"));
    format!("^ *({term}( +AND +{term})*)? *$")
}

/// Adds what `rules` say about a list or a map as a whole.
pub(super) fn apply_to_collection(schema: &mut Value, rules: &FieldRules, map: bool) {
    let Some(object) = schema.as_object_mut() else { return };
    let (min, max) = if map {
        ("minProperties", "maxProperties")
    } else {
        ("minItems", "maxItems")
    };
    if rules.min_items > 0 {
        object.insert(min.into(), json!(rules.min_items));
    }
    if rules.max_items > 0 {
        object.insert(max.into(), json!(rules.max_items));
    }
    if rules.unique_items && !map {
        object.insert("uniqueItems".into(), json!(true));
    }
}

/// The decimals from `minimum` (0 or more) to `maximum`: every number with fewer digits than
/// the maximum, and the maximum itself (the suite's maxima are powers of ten).
fn decimal_pattern(minimum: i64, maximum: Option<i64>) -> String {
    let zero = if minimum <= 0 { "0|" } else { "" };
    match maximum {
        Some(max) => {
            let digits = max.to_string().len();
            format!("^({zero}[1-9][0-9]{{0,{}}}|{max})$", digits.saturating_sub(2))
        }
        None => format!("^({zero}[1-9][0-9]{{0,17}})$"),
    }
}

/// The schema keywords of a named format.
fn format(name: &str) -> Vec<(&'static str, Value)> {
    let pattern = |p: String| vec![("pattern", Value::String(p))];
    match name {
        "user" => pattern(r"^[^\s\x00-\x1F\x7F-\x9F]{1,128}$".to_owned()),
        "etag" => pattern(r#"^([0-9]{1,18}|"[0-9]{1,18}")$"#.to_owned()),
        "period" => pattern(r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2]|Q[1-4])$".to_owned()),
        "month" => pattern(format!("^{YEAR}-(0[1-9]|1[0-2])$")),
        // A share of a whole: 0 to 1.
        "share" => vec![("minimum", json!(0)), ("maximum", json!(1))],
        // An exchange rate: above 0, at most 10^9.
        "rate" => vec![("exclusiveMinimum", json!(0)), ("maximum", json!(1e9))],
        "currency" => vec![("enum", json!(crm_platform::money::CURRENCIES))],
        // ASCII addresses (the services also take other scripts' letters and digits).
        "email" => vec![("maxLength", json!(254)), ("pattern", json!(EMAIL))],
        // The form only: whether the number is one of its country's plan is the services' to say.
        "phone" => pattern(r"^(\+|00)[0-9][0-9 ().\/-]{5,30}$".to_owned()),
        // ASCII letters and digits (the services also take other scripts'), `-`, `_`, `:`.
        "tag" => pattern(r"^[A-Za-z0-9_:-]{1,64}$".to_owned()),
        "line" => pattern(r"^[^\x00-\x1F\x7F-\x9F]*$".to_owned()),
        // Several lines: no control characters but tabs and line breaks.
        "text" => pattern(r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$".to_owned()),
        "date" => pattern(DATE.to_owned()),
        "time_of_day" => pattern("^([01][0-9]|2[0-3]):[0-5][0-9]$".to_owned()),
        // The form of an IANA zone name; whether the database has it is the services' to say.
        "time_zone" => vec![
            ("maxLength", json!(64)),
            ("pattern", json!("^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$")),
        ],
        // Something besides spaces and ASCII punctuation (letters of any script count).
        "words" => pattern(r"[^\s\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\xBF\xD7\xF7]".to_owned()),
        "attribute_key" => pattern("^[a-z][a-z0-9_]{0,63}$".to_owned()),
        "uuid" => pattern("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$".to_owned()),
        // Labels of letters, digits and inner hyphens, at least two (ASCII: the services also
        // take other scripts' letters and a trailing dot, which they drop).
        "domain" => vec![
            ("maxLength", json!(253)),
            (
                "pattern",
                json!("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"),
            ),
        ],
        "request_id" => vec![("maxLength", json!(REQUEST_ID_MAX)), ("pattern", json!(REQUEST_ID))],
        "window" => pattern(format!(
            "^({YEAR}|{YEAR}-(0[1-9]|1[0-2]|Q[1-4])|{day}\\.\\.{day})$",
            day = DATE.trim_start_matches('^').trim_end_matches('$')
        )),
        other => match (other.strip_prefix("resource:"), other.strip_prefix("slug:")) {
            // `x-reference`: the value names a record of that collection, which must exist.
            (Some(collection), _) => vec![
                ("pattern", json!(format!("^{collection}/{ID_PATTERN}$"))),
                ("x-reference", json!(collection)),
            ],
            // A resource the service defines (a metric of the catalogue), named by a slug.
            (_, Some(collection)) => vec![
                ("pattern", json!(format!("^{collection}/{SLUG_PATTERN}$"))),
                ("x-reference", json!(collection)),
            ],
            _ => Vec::new(),
        },
    }
}

/// A year from 1970 to 9999.
const YEAR: &str = "(19[7-9][0-9]|[2-9][0-9]{3})";

/// The id of a resource named by a slug (`win-rate` of `metrics/win-rate`).
pub(super) const SLUG_PATTERN: &str = "[a-z][a-z0-9-]{0,62}";

/// A date `YYYY-MM-DD` of the years 1970 to 9999 that exists (29 February of leap years only).
const DATE: &str = concat!(
    "^((19[7-9][0-9]|[2-9][0-9]{3})-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)",
    "|(19(7[26]|8[048]|9[26])|[2-9][0-9](0[48]|[2468][048]|[13579][26])|[2468][048]00|[3579][26]00)-02-29)$",
);

/// An email address: a local part of the characters RFC 5322 allows unquoted (dots between
/// them), `@`, and a domain of two or more labels whose last is letters (or an IDN `xn--`).
const EMAIL: &str = concat!(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,32}(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,31})?",
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{1,63}|xn--[A-Za-z0-9]([A-Za-z0-9-]{0,57}[A-Za-z0-9])?)$",
);

/// A string with something besides spaces.
pub(super) fn nonblank() -> Value {
    json!({ "pattern": format!("[^{}]", &SPACE[1..SPACE.len() - 1]) })
}

/// An idempotency key: at most 128 characters, none of them a control character.
const REQUEST_ID: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";
const REQUEST_ID_MAX: usize = crm_platform::idempotency::MAX_REQUEST_ID;

/// The schema of the `Idempotency-Key` header: an idempotency key in an HTTP header's
/// characters (visible ASCII and spaces).
pub(super) fn request_id_header_schema() -> Value {
    json!({ "type": "string", "maxLength": REQUEST_ID_MAX, "pattern": "^[\\x20-\\x7E]*$" })
}

/// An update mask: empty (the body's fields), or a comma-separated list of `fields`.
pub(super) fn mask_schema(fields: &[String]) -> Value {
    let one = fields.join("|");
    json!({ "type": "string", "pattern": format!("^(({one})(,({one}))*)?$") })
}

/// The names of an enum's values (full and without the type's prefix), all but the zero value
/// or those of `only` (either name).
pub(super) fn enum_names(descriptor: &EnumDescriptor, only: &[String]) -> Value {
    let prefix = enum_prefix(descriptor);
    let mut names = Vec::new();
    for value in descriptor.values().filter(|v| v.number() != 0) {
        let short = value.name().strip_prefix(&prefix);
        if !only.is_empty() && !only.iter().any(|o| o == value.name() || Some(o.as_str()) == short) {
            continue;
        }
        names.push(value.name().to_owned());
        if let Some(short) = short {
            names.push(short.to_owned());
        }
    }
    json!(names)
}

/// A `google.protobuf.Duration` (`12.5s`) between `minimum` (0 or more) and `maximum` seconds
/// (a fraction of the maximum's last second included, as the services compare whole seconds).
pub(super) fn duration_pattern(minimum: Option<i64>, maximum: Option<i64>) -> String {
    let seconds = match (minimum, maximum) {
        (Some(0..), Some(max)) if max >= 0 => integers_to(max),
        (Some(0..), None) => "0|[1-9][0-9]{0,11}".to_owned(),
        _ => "-?[0-9]{1,12}".to_owned(),
    };
    format!("^({seconds})(\\.[0-9]{{1,9}})?s$")
}

/// The decimals from 0 to `max`, without leading zeros.
fn integers_to(max: i64) -> String {
    let digits: Vec<u32> = max.to_string().chars().filter_map(|c| c.to_digit(10)).collect();
    let k = digits.len();
    let mut alternatives = vec!["0".to_owned()];
    if k >= 2 {
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", k - 2));
    }
    for (i, &d) in digits.iter().enumerate() {
        let low = u32::from(i == 0);
        if d > low {
            let prefix: String = digits[..i].iter().map(u32::to_string).collect();
            let rest = k - i - 1;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            alternatives.push(format!("{prefix}[{low}-{}]{tail}", d - 1));
        }
    }
    if max > 0 {
        alternatives.push(max.to_string());
    }
    alternatives.join("|")
}

/// What a list of messages' `counts` say: how many items have a field of a given value.
pub(super) fn apply_counts(schema: &mut Value, rules: &FieldRules, item: &MessageDescriptor) {
    let mut all = Vec::new();
    for count in &rules.counts {
        let Some(field) = item.get_field_by_name(&count.field) else {
            continue;
        };
        let value = match field.kind() {
            Kind::Enum(descriptor) => enum_names(&descriptor, std::slice::from_ref(&count.value)),
            Kind::Bool => json!([count.value == "true"]),
            _ => json!([count.value]),
        };
        let mut contains = json!({
            "contains": {
                "type": "object",
                "properties": { field.json_name(): { "enum": value } },
                "required": [field.json_name()],
            },
            "minContains": count.min,
        });
        if count.max > 0 {
            contains["maxContains"] = json!(count.max);
        }
        all.push(contains);
    }
    if !all.is_empty() {
        schema["allOf"] = Value::Array(all);
    }
}

/// What a resource's `fields` say together, as the items of an `allOf`: each `any_of` group
/// needs one of its fields set, and an enum with `write_values` is one of them. Both bind what
/// a request writes; the service's answers (which carry the output only `createTime`) may hold
/// an erased contact without a name or a lead converted by its method.
pub(super) fn across_fields(message: &MessageDescriptor, fields: &[FieldDescriptor]) -> Vec<Value> {
    let answered = message
        .get_field_by_name("create_time")
        .filter(output_only)
        .map(|f| json!({ "required": [f.json_name()] }));
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut all = Vec::new();
    for field in fields {
        let Some(rules) = rules(field) else { continue };
        let name = field.json_name();
        if !rules.any_of.is_empty() {
            let set = if field.is_list() {
                json!({ "minItems": 1 })
            } else {
                nonblank()
            };
            let branch = json!({ "required": [name], "properties": { name: set } });
            match groups.iter_mut().find(|(g, _)| *g == rules.any_of) {
                Some((_, branches)) => branches.push(branch),
                None => groups.push((&rules.any_of, vec![branch])),
            }
        }
        if let (false, Kind::Enum(descriptor)) = (rules.write_values.is_empty(), field.kind()) {
            let values = enum_names(&descriptor, &rules.write_values);
            let mut any = vec![json!({ "properties": { name: { "enum": values } } })];
            any.extend(answered.clone());
            all.push(json!({ "anyOf": any }));
        }
    }
    for (_, mut branches) in groups {
        branches.extend(answered.clone());
        all.push(json!({ "anyOf": branches }));
    }
    all
}

/// Event types, comma-separated: those of one feed (`source` picks the feed), each at most
/// once per feed's count.
pub(super) fn types_schema(feeds: &[Vec<String>]) -> Value {
    let mut all: Vec<String> = feeds.iter().flatten().map(|t| t.replace('.', "\\.")).collect();
    // A type several feeds carry (usage reports) once.
    all.sort();
    all.dedup();
    let one = all.join("|");
    let most = feeds.iter().map(Vec::len).min().unwrap_or(1).max(1);
    json!({
        "type": "string",
        "pattern": format!("^ *(({one})( *, *({one})){{0,{}}})? *$", most - 1),
    })
}

/// A CSV upload without a `mapping`: a header row of the export's `columns` (at least one not
/// `ignored`), then the rows. An empty file is refused: it has no header.
pub(super) fn csv_schema(columns: &[&str], ignored: &[&str]) -> Value {
    let any = columns.join("|");
    let held: Vec<&str> = columns.iter().copied().filter(|c| !ignored.contains(c)).collect();
    let held = held.join("|");
    json!({
        "type": "string",
        "pattern": format!("^ *(({any}) *, *)*({held})( *, *({any}))* *(\\r?\\n[\\s\\S]*)?$"),
    })
}

/// A CSV column mapping, `column:field,column:field`, each field one of `columns` or `-`.
pub(super) fn mapping_schema(columns: &[&str]) -> Value {
    let pair = format!("[^,:]*: *({}|-) *", columns.join("|"));
    json!({ "type": "string", "pattern": format!("^( *|{pair})(,( *|{pair}))*$") })
}

/// A string of a named format.
pub(super) fn format_schema(name: &str) -> Value {
    let mut schema = json!({ "type": "string" });
    let rules = FieldRules {
        format: name.to_owned(),
        ..Default::default()
    };
    apply_to_value(&mut schema, &rules, false);
    schema
}
