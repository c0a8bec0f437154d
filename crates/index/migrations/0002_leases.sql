-- Credential leases handed out by the vending service, and standing revocations.
-- The upstream access key id is kept so a lease can be revoked upstream; the secret
-- half of a credential is never stored.
CREATE TABLE leases (
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
CREATE INDEX leases_by_state ON leases (state, expires_at);
CREATE INDEX leases_by_subject ON leases (issuer, subject);
CREATE INDEX leases_by_role ON leases (role);

-- A revoked subject (of one issuer) or role: vending to it is refused until the row
-- is removed.
CREATE TABLE revocations (
    kind       TEXT   NOT NULL,             -- subject | role
    issuer     TEXT   NOT NULL,             -- '' for roles
    value      TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, issuer, value)
);
