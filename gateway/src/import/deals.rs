//! The flat form of a historical deal or lead for CSV files (ImportDeals): one column per
//! field, the stages a deal went through as `Stage@time;Stage@time`, times as RFC 3339 or
//! `YYYY-MM-DD` (midnight UTC). A row is a deal unless its `record` column says `lead`.

use crm_proto::crm::common::v1::Money;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost_types::Timestamp;
use pb::import_deals_row::Record;

use super::Schema;

/// The columns a deal import reads, in the order a template lists them.
pub const DEAL_COLUMNS: &[&str] = &[
    "record",
    "external_id",
    "display_name",
    "pipeline",
    "owner",
    "amount_minor",
    "currency_code",
    "contact",
    "company",
    "create_time",
    "stages",
    "status",
    "close_time",
    "close_reason",
    "lead_source",
    "lead_create_time",
    "status_time",
    "disqualify_reason",
];

/// Columns a deal import skips: the one a rejects file adds.
pub const DEAL_IGNORED: &[&str] = &["error"];

/// Columns only a deal row fills.
const DEAL_ONLY: &[&str] = &[
    "pipeline",
    "amount_minor",
    "currency_code",
    "stages",
    "close_time",
    "close_reason",
    "lead_create_time",
];
/// Columns only a lead row fills.
const LEAD_ONLY: &[&str] = &["status_time", "disqualify_reason"];

/// Which column holds which field of a deal import.
#[derive(Debug, Clone)]
pub struct DealColumns {
    columns: Vec<Option<&'static str>>,
}

fn time(raw: &str) -> Result<Option<Timestamp>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    let time = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| format!("`{raw}` is not an RFC 3339 time or a YYYY-MM-DD date"))?;
    Ok(Some(crm_platform::time::timestamp(time)))
}

fn stages(raw: &str) -> Result<Vec<pb::StageEntry>, String> {
    raw.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (stage, at) = entry.rsplit_once('@').unwrap_or((entry, ""));
            Ok(pb::StageEntry {
                stage: stage.trim().to_owned(),
                enter_time: time(at.trim()).map_err(|reason| format!("stage `{}`: {reason}", stage.trim()))?,
            })
        })
        .collect()
}

fn status(enum_name: &str, raw: &str) -> Result<i32, String> {
    crate::table::enum_value(enum_name, raw)
}

fn rejected(line: i64, field: &str, reason: String) -> pb::ImportDealsRow {
    pb::ImportDealsRow {
        line,
        record: None,
        rejected_field: field.to_owned(),
        rejected_reason: reason,
    }
}

impl Schema for DealColumns {
    type Row = pb::ImportDealsRow;

    fn from_header(headers: &[&str], mapping: &[(String, String)]) -> Result<Self, String> {
        let columns =
            crate::table::map_columns(headers, mapping, DEAL_COLUMNS, DEAL_IGNORED, "a deal import's column")?;
        if !columns.contains(&Some("external_id")) {
            return Err("the file needs an `external_id` column: a re-run matches rows on it".to_owned());
        }
        Ok(Self { columns })
    }

    fn holds(&self, field: &str) -> bool {
        self.columns.iter().flatten().any(|column| *column == field)
    }

    fn width(&self) -> usize {
        self.columns.len()
    }

    fn row(&self, line: i64, record: &[&str]) -> pb::ImportDealsRow {
        let cells = Cells(
            self.columns
                .iter()
                .zip(record)
                .filter_map(|(column, value)| Some(((*column)?, value.trim())))
                .collect(),
        );
        let is_lead = match cells.get("record").to_ascii_lowercase().as_str() {
            "" | "deal" => false,
            "lead" => true,
            _ => return rejected(line, "record", "must be `deal` or `lead`".to_owned()),
        };
        let (kind, foreign) = if is_lead {
            ("lead", DEAL_ONLY)
        } else {
            ("deal", LEAD_ONLY)
        };
        if let Some((column, _)) = cells.0.iter().find(|(c, v)| foreign.contains(c) && !v.is_empty()) {
            return rejected(line, column, format!("is not a field of a {kind} row"));
        }
        let parsed = if is_lead { lead_of(&cells) } else { deal_of(&cells) };
        match parsed {
            Ok(record) => pb::ImportDealsRow {
                line,
                record: Some(record),
                rejected_field: String::new(),
                rejected_reason: String::new(),
            },
            Err((field, reason)) => rejected(line, field, reason),
        }
    }

    fn ndjson(line: i64, text: &str) -> pb::ImportDealsRow {
        let json: serde_json::Value = match serde_json::from_str(text) {
            Ok(json) => json,
            Err(err) => return rejected(line, "", err.to_string()),
        };
        let record = match json.as_object() {
            Some(object) if object.len() == 1 && (object.contains_key("deal") || object.contains_key("lead")) => {
                crm_proto::json::from_json::<pb::ImportDealsRow>(&json, "crm.pipeline.v1.ImportDealsRow")
            }
            _ => return rejected(line, "", "must be {\"deal\": {...}} or {\"lead\": {...}}".to_owned()),
        };
        match record {
            Ok(row) => pb::ImportDealsRow {
                line,
                record: row.record,
                rejected_field: String::new(),
                rejected_reason: String::new(),
            },
            Err(reason) => rejected(line, "", reason),
        }
    }

