package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// The charts are SVG written by hand: no plotting library, and a file that
// GitHub shows inline in the README. They are 800 px wide, the width of a
// README column, on a white ground so they read in dark mode too.

const (
	chartWidth   = 800
	colorParley  = "#2563eb"
	colorBase    = "#9ca3af"
	colorTarget  = "#dc2626"
	colorText    = "#111827"
	colorMuted   = "#6b7280"
	colorGrid    = "#e5e7eb"
	chartFont    = `system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif`
	chartMinimum = 0.01 // ms: the floor of the log axis, whatever the data
)

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;")

func esc(s string) string { return xmlEscaper.Replace(s) }

// svg accumulates an SVG document.
type svg struct{ b strings.Builder }

func (s *svg) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

func (s *svg) text(x, y float64, size int, anchor, color, weight, txt string) {
	s.f(`<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" fill="%s" font-weight="%s">%s</text>`+"\n",
		x, y, size, anchor, color, weight, esc(txt))
}

func (s *svg) start(w, h int, title, desc string) {
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s" role="img" aria-labelledby="title desc">`+"\n",
		w, h, w, h, esc(chartFont))
	s.f("<title id=\"title\">%s</title>\n<desc id=\"desc\">%s</desc>\n", esc(title), esc(desc))
	s.f(`<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", w, h)
}

func (s *svg) end(w io.Writer) {
	s.f("</svg>\n")
	io.WriteString(w, s.b.String())
}

// legend draws the key at the top right: a swatch per series and the
// target's dashed line.
func (s *svg) legend(right, y float64, items [][2]string, target bool) {
	x := right
	type entry struct {
		label, color string
		w            float64
	}
	var es []entry
	for _, it := range items {
		es = append(es, entry{it[0], it[1], 18 + 7*float64(len(it[0])) + 16})
	}
	if target {
		es = append(es, entry{"target", colorTarget, 26 + 7*6 + 4})
	}
	for _, e := range es {
		x -= e.w
	}
	for _, e := range es {
		if e.label == "target" && e.color == colorTarget {
			s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="5 3"/>`+"\n", x, y-4, x+20, y-4, colorTarget)
			s.text(x+25, y, 12, "start", colorText, "normal", e.label)
		} else {
			s.f(`<rect x="%.1f" y="%.1f" width="12" height="12" rx="2" fill="%s"/>`+"\n", x, y-10, e.color)
			s.text(x+17, y, 12, "start", colorText, "normal", e.label)
		}
		x += e.w
	}
}

// logAxis maps milliseconds to a y coordinate on a log scale.
type logAxis struct {
	lo, hi     float64 // ms, powers of ten
	top, floor float64 // pixels: y of hi and of lo
}

func newLogAxis(values []float64, top, floor float64) logAxis {
	lo, hi := math.Inf(1), 0.0
	for _, v := range values {
		if v > 0 {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if hi == 0 {
		lo, hi = 0.1, 10
	}
	a := logAxis{top: top, floor: floor}
	a.lo = math.Max(chartMinimum, math.Pow(10, math.Floor(math.Log10(lo))))
	a.hi = math.Pow(10, math.Ceil(math.Log10(hi*1.6))) // room for the labels above the bars
	if a.hi/a.lo < 100 {
		a.lo = a.hi / 100
	}
	return a
}

func (a logAxis) y(v float64) float64 {
	v = math.Min(math.Max(v, a.lo), a.hi)
	f := (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	return a.floor - f*(a.floor-a.top)
}

// ticks are 1, 2 and 5 times each power of ten in range; major says which
// are powers of ten.
func (a logAxis) ticks() (vals []float64, major []bool) {
	for p := a.lo; p <= a.hi*1.0001; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := p * m; v <= a.hi*1.0001 {
				vals = append(vals, v)
				major = append(major, m == 1)
			}
		}
	}
	return vals, major
}

// fmtAxisMs labels an axis tick.
func fmtAxisMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%g s", v/1000)
	default:
		return strconv0(v) + " ms"
	}
}

