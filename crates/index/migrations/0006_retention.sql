-- Retention (crates/server/src/retention.rs): a producer's expiry of a version, and why
-- an event happened (the rule that expired a version).
ALTER TABLE versions ADD COLUMN expires_at BIGINT;
ALTER TABLE events ADD COLUMN detail TEXT;
