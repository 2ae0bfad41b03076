package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// verification compares the counts in PostgreSQL with the truth computed from the generated logs.
type verification struct {
	logs                  int
	truthCells, sinkCells int
	truthTotal, sinkTotal int64
	onTime, late          int64 // sink: counted before their window fired, and after (corrections)
	duplicates, lost      int64 // sum over (window, IP) of counts above, and below, the truth
	cellsDiffering        int
	openLeft              int64 // counts never emitted (still in ipcount_open after the end)
	delayed               int
	windows               int
	top                   []ipTotal
	consumeTime           time.Duration
}

type ipTotal struct {
	ip          string
	sink, truth int64
}

func (v *verification) ok() bool {
	return v.duplicates == 0 && v.lost == 0 && v.cellsDiffering == 0 && v.openLeft == 0 &&
		v.sinkTotal == v.truthTotal && v.sinkCells == v.truthCells && int64(v.logs) == v.truthTotal
}

// verify reads the run's counts from PostgreSQL and compares them with d's truth, (window, IP) by
// (window, IP).
func verify(ctx context.Context, db *pgxpool.Pool, run string, d *dataset) (*verification, error) {
	v := &verification{logs: 0, delayed: d.delayed, truthCells: len(d.truth)}
	for _, h := range d.hosts {
		v.logs += len(h)
	}
	sink := map[cell]int64{}
	rows, err := db.Query(ctx, `SELECT window_start, ip, requests, late FROM ipcount_counts WHERE run = $1`, run)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var (
			c            cell
			onTime, late int64
		)
		if err := rows.Scan(&c.Window, &c.IP, &onTime, &late); err != nil {
			rows.Close()
			return nil, err
		}
		c.Window = c.Window.UTC()
		sink[c] = onTime + late
		v.onTime += onTime
		v.late += late
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := db.QueryRow(ctx, `SELECT coalesce(sum(requests), 0) FROM ipcount_open WHERE run = $1`, run).Scan(&v.openLeft); err != nil {
		return nil, err
	}
	v.sinkCells = len(sink)
	perIP := map[string]*ipTotal{}
	windows := map[time.Time]bool{}
	add := func(c cell, sinkN, truthN int64) {
		t := perIP[c.IP]
		if t == nil {
			t = &ipTotal{ip: c.IP}
			perIP[c.IP] = t
		}
		t.sink += sinkN
		t.truth += truthN
		windows[c.Window] = true
		switch {
		case sinkN > truthN:
			v.duplicates += sinkN - truthN
		case sinkN < truthN:
			v.lost += truthN - sinkN
		}
		if sinkN != truthN {
			v.cellsDiffering++
		}
	}
	for c, want := range d.truth {
		v.truthTotal += want
		add(c, sink[c], want)
	}
	for c, got := range sink {
		v.sinkTotal += got
		if _, ok := d.truth[c]; !ok {
			add(c, got, 0)
		}
	}
	v.windows = len(windows)
	for _, t := range perIP {
		v.top = append(v.top, *t)
	}
	slices.SortFunc(v.top, func(a, b ipTotal) int { return cmp.Or(cmp.Compare(b.truth, a.truth), cmp.Compare(a.ip, b.ip)) })
	v.top = v.top[:min(5, len(v.top))]
	return v, nil
}

func (v *verification) print(out io.Writer) {
	fmt.Fprintf(out, "\nverification (PostgreSQL vs counted from the generated logs):\n")
	fmt.Fprintf(out, "  %-34s %12s %12s\n", "", "sink", "truth")
	fmt.Fprintf(out, "  %-34s %12d %12d\n", "requests", v.sinkTotal, v.truthTotal)
	fmt.Fprintf(out, "  %-34s %12d %12d\n", "(window, IP) counts", v.sinkCells, v.truthCells)
	fmt.Fprintf(out, "  %-34s %12d\n", "windows", v.windows)
	for i, t := range v.top {
		fmt.Fprintf(out, "  %-34s %12d %12d\n", fmt.Sprintf("top IP #%d %s", i+1, t.ip), t.sink, t.truth)
	}
	fmt.Fprintf(out, "  (window, IP) counts differing %d, duplicates %d, lost %d, never emitted %d\n",
		v.cellsDiffering, v.duplicates, v.lost, v.openLeft)
	fmt.Fprintf(out, "  late events %d (of %d logs uploaded 30-60 s late): added to their windows' rows after the windows fired (column late), none dropped; on time %d\n",
		v.late, v.delayed, v.onTime)
	fmt.Fprintf(out, "  throughput %.0f logs/s (%d logs consumed in %v, kill and restart included)\n",
		float64(v.logs)/v.consumeTime.Seconds(), v.logs, v.consumeTime.Round(10*time.Millisecond))
	if v.ok() {
		fmt.Fprintf(out, "verification OK: every (window, IP) count equals the truth\n")
	} else {
		fmt.Fprintf(out, "verification FAILED\n")
	}
}
