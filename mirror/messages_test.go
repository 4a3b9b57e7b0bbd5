package mirror

import (
	"strings"
	"testing"
)

func msg(channel, data string, id int64) Change {
	return Change{Op: OpMessage, Key: channel, Value: []byte(data), Version: id}
}

// renderMessages describes the KindMessage events of evs: "news=a news=b | c=d".
func renderMessages(evs []Event) string {
	var parts []string
	for _, ev := range evs {
		if ev.Kind != KindMessage {
			continue
		}
		var ms []string
		for _, m := range ev.Messages {
			ms = append(ms, m.Channel+"="+string(m.Data))
		}
		parts = append(parts, strings.Join(ms, " "))
	}
	return strings.Join(parts, " | ")
}

// TestEventsMessages (issue 18): the pub/sub messages of an applied batch
// are one KindMessage event, in their order, after the batch's key changes
// (a subscriber told of a message finds the batch's keys applied); they
// change no key; a replayed batch (a MAC already applied) delivers nothing;
// a batch of messages only is counted in Stats.
func TestEventsMessages(t *testing.T) {
	m := newLoaded(t)
	r := withDispatcher(t, m)
	m.Apply(Batch{Xid: 10, MACs: []uint64{1}, Changes: []Change{msg("news", "a", 1), set("k", "v", 10), msg("news", "b", 2)}})
	m.Apply(Batch{Xid: 11, MACs: []uint64{2}, Changes: []Change{msg("c", "d", 3)}})
	m.Apply(Batch{Xid: 10, MACs: []uint64{1}, Changes: []Change{msg("news", "a", 1), msg("news", "b", 2)}}) // a replay
	m.Apply(Batch{Xid: 12, MACs: []uint64{3}, Changes: []Change{msg("c", "e", 4)}})
	evs := r.wait(t, "the messages", func(evs []Event) bool { return strings.Count(renderMessages(evs), "|") >= 2 })
	if got, want := renderMessages(evs), "news=a news=b | c=d | c=e"; got != want {
		t.Fatalf("messages %q, want %q (events: %s)", got, want, render(evs))
	}
	if evs[0].Kind != KindChanges || evs[1].Kind != KindMessage {
		t.Fatalf("events %s: want the batch's key changes before its messages", render(evs))
	}
	if _, found, _ := m.Get(t.Context(), "news"); found {
		t.Fatal("a message's channel became a key")
	}
	if st := m.Stats(); st.Messages != 4 || st.MessagesDropped != 0 || st.Replays != 1 {
		t.Fatalf("stats: %d messages, %d dropped, %d replays; want 4, 0, 1", st.Messages, st.MessagesDropped, st.Replays)
	}
}
