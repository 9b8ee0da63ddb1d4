-- Schema version 5: entries about a recording chain to that recording's
-- previous entry only (sync/domain/audit.py), so `prev_sha256`, the
-- server-wide link, may be null; each recording's chain head is kept in a
-- row of its own (`audit_heads`) instead of every append rewriting the one
-- server-wide head. SQLite cannot drop a NOT NULL in place, so the table is
-- made again with its rows, ids and indexes as they were.

CREATE TABLE "audit_v5" (
   "id" INTEGER PRIMARY KEY,
   "at" TEXT NOT NULL,
   "actor" TEXT NOT NULL,
   "action" TEXT NOT NULL,
   "recording_id" TEXT,
   "organisation_id" INTEGER,
   "detail" TEXT NOT NULL,
   "prev_sha256" TEXT,
   "recording_prev_sha256" TEXT,
   "sha256" TEXT NOT NULL
);
INSERT INTO "audit_v5" (id, at, actor, action, recording_id, organisation_id, detail, prev_sha256,
                        recording_prev_sha256, sha256)
    SELECT id, at, actor, action, recording_id, organisation_id, detail, prev_sha256, recording_prev_sha256, sha256
    FROM "audit";
DROP TABLE "audit";
ALTER TABLE "audit_v5" RENAME TO "audit";
CREATE INDEX "idx_audit_recording_id"
    ON "audit" ("recording_id");
CREATE INDEX "idx_audit_organisation_id"
    ON "audit" ("organisation_id");
CREATE INDEX "idx_audit_actor"
    ON "audit" ("actor");
CREATE INDEX "idx_audit_at"
    ON "audit" ("at");

CREATE TABLE "audit_heads" (
   "recording_id" TEXT PRIMARY KEY,
   "entry_id" INTEGER NOT NULL,
   "sha256" TEXT NOT NULL
);
CREATE INDEX "idx_audit_heads_entry_id"
    ON "audit_heads" ("entry_id");
INSERT INTO "audit_heads" (recording_id, entry_id, sha256)
    SELECT a.recording_id, a.id, a.sha256 FROM "audit" a
    WHERE a.recording_id IS NOT NULL
      AND a.id = (SELECT MAX(b.id) FROM "audit" b WHERE b.recording_id = a.recording_id);
