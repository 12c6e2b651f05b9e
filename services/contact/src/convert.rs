//! Proto <-> domain conversion, done once, here. Parsing collects every field violation of a
//! request so that the client learns all problems at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_platform::UserId;
use crm_platform::error::Violations;
use crm_proto::crm::common::v1 as common;
use crm_proto::crm::contact::v1 as pb;
use crm_proto::prost_types::{Duration as PbDuration, Timestamp};

use crate::domain::contact::{MAX_ATTRIBUTES, MAX_EMAILS, MAX_NAME, MAX_PHONES, MAX_TAGS};
use crate::domain::interaction::{MAX_BODY, MAX_DURATION_SECS, MAX_SUBJECT};
use crate::domain::*;

/// Proto enums whose values mirror a domain enum, with UNSPECIFIED as "not set".
pub(crate) trait ProtoEnum: Sized + Copy {
    fn from_proto(value: i32) -> Result<Option<Self>, String>;
    fn to_proto(value: Option<Self>) -> i32;
}

macro_rules! proto_enum {
    ($domain:ident <=> $proto:ident { $($variant:ident),+ $(,)? }) => {
        impl ProtoEnum for $domain {
            fn from_proto(value: i32) -> Result<Option<Self>, String> {
                match pb::$proto::try_from(value) {
                    Ok(pb::$proto::Unspecified) => Ok(None),
                    $(Ok(pb::$proto::$variant) => Ok(Some($domain::$variant)),)+
                    Err(_) => Err(format!("{value} is not a value of {}", stringify!($proto))),
                }
            }

            fn to_proto(value: Option<Self>) -> i32 {
                match value {
                    None => pb::$proto::Unspecified as i32,
                    $(Some($domain::$variant) => pb::$proto::$variant as i32,)+
                }
            }
        }
    };
}

proto_enum!(LifecycleStage <=> LifecycleStage { Subscriber, Lead, Prospect, Customer, Churned });
proto_enum!(SourceChannel <=> SourceChannel { Web, CallCentre, ContactCentre, Support, Referral, Event, Partner, Import, Other });
proto_enum!(ConsentStatus <=> ConsentStatus { OptedIn, OptedOut });
proto_enum!(SizeBand <=> SizeBand { Micro, Small, Medium, Large, Enterprise });
proto_enum!(InteractionType <=> InteractionType { Call, Email, Meeting, Note, SupportTicket, Chat, Visit });
proto_enum!(Direction <=> Direction { Inbound, Outbound, Internal });
proto_enum!(ChangeAction <=> ChangeAction { Created, Updated, Deleted, Reassigned, Erased, Merged });
proto_enum!(MatchReason <=> MatchReason { Email, Phone, NameAndCompany, Name, Domain });
proto_enum!(InteractionChannel <=> InteractionChannel { Phone, Email, Web, InPerson, Video, Sms, Chat, Social, Other });

pub(crate) use crm_platform::time::{from_timestamp, timestamp};

fn text(v: &mut Violations, field: &str, value: &str, max: usize, multiline: bool) -> String {
    v.check(
        field,
        check_text(value, max, multiline).map(|()| value.trim().to_owned()),
    )
    .unwrap_or_default()
}

fn owner(v: &mut Violations, field: &str, raw: &str, default: Option<&UserId>) -> UserId {
    match (raw.is_empty(), default) {
        (true, Some(default)) => default.clone(),
        (true, None) => {
            v.add(field, "is required");
            placeholder_user()
        }
        (false, _) => v.check(field, UserId::parse(raw)).unwrap_or_else(placeholder_user),
    }
}

/// Stands in for an invalid user id in a request that is already known to be refused.
fn placeholder_user() -> UserId {
    UserId::parse("invalid").expect("a constant valid user id")
}

fn tags(v: &mut Violations, raw: &[String]) -> Vec<Tag> {
    v.bounded("tags", raw, MAX_TAGS)
        .iter()
        .enumerate()
        .filter_map(|(i, t)| v.check(format!("tags[{i}]"), Tag::parse(t)))
        .collect()
}

