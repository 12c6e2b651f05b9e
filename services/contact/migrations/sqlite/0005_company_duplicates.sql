-- Company duplicates and merge lineage: a name blocking key computed by the service (the
-- comparable name's first letters) and the company a merged one resolves to.
ALTER TABLE companies ADD COLUMN name_block TEXT NOT NULL DEFAULT '';
ALTER TABLE companies ADD COLUMN merged_into TEXT;
CREATE INDEX companies_name_block ON companies (tenant_id, name_block);
