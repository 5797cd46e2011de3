package main

import (
	"errors"
	"net/url"
	"regexp"
	"strings"

	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
)

// describeEndpoint is --endpoint for messages: as the driver parses it,
// without password or parameters; a placeholder when it does not parse,
// since the password's place in a malformed string cannot be trusted.
func describeEndpoint(ep string) string {
	var d string
	var ok bool
	switch scheme, _, _ := strings.Cut(ep, "://"); scheme {
	case "postgres", "postgresql":
		d, ok = postgres.Describe(ep)
	case "mysql":
		d, ok = mysql.Describe(ep)
	case "sqlite":
		return ep // a file path, with no credentials
	}
	if !ok {
		return "(not shown: it does not parse, and may hold a password)"
	}
	return d
}

// schemeRE is what a URL scheme may look like; anything else before
// "://" is not shown, as it may be part of a password.
var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// secretsIn lists every substring of an endpoint that may be a password,
// generously, whether or not it parses: the user information of a URL
// (up to its last @) when it holds a password (after a colon), that
// password, and the value of every
// parameter or key=value setting whose name mentions "pass".
func secretsIn(ep string) []string {
	var out []string
	add := func(s string) {
		if s != "" {
			out = append(out, s, url.QueryEscape(s))
			if u, err := url.QueryUnescape(s); err == nil && u != s {
				out = append(out, u)
			}
		}
	}
	if _, rest, ok := strings.Cut(ep, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pass, ok := strings.Cut(rest[:at], ":"); ok {
				add(rest[:at])
				add(pass)
			}
		}
	}
	for _, part := range strings.FieldsFunc(ep, func(r rune) bool { return r == '?' || r == '&' || r == ' ' || r == ';' }) {
		if k, v, ok := strings.Cut(part, "="); ok && strings.Contains(strings.ToLower(k), "pass") {
			add(strings.Trim(v, `'"`))
		}
	}
	return out
}

// scrub returns err unless its message contains something secretsIn
// finds in ep; then it returns an error that says what failed without
// the driver's text. It is the last guard: the backends already leave the
// endpoint out of their errors.
func scrub(err error, ep string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secretsIn(ep) {
		if strings.Contains(msg, s) {
			return errors.New("cannot open the database at --endpoint " + describeEndpoint(ep) + ": the driver's error is not shown because it contains the endpoint's password; check the endpoint")
		}
	}
	return err
}
