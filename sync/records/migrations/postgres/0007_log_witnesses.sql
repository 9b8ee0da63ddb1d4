-- Schema version 7: the transparency log's witnesses; see the SQLite file of
-- the same version.

CREATE TABLE tlog_witness_state (
   witness TEXT COLLATE "C" PRIMARY KEY,
   size BIGINT NOT NULL,
   updated_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE tlog_cosignatures (
   size BIGINT NOT NULL,
   witness TEXT COLLATE "C" NOT NULL,
   line TEXT COLLATE "C" NOT NULL,
   received_at TEXT COLLATE "C" NOT NULL,
   PRIMARY KEY (size, witness)
);