fn attributes(
    v: &mut Violations,
    raw: &BTreeMap<String, common::AttributeValue>,
) -> BTreeMap<AttributeKey, AttributeValue> {
    use common::attribute_value::Kind;
    let mut parsed = BTreeMap::new();
    if !v.within("attributes", raw.len(), MAX_ATTRIBUTES) {
        return parsed;
    }
    for (key, value) in raw {
        let field = format!("attributes[{key}]");
        let Some(key) = v.check(&field, AttributeKey::parse(key)) else {
            continue;
        };
        let value = match &value.kind {
            None => {
                v.add(&field, "must have a value");
                continue;
            }
            Some(Kind::StringValue(s)) => AttributeValue::String(s.clone()),
            Some(Kind::IntValue(i)) => AttributeValue::Int(*i),
            Some(Kind::DoubleValue(d)) => AttributeValue::Double(*d),
            Some(Kind::BoolValue(b)) => AttributeValue::Bool(*b),
            Some(Kind::TimeValue(ts)) => match v.check(&field, from_timestamp(ts)) {
                Some(time) => AttributeValue::Time(time),
                None => continue,
            },
        };
        if v.check(&field, value.validate()).is_some() {
            parsed.insert(key, value);
        }
    }
    parsed
}

fn attributes_to_proto(
    attributes: &BTreeMap<AttributeKey, AttributeValue>,
) -> BTreeMap<String, common::AttributeValue> {
    use common::attribute_value::Kind;
    attributes
        .iter()
        .map(|(key, value)| {
            let kind = match value {
                AttributeValue::String(s) => Kind::StringValue(s.clone()),
                AttributeValue::Int(i) => Kind::IntValue(*i),
                AttributeValue::Double(d) => Kind::DoubleValue(*d),
                AttributeValue::Bool(b) => Kind::BoolValue(*b),
                AttributeValue::Time(t) => Kind::TimeValue(timestamp(*t)),
            };
            (key.as_str().to_owned(), common::AttributeValue { kind: Some(kind) })
        })
        .collect()
}

fn channel_consent(
    v: &mut Violations,
    field: &str,
    raw: Option<&pb::ChannelConsent>,
    now: DateTime<Utc>,
) -> Option<ChannelConsent> {
    let raw = raw?;
    let status = v
        .check(format!("{field}.status"), ConsentStatus::from_proto(raw.status))
        .flatten()?;
    let time = match &raw.update_time {
        Some(ts) => v.check(format!("{field}.update_time"), from_timestamp(ts))?,
        None => now,
    };
    let source = text(v, &format!("{field}.source"), &raw.source, 200, false);
    Some(ChannelConsent { status, time, source })
}

fn channel_consent_to_proto(consent: Option<&ChannelConsent>) -> Option<pb::ChannelConsent> {
    consent.map(|c| pb::ChannelConsent {
        status: ConsentStatus::to_proto(Some(c.status)),
        update_time: Some(timestamp(c.time)),
        source: c.source.clone(),
    })
}

fn output_only_empty(v: &mut Violations, name: &str, create: Option<&Timestamp>, update: Option<&Timestamp>) {
    if !name.is_empty() {
        v.add("name", "is output only; leave it empty on create");
    }
    if create.is_some() {
        v.add("create_time", "is output only");
    }
    if update.is_some() {
        v.add("update_time", "is output only");
    }
}

