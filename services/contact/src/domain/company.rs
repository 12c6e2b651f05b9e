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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
