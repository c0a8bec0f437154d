-- Garbage collection of blobs (crates/index/src/gc.rs has the protocol).

-- A blob no live file referenced when a collection looked: collected once it has been
-- one for the grace period. `deleting_since` is set, under the same checks, by the
-- collector that is about to delete it; an upload of that digest waits until the row
-- is gone.
CREATE TABLE gc_candidates (
    digest         TEXT   PRIMARY KEY,
    size           BIGINT NOT NULL,
    first_seen     BIGINT NOT NULL,
    deleting_since BIGINT
);

-- An upload about to reference a digest: taken before the upload looks whether the
-- blob exists, released once its file row is written (or the upload failed).
CREATE TABLE gc_holds (
    digest TEXT   NOT NULL,
    holder TEXT   NOT NULL,
    since  BIGINT NOT NULL,
    PRIMARY KEY (digest, holder)
);

-- One collector at a time across replicas: the row's holder until `until`.
CREATE TABLE gc_lease (
    name        TEXT   PRIMARY KEY,
    holder      TEXT   NOT NULL,
    until       BIGINT NOT NULL,
    last_run_at BIGINT
);
INSERT INTO gc_lease (name, holder, until) VALUES ('gc', '', 0);
