-- Surface lists keys and ListTopics lists topics in bytewise order of their
-- UTF-8 text, as the API promises and as SQLite sorts them. A column with the
-- database's default collation sorts by that locale's rules instead (with
-- ICU's en-US, "a b" < "a_3" < "a-1" < "A2" < "ab"), which broke the order
-- and, with a key prefix read in pages, could end a listing early. The
-- "C" collation compares bytes, whatever the cluster's locale, and is also
-- the cheapest to compare. Only the indexes on these columns are rebuilt;
-- the tables are not rewritten.
ALTER TABLE keys ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE topics ALTER COLUMN name TYPE TEXT COLLATE "C";
-- Events are only looked up by key (and event id) for equality; the same
-- collation makes those index comparisons bytewise, and cheaper.
ALTER TABLE events ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE events ALTER COLUMN event_id TYPE TEXT COLLATE "C";
