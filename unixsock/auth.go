package unixsock

import (
	"crypto/subtle"
	"fmt"
	"strings"
)

// Authentication as Redis's requirepass: with Server.Password set, a
// client must AUTH (or HELLO ... AUTH) before any command but AUTH, HELLO
// and QUIT. Without it, AUTH answers as a Redis without requirepass does:
// the default user accepts any password.

const (
	errNoAuth    = "NOAUTH Authentication required."
	errWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
)

// authorized reports whether c may run cmd, after answering NOAUTH when
// it may not.
func (c *client) authorized(cmd *command) bool {
	if c.s.Password == "" || c.info.authed {
		return true
	}
	switch cmd.name {
	case "auth", "hello", "quit":
		return true
	}
	c.errorReply(errNoAuth)
	return false
}

// authenticate checks a user name and password, answering WRONGPASS when
// they do not match. Only the user "default" exists.
func (c *client) authenticate(user, pass []byte) bool {
	ok := string(user) == "default"
	if c.s.Password != "" {
		ok = subtle.ConstantTimeCompare(pass, []byte(c.s.Password)) == 1 && ok
	}
	if !ok {
		c.errorReply(errWrongPass)
		return false
	}
	c.info.authed = true
	return true
}

// cmdAuth answers AUTH [username] password.
func cmdAuth(c *client, a [][]byte) {
	switch {
	case len(a) > 3:
		c.errorReply(errSyntax)
	case len(a) == 2 && c.s.Password == "":
		c.errorReply("ERR AUTH <password> called without any password configured for the default user. " +
			"Are you sure your configuration is correct?")
	case len(a) == 2:
		if c.authenticate([]byte("default"), a[1]) {
			c.ok()
		}
	default:
		if c.authenticate(a[1], a[2]) {
			c.ok()
		}
	}
}

// cmdHello answers HELLO [protover [AUTH username password] [SETNAME
// name]]: the options are checked, then the credentials, then the
// protocol and name change.
func cmdHello(c *client, a [][]byte) {
	proto := c.proto
	i := 1
	if len(a) > 1 {
		v, ok := parseInt(a[1])
		if !ok {
			c.errorReply("ERR Protocol version is not an integer or out of range")
			return
		}
		if v != 2 && v != 3 {
			c.errorReply("NOPROTO unsupported protocol version")
			return
		}
		proto, i = int(v), 2
	}
	var user, pass, name []byte
	for ; i < len(a); i++ {
		more := len(a) - 1 - i
		switch opt := strings.ToLower(string(a[i])); {
		case opt == "auth" && more >= 2:
			user, pass = a[i+1], a[i+2]
			i += 2
		case opt == "setname" && more >= 1:
			name = a[i+1]
			if strings.ContainsAny(string(name), " \n") {
				c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
				return
			}
			i++
		default:
			c.errorReply(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", clip(a[i])))
			return
		}
	}
	if user != nil && !c.authenticate(user, pass) {
		return
	}
	if c.s.Password != "" && !c.info.authed {
		c.errorReply("NOAUTH HELLO must be called with the client already authenticated, otherwise the " +
			"HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP " +
			"protocol version at the same time")
		return
	}
	if name != nil {
		c.mu.Lock()
		c.name = string(name)
		c.mu.Unlock()
	}
	c.setProto(proto)
	helloReply(c, proto)
}

func helloReply(c *client, proto int) {
	c.mapHeader(7)
	c.bulkString("server")
	c.bulkString("redis")
	c.bulkString("version")
	c.bulkString(redisVersion)
	c.bulkString("proto")
	c.integer(int64(proto))
	c.bulkString("id")
	c.integer(c.id)
	c.bulkString("mode")
	c.bulkString("standalone")
	c.bulkString("role")
	c.bulkString("master")
	c.bulkString("modules")
	c.array(0)
}
