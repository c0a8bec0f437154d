-- Every decision counts the live leases of its subject and of its role
-- (max_live_leases): with the state in the index, the count reads only live rows,
-- however many ended leases the history holds.
CREATE INDEX IF NOT EXISTS leases_live_by_subject ON leases (issuer, subject, state);
CREATE INDEX IF NOT EXISTS leases_live_by_role ON leases (role, state);
