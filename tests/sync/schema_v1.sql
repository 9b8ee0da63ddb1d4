CREATE TABLE IF NOT EXISTS "devices" (
   "id" TEXT PRIMARY KEY,
   "created_at" TEXT NOT NULL,
   "public_key_pem" TEXT,
   "enrollment_code" TEXT,
   "revoked_at" TEXT
);
CREATE TABLE IF NOT EXISTS "staff" (
   "id" INTEGER PRIMARY KEY,
   "username" TEXT NOT NULL,
   "role" TEXT NOT NULL,
   "password_hash" TEXT NOT NULL,
   "created_at" TEXT NOT NULL,
   "disabled_at" TEXT
);
CREATE UNIQUE INDEX "idx_staff_username"
    ON "staff" ("username");
CREATE TABLE IF NOT EXISTS "enrollment_codes" (
   "code" TEXT PRIMARY KEY,
   "created_at" TEXT NOT NULL,
   "note" TEXT
);
CREATE TABLE IF NOT EXISTS "recordings" (
   "id" TEXT PRIMARY KEY,
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
   "manifest_version" INTEGER
);
CREATE INDEX "idx_recordings_state_last_activity_at"
    ON "recordings" ("state", "last_activity_at");
CREATE INDEX "idx_recordings_device_id"
    ON "recordings" ("device_id");
CREATE TABLE IF NOT EXISTS "chunks" (
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
CREATE TABLE IF NOT EXISTS "manifests" (
   "recording_id" TEXT REFERENCES "recordings"("id"),
   "version" INTEGER,
   "state" TEXT NOT NULL,
   "body" BLOB NOT NULL,
   "sha256" TEXT NOT NULL,
   "signature" BLOB NOT NULL,
   "created_at" TEXT NOT NULL,
   PRIMARY KEY ("recording_id", "version")
);
CREATE TABLE IF NOT EXISTS "audit" (
   "id" INTEGER PRIMARY KEY,
   "at" TEXT NOT NULL,
   "actor" TEXT NOT NULL,
   "action" TEXT NOT NULL,
   "recording_id" TEXT,
   "detail" TEXT NOT NULL,
   "prev_sha256" TEXT NOT NULL,
   "sha256" TEXT NOT NULL
);
CREATE INDEX "idx_audit_recording_id"
    ON "audit" ("recording_id");
CREATE TABLE IF NOT EXISTS "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
);
