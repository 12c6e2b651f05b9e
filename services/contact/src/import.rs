//! Imports: each row upserts one contact on a natural key. Rows are written in batches, one
//! transaction each, and a row's outcome is reported only once its batch has committed; an
//! invalid row is rejected on its own and never aborts the rest, and a re-run (also of an
//! interrupted import) changes nothing that is already there.

use chrono::{DateTime, Utc};
use crm_platform::{ApiError, ErrorCode, Principal};

use crate::app::{ContactApp, audit, check_fields, refuse_erased};
use crate::domain::*;
use crate::store::{StoreError, WriteBatch};

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
        let (field, reason) = err.into_rejection("contact.")?;
        Ok(RowOutcome::Rejected { field, reason })
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

    /// Upserts one row on its own.
    pub async fn import_row(
        &self,
        who: &Principal,
        options: ImportOptions,
        mut row: ImportRow,
    ) -> Result<RowOutcome, ApiError> {
        row.fields.normalise();
        let key = match natural_key(options, &row) {
            Ok(key) => key,
            Err(rejected) => return Ok(rejected),
        };
        match self.upsert(who, options, &row, &key).await {
            Ok(outcome) => Ok(outcome),
            Err(err) => RowOutcome::from_error(err),
        }
    }

    /// Upserts rows together: one lookup of their natural keys and one transaction for all
    /// their writes. When the batch cannot be written as a whole (a row conflicts with
    /// another writer, or with another row), its rows are upserted one by one, so every row
    /// still gets its own outcome. Rows repeating a key of an earlier row of the batch are
    /// applied after it, in order.
    pub async fn import_batch(
        &self,
        who: &Principal,
        options: ImportOptions,
        rows: Vec<(i64, ImportRow)>,
    ) -> Result<Vec<(i64, RowOutcome)>, ApiError> {
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut pending = Vec::with_capacity(rows.len());
        for (line, mut row) in rows {
            row.fields.normalise();
            match natural_key(options, &row) {
                Ok(key) => pending.push((line, row, key)),
                Err(rejected) => outcomes.push((line, rejected)),
            }
        }
        while !pending.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let (now, later): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|(_, _, key)| seen.insert(key.value.clone()));
            pending = later;
            self.upsert_together(who, options, now, &mut outcomes).await?;
        }
        Ok(outcomes)
    }

    /// [`ContactApp::import_batch`] for rows of distinct keys.
    async fn upsert_together(
        &self,
        who: &Principal,
        options: ImportOptions,
        rows: Vec<(i64, ImportRow, MatchKey)>,
        outcomes: &mut Vec<(i64, RowOutcome)>,
    ) -> Result<(), ApiError> {
        let Some((_, _, first)) = rows.first() else {
            return Ok(());
        };
        let values: Vec<String> = rows.iter().map(|(_, _, key)| key.value.clone()).collect();
        let mut found: std::collections::HashMap<String, Vec<Contact>> = std::collections::HashMap::new();
        for (value, contact) in self
            .store
            .contacts_by_key(&who.tenant, first.kind, &values)
            .await
            .map_err(|err| err.into_api("contacts"))?
        {
            found.entry(value).or_default().push(contact);
        }
        let mut batch = WriteBatch {
            unique_email: true,
            ..WriteBatch::default()
        };
        let mut written = Vec::new();
        for (line, row, key) in rows {
            let plan = match found.get(&key.value).map(Vec::as_slice).unwrap_or_default() {
                [] => plan_create(who, options, &row, self.now()),
                [existing] => plan_update(who, options, &row, existing, self.now()),
                _ => Plan::Done(several_match(&key)),
            };
            match plan {
                Plan::Done(outcome) => outcomes.push((line, outcome)),
                Plan::Create(contact, audit) => {
                    written.push((line, RowOutcome::Created(Some(contact.id)), row));
                    batch.creates.push((contact, audit));
                }
                Plan::Update(contact, expected, audit) => {
                    written.push((line, RowOutcome::Updated(contact.id), row));
                    batch.updates.push((contact, expected, audit));
                }
            }
        }
        match self.store.write_batch(&who.tenant, &batch).await {
            Ok(()) => outcomes.extend(written.into_iter().map(|(line, outcome, _)| (line, outcome))),
            Err(
                StoreError::DuplicateEmail(_)
                | StoreError::DuplicateExternalId(_)
                | StoreError::RevisionMismatch
                | StoreError::UnknownCompany,
            ) => {
                for (line, _, row) in written {
                    outcomes.push((line, self.import_row(who, options, row).await?));
                }
            }
            Err(err) => return Err(err.into_api("contacts")),
        }
        Ok(())
    }

    /// Upserts one normalised row on its natural key, reading again when a concurrent writer
    /// got there between the read and the write.
    async fn upsert(
        &self,
        who: &Principal,
        options: ImportOptions,
        row: &ImportRow,
        key: &MatchKey,
    ) -> Result<RowOutcome, ApiError> {
        for _ in 0..3 {
            let found = self
                .store
                .find_by_keys(&who.tenant, std::slice::from_ref(key), 2)
                .await
                .map_err(|err| err.into_api("contacts"))?;
            let plan = match found.as_slice() {
                [] => plan_create(who, options, row, self.now()),
                [existing] => plan_update(who, options, row, existing, self.now()),
                _ => Plan::Done(several_match(key)),
            };
            let written = match plan {
                Plan::Done(outcome) => return Ok(outcome),
                Plan::Create(contact, audit) => self
                    .store
                    .create_contact(&who.tenant, &contact, None, &audit, true)
                    .await
                    .map(|created| RowOutcome::Created(Some(created.value.id))),
                Plan::Update(contact, expected, audit) => self
                    .store
                    .update_contact(&who.tenant, &contact, expected, &audit)
                    .await
                    .map(|()| RowOutcome::Updated(contact.id)),
            };
            match written {
                Ok(outcome) => return Ok(outcome),
                // A concurrent writer changed the contact between the read and the write, or
                // created one with this natural key (another import of the same rows): read
                // again and upsert onto what is there now.
                Err(StoreError::RevisionMismatch) => continue,
                Err(StoreError::DuplicateExternalId(_)) if options.natural_key == NaturalKey::ExternalId => continue,
                Err(StoreError::DuplicateEmail(_)) if options.natural_key == NaturalKey::PrimaryEmail => continue,
                Err(err @ StoreError::DuplicateEmail(_)) => {
                    return Ok(RowOutcome::rejected("emails", err.into_api("contact").message));
                }
                Err(err @ StoreError::DuplicateExternalId(_)) => {
                    return Ok(RowOutcome::rejected("external_id", err.into_api("contact").message));
                }
                Err(StoreError::UnknownCompany) => return Ok(RowOutcome::rejected("company", "no such company")),
                Err(err) => return Err(err.into_api("contact")),
            }
        }
        Err(ApiError::new(
            ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the contact kept changing",
        ))
    }
}

