-- Schema version 8: checkpoints time-stamped by an external TSA too
-- (WITNESS_TSA_URL; sync/domain/transparency.py): the token, which TSA gave
-- it, and when it was kept (how long after an acknowledgement a chunk is
-- covered by an externally stamped checkpoint is measured from this).

ALTER TABLE "tlog_checkpoints" ADD COLUMN "external_tsr" BLOB;
ALTER TABLE "tlog_checkpoints" ADD COLUMN "external_tsa_url" TEXT;
ALTER TABLE "tlog_checkpoints" ADD COLUMN "external_stamped_at" TEXT;
