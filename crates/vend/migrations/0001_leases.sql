-- The vending service's own schema: credential leases and standing revocations.
-- Portable SQL: it runs unchanged on SQLite and PostgreSQL. Only TEXT and BIGINT
-- columns (the sqlx Any driver's common ground); times are Unix milliseconds.
--
-- IF NOT EXISTS throughout: before vend had its own migrator these tables were
-- created by the artifact index's migration 0002_leases.sql, with exactly these
-- columns and indexes. A database made that way is adopted as it is, rows and all;
-- a new one gets the tables here.

-- The upstream access key id is kept so a lease can be revoked upstream; the secret
-- half of a credential is never stored.
CREATE TABLE IF NOT EXISTS leases (
    id            TEXT   PRIMARY KEY,
    issuer        TEXT   NOT NULL,
    subject       TEXT   NOT NULL,
    role          TEXT   NOT NULL,
    driver        TEXT   NOT NULL,
    access_key_id TEXT,                     -- NULL until the driver has minted
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    state         TEXT   NOT NULL,          -- pending | active | revoked | expired | failed
    ended_at      BIGINT,
    end_reason    TEXT
);
CREATE INDEX IF NOT EXISTS leases_by_state ON leases (state, expires_at);
CREATE INDEX IF NOT EXISTS leases_by_subject ON leases (issuer, subject);
CREATE INDEX IF NOT EXISTS leases_by_role ON leases (role);

-- A revoked subject (of one issuer) or role: vending to it is refused until the row
-- is removed.
CREATE TABLE IF NOT EXISTS revocations (
    kind       TEXT   NOT NULL,             -- subject | role
    issuer     TEXT   NOT NULL,             -- '' for roles
    value      TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, issuer, value)
);
