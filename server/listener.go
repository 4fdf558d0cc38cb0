package server

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// userTimeout bounds how long unacknowledged data may sit on a connection
// before the kernel drops it. grpc-go sets TCP_USER_TIMEOUT itself from its
// keepalive settings, but only on connections it accepts; behind cmux it
// gets a wrapped conn and cannot, so the listener does it.
const userTimeout = 40 * time.Second

type userTimeoutListener struct{ net.Listener }

func (l userTimeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout/time.Millisecond))
			})
		}
	}
	return c, nil
}
