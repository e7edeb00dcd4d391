-- Piazza embedded store, schema version 1. Every table carries the tenant:
-- isolation is a WHERE clause away in every statement, never an afterthought.
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

-- One row per entity; `doc` is the entity as JSON with expanded names.
CREATE TABLE IF NOT EXISTS entities (
    eid    INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id     TEXT NOT NULL,
    doc    TEXT NOT NULL,
    UNIQUE (tenant, id)
);
CREATE INDEX IF NOT EXISTS entities_by_tenant ON entities (tenant, eid);

CREATE TABLE IF NOT EXISTS entity_types (
    eid    INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    type   TEXT NOT NULL,
    PRIMARY KEY (eid, type)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_by_type ON entity_types (tenant, type, eid);

CREATE TABLE IF NOT EXISTS entity_attrs (
    eid    INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    kind   TEXT NOT NULL,
    PRIMARY KEY (eid, name, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_attrs_by_name ON entity_attrs (tenant, name, eid);

CREATE TABLE IF NOT EXISTS contexts (
    tenant     TEXT NOT NULL,
    id         TEXT NOT NULL,
    url        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    document   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;

-- Management resources (subscriptions) as JSON documents.
CREATE TABLE IF NOT EXISTS resources (
    rid      INTEGER PRIMARY KEY,
    tenant   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    document TEXT NOT NULL,
    UNIQUE (tenant, kind, id)
);
