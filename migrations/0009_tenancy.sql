-- Operator keys and tenants as objects of the API.
--
-- A key is either a tenant key (as before: it belongs to one tenant and acts only
-- inside it) or an operator key (belongs to no tenant, acts for any). Every key that
-- exists keeps working exactly as before: it becomes a tenant key of its tenant.
ALTER TABLE api_keys
    ADD COLUMN kind text NOT NULL DEFAULT 'tenant' CHECK (kind IN ('tenant', 'operator')),
    ALTER COLUMN tenant_id DROP NOT NULL,
    ADD CONSTRAINT api_keys_kind_tenant CHECK ((kind = 'operator') = (tenant_id IS NULL));

-- What the operator knows about its customer, and a name-prefix search for its lists.
ALTER TABLE tenants
    ADD COLUMN metadata   jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX tenants_name_prefix ON tenants (name text_pattern_ops);