/// What a row comes to once its natural key is looked up.
enum Plan {
    Done(RowOutcome),
    Create(Contact, AuditRecord),
    /// The new state, the revision it was read at, the audit entry.
    Update(Contact, Revision, AuditRecord),
}

/// The natural key of a normalised row, or its rejection.
fn natural_key(options: ImportOptions, row: &ImportRow) -> Result<MatchKey, RowOutcome> {
    match options.natural_key {
        NaturalKey::ExternalId => match &row.fields.external_id {
            Some(id) => Ok(MatchKey {
                kind: KeyKind::External,
                value: id.clone(),
            }),
            None => Err(RowOutcome::rejected(
                "external_id",
                "is required: it is the natural key of this import",
            )),
        },
        NaturalKey::PrimaryEmail => match row.fields.primary_email() {
            Some(email) => Ok(MatchKey {
                kind: KeyKind::Email,
                value: email.key(),
            }),
            None => Err(RowOutcome::rejected(
                "emails",
                "an email address is required: it is the natural key of this import",
            )),
        },
    }
}

fn several_match(key: &MatchKey) -> RowOutcome {
    RowOutcome::rejected(key.kind.as_str(), "matches several contacts; merge them first")
}

/// The rejection of a row for a refusal of the caller or of its values.
fn refused(err: ApiError) -> Plan {
    Plan::Done(RowOutcome::from_error(err).unwrap_or_else(|err| RowOutcome::rejected("", err.message)))
}

/// A new contact from a row with no match.
fn plan_create(who: &Principal, options: ImportOptions, row: &ImportRow, now: DateTime<Utc>) -> Plan {
    let fields = row.fields.clone();
    if let Err(err) = who
        .ensure_can_write_owned_by(&fields.owner)
        .and_then(|()| check_fields(fields.check(), ""))
    {
        return refused(err);
    }
    if options.dry_run {
        return Plan::Done(RowOutcome::Created(None));
    }
    let contact = Contact {
        id: ContactId::generate(),
        fields,
        create_time: now,
        update_time: now,
        revision: Revision::FIRST,
        erase_time: None,
        merged_into: None,
    };
    let of = Audited::Contact(contact.id);
    match audit(
        who,
        of,
        ChangeAction::Created,
        changes(None, Some(&contact.fields)),
        now,
    ) {
        Ok(record) => Plan::Create(contact, record),
        Err(err) => refused(err),
    }
}

/// The row's provided fields applied to the contact it matched.
fn plan_update(
    who: &Principal,
    options: ImportOptions,
    row: &ImportRow,
    existing: &Contact,
    now: DateTime<Utc>,
) -> Plan {
    let mut fields = existing.fields.clone();
    fields.apply(&row.fields, &row.provided);
    if fields == existing.fields {
        return Plan::Done(RowOutcome::Unchanged(existing.id));
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
        return refused(err);
    }
    if options.dry_run {
        return Plan::Done(RowOutcome::Updated(existing.id));
    }
    let of = Audited::Contact(existing.id);
    let record = match audit(
        who,
        of,
        ChangeAction::Updated,
        changes(Some(&existing.fields), Some(&fields)),
        now,
    ) {
        Ok(record) => record,
        Err(err) => return refused(err),
    };
    let updated = Contact {
        fields,
        update_time: now,
        revision: existing.revision.next(),
        ..existing.clone()
    };
    Plan::Update(updated, existing.revision, record)
}

/// Concurrent writers of an import. Rows are partitioned by natural key, so that rows of one
/// key still apply in file order; the writers overlap their database round trips.
pub const IMPORT_WORKERS: usize = 2;

/// Rows a writer takes at most into one transaction. A writer takes what has arrived, so a
/// trickle of rows is written at once and a flood in batches of this size.
pub const IMPORT_BATCH: usize = 1000;

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
    let (results_tx, results_rx) = tokio::sync::mpsc::channel(IMPORT_BATCH);
    let mut workers = Vec::with_capacity(IMPORT_WORKERS);
    for _ in 0..IMPORT_WORKERS {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(i64, ImportRow)>(IMPORT_BATCH);
        let (app, who, results) = (app.clone(), who.clone(), results_tx.clone());
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < IMPORT_BATCH {
                    match rx.try_recv() {
                        Ok(row) => batch.push(row),
                        Err(_) => break,
                    }
                }
                match app.import_batch(&who, options, batch).await {
                    Ok(outcomes) => {
                        for outcome in outcomes {
                            if results.send(Ok(outcome)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        let _ = results.send(Err(err)).await;
                        return;
                    }
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
