//! The audit trail: who changed which fields of a contact or company, when, from what to what.

use chrono::{DateTime, Utc};
use crm_platform::UserId;
use crm_platform::outbox::NewEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::company::CompanyFields;
use super::contact::ContactFields;
use super::ids::{CompanyId, ContactId};
use super::values::word_enum;

word_enum!(
    /// What an audit entry records.
    ChangeAction, "CHANGE_ACTION" {
        Created => "created",
        Updated => "updated",
        Deleted => "deleted",
        Reassigned => "reassigned",
        Erased => "erased",
        Merged => "merged",
    }
);

/// One field's old and new value (JSON; null when unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// What a write asks the store to record with it, in the same transaction: the audit entry
/// and the events it publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub action: ChangeAction,
    pub actor: UserId,
    pub changes: Vec<FieldChange>,
    pub events: Vec<NewEvent>,
}

/// The record an audit entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audited {
    Contact(ContactId),
    Company(CompanyId),
}

impl Audited {
    pub fn kind(self) -> &'static str {
        match self {
            Audited::Contact(_) => "contact",
            Audited::Company(_) => "company",
        }
    }

    pub fn id(self) -> Uuid {
        match self {
            Audited::Contact(id) => id.0,
            Audited::Company(id) => id.0,
        }
    }

    pub fn name(self) -> String {
        match self {
            Audited::Contact(id) => id.name(),
            Audited::Company(id) => id.name(),
        }
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub id: Uuid,
    pub of: Audited,
    pub action: ChangeAction,
    pub actor: UserId,
    pub time: DateTime<Utc>,
    pub changes: Vec<FieldChange>,
}

impl HistoryEntry {
    pub fn name(&self) -> String {
        format!("{}/history/{}", self.of.name(), self.id)
    }
}

fn json(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn text(value: &str) -> Value {
    if value.is_empty() {
        Value::Null
    } else {
        Value::String(value.to_owned())
    }
}

/// The audited fields of a record with their JSON values.
pub trait AuditFields {
    fn audit_values(&self) -> Vec<(&'static str, Value)>;
}

impl AuditFields for ContactFields {
    fn audit_values(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("external_id", self.external_id.as_deref().map_or(Value::Null, text)),
            ("given_name", text(&self.given_name)),
            ("family_name", text(&self.family_name)),
            ("emails", json(&self.emails)),
            ("phones", json(&self.phones)),
            ("title", text(&self.title)),
            ("company", self.company.map_or(Value::Null, |c| Value::String(c.name()))),
            ("lifecycle_stage", json(self.lifecycle_stage)),
            ("source", json(self.source)),
            ("owner", Value::String(self.owner.as_str().to_owned())),
            ("tags", json(&self.tags)),
            ("attributes", json(&self.attributes)),
            ("consent", json(&self.consent)),
        ]
    }
}

impl AuditFields for CompanyFields {
    fn audit_values(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("display_name", text(&self.display_name)),
            ("domain", self.domain.as_deref().map_or(Value::Null, text)),
            ("industry", text(&self.industry)),
            ("size_band", self.size_band.map_or(Value::Null, json)),
            ("owner", Value::String(self.owner.as_str().to_owned())),
            ("tags", json(&self.tags)),
            ("attributes", json(&self.attributes)),
        ]
    }
}

/// The fields that differ between two states (None: the record does not exist on that side),
/// leaving out fields that are empty on both sides.
pub fn changes<F: AuditFields>(old: Option<&F>, new: Option<&F>) -> Vec<FieldChange> {
    let empty = |v: &Value| {
        v.is_null()
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object()
                .is_some_and(|o| o.values().all(Value::is_null) || o.is_empty())
    };
    let olds = old.map(AuditFields::audit_values);
    let news = new.map(AuditFields::audit_values);
    let names: Vec<&'static str> = olds
        .as_ref()
        .or(news.as_ref())
        .map(|v| v.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .enumerate()
        .filter_map(|(i, field)| {
            let old = olds.as_ref().map_or(Value::Null, |v| v[i].1.clone());
            let new = news.as_ref().map_or(Value::Null, |v| v[i].1.clone());
            let old = if empty(&old) { Value::Null } else { old };
            let new = if empty(&new) { Value::Null } else { new };
            (old != new).then(|| FieldChange {
                field: field.to_owned(),
                old,
                new,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{Consent, LifecycleStage, SourceChannel};

    fn fields() -> ContactFields {
        ContactFields {
            external_id: None,
            given_name: "Ann".into(),
            family_name: "Lee".into(),
            emails: vec![],
            phones: vec![],
            title: String::new(),
            company: None,
            lifecycle_stage: LifecycleStage::Lead,
            source: SourceChannel::Web,
            owner: UserId::parse("alice").expect("user"),
            tags: vec![],
            attributes: BTreeMap::new(),
            consent: Consent::default(),
        }
    }

    #[test]
    fn diffs_name_only_what_changed() {
        let before = fields();
        let mut after = before.clone();
        after.title = "CFO".into();
        after.lifecycle_stage = LifecycleStage::Customer;
        let diff = changes(Some(&before), Some(&after));
        assert_eq!(
            diff,
            vec![
                FieldChange {
                    field: "title".into(),
                    old: Value::Null,
                    new: Value::String("CFO".into())
                },
                FieldChange {
                    field: "lifecycle_stage".into(),
                    old: Value::String("lead".into()),
                    new: Value::String("customer".into())
                },
            ]
        );
        assert!(changes(Some(&before), Some(&before)).is_empty());
        let created = changes(None, Some(&before));
        let names: Vec<&str> = created.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            names,
            ["given_name", "family_name", "lifecycle_stage", "source", "owner"]
        );
    }
}
