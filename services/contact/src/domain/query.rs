//! What a list asks for: a typed filter, an order and a keyset cursor.

use chrono::{DateTime, Utc};
use crm_platform::filter::{Comparison, Op};
use crm_platform::{ApiError, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ids::CompanyId;
use super::values::{LifecycleStage, SizeBand, SourceChannel, Tag};

/// A bound on a timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound {
    pub op: Op,
    pub time: DateTime<Utc>,
}

/// The filter of ListContacts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactFilter {
    pub lifecycle_stage: Option<LifecycleStage>,
    pub owner: Option<UserId>,
    pub tag: Option<Tag>,
    pub company: Option<CompanyId>,
    pub source: Option<SourceChannel>,
    pub create_time: Vec<TimeBound>,
    pub update_time: Vec<TimeBound>,
}

/// The filter of ListCompanies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompanyFilter {
    pub owner: Option<UserId>,
    pub tag: Option<Tag>,
    pub industry: Option<String>,
    pub size_band: Option<SizeBand>,
    pub domain: Option<String>,
    pub create_time: Vec<TimeBound>,
    pub update_time: Vec<TimeBound>,
}

fn filter_error(reason: impl Into<String>) -> ApiError {
    ApiError::invalid_field("filter", reason)
}

fn only_eq(c: &Comparison) -> Result<(), ApiError> {
    if c.op == Op::Eq {
        Ok(())
    } else {
        Err(filter_error(format!("`{}` only supports =", c.field)))
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, field: &str) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(filter_error(format!("`{field}` may appear only once")));
    }
    Ok(())
}

fn time_bound(c: &Comparison) -> Result<TimeBound, ApiError> {
    if matches!(c.op, Op::Ne) {
        return Err(filter_error(format!("`{}` supports =, <, <=, >, >=", c.field)));
    }
    let time = DateTime::parse_from_rfc3339(&c.value).map_err(|_| {
        filter_error(format!(
            "`{}` needs an RFC 3339 time like \"2026-01-01T00:00:00Z\"",
            c.field
        ))
    })?;
    Ok(TimeBound {
        op: c.op,
        time: time.with_timezone(&Utc),
    })
}

fn parse_user(c: &Comparison) -> Result<UserId, ApiError> {
    UserId::parse(&c.value).map_err(|reason| filter_error(format!("`{}` {reason}", c.field)))
}

fn parse_tag(c: &Comparison) -> Result<Tag, ApiError> {
    Tag::parse(&c.value).map_err(|reason| filter_error(format!("`tag` {reason}")))
}

fn unknown_field(field: &str, known: &str) -> ApiError {
    filter_error(format!("`{field}` cannot be filtered on; use {known}"))
}

