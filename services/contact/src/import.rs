//! Imports: each row upserts one contact on a natural key, committed on its own, so that an
//! invalid row never aborts the rest and a re-run (also of an interrupted import) changes
//! nothing that is already there.

use crm_platform::{ApiError, ErrorCode, Principal};

use crate::app::{ContactApp, audit, check_fields, refuse_erased};
use crate::domain::*;
use crate::store::StoreError;

/// What rows are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NaturalKey {
    ExternalId,
    PrimaryEmail,
}

/// How an import runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    pub natural_key: NaturalKey,
    pub dry_run: bool,
}

/// A row, already parsed: its values and the fields its source provides.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub fields: ContactFields,
    pub provided: Vec<ContactField>,
}

/// What happened to a row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// Created (the id is None on a dry run).
    Created(Option<ContactId>),
    Updated(ContactId),
    Unchanged(ContactId),
    Rejected {
        field: String,
        reason: String,
    },
}

impl RowOutcome {
    pub fn rejected(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RowOutcome::Rejected {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A refusal of this row; errors that are not about the row (the database is down) are
    /// returned as errors, ending the import, since every later row would fail the same way.
    fn from_error(err: ApiError) -> Result<Self, ApiError> {
        match err.code {
            ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Cancelled => {
                Err(err)
            }
            _ => Ok(match err.violations.first() {
                Some(v) => RowOutcome::rejected(v.field.trim_start_matches("contact."), &v.description),
                None => RowOutcome::rejected("", err.message),
            }),
        }
    }
}

/// Totals of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl ImportSummary {
    pub fn count(&mut self, outcome: &RowOutcome) {
        match outcome {
            RowOutcome::Created(_) => self.created += 1,
            RowOutcome::Updated(_) => self.updated += 1,
            RowOutcome::Unchanged(_) => self.unchanged += 1,
            RowOutcome::Rejected { .. } => self.rejected += 1,
        }
    }
}

impl ContactApp {
    /// Fails unless the caller may import at all.
    pub fn ensure_can_import(&self, who: &Principal) -> Result<(), ApiError> {
        who.ensure_writer()
    }

    /// Upserts one row.
    pub async fn import_row(
        &self,
        who: &Principal,
        options: ImportOptions,
        row: ImportRow,
    ) -> Result<RowOutcome, ApiError> {
        match self.upsert(who, options, row).await {
            Ok(outcome) => Ok(outcome),
            Err(err) => RowOutcome::from_error(err),
        }
    }

    async fn upsert(
        &self,
        who: &Principal,
        options: ImportOptions,
        mut row: ImportRow,
    ) -> Result<RowOutcome, ApiError> {
        row.fields.normalise();
        let key = match options.natural_key {
            NaturalKey::ExternalId => match &row.fields.external_id {
                Some(id) => MatchKey {
                    kind: KeyKind::External,
                    value: id.clone(),
                },
                None => {
                    return Ok(RowOutcome::rejected(
                        "external_id",
                        "is required: it is the natural key of this import",
                    ));
                }
            },
            NaturalKey::PrimaryEmail => match row.fields.primary_email() {
                Some(email) => MatchKey {
                    kind: KeyKind::Email,
                    value: email.key(),
                },
                None => {
                    return Ok(RowOutcome::rejected(
                        "emails",
                        "an email address is required: it is the natural key of this import",
                    ));
                }
            },
        };
        for _ in 0..3 {
            let found = self
                .store
                .find_by_keys(&who.tenant, std::slice::from_ref(&key), 2)
                .await
                .map_err(|err| err.into_api("contacts"))?;
            let outcome = match found.as_slice() {
                [] => self.create_from_row(who, options, &row).await,
                [existing] => self.update_from_row(who, options, &row, existing).await,
                _ => {
                    return Ok(RowOutcome::rejected(
                        key.kind.as_str(),
                        "matches several contacts; merge them first",
                    ));
                }
            };
            match outcome {
                // A concurrent writer changed the contact between the read and the write, or
                // created one with this natural key (another import of the same rows): read
                // again and upsert onto what is there now.
                Err(StoreError::RevisionMismatch) => continue,
                Err(StoreError::DuplicateExternalId(_)) if options.natural_key == NaturalKey::ExternalId => continue,
                Err(StoreError::DuplicateEmail(_)) if options.natural_key == NaturalKey::PrimaryEmail => continue,
                Err(err) => return Err(err.into_api("contact")),
                Ok(outcome) => return Ok(outcome),
            }
        }
        Err(ApiError::new(
            ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the contact kept changing",
        ))
    }

