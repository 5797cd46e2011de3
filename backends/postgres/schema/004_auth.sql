-- etcd's auth state (what etcd keeps in its auth, authUsers and authRoles
-- buckets): one row of auth_meta, a row per user and per role holding the
-- etcd authpb message, and the simple tokens Authenticate handed out.
-- Writers of any auth table lock the auth_meta row (SELECT ... FOR UPDATE)
-- first: it is the auth write lock. revision starts at 1, as etcd's.
CREATE TABLE auth_meta (
	id       integer PRIMARY KEY CHECK (id = 1),
	enabled  boolean NOT NULL,
	revision bigint  NOT NULL,
	-- secret is shared by the instances of this database: they sign the
	-- requests they forward to each other with it. Set by the first one.
	secret   bytea
);
INSERT INTO auth_meta (id, enabled, revision) VALUES (1, false, 1);

CREATE TABLE auth_user (
	name bytea PRIMARY KEY,
	data bytea NOT NULL -- authpb.User
);

CREATE TABLE auth_role (
	name bytea PRIMARY KEY,
	data bytea NOT NULL -- authpb.Role
);

-- auth_token: simple tokens; expiry is on the database clock, moved on
-- while the token is in use.
CREATE TABLE auth_token (
	token  text        PRIMARY KEY,
	name   text        NOT NULL,
	expiry timestamptz NOT NULL
);
CREATE INDEX auth_token_name ON auth_token (name);
CREATE INDEX auth_token_expiry ON auth_token (expiry);
