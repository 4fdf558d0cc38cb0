package natstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// FreePorts hands out distinct ports outside the ephemeral range that can
// be bound.
func TestFreePorts(t *testing.T) {
	lo, hi := fixedRange()
	ports := FreePorts(t, 30)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < lo || p >= hi {
			t.Errorf("port %d outside %d-%d", p, lo, hi)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d: %v", p, err)
			continue
		}
		l.Close()
	}
	// Whatever the kernel hands a :0 listener is outside the span.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p := l.Addr().(*net.TCPAddr).Port; p >= lo && p < hi {
		t.Errorf("an ephemeral port (%d) is inside the span %d-%d", p, lo, hi)
	}
}

// A node whose port another process holds is reported as errPortTaken at
// once, which is what makes Start try other ports.
func TestNodeOnATakenPort(t *testing.T) {
	bin := Binary(t)
	ports := FreePorts(t, 2)
	held, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	dir := t.TempDir()
	n := &Node{
		Name:    "taken",
		t:       t,
		bin:     bin,
		dir:     dir,
		conf:    filepath.Join(dir, "nats.conf"),
		monitor: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\njetstream { store_dir: %q }\n", ports[0], ports[1], filepath.Join(dir, "js"))
	if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Stop()
	if err := n.waitReady(nil); !errors.Is(err, errPortTaken) {
		t.Fatalf("waitReady = %v, want errPortTaken", err)
	}
}
