-- Schema version 6: the transparency log (sync/domain/transparency.py).
-- One leaf per audit entry, appended in the entry's own transaction: its
-- index, the entry it commits to, the secret salt of the commitment (never
-- served; a bundle opens its own) and the leaf data (served in entry
-- bundles). The hash of every complete subtree, keyed by Go sumdb/tlog's
-- stored hash index, so tiles and proofs never need the whole tree. One
-- signed checkpoint per tree size the log reached, with the time-stamp
-- token over it. And each chunk's leaf index (its `chunk.received` entry's),
-- so a retry's acknowledgement carries the same signed receipt.

CREATE TABLE "tlog_leaves" (
   "idx" INTEGER PRIMARY KEY,
   "audit_id" INTEGER NOT NULL,
   "salt" BLOB NOT NULL,
   "data" BLOB NOT NULL
);
CREATE UNIQUE INDEX "idx_tlog_leaves_audit_id"
    ON "tlog_leaves" ("audit_id");
CREATE TABLE "tlog_hashes" (
   "position" INTEGER PRIMARY KEY,
   "hash" BLOB NOT NULL
);
CREATE TABLE "tlog_checkpoints" (
   "size" INTEGER PRIMARY KEY,
   "note" TEXT NOT NULL,
   "tsr" BLOB NOT NULL,
   "created_at" TEXT NOT NULL
);
ALTER TABLE "chunks" ADD COLUMN "log_index" INTEGER;