func strconv0(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// fmtBarMs is the short value printed above a bar.
func fmtBarMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.2f", v)
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// latencyPanel is one scenario's bars: percentiles of delivery latency and
// the ack p99, for Parley and the baseline.
type latencyPanel struct {
	title  string
	groups []latencyGroup
}

type latencyGroup struct {
	label          string
	parley, base   float64 // ms; 0 when not measured
	target         float64 // ms; 0 for none
	targetLabel    string
	baseIsBaseline bool // the baseline bar is the baseline's (not drawn when 0)
}

// latencyPanels collects the latency scenarios the suite ran.
func (s *SuiteReport) latencyPanels() []latencyPanel {
	var panels []latencyPanel
	for i, name := range s.order {
		var e2eTarget, ackTarget float64
		var e2eLabel, ackLabel string
		switch name {
		case "room-rate":
			e2eTarget, e2eLabel = 3, "aim ≤ 3 ms"
		case "dm", "dm-1":
			e2eTarget, e2eLabel, ackTarget, ackLabel = 2, "≤ 2 ms", 5, "≤ 5 ms"
		default:
			continue
		}
		rep := s.Reports[i]
		title := caseTitle(rep.Config)
		p, b := rep.result("parley"), rep.result("baseline")
		pick := func(r *Result, f func(r *Result) time.Duration) float64 {
			if r == nil {
				return 0
			}
			return ms(f(r))
		}
		pane := latencyPanel{title: title}
		for _, q := range []struct {
			label string
			f     func(r *Result) time.Duration
		}{
			{"p50", func(r *Result) time.Duration { return r.E2E.P50 }},
			{"p90", func(r *Result) time.Duration { return r.E2E.P90 }},
			{"p99", func(r *Result) time.Duration { return r.E2E.P99 }},
			{"p99.9", func(r *Result) time.Duration { return r.E2E.P999 }},
			{"ack p99", func(r *Result) time.Duration { return r.Ack.P99 }},
		} {
			g := latencyGroup{label: q.label, parley: pick(p, q.f), base: pick(b, q.f)}
			switch q.label {
			case "p99":
				g.target, g.targetLabel = e2eTarget, e2eLabel
			case "ack p99":
				g.target, g.targetLabel = ackTarget, ackLabel
			}
			pane.groups = append(pane.groups, g)
		}
		panels = append(panels, pane)
	}
	return panels
}

// LatencySVG draws the delivery latency percentiles (p50, p90, p99,
// p99.9) and the ack p99 of the latency scenarios, Parley beside the
// baseline, on a log axis in ms, with the targets as dashed lines.
func (s *SuiteReport) LatencySVG(w io.Writer) {
	panels := s.latencyPanels()
	const h = 500
	var c svg
	c.start(chartWidth, h, "Delivery latency: Parley and a bare gRPC fan-out server",
		"Latency percentiles in milliseconds, log scale, from the time each message was scheduled to its delivery, and the p99 of the send acknowledgement; lower is better.")
	c.text(24, 32, 19, "start", colorText, "600", "Delivery latency: Parley vs a bare gRPC fan-out server")
	c.text(24, 54, 13, "start", colorMuted, "normal", "Scheduled send → delivery, in ms on a log scale; lower is better."+s.quickNote())
	c.text(24, 72, 12, "start", colorMuted, "normal", s.shortMachine())
	c.legend(chartWidth-24, 100, [][2]string{{"Parley", colorParley}, {"baseline", colorBase}}, true)

	left, right, top, floor := 74.0, float64(chartWidth-24), 136.0, float64(h-92)
	if len(panels) == 0 {
		c.text(chartWidth/2, h/2, 14, "middle", colorMuted, "normal", "No latency scenario in this run (room-rate, dm, dm-1).")
		c.end(w)
		return
	}
	var vals []float64
	for _, p := range panels {
		for _, g := range p.groups {
			vals = append(vals, g.parley, g.base, g.target)
		}
	}
	ax := newLogAxis(vals, top, floor)

	// Grid and axis labels, across every panel.
	ticks, major := ax.ticks()
	for i, v := range ticks {
		y := ax.y(v)
		if major[i] {
			c.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", left, y, right, y, colorGrid)
			c.text(left-8, y+4, 11, "end", colorMuted, "normal", fmtAxisMs(v))
		} else {
			c.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="2 3"/>`+"\n", left, y, right, y, colorGrid)
			c.text(left-8, y+4, 10, "end", "#9ca3af", "normal", strconv0(v))
		}
	}
	c.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", left, floor, right, floor, colorMuted)

	const gap = 28.0
	pw := (right - left - gap*float64(len(panels)-1)) / float64(len(panels))
	for pi, p := range panels {
		x0 := left + float64(pi)*(pw+gap)
		c.text(x0+pw/2, top-16, 13, "middle", colorText, "600", p.title)
		gw := pw / float64(len(p.groups))
		bw := math.Min(26, gw*0.36)
		for gi, g := range p.groups {
			cx := x0 + gw*(float64(gi)+0.5)
			if gi == len(p.groups)-1 { // the ack group stands apart
				c.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1" stroke-dasharray="3 3"/>`+"\n", x0+gw*float64(gi), top, x0+gw*float64(gi), floor, colorGrid)
			}
			for _, bar := range []struct {
				series, label, color string
				v, x                 float64
			}{
				{"parley", "Parley", colorParley, g.parley, cx - bw - 1},
				{"baseline", "baseline", colorBase, g.base, cx + 1},
			} {
				if bar.v <= 0 {
					continue
				}
				y := ax.y(bar.v)
				c.f(`<rect class="bar %s" data-series="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="2" fill="%s"><title>%s %s %s: %s</title></rect>`+"\n",
					bar.series, bar.series, bar.x, y, bw, math.Max(floor-y, 1), bar.color, esc(p.title), bar.label, g.label, fmtMs(bar.v))
				c.text(bar.x+bw/2, y-4, 10, "middle", colorText, "normal", fmtBarMs(bar.v))
			}
			if g.target > 0 {
				// The target's value goes under the group's label, where no
				// bar can cover it.
				y := ax.y(g.target)
				c.f(`<line class="target" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="5 3"/>`+"\n",
					cx-gw*0.46, y, cx+gw*0.46, y, colorTarget)
				c.text(cx, floor+32, 11, "middle", colorTarget, "600", g.targetLabel)
			}
			c.text(cx, floor+17, 12, "middle", colorText, "normal", g.label)
		}
	}
	c.text(24, float64(h)-34, 11, "start", colorMuted, "normal",
		"p50 … p99.9: every delivery, timed from the open-loop schedule, so a server that stalls cannot hide the stall.")
	c.text(24, float64(h)-18, 11, "start", colorMuted, "normal",
		"ack p99: Parley acks once the group commit is on disk (fsync); the baseline stores nothing and acks at once.")
	c.end(w)
}

