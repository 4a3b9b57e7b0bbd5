package mirror

import (
	"sync"
	"testing"
	"time"
)

// TestReloadRetryReasonDoesNotGrow: a reload that keeps failing is retried
// as "retry: <reason>", not "retry: retry: ..." once more per failure, so
// the reason logged and reported stays bounded.
func TestReloadRetryReasonDoesNotGrow(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var reasons []string
	m := newWithSource(t, &rowSource{rows: map[string]Row{}}, Options{}) // its snapshots fail
	m.Handle(func(ev Event) {
		if ev.Kind != KindReload {
			return
		}
		if ev.Err == nil {
			t.Errorf("reload %q succeeded", ev.Reason)
		}
		mu.Lock()
		reasons = append(reasons, ev.Reason)
		mu.Unlock()
	})
	m.Open()
	defer m.Close()
	m.RequestResync("SIGHUP")
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(reasons)
		got := append([]string(nil), reasons...)
		mu.Unlock()
		if n >= 4 {
			if got[0] != "SIGHUP" {
				t.Fatalf("first reload's reason %q", got[0])
			}
			for _, r := range got[1:] {
				if r != "retry: SIGHUP" {
					t.Fatalf("retries' reasons: %q", got)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d reloads within 15s: %q", n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
