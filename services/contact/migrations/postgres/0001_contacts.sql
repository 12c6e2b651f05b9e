-- Contact service schema. Every table carries tenant_id and is guarded by row-level security
-- (enabled and forced) against the tenant pinned per transaction in crm.tenant_id.

DO $$
BEGIN
    CREATE ROLE crm_contact_app NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The migrating role must be able to SET ROLE to the serving role.
DO $$
BEGIN
    EXECUTE format('GRANT crm_contact_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;

CREATE TABLE companies (
    tenant_id    text        NOT NULL,
    id           uuid        NOT NULL,
    display_name text        NOT NULL,
    domain       text,
    industry     text        NOT NULL DEFAULT '',
    size_band    text,
    owner        text        NOT NULL,
    tags         text[]      NOT NULL DEFAULT '{}',
    attributes   jsonb       NOT NULL DEFAULT '{}',
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL,
    revision     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX companies_create_time ON companies (tenant_id, create_time, id);
CREATE INDEX companies_update_time ON companies (tenant_id, update_time, id);
CREATE INDEX companies_display_name ON companies (tenant_id, display_name, id);
CREATE INDEX companies_owner ON companies (tenant_id, owner);
CREATE INDEX companies_domain ON companies (tenant_id, domain);
CREATE INDEX companies_tags ON companies USING gin (tags);

CREATE TABLE contacts (
    tenant_id       text        NOT NULL,
    id              uuid        NOT NULL,
    given_name      text        NOT NULL DEFAULT '',
    family_name     text        NOT NULL DEFAULT '',
    emails          jsonb       NOT NULL DEFAULT '[]',
    phones          jsonb       NOT NULL DEFAULT '[]',
    primary_email   text,
    title           text        NOT NULL DEFAULT '',
    company_id      uuid,
    -- Copy of the linked company's name, kept current by the store, so search covers it.
    company_name    text,
    lifecycle_stage text        NOT NULL,
    source          text        NOT NULL,
    owner           text        NOT NULL,
    tags            text[]      NOT NULL DEFAULT '{}',
    attributes      jsonb       NOT NULL DEFAULT '{}',
    consent         jsonb       NOT NULL DEFAULT '{}',
    search_text     text        NOT NULL DEFAULT '',
    search_doc      tsvector GENERATED ALWAYS AS
        (to_tsvector('simple', search_text || ' ' || coalesce(company_name, ''))) STORED,
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    revision        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id)
);
CREATE INDEX contacts_create_time ON contacts (tenant_id, create_time, id);
CREATE INDEX contacts_update_time ON contacts (tenant_id, update_time, id);
CREATE INDEX contacts_family_name ON contacts (tenant_id, family_name, id);
CREATE INDEX contacts_given_name ON contacts (tenant_id, given_name, id);
CREATE INDEX contacts_owner ON contacts (tenant_id, owner);
CREATE INDEX contacts_company ON contacts (tenant_id, company_id);
CREATE INDEX contacts_primary_email ON contacts (tenant_id, lower(primary_email));
CREATE INDEX contacts_tags ON contacts USING gin (tags);
CREATE INDEX contacts_search ON contacts USING gin (search_doc);

CREATE TABLE interactions (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    contact_id  uuid        NOT NULL,
    company_id  uuid,
    kind        text        NOT NULL,
    direction   text        NOT NULL,
    channel     text,
    occur_time  timestamptz NOT NULL,
    duration_ms bigint,
    subject     text        NOT NULL DEFAULT '',
    body        text        NOT NULL DEFAULT '',
    outcome     text        NOT NULL DEFAULT '',
    campaign_id text        NOT NULL DEFAULT '',
    actor       text        NOT NULL,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX interactions_contact ON interactions (tenant_id, contact_id, occur_time DESC, id DESC);
CREATE INDEX interactions_company ON interactions (tenant_id, company_id, occur_time DESC, id DESC);

-- Create requests already served, so a retry returns the first result.
CREATE TABLE idempotency_keys (
    tenant_id   text        NOT NULL,
    kind        text        NOT NULL,
    request_id  text        NOT NULL,
    fingerprint bytea       NOT NULL,
    resource_id uuid        NOT NULL,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, kind, request_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['companies', 'contacts', 'interactions', 'idempotency_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_setting(''crm.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''crm.tenant_id'', true))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO crm_contact_app', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA public TO crm_contact_app;
