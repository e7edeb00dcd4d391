-- Piazza on PostgreSQL, migration 1: the layout of the embedded store
-- (crates/piazza-store-embedded/src/schema.sql), table for table.
--
-- Every table starts with the tenant and every key includes it: isolation is
-- a WHERE clause in every statement, and the tenant is the distribution
-- column on Citus (docs/DEPLOYMENT.md).
--
-- Text that is compared or sorted is COLLATE "C" (byte order), so results
-- come in the same order as on SQLite whatever the database's locale.
--
-- Documents are `json`, not `jsonb`: json keeps the text the store wrote
-- (serde_json, as on SQLite) byte for byte, so member order, number
-- spelling and strings holding U+0000 come back exactly as written; jsonb
-- would reorder members and refuse \u0000. Nothing is queried inside the
-- documents: SQL narrows with the index tables, Rust evaluates the rest.

CREATE TABLE tenants (
    name text COLLATE "C" PRIMARY KEY
);

-- One row per entity; `doc` is the entity with expanded names.
CREATE TABLE entities (
    tenant text COLLATE "C" NOT NULL,
    eid    bigint GENERATED ALWAYS AS IDENTITY,
    id     text COLLATE "C" NOT NULL,
    doc    json NOT NULL,
    PRIMARY KEY (tenant, eid),
    UNIQUE (tenant, id)
);

-- Types and attribute names of each entity, for type queries and discovery.
CREATE TABLE entity_types (
    tenant text COLLATE "C" NOT NULL,
    eid    bigint NOT NULL,
    type   text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, eid, type)
);
CREATE INDEX entity_types_by_type ON entity_types (tenant, type, eid);

CREATE TABLE entity_attrs (
    tenant text COLLATE "C" NOT NULL,
    eid    bigint NOT NULL,
    name   text COLLATE "C" NOT NULL,
    kind   text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, eid, name, kind)
);
CREATE INDEX entity_attrs_by_name ON entity_attrs (tenant, name, eid);

-- The bounding box of each GeoProperty value (as the geo-query matching
-- reads it), so that a geo-query reads only entities whose box meets the
-- query's. The built-in box type with a GiST index: no extension needed.
CREATE TABLE entity_geo (
    tenant text COLLATE "C" NOT NULL,
    eid    bigint NOT NULL,
    attr   text COLLATE "C" NOT NULL,
    bbox   box NOT NULL
);
CREATE INDEX entity_geo_by_entity ON entity_geo (tenant, eid);
CREATE INDEX entity_geo_by_box ON entity_geo USING gist (bbox);

CREATE TABLE contexts (
    tenant     text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    url        text NOT NULL,
    kind       text NOT NULL,
    document   json NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Management resources (subscriptions) as JSON documents.
CREATE TABLE resources (
    tenant   text COLLATE "C" NOT NULL,
    rid      bigint GENERATED ALWAYS AS IDENTITY,
    kind     text COLLATE "C" NOT NULL,
    id       text COLLATE "C" NOT NULL,
    document json NOT NULL,
    PRIMARY KEY (tenant, rid),
    UNIQUE (tenant, kind, id)
);

-- History (the temporal API). One row per entity that has a history: its
-- types survive the entity's deletion.
CREATE TABLE temporal_entities (
    tenant      text COLLATE "C" NOT NULL,
    teid        bigint GENERATED ALWAYS AS IDENTITY,
    id          text COLLATE "C" NOT NULL,
    types       text[] NOT NULL,
    scope       text[] NOT NULL,
    created_at  timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    deleted_at  timestamptz,
    PRIMARY KEY (tenant, teid),
    UNIQUE (tenant, id)
);

-- One row per attribute instance: every change of an attribute, written in
-- the transaction of the change; `doc` is the attribute.
CREATE TABLE attr_instances (
    tenant      text COLLATE "C" NOT NULL,
    iid         bigint GENERATED ALWAYS AS IDENTITY,
    entity_id   text COLLATE "C" NOT NULL,
    attr        text COLLATE "C" NOT NULL,
    instance_id text COLLATE "C" NOT NULL,
    dataset_id  text COLLATE "C",
    observed_at timestamptz,
    created_at  timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    deleted_at  timestamptz,
    doc         json NOT NULL,
    PRIMARY KEY (tenant, iid)
);
CREATE INDEX attr_instances_observed ON attr_instances (tenant, entity_id, attr, observed_at);
CREATE INDEX attr_instances_created ON attr_instances (tenant, entity_id, attr, created_at);
CREATE INDEX attr_instances_modified ON attr_instances (tenant, entity_id, attr, modified_at);
CREATE INDEX attr_instances_by_id ON attr_instances (tenant, instance_id);
