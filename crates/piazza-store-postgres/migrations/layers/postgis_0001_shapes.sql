-- The PostGIS layer, version 1: applied by piazza (src/postgis.rs) once
-- the extension exists, recorded in schema_layers. Never edited once
-- released; a change is a new version.
--
-- Each row of entity_geo (one GeoProperty value) also gets its shapes:
-- `shape`, the value in the lon/lat plane as the topological relations
-- see it, and `sphere`, its points as geography when it is made of points
-- only (what `near` measures to). NULL means the index cannot stand for
-- the value, which is then a candidate of every query that would test it
-- (piazza-ngsild's query/geo/spatial.rs says which and why). `shaped` tells rows written with shapes from rows written
-- without (by piazza with --postgis off, or before this layer), which the
-- next start in PostGIS mode fills in.
ALTER TABLE entity_geo
    ADD COLUMN IF NOT EXISTS shape geometry(Geometry, 4326),
    ADD COLUMN IF NOT EXISTS sphere geography(Geometry, 4326),
    ADD COLUMN IF NOT EXISTS shaped boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS entity_geo_by_shape ON entity_geo USING gist (shape);
CREATE INDEX IF NOT EXISTS entity_geo_by_sphere ON entity_geo USING gist (sphere);
-- The rows without a shape or sphere (candidates of every query that
-- would test it): a GiST index finds NULLs only by reading all of itself.
CREATE INDEX IF NOT EXISTS entity_geo_without_shape ON entity_geo (tenant, attr) WHERE shape IS NULL;
CREATE INDEX IF NOT EXISTS entity_geo_without_sphere ON entity_geo (tenant, attr) WHERE sphere IS NULL;
-- What is left to fill in, found without reading the whole table.
CREATE INDEX IF NOT EXISTS entity_geo_unshaped ON entity_geo (tenant, eid) WHERE NOT shaped;
