package bench

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSuiteQuick runs the whole suite at --quick sizes with the servers in
// this process and checks the table and the files it writes: every row
// filled, ratios computed, the Markdown table and both SVGs well formed.
// It asserts nothing about speed: whether a target is met on a test
// machine means nothing.
func TestSuiteQuick(t *testing.T) {
	out := t.TempDir()
	var progress strings.Builder
	s, err := RunSuite(testCtx(t), SuiteOptions{Out: out, Quick: true, InProcess: true, Command: "parley-bench suite --quick", Progress: &progress}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.OK() {
		t.Fatalf("runs not clean: %q", s.Problems)
	}
	if len(s.Reports) != len(suiteCases) {
		t.Fatalf("%d reports for %d cases", len(s.Reports), len(suiteCases))
	}
	for _, name := range SuiteCases() {
		if !strings.Contains(progress.String(), "] "+name+": parley-bench ") || !strings.Contains(progress.String(), "] "+name+" done in ") {
			t.Errorf("no start and end progress lines for %s:\n%s", name, progress.String())
		}
	}

	cases := make(map[string]int)
	for _, r := range s.Rows {
		cases[r.Case]++
		if r.Scenario == "" || r.Metric == "" || r.Parley == "" || r.Target == "" {
			t.Errorf("row not filled: %+v", r)
		}
		if r.Met != "yes" && r.Met != "no" && r.Met != "-" {
			t.Errorf("row %s/%s: met %q", r.Case, r.Metric, r.Met)
		}
		hasBaseline := r.Case != "log" && r.Case != "history"
		if hasBaseline && r.Baseline == "" {
			t.Errorf("row %s/%s has no baseline figure", r.Case, r.Metric)
		}
		if !hasBaseline || r.Metric == "lost / duplicated" {
			continue
		}
		// In one process the RSS of idle streams is noise at this size and
		// may not grow at all; a ratio needs a positive baseline.
		if !r.HasRatio() && !(r.Case == "idle" && r.BaselineValue <= 0) {
			t.Errorf("row %s/%s: no ratio of %q to %q", r.Case, r.Metric, r.Parley, r.Baseline)
		}
		if r.HasRatio() && (math.IsNaN(r.RatioValue) || math.IsInf(r.RatioValue, 0) || r.RatioValue <= 0) {
			t.Errorf("row %s/%s: ratio %v", r.Case, r.Metric, r.RatioValue)
		}
	}
	for _, name := range SuiteCases() {
		if cases[name] == 0 {
			t.Errorf("no row for %s", name)
		}
	}
	byCase := func(name string) *Report {
		t.Helper()
		i := slices.Index(s.order, name)
		if i < 0 {
			t.Fatalf("no report for %s in %v", name, s.order)
		}
		return s.Reports[i]
	}
	for _, res := range byCase("room-1000").Results { // open loop, --messages 300
		if res.Sent != 300 || res.Acked != 300 || res.Delivered != 300*20 {
			t.Errorf("%s: sent %d, acked %d, delivered %d; want 300, 300 and 6000", res.Target, res.Sent, res.Acked, res.Delivered)
		}
	}
	if l := byCase("log").Results[0].Log; l == nil || l.Commits == 0 || l.PerCommit < 1 || l.AckedPerSec <= 0 {
		t.Errorf("log result %+v", l)
	}

	// bench.md: the machine line, the command, and a table with a line per
	// row, seven cells each.
	md := readFile(t, filepath.Join(out, "bench.md"))
	for _, want := range []string{"CPUs", "load average at start", "parley-bench suite --quick", "| scenario | metric | Parley | baseline | ratio | target | met |", "latency.svg",
		"- room-rate, round 1, parley first: e2e p99", "- room-rate, round 2, baseline first: e2e p99"} {
		if !strings.Contains(md, want) {
			t.Errorf("bench.md lacks %q:\n%s", want, md)
		}
	}
	var table []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") {
			table = append(table, line)
		}
	}
	if len(table) != len(s.Rows)+2 {
		t.Errorf("bench.md table has %d lines, want %d rows plus header and rule", len(table), len(s.Rows))
	}
	for _, line := range table {
		if cells := strings.Count(line, "|") - strings.Count(line, `\|`); cells != 8 {
			t.Errorf("bench.md line with %d bars, want 8: %s", cells, line)
		}
	}

	var back SuiteReport
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out, "bench.json"))), &back); err != nil {
		t.Fatalf("bench.json: %v", err)
	}
	if len(back.Rows) != len(s.Rows) || len(back.Reports) != len(s.Reports) {
		t.Errorf("bench.json has %d rows and %d reports, want %d and %d", len(back.Rows), len(back.Reports), len(s.Rows), len(s.Reports))
	}

	lat := parseSVG(t, filepath.Join(out, "latency.svg"))
	// Three panels (room at a rate, dm, dm-1) of five groups, a bar per
	// target each.
	if lat.bars["parley"] != 15 || lat.bars["baseline"] != 15 {
		t.Errorf("latency.svg bars: %v, want 15 per target", lat.bars)
	}
	if lat.targets != 5 {
		t.Errorf("latency.svg has %d target lines, want 5 (room p99, dm and dm-1 p99 and ack p99)", lat.targets)
	}
	for _, want := range []string{"p50", "p90", "p99", "p99.9", "ack p99", "Parley", "baseline", "target", "1 ms"} {
		if !lat.texts[want] {
			t.Errorf("latency.svg has no text %q", want)
		}
	}
	if lat.title == "" {
		t.Error("latency.svg has no title")
	}
	tp := parseSVG(t, filepath.Join(out, "throughput.svg"))
	// room-10000 is drawn without a target line.
	if tp.bars["parley"] != 3 || tp.bars["baseline"] != 3 || tp.targets != 2 {
		t.Errorf("throughput.svg: bars %v, %d target lines; want 3 bars per series and 2 target lines", tp.bars, tp.targets)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// svgSummary is what a test checks in a chart.
type svgSummary struct {
	title   string
	bars    map[string]int // by data-series
	targets int
	texts   map[string]bool
}

// parseSVG decodes an SVG file with encoding/xml, which fails on anything
// not well formed, and counts its bars, target lines and texts.
func parseSVG(t *testing.T, path string) svgSummary {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum := svgSummary{bars: make(map[string]int), texts: make(map[string]bool)}
	d := xml.NewDecoder(f)
	var stack []string
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
				if tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("%s: root namespace %q", path, tok.Name.Space)
				}
			}
			stack = append(stack, tok.Name.Local)
			attr := func(name string) string {
				for _, a := range tok.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			switch tok.Name.Local {
			case "rect":
				if s := attr("data-series"); s != "" {
					sum.bars[s]++
				}
			case "line":
				if attr("class") == "target" {
					sum.targets++
				}
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				continue
			}
			txt := strings.TrimSpace(string(tok))
			switch stack[len(stack)-1] {
			case "text":
				sum.texts[txt] = true
			case "title":
				if len(stack) == 2 {
					sum.title = txt
				}
			}
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	return sum
}

// TestSuiteArgs checks the suite's command line: a case that does not
// exist is a usage error, and --help is not an error.
func TestSuiteArgs(t *testing.T) {
	var stderr strings.Builder
	if code := Main(testCtx(t), []string{"suite", "--only", "room-100,nope"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "nope") {
		t.Errorf("--only nope: exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := Main(testCtx(t), []string{"suite", "--help"}, io.Discard, &stderr); code != 0 || !strings.Contains(stderr.String(), "room-1000") {
		t.Errorf("--help: exit %d, stderr %q", code, stderr.String())
	}
	if code := Main(testCtx(t), []string{"suite", "extra"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("an extra argument: exit %d, want 2", code)
	}
}

func TestFmtInt(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 123456: "123,456", 10000000: "10,000,000", -1234: "-1,234"} {
		if got := fmtInt(n); got != want {
			t.Errorf("fmtInt(%d) = %q, want %q", n, got, want)
		}
	}
}
