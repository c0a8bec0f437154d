-- Portable SQL: it runs unchanged on SQLite and PostgreSQL. Only TEXT and BIGINT
-- columns (the sqlx Any driver's common ground); times are Unix milliseconds.

-- One row per version ever created. Deleted versions stay as tombstones so that a
-- run id is never silently reused and the event log keeps making sense.
CREATE TABLE versions (
    namespace     TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    state         TEXT   NOT NULL,          -- open | complete | deleted
    labels        TEXT   NOT NULL,          -- JSON object of string -> string
    created_at    BIGINT NOT NULL,
    created_seq   BIGINT NOT NULL,          -- seq of its version.created event: listing order
    completed_at  BIGINT,
    completed_seq BIGINT,                   -- seq of its version.completed event: `latest` order
    deleted_at    BIGINT,
    PRIMARY KEY (namespace, name, version)
);
CREATE INDEX versions_by_created ON versions (namespace, name, created_seq);
CREATE INDEX versions_by_completed ON versions (namespace, name, completed_seq);

-- A file of a version. Written only after its blob is durable; never updated.
CREATE TABLE files (
    namespace  TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    version    TEXT   NOT NULL,
    path       TEXT   NOT NULL,
    digest     TEXT   NOT NULL,             -- sha256:<hex>
    size       BIGINT NOT NULL,
    media_type TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, name, version, path)
);
CREATE INDEX files_by_digest ON files (digest);

-- Append-only. seq is allocated inside the writing transaction as max + 1, so it is
-- gap-free and in commit order on both databases.
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    kind       TEXT   NOT NULL,
    namespace  TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    version    TEXT   NOT NULL,
    path       TEXT,
    digest     TEXT,
    size       BIGINT,
    media_type TEXT,
    at         BIGINT NOT NULL
);

-- Uploads in flight: a blob being written for these may not be referenced yet.
CREATE TABLE uploads (
    id         TEXT   PRIMARY KEY,
    namespace  TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    version    TEXT   NOT NULL,
    path       TEXT   NOT NULL,
    started_at BIGINT NOT NULL
);
