-- etcd's auth state (what etcd keeps in its auth, authUsers and authRoles
-- buckets): one row of auth_meta, a row per user and per role holding the
-- etcd authpb message, and the simple tokens Authenticate handed out.
-- revision starts at 1, as etcd's.
CREATE TABLE auth_meta (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	enabled  INTEGER NOT NULL,
	revision INTEGER NOT NULL,
	secret   BLOB
);
INSERT INTO auth_meta (id, enabled, revision) VALUES (1, 0, 1);

CREATE TABLE auth_user (
	name BLOB PRIMARY KEY,
	data BLOB NOT NULL -- authpb.User
);

CREATE TABLE auth_role (
	name BLOB PRIMARY KEY,
	data BLOB NOT NULL -- authpb.Role
);

-- auth_token: simple tokens; expiry_ms is Unix milliseconds, moved on while
-- the token is in use.
CREATE TABLE auth_token (
	token     TEXT    PRIMARY KEY,
	name      TEXT    NOT NULL,
	expiry_ms INTEGER NOT NULL
);
CREATE INDEX auth_token_name ON auth_token (name);
CREATE INDEX auth_token_expiry ON auth_token (expiry_ms);
