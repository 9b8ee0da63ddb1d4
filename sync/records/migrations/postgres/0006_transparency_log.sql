-- Schema version 6: the transparency log (sync/domain/transparency.py); see
-- the SQLite file of the same version for what each table holds.

CREATE TABLE tlog_leaves (
   idx BIGINT PRIMARY KEY,
   audit_id BIGINT NOT NULL,
   salt BYTEA NOT NULL,
   data BYTEA NOT NULL
);
CREATE UNIQUE INDEX idx_tlog_leaves_audit_id ON tlog_leaves (audit_id);
CREATE TABLE tlog_hashes (
   position BIGINT PRIMARY KEY,
   hash BYTEA NOT NULL
);
CREATE TABLE tlog_checkpoints (
   size BIGINT PRIMARY KEY,
   note TEXT COLLATE "C" NOT NULL,
   tsr BYTEA NOT NULL,
   created_at TEXT COLLATE "C" NOT NULL
);
ALTER TABLE chunks ADD COLUMN log_index BIGINT;
