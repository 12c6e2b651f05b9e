//! The suite's field options, read once from the descriptors: a field's behaviour
//! (`google.api.field_behavior`: output only, required, immutable) and its rules
//! (`crm.common.v1.rules`), and how enum values are named.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost_reflect::{EnumDescriptor, FieldDescriptor};

use crate::crm::common::v1::FieldRules;
use crate::google::api::FieldBehavior;

/// What a field's options say.
#[derive(Debug, Clone, Default)]
pub struct FieldFacts {
    /// Set in answers, refused in requests.
    pub output_only: bool,
    /// Must be given.
    pub required: bool,
    /// Set when the resource is created, never changed by an update (`IMMUTABLE`).
    pub immutable: bool,
    /// Its constraints, if any.
    pub rules: Option<FieldRules>,
}

/// The facts of every field of the suite, by the field's full name.
static FACTS: LazyLock<HashMap<String, FieldFacts>> = LazyLock::new(|| {
    let Ok(pool) = crate::json::descriptors() else {
        return HashMap::new();
    };
    let behaviour = pool.get_extension_by_name("google.api.field_behavior");
    let rules = pool.get_extension_by_name("crm.common.v1.rules");
    let mut facts = HashMap::new();
    for message in pool.all_messages() {
        for field in message.fields() {
            let options = field.options();
            let behaviours: Vec<i32> = behaviour
                .as_ref()
                .filter(|b| options.has_extension(b))
                .and_then(|b| {
                    options
                        .get_extension(b)
                        .as_list()
                        .map(|list| list.iter().filter_map(|v| v.as_enum_number()).collect())
                })
                .unwrap_or_default();
            let field_rules = rules.as_ref().filter(|r| options.has_extension(r)).and_then(|r| {
                options
                    .get_extension(r)
                    .as_message()
                    .and_then(|m| m.transcode_to().ok())
            });
            facts.insert(
                field.full_name().to_owned(),
                FieldFacts {
                    output_only: behaviours.contains(&(FieldBehavior::OutputOnly as i32)),
                    required: behaviours.contains(&(FieldBehavior::Required as i32)),
                    immutable: behaviours.contains(&(FieldBehavior::Immutable as i32)),
                    rules: field_rules,
                },
            );
        }
    }
    facts
});

/// What `field`'s options say (nothing, for a field outside the suite's descriptors).
pub fn facts(field: &FieldDescriptor) -> &'static FieldFacts {
    static NONE: FieldFacts = FieldFacts {
        output_only: false,
        required: false,
        immutable: false,
        rules: None,
    };
    FACTS.get(field.full_name()).unwrap_or(&NONE)
}

/// The prefix of an enum's values (`LIFECYCLE_STAGE_` of `LifecycleStage`).
pub fn enum_prefix(descriptor: &EnumDescriptor) -> String {
    let mut prefix = String::new();
    for (i, c) in descriptor.name().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            prefix.push('_');
        }
        prefix.push(c.to_ascii_uppercase());
    }
    prefix.push('_');
    prefix
}

/// The full name of a set enum value given by its full or its short name (`CUSTOMER` of
/// `LIFECYCLE_STAGE_CUSTOMER`); the unspecified value (number 0) is none.
pub fn enum_value(descriptor: &EnumDescriptor, given: &str) -> Option<String> {
    let value = descriptor
        .get_value_by_name(given)
        .or_else(|| descriptor.get_value_by_name(&format!("{}{given}", enum_prefix(descriptor))))?;
    (value.number() != 0).then(|| value.name().to_owned())
}

/// The short name of an enum's value (`CUSTOMER` of `LIFECYCLE_STAGE_CUSTOMER`); empty for the
/// unspecified value (number 0) and for a number the enum does not have.
pub fn short_name(descriptor: &EnumDescriptor, number: i32) -> String {
    descriptor
        .get_value(number)
        .filter(|_| number != 0)
        .map(|value| {
            let prefix = enum_prefix(descriptor);
            value.name().strip_prefix(&prefix).unwrap_or(value.name()).to_owned()
        })
        .unwrap_or_default()
}

/// The number of a set enum value given by its full or short name, in any case.
pub fn enum_number(descriptor: &EnumDescriptor, given: &str) -> Option<i32> {
    let full = enum_value(descriptor, &given.to_ascii_uppercase())?;
    descriptor.get_value_by_name(&full).map(|value| value.number())
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_options_are_read_from_the_descriptors() {
        let pool = crate::json::descriptors().expect("descriptors");
        let contact = pool.get_message_by_name("crm.contact.v1.Contact").expect("Contact");
        let field = |name: &str| contact.get_field_by_name(name).expect("field");
        assert!(super::facts(&field("create_time")).output_only);
        assert!(!super::facts(&field("given_name")).output_only);
        let emails = super::facts(&field("emails")).rules.clone().expect("rules");
        assert_eq!(emails.max_items, 20);
        let company = pool.get_message_by_name("crm.contact.v1.Company").expect("Company");
        assert!(super::facts(&company.get_field_by_name("display_name").expect("field")).required);
        let stage = pool.get_enum_by_name("crm.contact.v1.LifecycleStage").expect("enum");
        assert_eq!(
            super::enum_value(&stage, "CUSTOMER").as_deref(),
            Some("LIFECYCLE_STAGE_CUSTOMER")
        );
        assert_eq!(super::enum_value(&stage, "UNSPECIFIED"), None);
        assert_eq!(super::enum_value(&stage, "BOSS"), None);
        assert_eq!(super::enum_number(&stage, "customer"), Some(4));
        assert_eq!(super::short_name(&stage, 4), "CUSTOMER");
        assert_eq!(super::short_name(&stage, 0), "");
    }
}
