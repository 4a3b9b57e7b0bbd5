package pgtest

// Release removes the initdb template that Start keeps for this process's
// later clusters. Main does it for tests; a program that starts clusters
// outside a test (the `make demo-*` programs) calls it once it closed its
// last one, so that it leaves no data directory behind. A later Start makes
// a new template.
func Release() { removeTemplate() }
