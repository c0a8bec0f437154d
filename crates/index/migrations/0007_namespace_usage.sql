-- What each namespace holds in live (not deleted) versions, kept with every write so
-- that quotas are checked without summing rows: logical bytes (every file counted,
-- shared blobs too) and versions.
CREATE TABLE namespace_usage (
    namespace TEXT   PRIMARY KEY,
    bytes     BIGINT NOT NULL,
    versions  BIGINT NOT NULL
);
INSERT INTO namespace_usage (namespace, bytes, versions)
    SELECT namespace, 0, COUNT(*) FROM versions WHERE state <> 'deleted' GROUP BY namespace;
UPDATE namespace_usage SET bytes = (
    SELECT COALESCE(SUM(f.size), 0) FROM files f JOIN versions v
        ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version
    WHERE v.state <> 'deleted' AND f.namespace = namespace_usage.namespace
);
