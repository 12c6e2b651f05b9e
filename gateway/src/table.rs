//! The flat form of a contact for CSV files: one column per field, lists joined with `;`,
//! attributes as proto3 JSON. Exports write it and imports read it, so a file round-trips.

use crm_proto::crm::contact::v1 as pb;

use crm_platform::error::Violations;
use crm_proto::prost_types::Timestamp;

use crate::rest::check;

const CONTACT: &str = "crm.contact.v1.Contact";

/// RFC 3339 of a proto timestamp.
fn time_to_json(ts: Option<&Timestamp>) -> Option<String> {
    let ts = ts?;
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)?;
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// The contact's descriptor.
fn contact_descriptor() -> Result<crm_proto::prost_reflect::MessageDescriptor, String> {
    crm_proto::json::descriptors()?
        .get_message_by_name(CONTACT)
        .ok_or_else(|| format!("unknown message {CONTACT}"))
}

/// A contact from its proto3 JSON (short enum names accepted): the first wrong field and why.
fn contact_from_json(mut json: serde_json::Value) -> Result<pb::Contact, (String, String)> {
    let descriptor = contact_descriptor().map_err(|e| (String::new(), e))?;
    let mut violations = Violations::new("");
    check::check_message(&mut violations, "", &mut json, &descriptor);
    violations.finish().map_err(|err| {
        err.violations
            .first()
            .map_or((String::new(), err.message.clone()), |v| {
                (v.field.clone(), v.description.clone())
            })
    })?;
    crm_proto::json::from_json(&json, CONTACT).map_err(|e| (String::new(), e))
}

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

/// The enum of the suite named `name` (`crm.contact.v1.LifecycleStage`).
fn enum_of(name: &str) -> Option<crm_proto::prost_reflect::EnumDescriptor> {
    crm_proto::json::descriptors().ok()?.get_enum_by_name(name)
}

/// A CSV cell of an enum: its short name (`CUSTOMER`), empty when unset.
fn short(enum_name: &str, number: i32) -> String {
    enum_of(enum_name).map_or_else(String::new, |e| crm_proto::options::short_name(&e, number))
}

fn consent(c: Option<&pb::ChannelConsent>) -> String {
    c.map(|c| short(CONSENT_STATUS, c.status)).unwrap_or_default()
}

const LIFECYCLE_STAGE: &str = "crm.contact.v1.LifecycleStage";
const SOURCE_CHANNEL: &str = "crm.contact.v1.SourceChannel";
const CONSENT_STATUS: &str = "crm.contact.v1.ConsentStatus";

/// One CSV record of a contact, in [`CONTACT_COLUMNS`] order.
pub fn contact_record(c: &pb::Contact) -> Vec<String> {
    let attributes = if c.attributes.is_empty() {
        String::new()
    } else {
        let only = pb::Contact {
            attributes: c.attributes.clone(),
            ..pb::Contact::default()
        };
        crm_proto::json::to_json(&only, CONTACT)
            .map(|json| json["attributes"].to_string())
            .unwrap_or_default()
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
        short(LIFECYCLE_STAGE, c.lifecycle_stage),
        short(SOURCE_CHANNEL, c.source),
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

/// Columns of an export that an import ignores (they are output only), and `error`, which a
/// rejects file adds.
pub const IGNORED_COLUMNS: &[&str] = &["name", "create_time", "update_time", "error"];

/// Largest row an import accepts.
pub const MAX_ROW_BYTES: usize = 1024 * 1024;

/// Reads file rows as import rows: knows which column holds which field.
#[derive(Debug, Clone)]
pub struct RowReader {
    /// For each column, the field it holds (None: ignored).
    columns: Vec<Option<&'static str>>,
}

/// Parses `from:to,from:to` into a column mapping; `to` may be `-` to ignore a column.
pub fn parse_mapping(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (from, to) = pair
                .split_once(':')
                .ok_or_else(|| format!("`{pair}` is not column:field"))?;
            Ok((from.trim().to_owned(), to.trim().to_owned()))
        })
        .collect()
}

/// For each header column, the field of `fields` it holds after `mapping` (None: ignored).
/// Every column must be one of `fields`, one of `ignored`, or mapped to `-`; `what` names a
/// field in errors ("a contact field").
pub fn map_columns(
    headers: &[&str],
    mapping: &[(String, String)],
    fields: &[&'static str],
    ignored: &[&str],
    what: &str,
) -> Result<Vec<Option<&'static str>>, String> {
    let mut columns = Vec::with_capacity(headers.len());
    for header in headers {
        let header = header.trim().trim_start_matches('\u{feff}');
        let target = mapping
            .iter()
            .find(|(from, _)| from == header)
            .map_or(header, |(_, to)| to.as_str());
        let column = if target == "-" || ignored.contains(&target) {
            None
        } else {
            Some(fields.iter().copied().find(|f| *f == target).ok_or_else(|| {
                format!(
                    "column `{header}` is not {what}; map it with mapping={header}:<field> or {header}:- to skip it"
                )
            })?)
        };
        if column.is_some() && columns.contains(&column) {
            return Err(format!("two columns hold `{target}`"));
        }
        columns.push(column);
    }
    if columns.iter().all(Option::is_none) {
        return Err(format!("no column holds {what}"));
    }
    Ok(columns)
}

