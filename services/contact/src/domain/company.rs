//! Companies: the organisations contacts work for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_platform::UserId;

use super::ids::{CompanyId, Revision};
use super::values::{AttributeKey, AttributeValue, SizeBand, Tag};

/// A stored company.
#[derive(Debug, Clone, PartialEq)]
pub struct Company {
    pub id: CompanyId,
    pub fields: CompanyFields,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub revision: Revision,
    /// Set once the company was merged into another; its name then resolves to that one.
    pub merged_into: Option<CompanyId>,
}

/// Everything about a company a client may write, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyFields {
    pub display_name: String,
    pub domain: Option<String>,
    pub industry: String,
    pub size_band: Option<SizeBand>,
    pub owner: UserId,
    pub tags: Vec<Tag>,
    pub attributes: BTreeMap<AttributeKey, AttributeValue>,
}

/// A field of a company named by an update mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompanyField {
    DisplayName,
    Domain,
    Industry,
    SizeBand,
    Owner,
    Tags,
    Attributes,
}

impl CompanyField {
    pub fn parse(path: &str) -> Result<Self, String> {
        Ok(match path {
            "display_name" => Self::DisplayName,
            "domain" => Self::Domain,
            "industry" => Self::Industry,
            "size_band" => Self::SizeBand,
            "owner" => Self::Owner,
            "tags" => Self::Tags,
            "attributes" => Self::Attributes,
            "name" | "create_time" | "update_time" | "etag" => return Err(format!("`{path}` is output only")),
            other => return Err(format!("`{other}` is not a field of Company")),
        })
    }
}

/// Parses an internet domain: lower case, at least two labels, no scheme or path.
pub fn parse_domain(raw: &str) -> Result<String, String> {
    let domain = raw.trim().trim_end_matches('.').to_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let valid = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if valid {
        Ok(domain)
    } else {
        Err("must be a domain like example.com (no scheme or path)".into())
    }
}

impl CompanyFields {
    pub fn check(&self) -> Vec<(String, String)> {
        if self.display_name.trim().is_empty() {
            vec![("display_name".into(), "is required".into())]
        } else {
            Vec::new()
        }
    }

    pub fn normalise(&mut self) {
        self.tags.sort();
        self.tags.dedup();
    }

    pub fn apply(&mut self, patch: &CompanyFields, mask: &[CompanyField]) {
        for field in mask {
            match field {
                CompanyField::DisplayName => self.display_name.clone_from(&patch.display_name),
                CompanyField::Domain => self.domain.clone_from(&patch.domain),
                CompanyField::Industry => self.industry.clone_from(&patch.industry),
                CompanyField::SizeBand => self.size_band = patch.size_band,
                CompanyField::Owner => self.owner = patch.owner.clone(),
                CompanyField::Tags => self.tags.clone_from(&patch.tags),
                CompanyField::Attributes => self.attributes.clone_from(&patch.attributes),
            }
        }
        self.normalise();
    }
}

impl Company {
    pub fn etag(&self) -> String {
        self.revision.etag()
    }
}

/// Legal-form words left out when comparing company names.
const LEGAL_FORMS: &[&str] = &[
    "inc",
    "ltd",
    "llc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "bv",
    "nv",
    "plc",
    "corp",
    "co",
    "company",
    "limited",
    "corporation",
    "kg",
    "srl",
    "spa",
    "oy",
    "ab",
    "as",
];
/// Name similarity (Jaro-Winkler, legal forms dropped) from which names count as a match.
const COMPANY_NAME_THRESHOLD: f64 = 0.95;

/// A company name reduced for comparison: lower case, letters and digits, legal forms dropped.
pub fn comparable_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .filter(|word| !LEGAL_FORMS.contains(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The blocking key of a company name: its first four comparable letters.
pub fn name_block(name: &str) -> String {
    comparable_name(name).replace(' ', "").chars().take(4).collect()
}

impl CompanyFields {
    /// How likely `self` and `other` are one organisation (0..=1), and why.
    pub fn likeness(&self, other: &CompanyFields) -> Option<(f64, Vec<super::MatchReason>)> {
        let mut reasons = Vec::new();
        let mut score: f64 = 0.0;
        if self.domain.is_some() && self.domain == other.domain {
            reasons.push(super::MatchReason::Domain);
            score = score.max(0.95);
        }
        let (a, b) = (
            comparable_name(&self.display_name),
            comparable_name(&other.display_name),
        );
        if !a.is_empty() && !b.is_empty() {
            let similarity = strsim::jaro_winkler(&a, &b);
            if similarity >= COMPANY_NAME_THRESHOLD {
                reasons.push(super::MatchReason::Name);
                score = score.max(0.8 * similarity);
            }
        }
        (!reasons.is_empty()).then_some((score, reasons))
    }
}

/// The merged state of companies: the caller's choice per field, else the most recently
/// updated non-empty value; tags and attributes united; the survivor keeps its owner.
pub fn merge_company_fields(
    survivor: &Company,
    merged: &[Company],
    choices: &std::collections::BTreeMap<CompanyField, super::CompanyId>,
) -> CompanyFields {
    let mut all: Vec<&Company> = std::iter::once(survivor).chain(merged).collect();
    all.sort_by(|a, b| {
        b.update_time
            .cmp(&a.update_time)
            .then_with(|| (b.id == survivor.id).cmp(&(a.id == survivor.id)))
    });
    let chosen = |field: CompanyField| {
        choices
            .get(&field)
            .and_then(|id| all.iter().find(|c| c.id == *id))
            .map(|c| &c.fields)
    };
    let recent = |non_empty: &dyn Fn(&CompanyFields) -> bool| {
        all.iter()
            .map(|c| &c.fields)
            .find(|f| non_empty(f))
            .unwrap_or(&survivor.fields)
    };
    let pick = |field: CompanyField, non_empty: &dyn Fn(&CompanyFields) -> bool| {
        chosen(field).unwrap_or_else(|| recent(non_empty))
    };
    let mut out = survivor.fields.clone();
    out.display_name
        .clone_from(&pick(CompanyField::DisplayName, &|f| !f.display_name.is_empty()).display_name);
    out.domain
        .clone_from(&pick(CompanyField::Domain, &|f| f.domain.is_some()).domain);
    out.industry
        .clone_from(&pick(CompanyField::Industry, &|f| !f.industry.is_empty()).industry);
    out.size_band = pick(CompanyField::SizeBand, &|f| f.size_band.is_some()).size_band;
    out.owner
        .clone_from(&chosen(CompanyField::Owner).unwrap_or(&survivor.fields).owner);
    out.tags = match chosen(CompanyField::Tags) {
        Some(f) => f.tags.clone(),
        None => all.iter().flat_map(|c| c.fields.tags.iter().cloned()).collect(),
    };
    out.attributes = match chosen(CompanyField::Attributes) {
        Some(f) => f.attributes.clone(),
        None => {
            let mut attributes = std::collections::BTreeMap::new();
            for c in all.iter().rev() {
                attributes.extend(c.fields.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            attributes
        }
    };
    out.normalise();
    out
}
