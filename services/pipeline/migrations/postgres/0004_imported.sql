-- Records imported from an earlier system keep their id there: a re-run of an import matches
-- on it, so it is unique within a tenant's deals and within its leads.
ALTER TABLE deals ADD COLUMN external_id text GENERATED ALWAYS AS (body->>'external_id') STORED;
CREATE UNIQUE INDEX deals_external_id ON deals (tenant_id, external_id) WHERE external_id IS NOT NULL;
ALTER TABLE leads ADD COLUMN external_id text GENERATED ALWAYS AS (body->>'external_id') STORED;
CREATE UNIQUE INDEX leads_external_id ON leads (tenant_id, external_id) WHERE external_id IS NOT NULL;