/// Parses the writable fields of a contact. `default_owner` fills an empty owner (on create).
pub(crate) fn contact_fields(v: &mut Violations, c: &pb::Contact, default_owner: Option<&UserId>) -> ContactFields {
    let now = now();
    let mut emails: Vec<ContactEmail> = Vec::new();
    let mut email_keys = std::collections::HashSet::new();
    for (i, email) in v.bounded("emails", &c.emails, MAX_EMAILS).iter().enumerate() {
        if let Some(address) = v.check(format!("emails[{i}].address"), EmailAddress::parse(&email.address)) {
            if !email_keys.insert(address.key()) {
                v.add(format!("emails[{i}].address"), "is listed twice");
            }
            emails.push(ContactEmail {
                address,
                primary: email.primary,
            });
        }
    }
    let mut phones: Vec<ContactPhone> = Vec::new();
    let mut numbers = std::collections::HashSet::new();
    for (i, phone) in v.bounded("phones", &c.phones, MAX_PHONES).iter().enumerate() {
        if let Some(number) = v.check(format!("phones[{i}].number"), PhoneNumber::parse(&phone.number)) {
            if !numbers.insert(number.clone()) {
                v.add(format!("phones[{i}].number"), "is listed twice");
            }
            phones.push(ContactPhone {
                number,
                primary: phone.primary,
            });
        }
    }
    let company = if c.company.is_empty() {
        None
    } else {
        v.check("company", CompanyId::parse_name(&c.company))
    };
    let consent = c.consent.as_ref();
    ContactFields {
        external_id: if c.external_id.trim().is_empty() {
            None
        } else {
            v.check("external_id", crate::domain::contact::parse_external_id(&c.external_id))
        },
        given_name: text(v, "given_name", &c.given_name, MAX_NAME, false),
        family_name: text(v, "family_name", &c.family_name, MAX_NAME, false),
        emails,
        phones,
        title: text(v, "title", &c.title, MAX_NAME, false),
        company,
        lifecycle_stage: v
            .check("lifecycle_stage", LifecycleStage::from_proto(c.lifecycle_stage))
            .flatten()
            .unwrap_or(LifecycleStage::Lead),
        source: v
            .check("source", SourceChannel::from_proto(c.source))
            .flatten()
            .unwrap_or(SourceChannel::Other),
        owner: owner(v, "owner", &c.owner, default_owner),
        tags: tags(v, &c.tags),
        attributes: attributes(v, &c.attributes),
        consent: Consent {
            email: channel_consent(v, "consent.email", consent.and_then(|c| c.email.as_ref()), now),
            sms: channel_consent(v, "consent.sms", consent.and_then(|c| c.sms.as_ref()), now),
            phone: channel_consent(v, "consent.phone", consent.and_then(|c| c.phone.as_ref()), now),
        },
    }
}

/// Parses a contact to create: writable fields, and output-only fields left empty.
pub(crate) fn new_contact(c: &pb::Contact, caller: &UserId) -> Result<ContactFields, crm_platform::ApiError> {
    let mut v = Violations::new("contact.");
    output_only_empty(&mut v, &c.name, c.create_time.as_ref(), c.update_time.as_ref());
    if !c.etag.is_empty() {
        v.add("etag", "is output only");
    }
    if c.erase_time.is_some() {
        v.add("erase_time", "is output only");
    }
    let fields = contact_fields(&mut v, c, Some(caller));
    v.finish()?;
    Ok(fields)
}

/// Clears the fields of `c` not named in `mask`, so that only masked fields are parsed.
pub(crate) fn masked_contact(c: &pb::Contact, mask: &[ContactField]) -> pb::Contact {
    let mut out = pb::Contact::default();
    for field in mask {
        match field {
            ContactField::ExternalId => out.external_id.clone_from(&c.external_id),
            ContactField::GivenName => out.given_name.clone_from(&c.given_name),
            ContactField::FamilyName => out.family_name.clone_from(&c.family_name),
            ContactField::Emails => out.emails.clone_from(&c.emails),
            ContactField::Phones => out.phones.clone_from(&c.phones),
            ContactField::Title => out.title.clone_from(&c.title),
            ContactField::Company => out.company.clone_from(&c.company),
            ContactField::LifecycleStage => out.lifecycle_stage = c.lifecycle_stage,
            ContactField::Source => out.source = c.source,
            ContactField::Owner => out.owner.clone_from(&c.owner),
            ContactField::Tags => out.tags.clone_from(&c.tags),
            ContactField::Attributes => out.attributes.clone_from(&c.attributes),
            ContactField::Consent => out.consent.clone_from(&c.consent),
            ContactField::EmailConsent => {
                out.consent.get_or_insert_default().email = c.consent.as_ref().and_then(|c| c.email.clone())
            }
            ContactField::SmsConsent => {
                out.consent.get_or_insert_default().sms = c.consent.as_ref().and_then(|c| c.sms.clone())
            }
            ContactField::PhoneConsent => {
                out.consent.get_or_insert_default().phone = c.consent.as_ref().and_then(|c| c.phone.clone())
            }
        }
    }
    out
}

