package postgres

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Describe returns the endpoint without its password or parameters
// (postgres://user@host:port/db), as pgx parses it, for messages; ok is
// false, and the string empty, when it does not parse.
func Describe(url string) (string, bool) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database), true
}

// parseError is an error for a URL pgx could not parse, without the URL:
// pgx quotes it with the passwords it could recognise masked, but "best
// effort" is not enough for a string that did not parse.
func parseError(err error) error {
	const want = "want postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=...; percent-encode characters such as @ : / ? # in the user name and password"
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// pgx's message is "cannot parse `URL`: REASON".
		if i := strings.LastIndex(pe.Error(), "`: "); i >= 0 {
			return fmt.Errorf("postgres: the endpoint does not parse: %s (%s)", pe.Error()[i+3:], want)
		}
	}
	return fmt.Errorf("postgres: the endpoint does not parse (%s)", want)
}
