-- Piazza on PostgreSQL, migration 3: several processes over one database.

-- Which process delivers a subscription's notifications, until when. A
-- process renews its lease while it delivers; when it dies the lease runs
-- out and another process takes the delivery over. Times are the
-- database's, so the processes' clocks do not matter.
CREATE TABLE delivery_leases (
    tenant       text COLLATE "C" NOT NULL,
    subscription text COLLATE "C" NOT NULL,
    holder       text NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, subscription)
);
