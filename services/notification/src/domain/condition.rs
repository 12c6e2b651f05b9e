//! What a rule matches: event types of the followed feeds (the messages of the contact,
//! pipeline and analytics `events.proto`), and a condition on the payload in the suite's filter
//! language (`field op value [AND ...]`, [`crm_platform::filter`]). A field is a payload field
//! by its proto name, a dotted path reaching into messages (`deal.amount.amount_minor`);
//! numbers compare as numbers, strings as text, booleans and enums with `=` and `!=`, an enum
//! by its value's name, whole (`STAGE_KIND_WON`) or without the enum's prefix (`WON`). A
//! condition is checked against every type of its rule when the rule is saved, so it can only
//! fail to match, never fail to evaluate.

use crm_platform::filter::{self, Comparison, Op};
use crm_proto::prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

/// The proto files whose messages are the events rules can match.
const EVENT_FILES: [&str; 3] = [
    "crm/contact/v1/events.proto",
    "crm/pipeline/v1/events.proto",
    "crm/analytics/v1/events.proto",
];

/// The event type `name` (`crm.pipeline.v1.DealWon`), or why it is not one.
pub fn event_type(name: &str) -> Result<MessageDescriptor, String> {
    let pool = crm_proto::json::descriptors()?;
    pool.get_message_by_name(name)
        .filter(|m| m.parent_message().is_none() && EVENT_FILES.contains(&m.parent_file().name()))
        .ok_or_else(|| format!("`{name}` is not an event type of the contact, pipeline or analytics feed"))
}

/// Every event type a rule can match.
pub fn event_types() -> Vec<String> {
    let Ok(pool) = crm_proto::json::descriptors() else {
        return Vec::new();
    };
    pool.files()
        .filter(|f| EVENT_FILES.contains(&f.name()))
        .flat_map(|f| f.messages().map(|m| m.full_name().to_owned()).collect::<Vec<_>>())
        .collect()
}

/// A condition checked against its rule's event types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    terms: Vec<Comparison>,
}

impl Condition {
    /// `text` as a condition on events of every one of `types`, or every problem found.
    pub fn parse(text: &str, types: &[MessageDescriptor]) -> Result<Self, Vec<String>> {
        let terms = filter::parse(text).map_err(|e| {
            if e.violations.is_empty() {
                vec![e.message]
            } else {
                e.violations.into_iter().map(|v| v.description).collect()
            }
        })?;
        let mut problems = Vec::new();
        for term in &terms {
            for message in types {
                if let Err(reason) = check(term, message) {
                    problems.push(format!("`{}` on {}: {reason}", term.field, message.full_name()));
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { terms })
        } else {
            Err(problems)
        }
    }

    /// Whether `payload` meets every term.
    pub fn matches(&self, payload: &DynamicMessage) -> bool {
        self.terms.iter().all(|term| holds(term, payload))
    }
}

/// The field a dotted path reaches in `message`.
fn resolve(message: &MessageDescriptor, path: &str) -> Result<FieldDescriptor, String> {
    let mut current = message.clone();
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let field = current
            .get_field_by_name(segment)
            .ok_or_else(|| format!("{} has no field `{segment}`", current.full_name()))?;
        if segments.peek().is_none() {
            return Ok(field);
        }
        if field.is_list() || field.is_map() {
            return Err(format!(
                "`{segment}` is a list or map: a condition compares single values"
            ));
        }
        match field.kind() {
            Kind::Message(inner) => current = inner,
            _ => return Err(format!("`{segment}` is not a message: nothing to reach into")),
        }
    }
    Err("a field is required".to_owned())
}

