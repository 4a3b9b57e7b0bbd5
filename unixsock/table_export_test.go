package unixsock

// CommandSpec is one entry of a server's command table, for tests.
type CommandSpec struct {
	Name                                             string
	Arity                                            int
	FirstKey, LastKey, Step                          int
	Readonly, Write, Postgres, Multi, Script, Mirror bool
}

// CommandSpecs returns s's command table in registration order.
func CommandSpecs(s *Server) []CommandSpec {
	var out []CommandSpec
	for _, cmd := range s.commands().list {
		out = append(out, CommandSpec{
			Name: cmd.name, Arity: cmd.arity,
			FirstKey: cmd.keys.first, LastKey: cmd.keys.last, Step: cmd.keys.step,
			Readonly: cmd.has(flagReadonly), Write: cmd.has(flagWrite), Postgres: cmd.has(flagPostgres),
			Multi: cmd.has(flagMulti), Script: cmd.has(flagScript), Mirror: cmd.has(flagMirror),
		})
	}
	return out
}
