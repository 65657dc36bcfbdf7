-- Events by transaction, in commit order: a commit's entries go to the end
-- of the index, one page, where the index by partition first took a page
-- at the end of every partition the commit wrote to (16 of a commit's
-- pages, written to the WAL and synced, for small events over 16
-- partitions). Invalidate finds a transaction's events by it; as-of
-- cursors search a partition's sequences instead (they are gapless, and a
-- partition's transaction ids grow with its sequences).
DROP INDEX events_by_transaction;
CREATE INDEX events_by_transaction ON events (topic_id, transaction_id);