/// Why `term` cannot be evaluated on `message`, if it cannot.
fn check(term: &Comparison, message: &MessageDescriptor) -> Result<(), String> {
    let field = resolve(message, &term.field)?;
    if field.is_list() || field.is_map() {
        return Err("is a list or map: a condition compares single values".to_owned());
    }
    let ordered = !matches!(term.op, Op::Eq | Op::Ne);
    match field.kind() {
        Kind::Message(m) => Err(format!("is a message ({}): compare one of its fields", m.full_name())),
        Kind::Bytes => Err("is bytes: not comparable".to_owned()),
        Kind::Bool if ordered => Err("is a boolean: compare with = or !=".to_owned()),
        Kind::Bool => match term.value.as_str() {
            "true" | "false" => Ok(()),
            _ => Err("is a boolean: compare with true or false".to_owned()),
        },
        Kind::Enum(_) if ordered => Err("is an enum: compare with = or !=".to_owned()),
        Kind::Enum(e) => enum_number(&e, &term.value)
            .map(drop)
            .ok_or_else(|| format!("`{}` is not one of {}", term.value, enum_names(&e))),
        Kind::Double | Kind::Float => term
            .value
            .parse::<f64>()
            .map(drop)
            .map_err(|_| format!("is a number: `{}` is not one", term.value)),
        Kind::String => Ok(()),
        _ => term
            .value
            .parse::<i128>()
            .map(drop)
            .map_err(|_| format!("is a whole number: `{}` is not one", term.value)),
    }
}

/// The number of the enum value `given` names, whole or without the enum's prefix.
fn enum_number(e: &EnumDescriptor, given: &str) -> Option<i32> {
    e.values()
        .find(|v| v.name() == given || v.name().strip_suffix(given).is_some_and(|prefix| prefix.ends_with('_')))
        .map(|v| v.number())
}

fn enum_names(e: &EnumDescriptor) -> String {
    e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>().join(", ")
}

/// Whether `term` holds on `payload` (a term that does not apply to it does not hold).
fn holds(term: &Comparison, payload: &DynamicMessage) -> bool {
    let mut current = payload.clone();
    let mut segments = term.field.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Some(field) = current.descriptor().get_field_by_name(segment) else {
            return false;
        };
        let value = current.get_field(&field).into_owned();
        if segments.peek().is_none() {
            return compare(term, &field, &value);
        }
        match value {
            Value::Message(inner) => current = inner,
            _ => return false,
        }
    }
    false
}

fn compare(term: &Comparison, field: &FieldDescriptor, value: &Value) -> bool {
    let ordering = match (value, field.kind()) {
        (Value::EnumNumber(n), Kind::Enum(e)) => {
            let same = enum_number(&e, &term.value) == Some(*n);
            return match term.op {
                Op::Eq => same,
                Op::Ne => !same,
                _ => false,
            };
        }
        (Value::Bool(b), _) => Some(b.cmp(&(term.value == "true"))),
        (Value::String(s), _) => Some(s.as_str().cmp(term.value.as_str())),
        (Value::F64(x), _) => term.value.parse::<f64>().ok().and_then(|v| x.partial_cmp(&v)),
        (Value::F32(x), _) => term
            .value
            .parse::<f64>()
            .ok()
            .and_then(|v| f64::from(*x).partial_cmp(&v)),
        (Value::I32(x), _) => whole(i128::from(*x), &term.value),
        (Value::I64(x), _) => whole(i128::from(*x), &term.value),
        (Value::U32(x), _) => whole(i128::from(*x), &term.value),
        (Value::U64(x), _) => whole(i128::from(*x), &term.value),
        _ => None,
    };
    let Some(ordering) = ordering else { return false };
    match term.op {
        Op::Eq => ordering.is_eq(),
        Op::Ne => ordering.is_ne(),
        Op::Lt => ordering.is_lt(),
        Op::Le => ordering.is_le(),
        Op::Gt => ordering.is_gt(),
        Op::Ge => ordering.is_ge(),
    }
}

fn whole(x: i128, given: &str) -> Option<std::cmp::Ordering> {
    given.parse::<i128>().ok().map(|v| x.cmp(&v))
}

#[cfg(test)]
mod tests {
    use crm_proto::crm::analytics::v1 as analytics;
    use crm_proto::crm::common::v1::Money;
    use crm_proto::crm::pipeline::v1 as pipeline;
    use crm_proto::prost::{Message, Name};