    async fn create_from_row(
        &self,
        who: &Principal,
        options: ImportOptions,
        row: &ImportRow,
    ) -> Result<RowOutcome, StoreError> {
        let fields = row.fields.clone();
        if let Err(err) = who
            .ensure_can_write_owned_by(&fields.owner)
            .and_then(|()| check_fields(fields.check(), ""))
        {
            return Ok(RowOutcome::from_error(err).unwrap_or_else(|err| RowOutcome::rejected("", err.message)));
        }
        if options.dry_run {
            return Ok(RowOutcome::Created(None));
        }
        let now = now();
        let contact = Contact {
            id: ContactId::generate(),
            fields,
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
            erase_time: None,
            merged_into: None,
        };
        let record = audit(who, ChangeAction::Created, changes(None, Some(&contact.fields)));
        match self
            .store
            .create_contact(&who.tenant, &contact, None, &record, true)
            .await
        {
            Ok(created) => Ok(RowOutcome::Created(Some(created.value.id))),
            // A conflict on the natural key itself means someone created this row meanwhile.
            Err(err @ StoreError::DuplicateExternalId(_)) if options.natural_key == NaturalKey::ExternalId => Err(err),
            Err(err @ StoreError::DuplicateEmail(_)) if options.natural_key == NaturalKey::PrimaryEmail => Err(err),
            Err(
                err @ (StoreError::DuplicateEmail(_) | StoreError::DuplicateExternalId(_) | StoreError::UnknownCompany),
            ) => {
                let api = err.into_api("contact");
                let field = match api.reason.as_ref() {
                    "DUPLICATE_EMAIL" => "emails".to_owned(),
                    "DUPLICATE_EXTERNAL_ID" => "external_id".to_owned(),
                    _ => api.violations.first().map(|v| v.field.clone()).unwrap_or_default(),
                };
                Ok(RowOutcome::rejected(field, api.message))
            }
            Err(err) => Err(err),
        }
    }

    async fn update_from_row(
        &self,
        who: &Principal,
        options: ImportOptions,
        row: &ImportRow,
        existing: &Contact,
    ) -> Result<RowOutcome, StoreError> {
        let mut fields = existing.fields.clone();
        fields.apply(&row.fields, &row.provided);
        if fields == existing.fields {
            return Ok(RowOutcome::Unchanged(existing.id));
        }
        let allowed = who
            .ensure_can_write_owned_by(&existing.fields.owner)
            .and_then(|()| {
                if row.provided.contains(&ContactField::Owner) {
                    who.ensure_can_write_owned_by(&fields.owner)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| refuse_erased(existing))
            .and_then(|()| check_fields(fields.check(), ""));
        if let Err(err) = allowed {
            return Ok(RowOutcome::from_error(err).unwrap_or_else(|err| RowOutcome::rejected("", err.message)));
        }
        if options.dry_run {
            return Ok(RowOutcome::Updated(existing.id));
        }
        let record = audit(
            who,
            ChangeAction::Updated,
            changes(Some(&existing.fields), Some(&fields)),
        );
        let updated = Contact {
            fields,
            update_time: now(),
            revision: existing.revision.next(),
            ..existing.clone()
        };
        match self
            .store
            .update_contact(&who.tenant, &updated, existing.revision, &record)
            .await
        {
            Ok(()) => Ok(RowOutcome::Updated(existing.id)),
            Err(
                err @ (StoreError::DuplicateEmail(_) | StoreError::DuplicateExternalId(_) | StoreError::UnknownCompany),
            ) => Ok(RowOutcome::rejected("", err.into_api("contact").message)),
            Err(err) => Err(err),
        }
    }
}

/// Rows processed at once by an import. Rows are partitioned by natural key, so that rows of
/// one key still apply in file order; other rows overlap their database round trips.
pub const IMPORT_WORKERS: usize = 8;

/// A row on its way in: its line, and the row or why it was refused before processing.
pub type IncomingRow = (i64, Result<ImportRow, RowOutcome>);

/// The natural-key value a row is partitioned on (rows without one go anywhere; they are
/// rejected without touching the database).
fn partition_key(options: ImportOptions, row: &ImportRow) -> String {
    match options.natural_key {
        NaturalKey::ExternalId => row.fields.external_id.clone().unwrap_or_default(),
        NaturalKey::PrimaryEmail => row.fields.emails.first().map(|e| e.address.key()).unwrap_or_default(),
    }
}

/// Runs an import: rows arrive on `rows`, each result leaves on the returned channel as soon
/// as it is known (so not in line order). An error that is not about a row ends the import.
/// Every channel is bounded, so a slow reader slows the import rather than filling memory.
pub fn run(
    app: ContactApp,
    who: Principal,
    options: ImportOptions,
    mut rows: tokio::sync::mpsc::Receiver<IncomingRow>,
) -> tokio::sync::mpsc::Receiver<Result<(i64, RowOutcome), ApiError>> {
    use std::hash::{Hash, Hasher};
    let (results_tx, results_rx) = tokio::sync::mpsc::channel(IMPORT_WORKERS * 64);
    let mut workers = Vec::with_capacity(IMPORT_WORKERS);
    for _ in 0..IMPORT_WORKERS {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(i64, ImportRow)>(64);
        let (app, who, results) = (app.clone(), who.clone(), results_tx.clone());
        tokio::spawn(async move {
            while let Some((line, row)) = rx.recv().await {
                let result = app.import_row(&who, options, row).await.map(|outcome| (line, outcome));
                let fatal = result.is_err();
                if results.send(result).await.is_err() || fatal {
                    return;
                }
            }
        });
        workers.push(tx);
    }
    tokio::spawn(async move {
        while let Some((line, row)) = rows.recv().await {
            match row {
                Err(rejected) => {
                    if results_tx.send(Ok((line, rejected))).await.is_err() {
                        return;
                    }
                }
                Ok(row) => {
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    partition_key(options, &row).hash(&mut hasher);
                    let worker = usize::try_from(hasher.finish() % IMPORT_WORKERS as u64).unwrap_or(0);
                    if workers[worker].send((line, row)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Dropping the senders lets the workers finish; the results channel closes when the
        // last worker and this task are gone.
    });
    results_rx
}
