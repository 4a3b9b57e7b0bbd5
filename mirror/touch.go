package mirror

// Touch marks key read, as GET does, without reading its value (Redis's
// TOUCH): the access-time flush then advances its last_accessed_at. It
// reports whether the key is present.
func (m *Mirror) Touch(key string) (bool, error) {
	if err := m.readable(); err != nil {
		return false, err
	}
	return m.lookup(key, m.clock.dbNow(), true).Found, nil
}
