-- The uploads table recorded uploads in flight that nothing read; every upload paid two
-- writes for it, and a starting replica wiped the rows of every other replica.
DROP TABLE IF EXISTS uploads;
