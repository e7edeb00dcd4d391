-- Piazza on PostgreSQL, migration 6: history's time index in the order
-- temporal queries read it, and one time index instead of three.
--
-- A temporal query reads an attribute's instances ordered by the time
-- property ASC NULLS FIRST (where SQLite puts a missing time), then
-- created_at and iid (src/temporal.rs, `instances`). A btree on observed_at
-- alone (ASC NULLS LAST) cannot give that order, so each query read the
-- attribute's whole history and sorted it: 60 ms to return 1,001 of 100,000
-- instances. In that order, and with the tie-breakers, it stops at the limit.
--
-- As on the embedded store (BENCHMARKS.md, 2026-12-04), createdAt and
-- modifiedAt are not indexed: each time index is one more btree entry per
-- recorded instance, and those (rarer) queries sort the attribute's
-- instances read through this index's (tenant, entity_id, attr) prefix.

DROP INDEX attr_instances_observed;
DROP INDEX attr_instances_created;
DROP INDEX attr_instances_modified;
CREATE INDEX attr_instances_observed
    ON attr_instances (tenant, entity_id, attr, observed_at NULLS FIRST, created_at, iid);
