-- Parent accounts (issue 12): a child zone gives its parent an account of role `parent` limited
-- to some clients. Its client-id patterns, comma-separated (`acme-*,bob`); NULL for the other
-- roles.
ALTER TABLE accounts ADD COLUMN client_ids TEXT;
