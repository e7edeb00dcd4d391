-- Piazza on PostgreSQL, migration 2: the notification outbox and the
-- delivery statistics of subscriptions (as in the embedded store).

-- Notifications owed, written in the transaction of the change that caused
-- them and removed once delivered (or given up), so a notification survives
-- a crash between the write and its delivery.
CREATE TABLE outbox (
    tenant       text COLLATE "C" NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    subscription text COLLATE "C" NOT NULL,
    entity_id    text COLLATE "C" NOT NULL,
    notice       json NOT NULL,  -- opaque to the store
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX outbox_by_subscription ON outbox (tenant, subscription, seq);

-- The status members of each subscription's deliveries (clause 5.2.12).
CREATE TABLE delivery_stats (
    tenant            text COLLATE "C" NOT NULL,
    subscription      text COLLATE "C" NOT NULL,
    times_sent        bigint NOT NULL DEFAULT 0,
    times_failed      bigint NOT NULL DEFAULT 0,
    last_notification timestamptz,
    last_success      timestamptz,
    last_failure      timestamptz,
    PRIMARY KEY (tenant, subscription)
);