impl RowReader {
    /// Checks a header row against the mapping (see [`map_columns`]).
    pub fn new(headers: &[&str], mapping: &[(String, String)]) -> Result<Self, String> {
        let importable: Vec<&'static str> = CONTACT_COLUMNS
            .iter()
            .copied()
            .filter(|c| !IGNORED_COLUMNS.contains(c))
            .collect();
        Ok(Self {
            columns: map_columns(headers, mapping, &importable, IGNORED_COLUMNS, "a contact field")?,
        })
    }
}

impl crate::import::Schema for RowReader {
    type Row = pb::ImportRow;

    fn from_header(headers: &[&str], mapping: &[(String, String)]) -> Result<Self, String> {
        Self::new(headers, mapping)
    }

    fn holds(&self, field: &str) -> bool {
        self.columns.iter().flatten().any(|column| *column == field)
    }

    fn width(&self) -> usize {
        self.columns.len()
    }

    fn ndjson(line: i64, text: &str) -> pb::ImportRow {
        ndjson_row(line, text)
    }

    fn rejected(line: i64, field: &str, reason: String) -> pb::ImportRow {
        rejected(line, field, reason)
    }

    /// The import row of one record; a record that cannot be read is a rejected row.
    fn row(&self, line: i64, record: &[&str]) -> pb::ImportRow {
        if let Some(reason) = self.width_mismatch(record.len()) {
            return rejected(line, "row", reason);
        }
        let mut contact = pb::Contact::default();
        let mut fields = Vec::new();
        for (column, value) in self.columns.iter().zip(record) {
            let Some(column) = column else { continue };
            if let Err(reason) = set_field(&mut contact, column, value.trim()) {
                return rejected(line, *column, reason);
            }
            fields.push(match *column {
                "consent_email" => "consent.email".to_owned(),
                "consent_sms" => "consent.sms".to_owned(),
                "consent_phone" => "consent.phone".to_owned(),
                other => other.to_owned(),
            });
        }
        pb::ImportRow {
            line,
            contact: Some(contact),
            fields: Some(crm_proto::prost_types::FieldMask { paths: fields }),
            rejected_field: String::new(),
            rejected_reason: String::new(),
        }
    }
}

/// A row the client could not read.
pub fn rejected(line: i64, field: impl Into<String>, reason: impl Into<String>) -> pb::ImportRow {
    pb::ImportRow {
        line,
        contact: None,
        fields: None,
        rejected_field: field.into(),
        rejected_reason: reason.into(),
    }
}

/// An enum cell: its full or short name in any case; empty is unset.
pub(crate) fn enum_value(enum_name: &str, value: &str) -> Result<i32, String> {
    if value.is_empty() {
        return Ok(0);
    }
    enum_of(enum_name)
        .and_then(|e| crm_proto::options::enum_number(&e, value))
        .ok_or_else(|| format!("`{value}` is not a known value"))
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(';').map(str::trim).filter(|v| !v.is_empty())
}

fn set_field(c: &mut pb::Contact, column: &str, value: &str) -> Result<(), String> {
    let consent = |value: &str| -> Result<Option<pb::ChannelConsent>, String> {
        let status = enum_value(CONSENT_STATUS, value)?;
        Ok((status != 0).then(|| pb::ChannelConsent {
            status,
            update_time: None,
            source: "import".to_owned(),
        }))
    };
    match column {
        "external_id" => c.external_id = value.to_owned(),
        "given_name" => c.given_name = value.to_owned(),
        "family_name" => c.family_name = value.to_owned(),
        "emails" => {
            c.emails = list(value)
                .enumerate()
                .map(|(i, a)| pb::EmailAddress {
                    address: a.to_owned(),
                    primary: i == 0,
                })
                .collect();
        }
        "phones" => {
            c.phones = list(value)
                .enumerate()
                .map(|(i, n)| pb::PhoneNumber {
                    number: n.to_owned(),
                    primary: i == 0,
                })
                .collect();
        }
        "title" => c.title = value.to_owned(),
        "company" => c.company = value.to_owned(),
        "lifecycle_stage" => {
            c.lifecycle_stage = enum_value(LIFECYCLE_STAGE, value)?;
        }
        "source" => c.source = enum_value(SOURCE_CHANNEL, value)?,
        "owner" => c.owner = value.to_owned(),
        "tags" => c.tags = list(value).map(str::to_owned).collect(),
        "attributes" if value.is_empty() => c.attributes.clear(),
        "attributes" => {
            let parsed: serde_json::Value =
                serde_json::from_str(value).map_err(|err| format!("is not a JSON object of typed values: {err}"))?;
            let only = contact_from_json(serde_json::json!({ "attributes": parsed }))
                .map_err(|(field, reason)| format!("{field}: {reason}"))?;
            c.attributes = only.attributes;
        }
        "consent_email" => c.consent.get_or_insert_default().email = consent(value)?,
        "consent_sms" => c.consent.get_or_insert_default().sms = consent(value)?,
        "consent_phone" => c.consent.get_or_insert_default().phone = consent(value)?,
        _ => return Err("is not an importable field".to_owned()),
    }
    Ok(())
}