    fn rejected(line: i64, field: &str, reason: String) -> pb::ImportDealsRow {
        rejected(line, field, reason)
    }
}

type Parsed = Result<Record, (&'static str, String)>;

/// A record's cells by field.
struct Cells<'a>(Vec<(&'static str, &'a str)>);

impl<'a> Cells<'a> {
    /// The cell of `field`, trimmed; empty when no column holds it.
    fn get(&self, field: &str) -> &'a str {
        self.0.iter().find(|(c, _)| *c == field).map_or("", |(_, v)| *v)
    }
}

fn deal_of(cells: &Cells) -> Parsed {
    let cell = |field: &str| cells.get(field);
    let at = |field: &'static str| time(cell(field)).map_err(|reason| (field, reason));
    let amount = match (cell("amount_minor"), cell("currency_code")) {
        ("", "") => None,
        (minor, currency) => Some(Money {
            amount_minor: minor.parse().map_err(|_| {
                (
                    "amount_minor",
                    format!("`{minor}` is not a whole number of minor units"),
                )
            })?,
            currency_code: currency.to_owned(),
        }),
    };
    Ok(Record::Deal(pb::HistoricalDeal {
        external_id: cell("external_id").to_owned(),
        display_name: cell("display_name").to_owned(),
        pipeline: cell("pipeline").to_owned(),
        owner: cell("owner").to_owned(),
        amount,
        contact: cell("contact").to_owned(),
        company: cell("company").to_owned(),
        create_time: at("create_time")?,
        stages: stages(cell("stages")).map_err(|reason| ("stages", reason))?,
        status: status("crm.pipeline.v1.DealStatus", cell("status")).map_err(|reason| ("status", reason))?,
        close_time: at("close_time")?,
        close_reason: cell("close_reason").to_owned(),
        lead_source: cell("lead_source").to_owned(),
        lead_create_time: at("lead_create_time")?,
    }))
}

fn lead_of(cells: &Cells) -> Parsed {
    let cell = |field: &str| cells.get(field);
    let at = |field: &'static str| time(cell(field)).map_err(|reason| (field, reason));
    Ok(Record::Lead(pb::HistoricalLead {
        external_id: cell("external_id").to_owned(),
        title: cell("display_name").to_owned(),
        owner: cell("owner").to_owned(),
        source: cell("lead_source").to_owned(),
        contact: cell("contact").to_owned(),
        company: cell("company").to_owned(),
        create_time: at("create_time")?,
        status: status("crm.pipeline.v1.LeadStatus", cell("status")).map_err(|reason| ("status", reason))?,
        disqualify_reason: cell("disqualify_reason").to_owned(),
        status_time: at("status_time")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> Option<Timestamp> {
        time(raw).expect("time")
    }

    #[test]
    fn a_deal_row_reads_its_stages_times_and_amount() {
        let header = [
            "external_id",
            "display_name",
            "pipeline",
            "amount_minor",
            "currency_code",
            "create_time",
            "stages",
            "status",
            "close_time",
            "lead_source",
        ];
        let columns = DealColumns::from_header(&header, &[]).expect("header");
        let row = columns.row(
            2,
            &[
                "d-1",
                "Engine",
                "New business",
                "120000",
                "EUR",
                "2024-01-10",
                "Qualify;Proposal@2024-02-01T10:00:00Z",
                "won",
                "2024-03-15",
                "referral",
            ],
        );
        let Some(Record::Deal(deal)) = row.record else {
            panic!("a deal: {row:?}")
        };
        assert_eq!(
            deal.amount.map(|m| (m.amount_minor, m.currency_code)),
            Some((120_000, "EUR".into()))
        );
        assert_eq!(deal.create_time, at("2024-01-10T00:00:00Z"));
        assert_eq!(
            deal.stages,
            vec![
                pb::StageEntry {
                    stage: "Qualify".into(),
                    enter_time: None
                },
                pb::StageEntry {
                    stage: "Proposal".into(),
                    enter_time: at("2024-02-01T10:00:00Z")
                },
            ]
        );
        assert_eq!(deal.status, pb::DealStatus::Won as i32);
        assert_eq!(deal.lead_source, "referral");
    }

    #[test]
    fn a_bad_cell_names_its_column() {
        let header = [
            "record",
            "external_id",
            "create_time",
            "status_time",
            "amount_minor",
            "currency_code",
        ];
        let columns = DealColumns::from_header(&header, &[]).expect("header");
        let field = |record: &[&str]| columns.row(3, record).rejected_field;
        assert_eq!(field(&["deal", "d", "yesterday", "", "", ""]), "create_time");
        assert_eq!(field(&["deal", "d", "", "2024-01-01", "", ""]), "status_time");
        assert_eq!(field(&["lead", "l", "", "", "5", "EUR"]), "amount_minor");
        assert_eq!(field(&["order", "x", "", "", "", ""]), "record");
        assert_eq!(field(&["deal", "d", "", "", "12.50", "EUR"]), "amount_minor");
        assert!(
            DealColumns::from_header(&["display_name"], &[]).is_err(),
            "external_id is required"
        );
        assert!(DealColumns::from_header(&["external_id", "shoe_size"], &[]).is_err());
    }
}
