-- Event types a tenant defines for itself, next to the built-in catalogue
-- (dispatcher.catalogue) and the ones added in config. A name is unique per tenant.
CREATE TABLE event_types (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    sample       jsonb,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
