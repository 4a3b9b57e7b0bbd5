// Package compat holds pgmirror's client compatibility suite (tests only):
// real Redis client libraries — go-redis, redis-py, ioredis, node-redis,
// redis-rb and phpredis — each run the same calls, unchanged apart from the
// socket path, against a real redis-server and against a whole pgmirror
// sidecar, and the test compares what they printed, case by case.
//
// The scripts are in testdata/ (one per library); each prints "== case" and
// then one line per reply. Cases for commands pgmirror does not answer yet
// are listed in one place, pending in pending_test.go: they are expected to
// differ, are reported as pending, and fail the test once they pass.
// docs/compatibility.md lists the libraries and versions.
package compat