impl ContactFilter {
    pub fn parse(filter: &str) -> Result<Self, ApiError> {
        let mut parsed = Self::default();
        for c in crm_platform::filter::parse(filter)? {
            match c.field.as_str() {
                "lifecycle_stage" => {
                    only_eq(&c)?;
                    let stage = LifecycleStage::parse_filter(&c.value)
                        .ok_or_else(|| filter_error(format!("`{}` is not a lifecycle stage", c.value)))?;
                    set_once(&mut parsed.lifecycle_stage, stage, "lifecycle_stage")?;
                }
                "source" => {
                    only_eq(&c)?;
                    let source = SourceChannel::parse_filter(&c.value)
                        .ok_or_else(|| filter_error(format!("`{}` is not a source channel", c.value)))?;
                    set_once(&mut parsed.source, source, "source")?;
                }
                "owner" => {
                    only_eq(&c)?;
                    set_once(&mut parsed.owner, parse_user(&c)?, "owner")?;
                }
                "tag" | "tags" => {
                    only_eq(&c)?;
                    set_once(&mut parsed.tag, parse_tag(&c)?, "tag")?;
                }
                "company" => {
                    only_eq(&c)?;
                    let company = CompanyId::parse_name(&c.value)
                        .map_err(|reason| filter_error(format!("`company` {reason}")))?;
                    set_once(&mut parsed.company, company, "company")?;
                }
                "create_time" => parsed.create_time.push(time_bound(&c)?),
                "update_time" => parsed.update_time.push(time_bound(&c)?),
                other => {
                    return Err(unknown_field(
                        other,
                        "lifecycle_stage, owner, tag, company, source, create_time, update_time",
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

impl CompanyFilter {
    pub fn parse(filter: &str) -> Result<Self, ApiError> {
        let mut parsed = Self::default();
        for c in crm_platform::filter::parse(filter)? {
            match c.field.as_str() {
                "owner" => {
                    only_eq(&c)?;
                    set_once(&mut parsed.owner, parse_user(&c)?, "owner")?;
                }
                "tag" | "tags" => {
                    only_eq(&c)?;
                    set_once(&mut parsed.tag, parse_tag(&c)?, "tag")?;
                }
                "industry" => {
                    only_eq(&c)?;
                    set_once(&mut parsed.industry, c.value.clone(), "industry")?;
                }
                "size_band" => {
                    only_eq(&c)?;
                    let band = SizeBand::parse_filter(&c.value)
                        .ok_or_else(|| filter_error(format!("`{}` is not a size band", c.value)))?;
                    set_once(&mut parsed.size_band, band, "size_band")?;
                }
                "domain" => {
                    only_eq(&c)?;
                    set_once(&mut parsed.domain, c.value.to_lowercase(), "domain")?;
                }
                "create_time" => parsed.create_time.push(time_bound(&c)?),
                "update_time" => parsed.update_time.push(time_bound(&c)?),
                other => {
                    return Err(unknown_field(
                        other,
                        "owner, tag, industry, size_band, domain, create_time, update_time",
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

/// Columns a list can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreateTime,
    UpdateTime,
    FamilyName,
    GivenName,
    DisplayName,
}

impl SortField {
    pub fn column(self) -> &'static str {
        match self {
            SortField::CreateTime => "create_time",
            SortField::UpdateTime => "update_time",
            SortField::FamilyName => "family_name",
            SortField::GivenName => "given_name",
            SortField::DisplayName => "display_name",
        }
    }

    pub fn is_time(self) -> bool {
        matches!(self, SortField::CreateTime | SortField::UpdateTime)
    }
}

/// An order: one column, then the id, ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub field: SortField,
    pub descending: bool,
}

impl Order {
    /// Parses `order_by` against the columns a list allows; default `create_time desc`.
    pub fn parse(order_by: &str, allowed: &[SortField]) -> Result<Order, ApiError> {
        let words: Vec<&str> = order_by.split_whitespace().collect();
        let invalid = || {
            let names: Vec<&str> = allowed.iter().map(|f| f.column()).collect();
            ApiError::invalid_field(
                "order_by",
                format!("must be one of {} optionally followed by asc or desc", names.join(", ")),
            )
        };
        let (column, descending) = match words.as_slice() {
            [] => {
                return Ok(Order {
                    field: SortField::CreateTime,
                    descending: true,
                });
            }
            [column] => (*column, false),
            [column, "asc"] => (*column, false),
            [column, "desc"] => (*column, true),
            _ => return Err(invalid()),
        };
        let field = allowed
            .iter()
            .copied()
            .find(|f| f.column() == column)
            .ok_or_else(invalid)?;
        Ok(Order { field, descending })
    }
}

/// The sort value of the last row of a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SortKey {
    #[serde(rename = "t")]
    Time(DateTime<Utc>),
    #[serde(rename = "s")]
    Text(String),
}

/// Where the next page starts: after this (sort value, id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub key: SortKey,
    pub id: Uuid,
}

/// One page request of a list.
#[derive(Debug, Clone)]
pub struct ListQuery<F> {
    pub filter: F,
    pub order: Order,
    pub after: Option<Cursor>,
    /// Rows to return; the store returns up to `limit + 1` so the caller knows if more follow.
    pub limit: usize,
}

/// Terms of a full-text search: words of letters, digits and `@ . + - _`, at most 16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms(Vec<String>);

impl SearchTerms {
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let terms: Vec<String> = query
            .split_whitespace()
            .map(|word| {
                word.chars()
                    .filter(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'))
                    .collect::<String>()
                    .to_lowercase()
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_owned()
            })
            .filter(|w| !w.is_empty())
            .collect();
        if terms.is_empty() {
            return Err(ApiError::invalid_field("query", "must contain at least one word"));
        }
        if terms.len() > 16 || query.len() > 512 {
            return Err(ApiError::invalid_field(
                "query",
                "must be at most 16 words and 512 characters",
            ));
        }
        Ok(Self(terms))
    }

    pub fn words(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_filters() {
        let f = ContactFilter::parse(
            r#"lifecycle_stage = CUSTOMER AND tag = "VIP" AND create_time >= "2026-01-01T00:00:00Z""#,
        )
        .expect("valid");
        assert_eq!(f.lifecycle_stage, Some(LifecycleStage::Customer));
        assert_eq!(f.tag.as_ref().map(Tag::as_str), Some("vip"));
        assert_eq!(f.create_time.len(), 1);
        for bad in [
            "lifecycle_stage = BOSS",
            "owner != u1",
            "colour = red",
            "create_time > yesterday",
            "owner = a AND owner = b",
            "company = acme",
        ] {
            let err = ContactFilter::parse(bad).expect_err(bad);
            assert_eq!(err.violations[0].field, "filter");
        }
    }

    #[test]
    fn orders() {
        let allowed = [SortField::CreateTime, SortField::FamilyName];
        assert_eq!(
            Order::parse("", &allowed).expect("default"),
            Order {
                field: SortField::CreateTime,
                descending: true
            }
        );
        assert_eq!(
            Order::parse("family_name", &allowed).expect("asc"),
            Order {
                field: SortField::FamilyName,
                descending: false
            }
        );
        assert!(Order::parse("family_name desc", &allowed).expect("desc").descending);
        assert!(Order::parse("given_name", &allowed).is_err());
        assert!(Order::parse("family_name sideways", &allowed).is_err());
    }

    #[test]
    fn search_terms_are_sanitised() {
        let terms = SearchTerms::parse("Ann  O'Neil ann@example.com ;DROP").expect("valid");
        assert_eq!(terms.words(), ["ann", "oneil", "ann@example.com", "drop"]);
        assert!(SearchTerms::parse(" !! ").is_err());
    }
}
