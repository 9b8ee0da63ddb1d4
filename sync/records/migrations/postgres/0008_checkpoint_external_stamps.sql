-- Schema version 8: checkpoints time-stamped by an external TSA too; see the
-- SQLite file of the same version.

ALTER TABLE tlog_checkpoints ADD COLUMN external_tsr BYTEA;
ALTER TABLE tlog_checkpoints ADD COLUMN external_tsa_url TEXT COLLATE "C";
ALTER TABLE tlog_checkpoints ADD COLUMN external_stamped_at TEXT COLLATE "C";
