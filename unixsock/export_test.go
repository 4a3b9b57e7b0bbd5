package unixsock

// SetPublishHook makes the keyspace publisher call f before it publishes
// each batch of events: a test blocks delivery with it. Set it before
// Open.
func SetPublishHook(s *Server, f func()) { s.pub.hook = f }