// shortMachine is the machine in a few words, for a chart's subtitle.
func (s *SuiteReport) shortMachine() string {
	where := "servers (child processes)"
	if strings.Contains(s.Where, "load generator's process") {
		where = "servers (in-process)"
	}
	txt := fmt.Sprintf("%d CPUs, client and %s on one machine, fsync on; %s", s.Machine.CPUs, where, s.Started.Format("2006-01-02"))
	if load, _, ok := strings.Cut(s.Machine.LoadAvg, " "); ok {
		// The machine's load says how far to trust the rest.
		txt += ", load average " + load + " at start"
	}
	return txt + "."
}

// quickNote marks a chart drawn from --quick sizes.
func (s *SuiteReport) quickNote() string {
	if s.Quick {
		return " --quick sizes: not a measurement."
	}
	return ""
}

// ThroughputSVG draws the open-loop room throughput, Parley beside the
// baseline, with Parley/baseline against the 0.9x target.
func (s *SuiteReport) ThroughputSVG(w io.Writer) {
	type pair struct {
		title        string
		parley, base float64
		target       bool
	}
	var rows []pair
	for _, r := range s.Rows {
		if r.Metric == "delivered/s" {
			rows = append(rows, pair{r.Scenario, r.ParleyValue, r.BaselineValue, r.Met != "-"})
		}
	}
	rowH := 96.0
	top := 124.0
	h := int(top + rowH*float64(max(len(rows), 1)) + 40)
	var c svg
	c.start(chartWidth, h, "Open-loop room throughput: Parley and a bare gRPC fan-out server",
		"Messages delivered per second to every subscriber of one room, senders as fast as the server takes them; higher is better. The target is 0.9 times the baseline.")
	c.text(24, 32, 19, "start", colorText, "600", "Room throughput at open-loop maximum")
	c.text(24, 54, 13, "start", colorMuted, "normal", "Messages delivered per second to all subscribers; higher is better."+s.quickNote())
	c.text(24, 72, 12, "start", colorMuted, "normal", s.shortMachine())
	c.legend(chartWidth-24, 100, [][2]string{{"Parley", colorParley}, {"baseline", colorBase}}, true)
	left, right := 24.0, float64(chartWidth-110)
	if len(rows) == 0 {
		c.text(chartWidth/2, top+30, 14, "middle", colorMuted, "normal", "No throughput scenario in this run (room-100, room-1000, room-10000).")
		c.end(w)
		return
	}
	for i, r := range rows {
		y := top + rowH*float64(i)
		scale := math.Max(r.parley, r.base)
		if scale <= 0 {
			scale = 1
		}
		x := func(v float64) float64 { return left + (right-left)*v/scale }
		c.text(left, y+14, 13, "start", colorText, "600", r.title)
		switch {
		case r.base > 0 && r.target:
			ratio := r.parley / r.base
			mark, color := "✓ met", "#15803d"
			if ratio < 0.9 {
				mark, color = "✗ not met", colorTarget
			}
			c.text(right+86, y+14, 13, "end", color, "600", fmt.Sprintf("%.2fx baseline  %s", ratio, mark))
		case r.base > 0:
			c.text(right+86, y+14, 13, "end", colorMuted, "600", fmt.Sprintf("%.2fx baseline  (no target)", r.parley/r.base))
		}
		for j, bar := range []struct {
			series, color string
			v             float64
		}{{"parley", colorParley, r.parley}, {"baseline", colorBase, r.base}} {
			by := y + 24 + float64(j)*26
			c.f(`<rect class="bar %s" data-series="%s" x="%.1f" y="%.1f" width="%.1f" height="22" rx="2" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				bar.series, bar.series, left, by, math.Max(x(bar.v)-left, 1), bar.color, esc(r.title), bar.series, fmtRate(bar.v))
			c.text(x(bar.v)+6, by+16, 12, "start", colorText, "normal", fmtRate(bar.v))
		}
		if r.base > 0 && r.target {
			tx := x(0.9 * r.base)
			c.f(`<line class="target" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2" stroke-dasharray="5 3"/>`+"\n", tx, y+20, tx, y+76, colorTarget)
		}
	}
	c.text(24, float64(h)-18, 11, "start", colorMuted, "normal",
		"Dashed line: the target, 0.9x the baseline's rate. The baseline is a bare grpc-go fan-out server: no auth, no log, no fsync.")
	c.end(w)
}
