-- Per-tenant fair-share weight and quotas (README "Fair share between tenants").
-- A tenant without a row has weight 1 and no quota.  Managed by the operator CLI
-- (tools.cli tenants); the sweeper copies weights and max_running to Redis for the
-- claim script, and the API reads max_queued (cached a few seconds per process).
CREATE TABLE tenant_limits (
    tenant      text             PRIMARY KEY CHECK (length(tenant) BETWEEN 1 AND 100),
    weight      double precision NOT NULL DEFAULT 1 CHECK (weight >= 0.01 AND weight <= 1000),
    max_queued  integer          CHECK (max_queued > 0),
    max_running integer          CHECK (max_running > 0),
    updated_at  timestamptz      NOT NULL DEFAULT now()
);
