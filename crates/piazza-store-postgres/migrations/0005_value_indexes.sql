-- Piazza on PostgreSQL, migration 5: value indexes for `q`, as the
-- embedded store's attr_numbers/attr_texts (crates/piazza-store-embedded/
-- src/values.rs).
--
-- One row per distinct (attribute name, value) an entity holds that a
-- comparison with a number or string literal can match
-- (`piazza_ngsild::query::q::indexed_values`), written in the transaction
-- of every entity write. A query narrows its candidates to the entities
-- meeting its `value_bounds`; Rust still decides (indexes only narrow).
--
-- The rows of entities stored before this migration are filled in by
-- piazza right after it, in the same transaction (src/values.rs): which
-- values a document holds is the model's rule, not something to restate
-- in SQL over json.

CREATE TABLE attr_numbers (
    tenant text COLLATE "C" NOT NULL,
    name   text COLLATE "C" NOT NULL,
    value  double precision NOT NULL,
    eid    bigint NOT NULL,
    PRIMARY KEY (tenant, name, value, eid)
);
-- For rewriting an entity's rows and probing a candidate's values.
CREATE INDEX attr_numbers_by_entity ON attr_numbers (tenant, eid, name, value);

-- Texts are at most 256 bytes (MAX_INDEXED_TEXT), well within a btree key.
CREATE TABLE attr_texts (
    tenant text COLLATE "C" NOT NULL,
    name   text COLLATE "C" NOT NULL,
    value  text COLLATE "C" NOT NULL,
    eid    bigint NOT NULL,
    PRIMARY KEY (tenant, name, value, eid)
);
CREATE INDEX attr_texts_by_entity ON attr_texts (tenant, eid, name, value);
