//! The product catalogue. Line items copy what they need, so a price change never rewrites a
//! deal.

use crm_platform::ApiError;

use super::{Caller, Page, PipelineApp, Rec, check_etag, event, put};
use crate::convert;
use crate::domain::{Money, Product, ProductId};
use crate::store::{Filter, Kind, Write};
use crm_proto::crm::pipeline::v1 as pb;

/// A product's fields (None: not given / unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub family: Option<String>,
    pub price: Option<Money>,
    pub active: Option<bool>,
}

fn ensure_catalogue_writer(caller: &Caller) -> Result<(), ApiError> {
    if caller.who.writes_all() {
        Ok(())
    } else {
        Err(ApiError::permission_denied(
            "only managers and admins change the catalogue",
        ))
    }
}

impl PipelineApp {
    pub async fn create_product(
        &self,
        caller: &Caller,
        input: ProductPatch,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Rec<Product>, ApiError> {
        ensure_catalogue_writer(caller)?;
        if let Some(done) = self.replay(caller, Kind::Product, request).await? {
            return Ok(done);
        }
        let mut violations = crm_platform::error::Violations::new("product.");
        let sku = input.sku.filter(|s| !s.is_empty());
        if sku.is_none() {
            violations.add("sku", "is required");
        }
        let name = input.name.filter(|s| !s.is_empty());
        if name.is_none() {
            violations.add("display_name", "is required");
        }
        if input.price.is_none() {
            violations.add("list_price", "is required");
        }
        violations.finish()?;
        let (Some(sku), Some(name), Some(price)) = (sku, name, input.price) else {
            return Err(ApiError::invalid_field("product", "is incomplete"));
        };
        let record = Rec::new(
            Product {
                sku,
                name,
                family: input.family.unwrap_or_default(),
                price,
                active: input.active.unwrap_or(true),
            },
            self.now(),
        );
        let write = Write {
            puts: vec![put(Kind::Product, &record, None)?],
            events: vec![event(
                caller,
                ProductId::COLLECTION,
                &record,
                &pb::ProductCreated {
                    product: Some(convert::product(&record)),
                },
            )?],
            ..Write::default()
        };
        self.create(caller, Kind::Product, request, record, write).await
    }

    pub async fn get_product(&self, caller: &Caller, id: ProductId) -> Result<Rec<Product>, ApiError> {
        self.load(caller.tenant(), Kind::Product, id.0, &id.name()).await
    }

    pub async fn list_products(
        &self,
        caller: &Caller,
        filters: Vec<Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Product>, ApiError> {
        self.list_page(caller, Kind::Product, filters, page_size, page_token)
            .await
    }

    pub async fn update_product(
        &self,
        caller: &Caller,
        id: ProductId,
        etag: Option<i64>,
        patch: ProductPatch,
    ) -> Result<Rec<Product>, ApiError> {
        ensure_catalogue_writer(caller)?;
        let current = self.get_product(caller, id).await?;
        check_etag(etag, current.revision)?;
        let mut body = current.body.clone();
        let mut fields = Vec::new();
        if let Some(sku) = patch.sku.filter(|s| s != &body.sku) {
            if sku.is_empty() {
                return Err(ApiError::invalid_field("product.sku", "is required"));
            }
            body.sku = sku;
            fields.push("sku");
        }
        if let Some(name) = patch.name.filter(|s| s != &body.name) {
            if name.is_empty() {
                return Err(ApiError::invalid_field("product.display_name", "is required"));
            }
            body.name = name;
            fields.push("display_name");
        }
        if let Some(family) = patch.family.filter(|s| s != &body.family) {
            body.family = family;
            fields.push("family");
        }
        if let Some(price) = patch.price.filter(|p| p != &body.price) {
            body.price = price;
            fields.push("list_price");
        }
        if let Some(active) = patch.active.filter(|a| *a != body.active) {
            body.active = active;
            fields.push("active");
        }
        if fields.is_empty() {
            return Ok(current);
        }
        let (record, write) = self.revise(caller, Kind::Product, &current, body, |record| pb::ProductUpdated {
            product: Some(convert::product(record)),
            changed_fields: super::changed(fields),
        })?;
        self.write(caller, &write).await?;
        Ok(record)
    }
}
