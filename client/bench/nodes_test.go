package bench

import (
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseServers(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		// One server: its gRPC target as given, as before clusters.
		{in: "127.0.0.1:9090", want: []string{"127.0.0.1:9090"}},
		{in: ":9090", want: []string{":9090"}},
		{in: "dns:///chat.example:443", want: []string{"dns:///chat.example:443"}},
		// A cluster: host:port each.
		{in: "h1:8081,h2:8082,h3:8083", want: []string{"h1:8081", "h2:8082", "h3:8083"}},
		{in: " h1:8081 , h2:8082", want: []string{"h1:8081", "h2:8082"}},
		{in: "[::1]:8081,10.0.0.2:8081", want: []string{"[::1]:8081", "10.0.0.2:8081"}},
		{in: ":8081,:8082", want: []string{":8081", ":8082"}},
		{in: "", wantErr: "no address"},
		{in: "h1:8081,", wantErr: "empty address"},
		{in: "h1:8081,,h2:8082", wantErr: "empty address"},
		{in: "h1,h2:8082", wantErr: "missing port"},
		{in: "h1:http,h2:8082", wantErr: "bad port"},
		{in: "h1:0,h2:8082", wantErr: "bad port"},
		{in: "h1:70000,h2:8082", wantErr: "bad port"},
		{in: "h1:8081,h1:8081", wantErr: "given twice"},
		{in: "h1:8081 h2:8082,h3:8083", wantErr: "too many colons"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseServers(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseServers(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseServers(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseArgsServers(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantPID  int
		wantPIDs []int
		wantErr  bool
	}{
		{name: "one server", args: []string{"dm", "--server", "h1:8081"}},
		{name: "one server, one pid", args: []string{"dm", "--server", "h1:8081", "--server-pid", "42"}, wantPID: 42},
		{name: "cluster", args: []string{"dm", "--server", "h1:8081,h2:8082,h3:8083"}},
		{name: "cluster, pids", args: []string{"dm", "--server", "h1:8081,h2:8082", "--server-pid", "42, 43"}, wantPID: 42, wantPIDs: []int{42, 43}},
		{name: "bad address", args: []string{"dm", "--server", "h1:8081,h2"}, wantErr: true},
		{name: "bad pid", args: []string{"dm", "--server", "h1:8081", "--server-pid", "42,x"}, wantErr: true},
		{name: "zero pid", args: []string{"dm", "--server", "h1:8081", "--server-pid", "0"}, wantErr: true},
		{name: "pid without server", args: []string{"dm", "--server-pid", "42"}, wantErr: true},
		{name: "spawn and cluster", args: []string{"dm", "--spawn", "--server", "h1:8081,h2:8082"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseArgs(tc.args, io.Discard)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseArgs(%q) succeeded: %+v", tc.args, c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ServerPID != tc.wantPID || !slices.Equal(c.ServerPIDs, tc.wantPIDs) {
				t.Fatalf("pid %d, pids %v; want %d, %v", c.ServerPID, c.ServerPIDs, tc.wantPID, tc.wantPIDs)
			}
		})
	}
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name   string
		roles  []string
		counts []int
		nodes  int
		want   []int // node of each user, in name order
	}{
		{name: "one server", roles: []string{"a", "b"}, counts: []int{3, 3}, nodes: 1, want: []int{0, 0, 0, 0, 0, 0}},
		{name: "no nodes is one", roles: []string{"s", "u"}, counts: []int{1, 2}, nodes: 0, want: []int{0, 0, 0}},
		// dm: pair j is a_j and b_j, on nodes j and j+1.
		{name: "dm on two nodes", roles: []string{"a", "b"}, counts: []int{3, 3}, nodes: 2, want: []int{0, 1, 0, 1, 0, 1}},
		{name: "dm on three nodes", roles: []string{"a", "b"}, counts: []int{4, 4}, nodes: 3, want: []int{0, 1, 2, 0, 1, 2, 0, 1}},
		// room: senders, then subscribers, each going round.
		{name: "room on three nodes", roles: []string{"s", "u"}, counts: []int{2, 5}, nodes: 3, want: []int{0, 1, 0, 1, 2, 0, 1}},
		{name: "idle on three nodes", roles: []string{"i"}, counts: []int{4}, nodes: 3, want: []int{0, 1, 2, 0}},
		// history: the filler and the live sender on node 0, the
		// catching-up subscribers from node 1.
		{name: "history on three nodes", roles: []string{"f", "l", "h"}, counts: []int{1, 1, 3}, nodes: 3, want: []int{0, 0, 1, 2, 0}},
		{name: "more nodes than users", roles: []string{"a", "b"}, counts: []int{1, 1}, nodes: 5, want: []int{0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := place(tc.roles, tc.counts, tc.nodes)
			got := make([]int, len(ps))
			next := make(map[int]int)
			for i, p := range ps {
				got[i] = p.node
				// Ranks count a node's users from 0, in name order.
				if p.rank != next[p.node] {
					t.Fatalf("user %d on node %d has rank %d, want %d", i, p.node, p.rank, next[p.node])
				}
				next[p.node]++
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("nodes %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDMPairsCrossNodes(t *testing.T) {
	for nodes := 2; nodes <= 5; nodes++ {
		const pairs = 50
		ps := place([]string{"a", "b"}, []int{pairs, pairs}, nodes)
		for j := range pairs {
			if ps[j].node == ps[pairs+j].node {
				t.Fatalf("%d nodes: pair %d has both members on node %d", nodes, j, ps[j].node)
			}
		}
	}
}

func TestShare(t *testing.T) {
	tests := []struct{ total, users, n, want int }{
		{total: 100, users: 100, n: 100, want: 100}, // one node: all of it
		{total: 64, users: 110, n: 110, want: 64},
		{total: 64, users: 37, n: 110, want: 22}, // rounded up
		{total: 100, users: 34, n: 100, want: 34},
		{total: 10, users: 1, n: 100, want: 1}, // at least one
		{total: 64, users: 2, n: 3, want: 2},   // at most one per user
		{total: 64, users: 0, n: 3, want: 0},
	}
	for _, tc := range tests {
		if got := share(tc.total, tc.users, tc.n); got != tc.want {
			t.Errorf("share(%d, %d, %d) = %d, want %d", tc.total, tc.users, tc.n, got, tc.want)
		}
	}
}

// TestDialPerNode checks that every user's connections, for its stream and
// its setup calls, go to the node it was placed on. Connections are made
// lazily, so the addresses need no server.
func TestDialPerNode(t *testing.T) {
	tests := []struct {
		name   string
		addrs  []string
		roles  []string
		counts []int
		conns  int
		want   int // connections for the users
	}{
		{name: "one server", addrs: []string{"n0:1"}, roles: []string{"a", "b"}, counts: []int{3, 3}, want: 6},
		{name: "dm on three nodes", addrs: []string{"n0:1", "n1:2", "n2:3"}, roles: []string{"a", "b"}, counts: []int{5, 5}, want: 10},
		{name: "room on three nodes, shared connections", addrs: []string{"n0:1", "n1:2", "n2:3"}, roles: []string{"s", "u"}, counts: []int{2, 10}, conns: 4, want: 5}, // 2+2+1: shares round up
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(Config{Conns: tc.conns, Concurrency: 4}, &target{addrs: tc.addrs})
			t.Cleanup(r.close)
			r.place = place(tc.roles, tc.counts, len(tc.addrs))
			if err := r.dial(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			if len(r.clients) != tc.want {
				t.Fatalf("%d connections, want %d", len(r.clients), tc.want)
			}
			for i, p := range r.place {
				want := tc.addrs[p.node]
				if got := r.conn(i).Target(); got != want {
					t.Fatalf("user %d: stream connection to %s, want %s", i, got, want)
				}
				if got := r.setupConn(i).Target(); got != want {
					t.Fatalf("user %d: setup connection to %s, want %s", i, got, want)
				}
			}
		})
	}
}

// TestScenariosOverTwoAddresses runs dm and room with users spread over
// two addresses of one in-process server, the path a cluster takes.
func TestScenariosOverTwoAddresses(t *testing.T) {
	srv, dir, err := startParley(false, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopParley(srv, dir) })
	_, port, err := net.SplitHostPort(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := net.LookupHost("localhost"); err != nil {
		t.Skip("localhost does not resolve:", err)
	}
	servers := "127.0.0.1:" + port + ",localhost:" + port
	pids := []int{os.Getpid(), os.Getpid()}
	for _, cfg := range []Config{
		{Scenario: "dm", Pairs: 3, Rate: 600, Duration: 100 * time.Millisecond},
		{Scenario: "room", Subs: 5, Senders: 2, Rate: 1000, Duration: 100 * time.Millisecond},
	} {
		t.Run(cfg.Scenario, func(t *testing.T) {
			cfg.Server, cfg.ServerPID, cfg.ServerPIDs, cfg.Drain = servers, pids[0], pids, 10*time.Second
			rep := Run(testCtx(t), cfg, io.Discard)
			if len(rep.Results) != 1 {
				t.Fatalf("%d results", len(rep.Results))
			}
			res := rep.Results[0]
			checkClean(t, res)
			if res.Sent == 0 || res.Where != "external, 2 nodes" || res.Addr != servers {
				t.Fatalf("sent %d, where %q, addr %q", res.Sent, res.Where, res.Addr)
			}
			if res.Resources == nil || res.Resources.Scope != "2 server processes, summed" {
				t.Fatalf("resources %+v", res.Resources)
			}
		})
	}
}

func TestReadProcs(t *testing.T) {
	if runtime.GOOS == "linux" {
		one := readProc(0)
		two := readProcs([]int{0, os.Getpid()})
		if !two.valid || two.rss < one.rss || two.cpu < one.cpu {
			t.Fatalf("this process twice: %+v; once: %+v", two, one)
		}
	}
	if s := readProcs([]int{0, 1 << 30}); s.valid {
		t.Fatal("a sum with a missing process is valid")
	}
}
