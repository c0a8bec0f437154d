-- How many files a version holds, kept with every added file, so that the cap on
-- files per version is checked without counting rows.
ALTER TABLE versions ADD COLUMN file_count BIGINT NOT NULL DEFAULT 0;
UPDATE versions SET file_count = (
    SELECT COUNT(*) FROM files
    WHERE files.namespace = versions.namespace
      AND files.name = versions.name
      AND files.version = versions.version
);