pub(crate) fn contact_to_proto(c: &Contact) -> pb::Contact {
    let f = &c.fields;
    pb::Contact {
        name: c.id.name(),
        given_name: f.given_name.clone(),
        family_name: f.family_name.clone(),
        emails: f
            .emails
            .iter()
            .map(|e| pb::EmailAddress {
                address: e.address.as_str().to_owned(),
                primary: e.primary,
            })
            .collect(),
        phones: f
            .phones
            .iter()
            .map(|p| pb::PhoneNumber {
                number: p.number.as_str().to_owned(),
                primary: p.primary,
            })
            .collect(),
        title: f.title.clone(),
        company: f.company.map(|c| c.name()).unwrap_or_default(),
        lifecycle_stage: LifecycleStage::to_proto(Some(f.lifecycle_stage)),
        source: SourceChannel::to_proto(Some(f.source)),
        owner: f.owner.as_str().to_owned(),
        tags: f.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        attributes: attributes_to_proto(&f.attributes),
        consent: Some(pb::Consent {
            email: channel_consent_to_proto(f.consent.email.as_ref()),
            sms: channel_consent_to_proto(f.consent.sms.as_ref()),
            phone: channel_consent_to_proto(f.consent.phone.as_ref()),
        }),
        create_time: Some(timestamp(c.create_time)),
        update_time: Some(timestamp(c.update_time)),
        etag: c.etag(),
        erase_time: c.erase_time.map(timestamp),
        external_id: f.external_id.clone().unwrap_or_default(),
    }
}

pub(crate) fn company_fields(v: &mut Violations, c: &pb::Company, default_owner: Option<&UserId>) -> CompanyFields {
    CompanyFields {
        display_name: text(v, "display_name", &c.display_name, MAX_NAME, false),
        domain: if c.domain.is_empty() {
            None
        } else {
            v.check("domain", company::parse_domain(&c.domain))
        },
        industry: text(v, "industry", &c.industry, MAX_NAME, false),
        size_band: v.check("size_band", SizeBand::from_proto(c.size_band)).flatten(),
        owner: owner(v, "owner", &c.owner, default_owner),
        tags: tags(v, &c.tags),
        attributes: attributes(v, &c.attributes),
    }
}

pub(crate) fn new_company(c: &pb::Company, caller: &UserId) -> Result<CompanyFields, crm_platform::ApiError> {
    let mut v = Violations::new("company.");
    output_only_empty(&mut v, &c.name, c.create_time.as_ref(), c.update_time.as_ref());
    if !c.etag.is_empty() {
        v.add("etag", "is output only");
    }
    let fields = company_fields(&mut v, c, Some(caller));
    v.finish()?;
    Ok(fields)
}

pub(crate) fn masked_company(c: &pb::Company, mask: &[CompanyField]) -> pb::Company {
    let mut out = pb::Company::default();
    for field in mask {
        match field {
            CompanyField::DisplayName => out.display_name.clone_from(&c.display_name),
            CompanyField::Domain => out.domain.clone_from(&c.domain),
            CompanyField::Industry => out.industry.clone_from(&c.industry),
            CompanyField::SizeBand => out.size_band = c.size_band,
            CompanyField::Owner => out.owner.clone_from(&c.owner),
            CompanyField::Tags => out.tags.clone_from(&c.tags),
            CompanyField::Attributes => out.attributes.clone_from(&c.attributes),
        }
    }
    out
}

pub(crate) fn company_to_proto(c: &Company) -> pb::Company {
    let f = &c.fields;
    pb::Company {
        name: c.id.name(),
        display_name: f.display_name.clone(),
        domain: f.domain.clone().unwrap_or_default(),
        industry: f.industry.clone(),
        size_band: SizeBand::to_proto(f.size_band),
        owner: f.owner.as_str().to_owned(),
        tags: f.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        attributes: attributes_to_proto(&f.attributes),
        create_time: Some(timestamp(c.create_time)),
        update_time: Some(timestamp(c.update_time)),
        etag: c.etag(),
    }
}

