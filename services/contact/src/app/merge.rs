//! Merges of contacts and of companies into a survivor, with per-field survivorship and the
//! merged records kept as lineage.

use std::collections::BTreeMap;

use crm_platform::error::Violations;
use crm_platform::{ApiError, Principal};

use super::events::MERGED_FIELD;
use super::{ContactApp, UPDATE_ATTEMPTS, audit, check_fields, refuse_erased};
use crate::domain::merge;
use crate::domain::*;
use crate::store::{CompanyMerge, Merge, StoreError};

/// Most contacts merged into a survivor at once.
pub(crate) const MAX_MERGE: usize = 20;

/// Checks what every merge request must hold: something to merge, not too much, not the
/// survivor itself, no record twice, and choices naming only records of the merge.
fn validate_merge<Id: Copy + PartialEq, Field: std::fmt::Debug>(
    what: &str,
    survivor: Id,
    merged: &[Id],
    choices: &BTreeMap<Field, Id>,
) -> Result<(), ApiError> {
    let mut violations = Violations::new("");
    if merged.is_empty() {
        violations.add("merged", format!("name at least one {what} to merge"));
    }
    if merged.len() > MAX_MERGE {
        violations.add("merged", format!("at most {MAX_MERGE} at once"));
    }
    if merged.contains(&survivor) {
        violations.add("merged", format!("a {what} cannot be merged into itself"));
    }
    if merged.iter().enumerate().any(|(i, id)| merged[..i].contains(id)) {
        violations.add("merged", format!("lists a {what} twice"));
    }
    for (field, source) in choices {
        if *source != survivor && !merged.contains(source) {
            violations.add(
                format!("field_sources[{field:?}]"),
                "must name the survivor or one of the merged records",
            );
        }
    }
    violations.finish()
}

