-- Break-glass leases: marked, with the reason and ticket they were taken for, so that
-- they can be listed apart (GET /v1/admin/leases?break_glass=true) and reviewed.
ALTER TABLE leases ADD COLUMN break_glass BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN break_glass_reason TEXT;
ALTER TABLE leases ADD COLUMN break_glass_ticket TEXT;
CREATE INDEX IF NOT EXISTS leases_break_glass ON leases (break_glass, issued_at);
