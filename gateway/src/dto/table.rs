//! The flat form of a contact for CSV files: one column per field, lists joined with `;`,
//! attributes as proto3 JSON. Exports write it and imports read it, so a file round-trips.

use crm_proto::crm::contact::v1 as pb;

use super::common::{attributes_from_proto, time_to_json};

/// The columns of an export, in order; an import accepts any subset, in any order.
pub const CONTACT_COLUMNS: &[&str] = &[
    "name",
    "external_id",
    "given_name",
    "family_name",
    "emails",
    "phones",
    "title",
    "company",
    "lifecycle_stage",
    "source",
    "owner",
    "tags",
    "attributes",
    "consent_email",
    "consent_sms",
    "consent_phone",
    "create_time",
    "update_time",
];

fn short<E: Copy>(value: i32, get: fn(i32) -> Option<E>, name: fn(E) -> &'static str, prefix: &str) -> String {
    get(value)
        .filter(|_| value != 0)
        .map(|v| name(v).trim_start_matches(prefix).to_owned())
        .unwrap_or_default()
}

fn consent(c: Option<&pb::ChannelConsent>) -> String {
    c.map(|c| {
        short(
            c.status,
            |v| pb::ConsentStatus::try_from(v).ok(),
            |v| v.as_str_name(),
            "CONSENT_STATUS_",
        )
    })
    .unwrap_or_default()
}

/// One CSV record of a contact, in [`CONTACT_COLUMNS`] order.
pub fn contact_record(c: &pb::Contact) -> Vec<String> {
    let attributes = if c.attributes.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&attributes_from_proto(&c.attributes)).unwrap_or_default()
    };
    vec![
        c.name.clone(),
        c.external_id.clone(),
        c.given_name.clone(),
        c.family_name.clone(),
        c.emails
            .iter()
            .map(|e| e.address.as_str())
            .collect::<Vec<_>>()
            .join(";"),
        c.phones.iter().map(|p| p.number.as_str()).collect::<Vec<_>>().join(";"),
        c.title.clone(),
        c.company.clone(),
        short(
            c.lifecycle_stage,
            |v| pb::LifecycleStage::try_from(v).ok(),
            |v| v.as_str_name(),
            "LIFECYCLE_STAGE_",
        ),
        short(
            c.source,
            |v| pb::SourceChannel::try_from(v).ok(),
            |v| v.as_str_name(),
            "SOURCE_CHANNEL_",
        ),
        c.owner.clone(),
        c.tags.join(";"),
        attributes,
        consent(c.consent.as_ref().and_then(|c| c.email.as_ref())),
        consent(c.consent.as_ref().and_then(|c| c.sms.as_ref())),
        consent(c.consent.as_ref().and_then(|c| c.phone.as_ref())),
        time_to_json(c.create_time.as_ref()).unwrap_or_default(),
        time_to_json(c.update_time.as_ref()).unwrap_or_default(),
    ]
}

/// Encodes records as CSV (with a header row when `header` is set).
pub fn encode_csv(records: impl IntoIterator<Item = Vec<String>>, header: bool) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    if header {
        let _ = writer.write_record(CONTACT_COLUMNS);
    }
    for record in records {
        // Writing to memory cannot fail.
        let _ = writer.write_record(&record);
    }
    writer.into_inner().unwrap_or_default()
}
