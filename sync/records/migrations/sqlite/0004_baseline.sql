-- Schema version 4, the whole of it, for an empty SQLite file: exactly what
-- the schema code of versions 1 to 4 made in a new file (sqlite-utils'
-- table creation), so files made either way are alike.

CREATE TABLE "organisations" (
   "id" INTEGER PRIMARY KEY,
   "slug" TEXT NOT NULL,
   "name" TEXT NOT NULL,
   "created_at" TEXT NOT NULL
);
CREATE UNIQUE INDEX "idx_organisations_slug"
    ON "organisations" ("slug");
CREATE TABLE "devices" (
   "id" TEXT PRIMARY KEY,
   "organisation_id" INTEGER,
   "created_at" TEXT NOT NULL,
   "public_key_pem" TEXT,
   "enrollment_code" TEXT,
   "revoked_at" TEXT,
   "revoked_by" TEXT
);
CREATE TABLE "staff" (
   "id" INTEGER PRIMARY KEY,
   "organisation_id" INTEGER,
   "username" TEXT NOT NULL,
   "role" TEXT NOT NULL,
   "password_hash" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "disabled_at" TEXT,
   "session_generation" INTEGER,
   "totp_secret" BLOB,
   "totp_enabled_at" TEXT,
   "totp_last_step" INTEGER
);
CREATE UNIQUE INDEX "idx_staff_username"
    ON "staff" ("username");
CREATE TABLE "enrollment_codes" (
   "code" TEXT PRIMARY KEY,
   "organisation_id" INTEGER,
   "created_at" TEXT NOT NULL,
   "note" TEXT,
   "created_by" TEXT,
   "revoked_at" TEXT
);
CREATE TABLE "recordings" (
   "id" TEXT PRIMARY KEY,
   "organisation_id" INTEGER,
   "device_id" TEXT NOT NULL REFERENCES "devices"("id"),
   "content_type" TEXT NOT NULL,
   "started_at" TEXT NOT NULL,
   "key_id" TEXT NOT NULL,
   "sealed_key" BLOB NOT NULL,
   "created_at" TEXT NOT NULL,
   "state" TEXT NOT NULL,
   "final_index" INTEGER,
   "complete_requested_at" TEXT,
   "first_received_at" TEXT,
   "last_received_at" TEXT,
   "last_activity_at" TEXT NOT NULL,
   "generation" INTEGER NOT NULL DEFAULT 0,
   "finalized_generation" INTEGER,
   "manifest_version" INTEGER,
   "chunk_count" INTEGER,
   "max_index" INTEGER,
   "footage_size" INTEGER
);
CREATE TABLE "chunks" (
   "recording_id" TEXT REFERENCES "recordings"("id"),
   "idx" INTEGER,
   "final" INTEGER NOT NULL,
   "size" INTEGER NOT NULL,
   "sha256" TEXT NOT NULL,
   "ciphertext_size" INTEGER NOT NULL,
   "ciphertext_sha256" TEXT NOT NULL,
   "received_at" TEXT NOT NULL,
   "captured_at" TEXT,
   "device_signature" TEXT,
   PRIMARY KEY ("recording_id", "idx")
);
CREATE TABLE "manifests" (
   "recording_id" TEXT REFERENCES "recordings"("id"),
   "version" INTEGER,
   "state" TEXT NOT NULL,
   "body" BLOB NOT NULL,
   "sha256" TEXT NOT NULL,
   "signature" BLOB NOT NULL,
   "tsr" BLOB,
   "external_tsr" BLOB,
   "created_at" TEXT NOT NULL,
   PRIMARY KEY ("recording_id", "version")
);
CREATE TABLE "audit" (
   "id" INTEGER PRIMARY KEY,
   "at" TEXT NOT NULL,
   "actor" TEXT NOT NULL,
   "action" TEXT NOT NULL,
   "recording_id" TEXT,
   "organisation_id" INTEGER,
   "detail" TEXT NOT NULL,
   "prev_sha256" TEXT NOT NULL,
   "recording_prev_sha256" TEXT,
   "sha256" TEXT NOT NULL
);
CREATE TABLE "login_failures" (
   "username" TEXT PRIMARY KEY,
   "failures" INTEGER NOT NULL,
   "first_failed_at" TEXT NOT NULL,
   "last_failed_at" TEXT NOT NULL,
   "locked_until" TEXT
);
CREATE TABLE "ended_sessions" (
   "sid" TEXT PRIMARY KEY,
   "ended_at" TEXT NOT NULL,
   "expires_at" INTEGER NOT NULL
);
CREATE TABLE "copy_requests" (
   "id" TEXT PRIMARY KEY,
   "organisation_id" INTEGER NOT NULL,
   "recording_id" TEXT NOT NULL REFERENCES "recordings"("id"),
   "requested_by" TEXT NOT NULL,
   "case_reference" TEXT NOT NULL,
   "purpose" TEXT NOT NULL,
   "state" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "updated_at" TEXT NOT NULL,
   "decided_by" TEXT,
   "decided_at" TEXT,
   "decision_reason" TEXT,
   "manifest_version" INTEGER,
   "bundle_size" INTEGER,
   "bundle_sha256" TEXT,
   "built_at" TEXT,
   "failure" TEXT
);
CREATE TABLE chunk_removals (
                      seq INTEGER PRIMARY KEY AUTOINCREMENT,
                      recording_id TEXT NOT NULL,
                      name TEXT NOT NULL,
                      announced_at TEXT NOT NULL,
                      done_at TEXT);
CREATE INDEX idx_chunk_removals_name ON chunk_removals (recording_id, name);
CREATE TABLE "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
CREATE INDEX "idx_recordings_state_last_activity_at"
    ON "recordings" ("state", "last_activity_at");
CREATE INDEX "idx_recordings_device_id"
    ON "recordings" ("device_id");
CREATE INDEX "idx_recordings_organisation_id_created_at"
    ON "recordings" ("organisation_id", "created_at");
CREATE INDEX "idx_audit_recording_id"
    ON "audit" ("recording_id");
CREATE INDEX "idx_audit_organisation_id"
    ON "audit" ("organisation_id");
CREATE INDEX "idx_audit_actor"
    ON "audit" ("actor");
CREATE INDEX "idx_audit_at"
    ON "audit" ("at");
CREATE INDEX "idx_devices_organisation_id"
    ON "devices" ("organisation_id");
CREATE INDEX "idx_staff_organisation_id"
    ON "staff" ("organisation_id");
CREATE INDEX "idx_ended_sessions_expires_at"
    ON "ended_sessions" ("expires_at");
CREATE INDEX "idx_login_failures_last_failed_at"
    ON "login_failures" ("last_failed_at");
CREATE INDEX "idx_copy_requests_organisation_id_created_at"
    ON "copy_requests" ("organisation_id", "created_at");
CREATE INDEX "idx_copy_requests_state"
    ON "copy_requests" ("state");
CREATE INDEX "idx_copy_requests_recording_id"
    ON "copy_requests" ("recording_id");

-- Everything belongs to an organisation; this one is the default.
INSERT INTO organisations (id, slug, name, created_at)
VALUES (1, 'default', 'Default organisation', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
