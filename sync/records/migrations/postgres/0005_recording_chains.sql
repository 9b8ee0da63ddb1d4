-- Schema version 5: entries about a recording chain to that recording's
-- previous entry only (sync/domain/audit.py), so `prev_sha256`, the
-- server-wide link, may be null; each recording's chain head is kept in a
-- row of its own (`audit_heads`) instead of every append rewriting the one
-- server-wide head.

ALTER TABLE audit ALTER COLUMN prev_sha256 DROP NOT NULL;

CREATE TABLE audit_heads (
   recording_id TEXT COLLATE "C" PRIMARY KEY,
   entry_id BIGINT NOT NULL,
   sha256 TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_audit_heads_entry_id ON audit_heads (entry_id);
INSERT INTO audit_heads (recording_id, entry_id, sha256)
    SELECT DISTINCT ON (recording_id) recording_id, id, sha256 FROM audit
    WHERE recording_id IS NOT NULL
    ORDER BY recording_id, id DESC;
