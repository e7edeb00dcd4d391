-- Piazza on PostgreSQL, migration 8: hourly summaries of numeric histories,
-- so that an aggregation over a long history reads one row per hour
-- instead of every instance (src/aggregate.rs; the embedded store's
-- `attr_rollups`, rollups.rs, is the model).
--
-- One row per attribute, datasetId ('' for the default instance) and hour
-- of observedAt. `count` and the figures cover the instances with a `num`
-- (migration 7); `others` counts every other instance, which sends a query
-- back to the instances. `m2` is Σ (x − mean)², kept apart from `sumsq`
-- because `sumsq/n − mean²` loses every digit of a small variance of
-- large numbers.
--
-- The triggers keep the rows exact in the writing transaction:
-- - an INSERT statement adds its instances to their hours, merging with
--   what the hour held (Chan's pairwise update for `m2`), so a history of
--   one reading a second costs one row update per reading, not a recount;
-- - an UPDATE or DELETE (an instance edited or deleted, a history purged:
--   rare) recounts every hour it touched from the instances.
-- The embedded store marks such hours stale and recounts them later
-- instead; here the recount is one statement, so nothing is ever stale.

CREATE TABLE attr_rollups (
    tenant    text COLLATE "C" NOT NULL,
    entity_id text COLLATE "C" NOT NULL,
    attr      text COLLATE "C" NOT NULL,
    dataset   text COLLATE "C" NOT NULL,
    hour      timestamptz NOT NULL,
    count     bigint NOT NULL,
    others    bigint NOT NULL,
    sum       double precision NOT NULL,
    sumsq     double precision NOT NULL,
    m2        double precision NOT NULL,
    min       double precision,
    max       double precision,
    first_at  timestamptz NOT NULL,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, entity_id, attr, hour, dataset)
);

-- Adds an INSERT statement's instances to their hours.
CREATE FUNCTION attr_rollups_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO attr_rollups AS r
    SELECT tenant, entity_id, attr, coalesce(dataset_id, ''), date_trunc('hour', observed_at, 'UTC'),
           count(num), count(*) - count(num), coalesce(sum(num), 0), coalesce(sum(num * num), 0),
           coalesce(var_pop(num) * count(num), 0), min(num), max(num), min(observed_at), max(observed_at)
    FROM added WHERE observed_at IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant, entity_id, attr, hour, dataset) DO UPDATE SET
        m2 = CASE WHEN r.count = 0 OR EXCLUDED.count = 0 THEN r.m2 + EXCLUDED.m2
             ELSE r.m2 + EXCLUDED.m2 + (EXCLUDED.sum / EXCLUDED.count - r.sum / r.count) ^ 2
                  * r.count * EXCLUDED.count / (r.count + EXCLUDED.count) END,
        count = r.count + EXCLUDED.count,
        others = r.others + EXCLUDED.others,
        sum = r.sum + EXCLUDED.sum,
        sumsq = r.sumsq + EXCLUDED.sumsq,
        min = least(r.min, EXCLUDED.min),
        max = greatest(r.max, EXCLUDED.max),
        first_at = least(r.first_at, EXCLUDED.first_at),
        last_at = greatest(r.last_at, EXCLUDED.last_at);
    RETURN NULL;
END
$$;

CREATE TYPE attr_rollup_key AS (
    tenant    text COLLATE "C",
    entity_id text COLLATE "C",
    attr      text COLLATE "C",
    dataset   text COLLATE "C",
    hour      timestamptz
);

-- Recounts the given hours from their instances (an hour left without
-- instances loses its row).
CREATE FUNCTION attr_rollups_recount(keys attr_rollup_key[]) RETURNS void LANGUAGE sql AS $$
    DELETE FROM attr_rollups r USING unnest(keys) AS k
    WHERE r.tenant = k.tenant AND r.entity_id = k.entity_id AND r.attr = k.attr
      AND r.hour = k.hour AND r.dataset = k.dataset;
    INSERT INTO attr_rollups
    SELECT k.tenant, k.entity_id, k.attr, k.dataset, k.hour,
           count(i.num), count(*) - count(i.num), coalesce(sum(i.num), 0), coalesce(sum(i.num * i.num), 0),
           coalesce(var_pop(i.num) * count(i.num), 0), min(i.num), max(i.num), min(i.observed_at), max(i.observed_at)
    FROM (SELECT DISTINCT * FROM unnest(keys)) AS k
    JOIN attr_instances i ON i.tenant = k.tenant AND i.entity_id = k.entity_id AND i.attr = k.attr
        AND i.observed_at >= k.hour AND i.observed_at < k.hour + interval '1 hour'
        AND coalesce(i.dataset_id, '') = k.dataset
    GROUP BY 1, 2, 3, 4, 5;
$$;

-- Recounts the hours an UPDATE or DELETE statement touched: where each
-- changed instance was, and where it is now. (`added` is only read for an
-- UPDATE: plpgsql plans a statement when it first runs it.)
CREATE FUNCTION attr_rollups_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM attr_rollups_recount(ARRAY(
            SELECT ROW(tenant, entity_id, attr, coalesce(dataset_id, ''), date_trunc('hour', observed_at, 'UTC'))::attr_rollup_key
            FROM (SELECT * FROM gone UNION ALL SELECT * FROM added) AS changed WHERE observed_at IS NOT NULL));
    ELSE
        PERFORM attr_rollups_recount(ARRAY(
            SELECT ROW(tenant, entity_id, attr, coalesce(dataset_id, ''), date_trunc('hour', observed_at, 'UTC'))::attr_rollup_key
            FROM gone WHERE observed_at IS NOT NULL));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER attr_rollups_added AFTER INSERT ON attr_instances
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION attr_rollups_add();
CREATE TRIGGER attr_rollups_updated AFTER UPDATE ON attr_instances
    REFERENCING OLD TABLE AS gone NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION attr_rollups_changed();
CREATE TRIGGER attr_rollups_deleted AFTER DELETE ON attr_instances
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION attr_rollups_changed();

-- The histories already stored.
SELECT attr_rollups_recount(ARRAY(
    SELECT DISTINCT ROW(tenant, entity_id, attr, coalesce(dataset_id, ''), date_trunc('hour', observed_at, 'UTC'))::attr_rollup_key
    FROM attr_instances WHERE observed_at IS NOT NULL));