impl ContactApp {
    /// Merges `merged` into `survivor` with per-field survivorship (see
    /// [`crate::domain::merge::merge_fields`]). Refused: merging a contact into itself, an
    /// erased or already merged contact; the caller must be allowed to write every one.
    pub async fn merge_contacts(
        &self,
        who: &Principal,
        survivor: ContactId,
        merged: &[ContactId],
        choices: &BTreeMap<ContactField, ContactId>,
        etag: Option<Revision>,
    ) -> Result<Contact, ApiError> {
        validate_merge("contact", survivor, merged, choices)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .store
                .get_contact(&who.tenant, survivor)
                .await
                .map_err(|err| err.into_api("contact"))?;
            let mut others = Vec::with_capacity(merged.len());
            for id in merged {
                others.push(
                    self.store
                        .get_contact(&who.tenant, *id)
                        .await
                        .map_err(|err| err.into_api("contact"))?,
                );
            }
            for contact in std::iter::once(&current).chain(&others) {
                who.ensure_can_write_owned_by(&contact.fields.owner)?;
                refuse_erased(contact)?;
                if contact.merged_into.is_some() {
                    return Err(ApiError::new(
                        crm_platform::ErrorCode::FailedPrecondition,
                        "ALREADY_MERGED",
                        format!("{} was already merged into another contact", contact.id.name()),
                    ));
                }
            }
            if etag.is_some_and(|etag| etag != current.revision) {
                return Err(ApiError::etag_mismatch());
            }
            let fields = merge::merge_fields(&current, &others, choices);
            check_fields(fields.check(), "contact.")?;
            let mut diff = changes(Some(&current.fields), Some(&fields));
            diff.push(absorbed(merged.iter().map(|id| id.name())));
            let now = self.now();
            let of = Audited::Contact(survivor);
            let survivor_audit = audit(who, of, ChangeAction::Merged, diff, now)?;
            let merged_audit = audit(who, of, ChangeAction::Merged, vec![merged_into(of)], now)?;
            let updated = Contact {
                fields,
                update_time: now,
                revision: current.revision.next(),
                ..current.clone()
            };
            let revisions: Vec<(ContactId, Revision)> = others.iter().map(|c| (c.id, c.revision)).collect();
            let merge = Merge {
                survivor: &updated,
                expected: current.revision,
                merged: &revisions,
                survivor_audit: &survivor_audit,
                merged_audit: &merged_audit,
            };
            match self.store.merge_contacts(&who.tenant, &merge).await {
                Ok(()) => {
                    tracing::info!(tenant = %who.tenant, actor = %who.user, survivor = %survivor, merged = merged.len(), "contacts merged");
                    return Ok(updated);
                }
                Err(StoreError::RevisionMismatch) if etag.is_none() => continue,
                Err(err) => return Err(err.into_api("contact")),
            }
        }
        Err(ApiError::new(
            crm_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the contacts kept changing; retry",
        ))
    }

    /// Merges companies into a survivor: survivorship as for contacts, contacts and
    /// interactions moved, lineage kept. Refused: into itself, already merged, no rights.
    pub async fn merge_companies(
        &self,
        who: &Principal,
        survivor: CompanyId,
        merged: &[CompanyId],
        choices: &BTreeMap<CompanyField, CompanyId>,
        etag: Option<Revision>,
    ) -> Result<Company, ApiError> {
        validate_merge("company", survivor, merged, choices)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .store
                .get_company(&who.tenant, survivor)
                .await
                .map_err(|err| err.into_api("company"))?;
            let mut others = Vec::with_capacity(merged.len());
            for id in merged {
                others.push(
                    self.store
                        .get_company(&who.tenant, *id)
                        .await
                        .map_err(|err| err.into_api("company"))?,
                );
            }
            for company in std::iter::once(&current).chain(&others) {
                who.ensure_can_write_owned_by(&company.fields.owner)?;
                if company.merged_into.is_some() {
                    return Err(ApiError::new(
                        crm_platform::ErrorCode::FailedPrecondition,
                        "ALREADY_MERGED",
                        format!("{} was already merged into another company", company.id.name()),
                    ));
                }
            }
            if etag.is_some_and(|etag| etag != current.revision) {
                return Err(ApiError::etag_mismatch());
            }
            let fields = company::merge_company_fields(&current, &others, choices);
            check_fields(fields.check(), "company.")?;
            let mut diff = changes(Some(&current.fields), Some(&fields));
            diff.push(absorbed(merged.iter().map(|id| id.name())));
            let now = self.now();
            let of = Audited::Company(survivor);
            let survivor_audit = audit(who, of, ChangeAction::Merged, diff, now)?;
            let merged_audit = audit(who, of, ChangeAction::Merged, vec![merged_into(of)], now)?;
            let updated = Company {
                fields,
                update_time: now,
                revision: current.revision.next(),
                ..current.clone()
            };
            let revisions: Vec<(CompanyId, Revision)> = others.iter().map(|c| (c.id, c.revision)).collect();
            let merge = CompanyMerge {
                survivor: &updated,
                expected: current.revision,
                merged: &revisions,
                survivor_audit: &survivor_audit,
                merged_audit: &merged_audit,
            };
            match self.store.merge_companies(&who.tenant, &merge).await {
                Ok(()) => return Ok(updated),
                Err(StoreError::RevisionMismatch) if etag.is_none() => continue,
                Err(err) => return Err(err.into_api("company")),
            }
        }
        Err(ApiError::new(
            crm_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the companies kept changing; retry",
        ))
    }
}

/// The survivor's entry of a merge: the records it absorbed.
fn absorbed(names: impl Iterator<Item = String>) -> FieldChange {
    FieldChange {
        field: MERGED_FIELD.into(),
        old: serde_json::Value::Null,
        new: serde_json::Value::Array(names.map(serde_json::Value::from).collect()),
    }
}

/// The entry of each record merged away: its survivor.
fn merged_into(survivor: Audited) -> FieldChange {
    FieldChange {
        field: "merged_into".into(),
        old: serde_json::Value::Null,
        new: survivor.name().into(),
    }
}
