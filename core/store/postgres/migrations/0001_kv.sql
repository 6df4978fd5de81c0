-- 0001_kv: the key/value table behind store.KV and its version sequence.
--
-- Never edit this file once released: its SHA-256 is recorded in
-- avon_schema_migrations and a changed checksum stops the core. Add a new
-- numbered file instead (forward-only).

-- One global version sequence for the whole store. Every successful Put
-- takes a fresh value, so versions are never reused, even for a key that is
-- deleted and re-created. Values lost to rolled-back or conflicting writes
-- leave gaps, which the contract allows.
CREATE SEQUENCE avon_kv_version AS bigint MINVALUE 1 START WITH 1 NO CYCLE;

-- Keys are text in the "C" collation: comparison is memcmp of the UTF-8
-- bytes, which is Go's string order (the bytewise order List promises). The
-- store checks keys before they reach SQL (valid UTF-8, no control
-- characters, at most 512 bytes); the CHECK constraints repeat the parts a
-- manual INSERT could most easily get wrong.
--
-- The primary key's btree serves point reads and the range scans of List:
-- key >= prefix AND key < successor(prefix), never LIKE.
CREATE TABLE avon_kv (
    key     text COLLATE "C" NOT NULL,
    value   bytea            NOT NULL,
    version bigint           NOT NULL,
    CONSTRAINT avon_kv_pkey PRIMARY KEY (key),
    CONSTRAINT avon_kv_key_length CHECK (octet_length(key) BETWEEN 1 AND 512),
    CONSTRAINT avon_kv_version_positive CHECK (version > 0)
);

COMMENT ON TABLE avon_kv IS 'AVON store.KV entries; written only through the core';
COMMENT ON SEQUENCE avon_kv_version IS 'AVON store.KV global version sequence';