    use super::*;

    fn types(names: &[&str]) -> Vec<MessageDescriptor> {
        names.iter().map(|n| event_type(n).expect("type")).collect()
    }

    fn dynamic<M: Message + Name>(message: &M) -> DynamicMessage {
        DynamicMessage::decode(
            event_type(&M::full_name()).expect("type"),
            message.encode_to_vec().as_slice(),
        )
        .expect("decode")
    }

    fn won(amount_minor: i64, kind: i32) -> DynamicMessage {
        dynamic(&pipeline::DealWon {
            deal: Some(pipeline::Deal {
                amount: Some(Money {
                    amount_minor,
                    currency_code: "EUR".into(),
                }),
                owner: "alice".into(),
                ..Default::default()
            }),
            transition: Some(pipeline::StageTransition {
                kind,
                ..Default::default()
            }),
        })
    }

    #[test]
    fn the_catalogue_holds_the_feeds_events_only() {
        let all = event_types();
        for name in [
            "crm.pipeline.v1.DealWon",
            "crm.pipeline.v1.TaskDue",
            "crm.contact.v1.ContactCreated",
            "crm.analytics.v1.SegmentChanged",
        ] {
            assert!(all.iter().any(|t| t == name), "{name}");
        }
        assert!(event_type("crm.pipeline.v1.Deal").is_err());
        assert!(event_type("crm.events.v1.UsageReported").is_err());
        assert!(event_type("nope").is_err());
    }

    #[test]
    fn numbers_strings_and_enums_compare_as_such() {
        let deal_won = types(&["crm.pipeline.v1.DealWon"]);
        let big = Condition::parse("deal.amount.amount_minor >= 1000000 AND deal.owner = alice", &deal_won)
            .expect("condition");
        assert!(big.matches(&won(1_000_000, 0)));
        assert!(!big.matches(&won(999_999, 0)));
        let kind = pipeline::TransitionKind::Won as i32;
        let by_kind = Condition::parse("transition.kind = WON", &deal_won).expect("short enum name");
        assert!(by_kind.matches(&won(1, kind)));
        assert!(!by_kind.matches(&won(1, pipeline::TransitionKind::Lost as i32)));
        let full = Condition::parse("transition.kind != TRANSITION_KIND_WON", &deal_won).expect("full name");
        assert!(!full.matches(&won(1, kind)));
        assert!(Condition::default().matches(&won(1, kind)));

        let segment = types(&["crm.analytics.v1.SegmentChanged"]);
        let at_risk = Condition::parse("to = at_risk", &segment).expect("condition");
        let changed = |to: &str| {
            dynamic(&analytics::SegmentChanged {
                to: to.into(),
                ..Default::default()
            })
        };
        assert!(at_risk.matches(&changed("at_risk")));
        assert!(!at_risk.matches(&changed("champions")));
    }

    #[test]
    fn every_problem_of_a_condition_is_named_when_it_is_saved() {
        let both = types(&["crm.pipeline.v1.DealWon", "crm.pipeline.v1.DealLost"]);
        let problems = Condition::parse(
            "deal.nope = 1 AND deal.amount.amount_minor >= lots AND transition.kind > WON AND deal = x",
            &both,
        )
        .expect_err("invalid");
        assert_eq!(problems.len(), 8, "{problems:?}");
        assert!(problems[0].contains("has no field `nope`"), "{problems:?}");
        assert!(problems[2].contains("whole number"), "{problems:?}");
        assert!(problems[4].contains("compare with = or !="), "{problems:?}");
        assert!(problems[6].contains("is a message"), "{problems:?}");
        // A field one type has and another lacks.
        let mixed = types(&["crm.pipeline.v1.DealWon", "crm.analytics.v1.SegmentChanged"]);
        assert_eq!(
            Condition::parse("to = at_risk", &mixed)
                .expect_err("DealWon has no `to`")
                .len(),
            1
        );
        assert!(Condition::parse("deal.owner = alice OR x = y", &both).is_err());
    }
}
