-- Message bodies in bounded chunks, shared by every mail table of the data source. A body is
-- written before the row that names it (mailroom_body_id), so that a long SMTP DATA holds no
-- transaction open; bodies no row names are swept when a repository opens.
CREATE TABLE mailroom_bodies (
    body_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    written_at BIGINT NOT NULL,
    PRIMARY KEY (body_id, seq)
);
-- Counters that must be unique across the data source's life (spool lease ids).
CREATE TABLE mailroom_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO mailroom_counters (name, value) VALUES ('lease', 0);
