-- etcd's auth state (what etcd keeps in its auth, authUsers and authRoles
-- buckets): one row of auth_meta, a row per user and per role holding the
-- etcd authpb message, and the simple tokens Authenticate handed out.
-- Writers of any auth table lock the auth_meta row (SELECT ... FOR UPDATE)
-- first: it is the auth write lock. revision starts at 1, as etcd's. User
-- and role names are VARBINARY(2048), compared bytewise.
CREATE TABLE auth_meta (
	id       INT        NOT NULL PRIMARY KEY,
	enabled  TINYINT(1) NOT NULL,
	revision BIGINT     NOT NULL,
	secret   VARBINARY(64) NULL
) ENGINE=InnoDB;
INSERT INTO auth_meta (id, enabled, revision) VALUES (1, 0, 1);

CREATE TABLE auth_user (
	name VARBINARY(2048) NOT NULL PRIMARY KEY,
	data LONGBLOB        NOT NULL
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;

CREATE TABLE auth_role (
	name VARBINARY(2048) NOT NULL PRIMARY KEY,
	data LONGBLOB        NOT NULL
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;

-- auth_token: simple tokens; expiry_ms is Unix milliseconds on the database
-- clock, moved on while the token is in use.
CREATE TABLE auth_token (
	token     VARBINARY(255)  NOT NULL PRIMARY KEY,
	name      VARBINARY(2048) NOT NULL,
	expiry_ms BIGINT          NOT NULL,
	KEY auth_token_name (name),
	KEY auth_token_expiry (expiry_ms)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;
