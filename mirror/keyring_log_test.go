package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// failingKeyring is a source whose keys cannot be read: denied, or
// stopped with its context.
type failingKeyring struct{ rowSource }

func (s *failingKeyring) Keyring(ctx context.Context) (Keyring, error) {
	if ctx.Err() != nil {
		return Keyring{}, fmt.Errorf("look for pgmirror_secret: %w", ctx.Err())
	}
	return Keyring{}, errors.New("read pgmirror_secret: permission denied")
}

// TestKeyringReadStoppedIsNotAnError: a key read cut short by the
// sidecar stopping (its context cancelled) logs no ERROR; a key read that
// fails for another reason still does.
func TestKeyringReadStoppedIsNotAnError(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	m := newWithSource(t, &failingKeyring{rowSource: rowSource{rows: map[string]Row{}}}, Options{Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.readKeyring(ctx)
	if strings.Contains(out.String(), "[ERROR]") {
		t.Fatalf("a key read stopped by shutdown logged an error:\n%s", out.String())
	}
	m.readKeyring(context.Background())
	if !strings.Contains(out.String(), "[ERROR]") || !strings.Contains(out.String(), "cannot read the keys that sign") {
		t.Fatalf("a denied key read logged no error:\n%s", out.String())
	}
}
