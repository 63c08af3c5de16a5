-- Host enrollment (issue 12): an admin makes an enrollment token; an agent registers its host
-- with it and receives a credential of that host alone (it may report and update that host, and
-- nothing else). Both are stored as SHA-256 hashes, like bearer tokens: a database dump gives
-- no usable token.
CREATE TABLE enrollment_tokens (
    id            TEXT   PRIMARY KEY,
    token_hash    TEXT   NOT NULL UNIQUE,
    max_uses      BIGINT NOT NULL CHECK (max_uses > 0),
    uses          BIGINT NOT NULL DEFAULT 0 CHECK (uses >= 0),
    expires_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT   NOT NULL
);

-- NULL for hosts registered by an operator account; unique where set (a credential names one host).
ALTER TABLE hosts ADD COLUMN credential_hash TEXT;
CREATE UNIQUE INDEX hosts_credential_hash ON hosts (credential_hash);
