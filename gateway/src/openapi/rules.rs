//! The JSON Schema a field's rules (`crm.common.v1.rules`) and behaviour (`REQUIRED`) state.

use crm_proto::crm::common::v1::FieldRules;
use serde_json::{Value, json};

pub(super) use crate::rest::check::{required, rules};
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
        "currency" => vec![("enum", json!(crm_platform::money::CURRENCIES))],
        // Necessary conditions only: the services' own checks (and normalisation) decide.
        "email" => vec![
            ("maxLength", json!(254)),
            ("pattern", json!(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")),
        ],
        "phone" => pattern(r"^(\+|00)[0-9][0-9 ().\/-]{5,30}$".to_owned()),
        "tag" => pattern(r"^[^\s\x00-\x1F\x7F-\x9F]{1,64}$".to_owned()),
        "line" => pattern(r"^[^\x00-\x1F\x7F-\x9F]*$".to_owned()),
        // Something besides spaces and ASCII punctuation (letters of any script count).
        "words" => pattern(r"[^\s\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\x7F]".to_owned()),
        "attribute_key" => pattern("^[a-z][a-z0-9_]{0,63}$".to_owned()),
        other => match other.strip_prefix("resource:") {
            Some(collection) => pattern(format!("^{collection}/{ID_PATTERN}$")),
            None => Vec::new(),
        },
    }
}