/// The import row of one NDJSON line (a contact in its REST JSON form; output-only fields, as
/// an export writes them, are ignored). The reader keeps lines to [`MAX_ROW_BYTES`].
pub fn ndjson_row(line: i64, text: &str) -> pb::ImportRow {
    let mut json: serde_json::Value = match serde_json::from_str(text) {
        Ok(json) => json,
        Err(err) => return rejected(line, "", err.to_string()),
    };
    let Some(object) = json.as_object_mut() else {
        return rejected(line, "", "must be a JSON object");
    };
    let mut paths = Vec::new();
    if let Ok(descriptor) = contact_descriptor() {
        for field in descriptor.fields() {
            let present = object.remove(field.json_name()).or_else(|| object.remove(field.name()));
            if let Some(value) = present.filter(|_| !check::output_only(&field)) {
                object.insert(field.json_name().to_owned(), value);
                paths.push(field.name().to_owned());
            }
        }
    }
    match contact_from_json(json) {
        Ok(contact) => pb::ImportRow {
            line,
            contact: Some(contact),
            fields: Some(crm_proto::prost_types::FieldMask { paths }),
            rejected_field: String::new(),
            rejected_reason: String::new(),
        },
        Err((field, reason)) => rejected(line, field, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::Schema;

    #[test]
    fn rows_follow_the_header_and_mapping() {
        let mapping = parse_mapping("E-Mail:emails,Notes:-").expect("mapping");
        let reader = RowReader::new(
            &["external_id", "given_name", "E-Mail", "Notes", "lifecycle_stage"],
            &mapping,
        )
        .expect("header");
        let row = reader.row(
            2,
            &[
                "crm-1",
                "Ada",
                "ada@example.com; ada@home.example",
                "ignored",
                "customer",
            ],
        );
        let contact = row.contact.expect("contact");
        assert_eq!(contact.external_id, "crm-1");
        assert_eq!(contact.emails.len(), 2);
        assert!(contact.emails[0].primary);
        assert_eq!(contact.lifecycle_stage, pb::LifecycleStage::Customer as i32);
        assert_eq!(
            row.fields.expect("fields").paths,
            ["external_id", "given_name", "emails", "lifecycle_stage"]
        );

        let short = reader.row(3, &["crm-2", "Bo"]);
        assert_eq!((short.rejected_field.as_str(), short.contact.is_none()), ("row", true));
        let bad = reader.row(4, &["crm-3", "Cy", "", "", "boss"]);
        assert_eq!(bad.rejected_field, "lifecycle_stage");
        assert!(
            RowReader::new(&["given_name", "shoe_size"], &[]).is_err(),
            "unknown columns are refused"
        );
        assert!(RowReader::new(&["given_name", "given_name"], &[]).is_err());
        assert!(
            RowReader::new(&["name", "create_time"], &[]).is_err(),
            "nothing importable"
        );
    }

    #[test]
    fn an_export_row_reads_back() {
        let header: Vec<&str> = CONTACT_COLUMNS.to_vec();
        let reader = RowReader::new(&header, &[]).expect("an export's header");
        let contact = pb::Contact {
            name: "contacts/x".into(),
            external_id: "e-1".into(),
            given_name: "Ada".into(),
            emails: vec![pb::EmailAddress {
                address: "ada@example.com".into(),
                primary: true,
            }],
            tags: vec!["vip".into(), "emea".into()],
            lifecycle_stage: pb::LifecycleStage::Customer as i32,
            ..Default::default()
        };
        let record = contact_record(&contact);
        let row = reader.row(2, &record.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(row.rejected_reason.is_empty(), "{}", row.rejected_reason);
        let back = row.contact.expect("contact");
        assert_eq!(
            (back.external_id.as_str(), back.tags.len(), back.lifecycle_stage),
            ("e-1", 2, contact.lifecycle_stage)
        );
        assert!(back.name.is_empty(), "output-only columns are ignored");
    }
}
