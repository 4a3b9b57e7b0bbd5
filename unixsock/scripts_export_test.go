package unixsock

// SetScriptWriteBounds lowers the bounds of a script's transaction for a
// test; the returned function restores them.
func SetScriptWriteBounds(writes, bytes int) func() {
	w, b := maxScriptWrites, maxScriptWriteBytes
	maxScriptWrites, maxScriptWriteBytes = writes, bytes
	return func() { maxScriptWrites, maxScriptWriteBytes = w, b }
}
