package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// statements are what Postgres ran in database bench while the pgmirror GET
// runs went on (pg_stat_statements after minus before) and the sidecar's
// counters over the same runs.
type statements struct {
	deltas  []delta // every statement that ran, most calls first
	onTable int64   // calls of statements that name cache_entries
	kinds   map[string]int64
	// selects counts calls of SELECTs on cache_entries that no background
	// job explains: what a GET answered from Postgres would show as.
	selects int64
	// jobSelects counts the background refresh scan's SELECTs of the keys
	// due for refresh: a few a minute, whatever the GET rate.
	jobSelects            int64
	hits, misses, fetches int64
	hitsText, missesText  string
}

type delta struct {
	statement
	id string
}

func (r *report) getStatements() statements {
	before, after := r.pgss("pgss_before.tsv"), r.pgss("pgss_after.tsv")
	hits := r.tsv("get_hits.tsv")
	st := statements{kinds: map[string]int64{}, hitsText: hits["hits"], missesText: hits["misses"]}
	st.hits, _ = strconv.ParseInt(hits["hits"], 10, 64)
	st.misses, _ = strconv.ParseInt(hits["misses"], 10, 64)
	st.fetches, _ = strconv.ParseInt(hits["fetches"], 10, 64)
	for id, a := range after {
		b := before[id]
		d := a.calls - b.calls
		if d <= 0 {
			continue
		}
		st.deltas = append(st.deltas, delta{statement{d, a.rows - b.rows, a.query}, id})
		if !strings.Contains(strings.ToLower(a.query), "cache_entries") {
			continue
		}
		st.onTable += d
		job := jobOf(a.query)
		st.kinds[job] += d
		if isSelect(a.query) {
			if job == "other" {
				st.selects += d
			} else {
				st.jobSelects += d
			}
		}
	}
	slices.SortFunc(st.deltas, func(x, y delta) int {
		if x.calls != y.calls {
			return int(y.calls - x.calls)
		}
		return strings.Compare(x.query, y.query)
	})
	return st
}

// isSelect tells a statement that reads from one that writes (an UPDATE or a
// DELETE may hold a SELECT in a subquery; that is not a read for a client).
func isSelect(q string) bool {
	q = strings.ToUpper(strings.TrimSpace(q))
	return strings.HasPrefix(q, "SELECT") || strings.HasPrefix(q, "WITH") && !strings.Contains(q, "UPDATE") &&
		!strings.Contains(q, "DELETE") && !strings.Contains(q, "INSERT")
}

// met is true when no GET went to Postgres: no unexplained statement on
// cache_entries and no value fetch.
func (st statements) met() bool { return st.fetches == 0 && st.kinds["other"] == 0 }

func (st statements) row() row {
	var kindList []string
	for k, v := range st.kinds {
		kindList = append(kindList, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(kindList)
	perHit := float64(st.onTable) / max(float64(st.hits), 1)
	return row{what: "Postgres statements on cache_entries during all pgmirror GET runs (" + st.hitsText + " hits, " +
		st.missesText + " misses)",
		pgm: fmt.Sprintf("%d = %.1g per hit (%s); value fetches %d", st.onTable, perHit,
			strings.Join(kindList, ", "), st.fetches),
		target: "0 per hit", verdict: verdict(st.met())}
}
