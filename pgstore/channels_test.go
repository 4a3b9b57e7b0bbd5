package pgstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"pgmirror/internal/testdb"
	"pgmirror/pgstore"
)

// TestPublishChannelErrors: PublishChannel refuses a message past the
// bound before any query (wrapping ErrMessageTooLarge), many concurrent
// calls all succeed (sharing statements), and against a schema without
// the function the error says to run migrate.
func TestPublishChannelErrors(t *testing.T) {
	_, db := testdb.New(t)
	st := pgstore.New(db, nil)
	ctx := context.Background()
	err := st.PublishChannel(ctx, "c", make([]byte, pgstore.MaxMessageBytes))
	if !errors.Is(err, pgstore.ErrMessageTooLarge) || !strings.Contains(err.Error(), "at most 5840") {
		t.Fatalf("past the bound: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- st.PublishChannel(ctx, "c", []byte("m")) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`DROP FUNCTION pgmirror_publish_channel(text, text); DROP FUNCTION pgmirror_publish_channel(text, bytea)`); err != nil {
		t.Fatal(err)
	}
	if err := st.PublishChannel(ctx, "c", nil); err == nil || !strings.Contains(err.Error(), "run `pgmirror migrate`") {
		t.Fatalf("without the function: %v", err)
	}
}
