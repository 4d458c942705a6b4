package process

import (
	"testing"
	"time"
)

func TestRedisOptionsTimeouts(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
	t.Setenv("BASALT_REDIS_TIMEOUT", "")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]time.Duration{"dial": o.DialTimeout, "read": o.ReadTimeout,
		"write": o.WriteTimeout, "pool": o.PoolTimeout} {
		if got != 500*time.Millisecond {
			t.Errorf("RedisOptions() %s timeout = %v, want the 500ms default", name, got)
		}
	}

	t.Setenv("BASALT_REDIS_TIMEOUT", "250ms")
	t.Setenv("REDIS_URL", "redis://127.0.0.1:6379/0?read_timeout=2s")
	if c, err = FromEnv(); err != nil {
		t.Fatal(err)
	}
	if o, err = c.RedisOptions(); err != nil {
		t.Fatal(err)
	}
	if o.ReadTimeout != 2*time.Second || o.DialTimeout != 250*time.Millisecond {
		t.Errorf("RedisOptions() with read_timeout=2s in the URL and BASALT_REDIS_TIMEOUT=250ms: read %v, dial %v; want 2s, 250ms",
			o.ReadTimeout, o.DialTimeout)
	}

	t.Setenv("BASALT_REDIS_TIMEOUT", "soon")
	if _, err := FromEnv(); err == nil {
		t.Errorf("FromEnv() with BASALT_REDIS_TIMEOUT=soon = nil error, want one")
	}
}
