-- Piazza embedded store, schema version 1. Every table carries the tenant:
-- isolation is a WHERE clause away in every statement, never an afterthought.
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

-- One row per entity; `doc` is the entity as JSON with expanded names, in
-- the stored form of `piazza_ngsild::entity::encode` (attributes' system
-- timestamps left out where they are the entity's).
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

-- Each entity's attribute names with the kinds of their instances, by the
-- name's number in `value_names` (one tenant's, like the entity's `eid`):
-- 12 bytes a row where the tenant and the IRI as text took 60
-- (BENCHMARKS.md, 2026-12-07, "Attribute names by number"). The by-key
-- index answers discovery and holds the primary key, kinds included.
CREATE TABLE IF NOT EXISTS entity_names (
    eid  INTEGER NOT NULL,
    key  INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (eid, key, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_names_by_key ON entity_names (key, eid);
-- The names by text of data dirs before 2026-12-07; `reindex_names`
-- builds `entity_names` from the documents.
DROP TABLE IF EXISTS entity_attrs;

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
-- History (the temporal API). One row per entity that has a history: its
-- types survive the entity's deletion.
CREATE TABLE IF NOT EXISTS temporal_entities (
    teid       INTEGER PRIMARY KEY,
    tenant     TEXT NOT NULL,
    id         TEXT NOT NULL,
    types      TEXT NOT NULL,   -- JSON array of expanded types
    scope      TEXT NOT NULL,   -- JSON array
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    deleted_at TEXT,
    UNIQUE (tenant, id)
);
-- A tenant's temporal entities in creation order (exports read them so).
CREATE INDEX IF NOT EXISTS temporal_entities_by_tenant ON temporal_entities (tenant, teid);

-- One row per attribute instance: every change of an attribute, written in
-- the transaction of the change. An instance names its history by two
-- integers, the temporal entity's `teid` and the tenant's number for the
-- attribute name (`value_names.key`), instead of the tenant, the entity id
-- and the attribute's IRI as text: 80 bytes less in each row and each time
-- index entry, and key compares of integers (BENCHMARKS.md, 2026-12-07,
-- "History and attribute names keyed by numbers"). `teid` belongs to one
-- tenant, so history stays isolated by it. Timestamps are fixed-width RFC 3339 UTC
-- (microseconds), so text order is time order; `doc` is the attribute.
CREATE TABLE IF NOT EXISTS attr_instances (
    iid         INTEGER PRIMARY KEY,
    teid        INTEGER NOT NULL,
    attr        INTEGER NOT NULL,
    instance_id TEXT NOT NULL,
    dataset_id  TEXT,
    observed_at TEXT,
    created_at  TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    deleted_at  TEXT,
    doc         TEXT NOT NULL,
    num         REAL            -- the number of a live Property instance, for `attr_rollups`
);
-- One time index, on `observedAt` (the default of temporal queries and the
-- key of the rollups). Each time index costs a write to a random page per
-- recorded instance; a second and third one on createdAt / modifiedAt cost
-- 20-40 % of the write throughput (BENCHMARKS.md, 2026-12-04), so queries on
-- those time properties read the attribute's instances through this index's
-- (teid, attr) prefix and sort them. Instance ids are UUIDv7, so
-- `attr_instances_by_id` only grows at its right edge; statements reading
-- by instance id also name the history (`teid`, `attr`).
CREATE INDEX IF NOT EXISTS attr_instances_observed ON attr_instances (teid, attr, observed_at);
CREATE INDEX IF NOT EXISTS attr_instances_by_id ON attr_instances (instance_id);
DROP INDEX IF EXISTS attr_instances_created;
DROP INDEX IF EXISTS attr_instances_modified;

-- The outbox: notifications owed, written in the transaction of the change
-- that caused them and removed once delivered (or given up), so a
-- notification survives a crash between the write and its delivery.
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY,
    tenant       TEXT NOT NULL,
    subscription TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    notice       TEXT NOT NULL,  -- JSON, opaque to the store
    recorded_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_subscription ON outbox (tenant, subscription, seq);

-- The status members of each subscription's deliveries (clause 5.2.12).
CREATE TABLE IF NOT EXISTS delivery_stats (
    tenant            TEXT NOT NULL,
    subscription      TEXT NOT NULL,
    times_sent        INTEGER NOT NULL DEFAULT 0,
    times_failed      INTEGER NOT NULL DEFAULT 0,
    last_notification TEXT,
    last_success      TEXT,
    last_failure      TEXT,
    PRIMARY KEY (tenant, subscription)
) WITHOUT ROWID;

-- Value indexes: the numbers and strings `q` compares on whole attributes
-- (`piazza_ngsild::query::q::indexed_values`), so that a query narrows its
-- candidates before any document is read. A (tenant, attribute name) pair
-- is numbered once in `value_names`, and the value rows carry that number:
-- a key of a few bytes instead of the tenant and the attribute's full IRI
-- makes the rows a quarter of the size and each key comparison of a range
-- scan a compare of one integer. The number belongs to one tenant, so the
-- rows stay isolated by it. The by-entity indexes answer "does this
-- candidate have such a value" and keep rewrites cheap. History
-- (`attr_instances`, `attr_rollups`) names attributes by the same numbers.
CREATE TABLE IF NOT EXISTS value_names (
    key    INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    UNIQUE (tenant, name)
);

CREATE TABLE IF NOT EXISTS value_numbers (
    key   INTEGER NOT NULL,
    value REAL NOT NULL,
    eid   INTEGER NOT NULL,
    PRIMARY KEY (key, value, eid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS value_numbers_by_entity ON value_numbers (eid, key, value);

CREATE TABLE IF NOT EXISTS value_texts (
    key   INTEGER NOT NULL,
    value TEXT NOT NULL,
    eid   INTEGER NOT NULL,
    PRIMARY KEY (key, value, eid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS value_texts_by_entity ON value_texts (eid, key, value);

-- History rows with their names spelled out, as exports read them.
CREATE VIEW IF NOT EXISTS history_rows AS
SELECT i.iid, te.tenant, te.id AS entity_id, n.name AS attr, i.instance_id, i.dataset_id, i.observed_at,
       i.created_at, i.modified_at, i.deleted_at, i.doc
FROM attr_instances i JOIN temporal_entities te ON te.teid = i.teid JOIN value_names n ON n.key = i.attr;

-- The value indexes of data dirs before 2026-12-05, keyed by the tenant and
-- the name as text; `values::backfill` builds the tables above from the
-- documents.
DROP TABLE IF EXISTS attr_numbers;
DROP TABLE IF EXISTS attr_texts;

-- Hourly summaries of numeric histories (`rollups.rs`), so that an
-- aggregation over a long history reads one row per hour instead of every
-- instance. Keyed by the hour of `observedAt` as text ('YYYY-MM-DDTHH').
-- Kept only for the histories listed in `rolled_up`: those an aggregation
-- once found long enough to be read from summaries (MIN_SUMMARISED
-- instances). Summarising every history cost each recorded instance a
-- rollup upsert, a seventh of the writer's instructions per create, for
-- summaries that short histories are never answered from (BENCHMARKS.md,
-- 2026-12-07, "Rollups for long histories only").
-- `count` and the figures cover the live instances with a `num` (set by the
-- writer for a Property holding a number or boolean); `others` counts every
-- other instance (deletion records, other values), which sends a query back
-- to the instances. The one function that inserts instances
-- (`temporal::insert`) counts each instance of a rolled-up history into its
-- hour (a trigger doing the same cost twice as much per insert); a changed
-- or deleted instance only marks its hour `stale` through the triggers below (min and max cannot be
-- taken back), and a stale hour is read from the instances until rebuilt.
CREATE TABLE IF NOT EXISTS attr_rollups (
    teid      INTEGER NOT NULL,
    attr      INTEGER NOT NULL,
    dataset   TEXT NOT NULL,    -- '' for the default instance
    hour      TEXT NOT NULL,
    count     INTEGER NOT NULL,
    others    INTEGER NOT NULL,
    stale     INTEGER NOT NULL,
    sum       REAL NOT NULL,
    sumsq     REAL NOT NULL,
    m2        REAL NOT NULL,    -- Σ (x − mean)²
    min       REAL,
    max       REAL,
    first_at  TEXT,
    last_at   TEXT,
    PRIMARY KEY (teid, attr, hour, dataset)
) WITHOUT ROWID;

-- The histories whose every hour `attr_rollups` holds (stale or not).
CREATE TABLE IF NOT EXISTS rolled_up (
    teid INTEGER NOT NULL,
    attr INTEGER NOT NULL,
    PRIMARY KEY (teid, attr)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS attr_rollups_deleted AFTER DELETE ON attr_instances
WHEN OLD.observed_at IS NOT NULL
BEGIN
    UPDATE attr_rollups SET stale = 1
    WHERE teid = OLD.teid AND attr = OLD.attr
        AND hour = substr(OLD.observed_at, 1, 13) AND dataset = coalesce(OLD.dataset_id, '') AND stale = 0;
END;

CREATE TRIGGER IF NOT EXISTS attr_rollups_changed AFTER UPDATE OF observed_at, dataset_id, deleted_at, num ON attr_instances
BEGIN
    UPDATE attr_rollups SET stale = 1
    WHERE OLD.observed_at IS NOT NULL AND teid = OLD.teid AND attr = OLD.attr
        AND hour = substr(OLD.observed_at, 1, 13) AND dataset = coalesce(OLD.dataset_id, '') AND stale = 0;
    INSERT INTO attr_rollups (teid, attr, dataset, hour, count, others, stale, sum, sumsq, m2)
    SELECT NEW.teid, NEW.attr, coalesce(NEW.dataset_id, ''), substr(NEW.observed_at, 1, 13),
           0, 0, 1, 0.0, 0.0, 0.0
    WHERE NEW.observed_at IS NOT NULL
    ON CONFLICT DO UPDATE SET stale = 1;
END;

-- The spatial index (geo.rs): one box per entity and GeoProperty name.
CREATE TABLE IF NOT EXISTS geo_keys (
    gid  INTEGER PRIMARY KEY,
    eid  INTEGER NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (eid, name)
);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_boxes USING rtree(gid, min_lon, max_lon, min_lat, max_lat);