pub(crate) fn new_interaction(
    i: &pb::Interaction,
    caller: &UserId,
) -> Result<InteractionFields, crm_platform::ApiError> {
    let mut v = Violations::new("interaction.");
    if !i.name.is_empty() {
        v.add("name", "is output only; leave it empty on create");
    }
    if !i.company.is_empty() {
        v.add("company", "is output only; it is taken from the contact");
    }
    if i.create_time.is_some() {
        v.add("create_time", "is output only");
    }
    let kind = v.check("type", InteractionType::from_proto(i.r#type)).flatten();
    if kind.is_none() && i.r#type == 0 {
        v.add("type", "is required");
    }
    let direction = v.check("direction", Direction::from_proto(i.direction)).flatten();
    let channel = v.check("channel", InteractionChannel::from_proto(i.channel)).flatten();
    let occur_time = match &i.occur_time {
        Some(ts) => v.check("occur_time", from_timestamp(ts)),
        None => {
            v.add("occur_time", "is required");
            None
        }
    };
    let duration_ms = i.duration.as_ref().and_then(|d: &PbDuration| {
        let valid = d.seconds >= 0 && d.nanos >= 0 && d.seconds <= MAX_DURATION_SECS;
        if valid {
            Some(d.seconds * 1000 + i64::from(d.nanos / 1_000_000))
        } else {
            v.add("duration", format!("must be between 0 and {MAX_DURATION_SECS} seconds"));
            None
        }
    });
    let fields = InteractionFields {
        kind: kind.unwrap_or(InteractionType::Note),
        direction: direction.unwrap_or(if kind == Some(InteractionType::Note) {
            Direction::Internal
        } else {
            Direction::Outbound
        }),
        channel,
        occur_time: occur_time.unwrap_or_else(now),
        duration_ms,
        subject: text(&mut v, "subject", &i.subject, MAX_SUBJECT, false),
        body: text(&mut v, "body", &i.body, MAX_BODY, true),
        outcome: text(&mut v, "outcome", &i.outcome, MAX_NAME, false),
        campaign_id: text(&mut v, "campaign_id", &i.campaign_id, MAX_NAME, false),
        actor: owner(&mut v, "actor", &i.actor, Some(caller)),
    };
    v.finish()?;
    Ok(fields)
}

pub(crate) fn interaction_to_proto(i: &Interaction) -> pb::Interaction {
    let f = &i.fields;
    pb::Interaction {
        name: i.name(),
        r#type: InteractionType::to_proto(Some(f.kind)),
        direction: Direction::to_proto(Some(f.direction)),
        channel: InteractionChannel::to_proto(f.channel),
        occur_time: Some(timestamp(f.occur_time)),
        duration: f.duration_ms.map(|ms| PbDuration {
            seconds: ms / 1000,
            nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
        }),
        subject: f.subject.clone(),
        body: f.body.clone(),
        outcome: f.outcome.clone(),
        campaign_id: f.campaign_id.clone(),
        actor: f.actor.as_str().to_owned(),
        company: i.company.map(|c| c.name()).unwrap_or_default(),
        create_time: Some(timestamp(i.create_time)),
    }
}

/// A JSON value as a `google.protobuf.Value`.
pub(crate) fn proto_value(value: &serde_json::Value) -> crm_proto::prost_types::Value {
    use crm_proto::prost_types::value::Kind;
    use crm_proto::prost_types::{ListValue, Struct};
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(proto_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), proto_value(v))).collect(),
        }),
    };
    crm_proto::prost_types::Value { kind: Some(kind) }
}

pub(crate) fn history_to_proto(entry: &HistoryEntry) -> pb::HistoryEntry {
    pb::HistoryEntry {
        name: entry.name(),
        action: ChangeAction::to_proto(Some(entry.action)),
        actor: entry.actor.as_str().to_owned(),
        create_time: Some(timestamp(entry.time)),
        changes: entry
            .changes
            .iter()
            .map(|c| pb::FieldChange {
                field: c.field.clone(),
                old_value: Some(proto_value(&c.old)),
                new_value: Some(proto_value(&c.new)),
            })
            .collect(),
    }
}

pub(crate) fn candidate_to_proto(c: &crate::app::Candidate) -> pb::DuplicateCandidate {
    pb::DuplicateCandidate {
        contact: c.contact.name(),
        score: c.score,
        reasons: c.reasons.iter().map(|r| MatchReason::to_proto(Some(*r))).collect(),
    }
}

pub(crate) fn group_to_proto(g: &crate::app::DuplicateGroup) -> pb::DuplicateGroup {
    pb::DuplicateGroup {
        contacts: g.contacts.iter().map(ContactId::name).collect(),
        score: g.score,
        reasons: g.reasons.iter().map(|r| MatchReason::to_proto(Some(*r))).collect(),
    }
}

