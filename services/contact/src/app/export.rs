//! Bulk export: every live contact matching a filter, streamed in batches by keyset paging.

use std::sync::Arc;

use crm_platform::{ApiError, Principal};

use super::{CONTACT_ORDERS, ContactApp};
use crate::domain::*;
use crate::store::contact_cursor;

/// Contacts per export batch (one gRPC message, one database round trip).
const EXPORT_BATCH: usize = 500;

impl ContactApp {
    /// Every live contact matching `filter`, batch by batch, by keyset paging: memory stays
    /// constant whatever the tenant's size. Admins and managers only: a bulk export is the
    /// whole customer base.
    pub fn export_contacts(
        &self,
        who: &Principal,
        filter: &str,
        order_by: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Vec<Contact>, ApiError>>, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied("only admins and managers export contacts"));
        }
        let filter = ContactFilter::parse(filter)?;
        let order = Order::parse(
            if order_by.is_empty() { "create_time" } else { order_by },
            CONTACT_ORDERS,
        )?;
        let store = Arc::clone(&self.store);
        let tenant = who.tenant.clone();
        let batches = futures::stream::try_unfold(Some(None::<Cursor>), move |state| {
            let store = Arc::clone(&store);
            let tenant = tenant.clone();
            let filter = filter.clone();
            async move {
                let Some(after) = state else { return Ok(None) };
                let query = ListQuery {
                    filter,
                    order,
                    after,
                    limit: EXPORT_BATCH,
                };
                let mut rows = store
                    .list_contacts(&tenant, &query)
                    .await
                    .map_err(|err| err.into_api("contacts"))?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let more = rows.len() > EXPORT_BATCH;
                rows.truncate(EXPORT_BATCH);
                let next = more.then(|| rows.last().map(|last| contact_cursor(last, order.field)));
                Ok(Some((rows, next)))
            }
        });
        Ok(Box::pin(batches))
    }
}
