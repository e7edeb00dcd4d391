-- Piazza on PostgreSQL, migration 7: the number each history instance
-- contributes to aggregations, which the hourly summaries of migration 8
-- add up (src/aggregate.rs reads them) instead of Rust folding every
-- document.
--
-- The rule is the embedded store's `rollups::number_of`: the value of a
-- live Property when it is a number, booleans as 0 and 1, NULL otherwise
-- (a deletion record, a string, any other kind). `doc` is the serialised
-- `Attribute` (`kind`, `value`, ...). A generated column follows every
-- insert, instance edit and deletion mark by itself, so no write path can
-- forget it; adding it rewrites the table once, computing it for the
-- instances already stored.
--
-- PostgreSQL's JSON operators refuse a document holding an escaped U+0000
-- anywhere (which `json` stores, see migration 1), and an insert would fail
-- with them: such an instance gets no number, so an aggregation over it
-- reads the instances.

ALTER TABLE attr_instances ADD COLUMN num double precision GENERATED ALWAYS AS (
    CASE WHEN strpos(doc::text, '\u0000') > 0 THEN NULL
    WHEN deleted_at IS NULL AND doc ->> 'kind' = 'Property' THEN
        CASE json_typeof(doc -> 'value')
            WHEN 'number' THEN (doc ->> 'value')::double precision
            WHEN 'boolean' THEN CASE WHEN doc ->> 'value' = 'true' THEN 1.0 ELSE 0.0 END
        END
    END
) STORED;