/// The fields an import row provides: those named by its mask, or else those it sets.
fn provided_fields(row: &pb::ImportRow, contact: &pb::Contact) -> Result<Vec<ContactField>, String> {
    if let Some(mask) = row.fields.as_ref().filter(|m| !m.paths.is_empty()) {
        if mask.paths.len() > crm_platform::resource::MAX_MASK_PATHS {
            return Err(format!(
                "names {} fields; at most {} may be named",
                mask.paths.len(),
                crm_platform::resource::MAX_MASK_PATHS
            ));
        }
        return mask.paths.iter().map(|p| ContactField::parse(p)).collect();
    }
    let set = [
        (ContactField::ExternalId, !contact.external_id.is_empty()),
        (ContactField::GivenName, !contact.given_name.is_empty()),
        (ContactField::FamilyName, !contact.family_name.is_empty()),
        (ContactField::Emails, !contact.emails.is_empty()),
        (ContactField::Phones, !contact.phones.is_empty()),
        (ContactField::Title, !contact.title.is_empty()),
        (ContactField::Company, !contact.company.is_empty()),
        (ContactField::LifecycleStage, contact.lifecycle_stage != 0),
        (ContactField::Source, contact.source != 0),
        (ContactField::Owner, !contact.owner.is_empty()),
        (ContactField::Tags, !contact.tags.is_empty()),
        (ContactField::Attributes, !contact.attributes.is_empty()),
        (ContactField::Consent, contact.consent.is_some()),
    ];
    Ok(set
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(field, _)| field)
        .collect())
}

/// Parses an import row, or says why it is refused.
pub(crate) fn import_row(
    row: &pb::ImportRow,
    caller: &UserId,
) -> Result<crate::import::ImportRow, crate::import::RowOutcome> {
    use crate::import::{ImportRow, RowOutcome};
    if !row.rejected_reason.is_empty() {
        return Err(RowOutcome::rejected(&row.rejected_field, &row.rejected_reason));
    }
    let Some(contact) = row.contact.as_ref() else {
        return Err(RowOutcome::rejected("", "the row carries no contact"));
    };
    let provided = provided_fields(row, contact).map_err(|reason| RowOutcome::rejected("fields", reason))?;
    let mut v = Violations::new("");
    let fields = contact_fields(&mut v, contact, Some(caller));
    match v.finish() {
        Ok(()) => Ok(ImportRow { fields, provided }),
        Err(err) => Err(err
            .violations
            .first()
            .map(|first| RowOutcome::rejected(&first.field, &first.description))
            .unwrap_or_else(|| RowOutcome::rejected("", err.message))),
    }
}

pub(crate) fn row_result(line: i64, outcome: &crate::import::RowOutcome) -> pb::RowResult {
    use crate::import::RowOutcome;
    let (outcome, contact, field, reason) = match outcome {
        RowOutcome::Created(id) => (
            pb::RowOutcome::Created,
            id.map(|id| id.name()).unwrap_or_default(),
            String::new(),
            String::new(),
        ),
        RowOutcome::Updated(id) => (pb::RowOutcome::Updated, id.name(), String::new(), String::new()),
        RowOutcome::Unchanged(id) => (pb::RowOutcome::Unchanged, id.name(), String::new(), String::new()),
        RowOutcome::Rejected { field, reason } => {
            (pb::RowOutcome::Rejected, String::new(), field.clone(), reason.clone())
        }
    };
    pb::RowResult {
        line,
        outcome: outcome as i32,
        contact,
        field,
        reason,
    }
}

pub(crate) fn company_candidate_to_proto(c: &crate::app::CompanyCandidate) -> pb::CompanyCandidate {
    pb::CompanyCandidate {
        company: c.company.name(),
        score: c.score,
        reasons: c.reasons.iter().map(|r| MatchReason::to_proto(Some(*r))).collect(),
    }
}

pub(crate) fn company_group_to_proto(g: &crate::app::CompanyGroup) -> pb::CompanyDuplicateGroup {
    pb::CompanyDuplicateGroup {
        companies: g.companies.iter().map(CompanyId::name).collect(),
        score: g.score,
        reasons: g.reasons.iter().map(|r| MatchReason::to_proto(Some(*r))).collect(),
    }
}
