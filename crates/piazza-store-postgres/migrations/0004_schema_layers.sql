-- Piazza on PostgreSQL, migration 4: the ledger of optional layers.
--
-- Some structures need an extension the server may lack (PostGIS: shapes
-- of GeoProperty values for geo-queries). They cannot be a numbered
-- migration, which every database must be able to apply. Piazza applies
-- such a layer itself when the extension is there (src/postgis.rs, SQL in
-- migrations/layers/) and records it here, so it is applied once; a
-- database without the extension simply has no row. Like
-- schema_migrations, this describes the schema, not a tenant's data.
CREATE TABLE schema_layers (
    name       text PRIMARY KEY,
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
