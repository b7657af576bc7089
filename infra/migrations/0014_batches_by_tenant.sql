-- A tenant's batches newest first (GET /api/v1/batches, keyset-paginated like tasks).
CREATE INDEX batches_tenant_created ON batches (tenant, created_at DESC, id DESC);
