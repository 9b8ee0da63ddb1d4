-- Schema version 7: the transparency log's witnesses (sync/domain/
-- transparency.py, WITNESS_LOG_WITNESSES): the size each witness last
-- cosigned (what the next add-checkpoint proves consistency from), and every
-- cosignature kept, one per witness and tree size.

CREATE TABLE "tlog_witness_state" (
   "witness" TEXT PRIMARY KEY,
   "size" INTEGER NOT NULL,
   "updated_at" TEXT NOT NULL
);
CREATE TABLE "tlog_cosignatures" (
   "size" INTEGER NOT NULL,
   "witness" TEXT NOT NULL,
   "line" TEXT NOT NULL,
   "received_at" TEXT NOT NULL,
   PRIMARY KEY ("size", "witness")
);
