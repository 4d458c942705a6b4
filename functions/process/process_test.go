package process

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/basalt-storage/basalt/events/redistest"
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
	for name, got := range map[string]time.Duration{"dial": o.Single.DialTimeout, "read": o.Single.ReadTimeout,
		"write": o.Single.WriteTimeout, "pool": o.Single.PoolTimeout} {
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
	if o.Single.ReadTimeout != 2*time.Second || o.Single.DialTimeout != 250*time.Millisecond {
		t.Errorf("RedisOptions() with read_timeout=2s in the URL and BASALT_REDIS_TIMEOUT=250ms: read %v, dial %v; want 2s, 250ms",
			o.Single.ReadTimeout, o.Single.DialTimeout)
	}

	// A Cluster is named by its nodes: the URL's host and repeated addr parameters.
	t.Setenv("REDIS_URL", "redis+cluster://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002&read_timeout=2s")
	if c, err = FromEnv(); err != nil {
		t.Fatal(err)
	}
	if o, err = c.RedisOptions(); err != nil {
		t.Fatal(err)
	}
	if o.Single != nil || o.Cluster == nil {
		t.Fatalf("RedisOptions() for a redis+cluster:// URL = %+v, want Cluster options", o)
	}
	if want := []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}; !slices.Equal(o.Cluster.Addrs, want) {
		t.Errorf("cluster nodes = %v, want %v", o.Cluster.Addrs, want)
	}
	if o.Cluster.ReadTimeout != 2*time.Second || o.Cluster.DialTimeout != 250*time.Millisecond {
		t.Errorf("cluster timeouts: read %v, dial %v; want 2s from the URL, 250ms from BASALT_REDIS_TIMEOUT",
			o.Cluster.ReadTimeout, o.Cluster.DialTimeout)
	}
	t.Setenv("REDIS_URL", "redis+cluster://127.0.0.1:7000?no_such_option=1")
	if c, err = FromEnv(); err == nil {
		if _, err = c.RedisOptions(); err == nil {
			t.Errorf("RedisOptions() with an unknown cluster URL parameter = nil error, want one")
		}
	}

	t.Setenv("BASALT_REDIS_TIMEOUT", "soon")
	if _, err := FromEnv(); err == nil {
		t.Errorf("FromEnv() with BASALT_REDIS_TIMEOUT=soon = nil error, want one")
	}
}

// TestMetadataCapsFromEnv: BASALT_MAX_METADATA_ITEMS and BASALT_MAX_EXTRA_SPECS reach the
// control plane; a value that is not a positive integer is an error.
func TestMetadataCapsFromEnv(t *testing.T) {
	t.Setenv("BASALT_MAX_METADATA_ITEMS", "7")
	t.Setenv("BASALT_MAX_EXTRA_SPECS", "9")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if pc := c.NewPlane(nil, nil, nil).Config(); pc.MaxMetadataItems != 7 || pc.MaxExtraSpecs != 9 {
		t.Errorf("plane caps = %d, %d; want 7, 9 from the environment", pc.MaxMetadataItems, pc.MaxExtraSpecs)
	}
	t.Setenv("BASALT_MAX_METADATA_ITEMS", "0")
	if _, err := FromEnv(); err == nil {
		t.Errorf("FromEnv() with BASALT_MAX_METADATA_ITEMS=0 = nil error, want one")
	}
}

// TestAPIRefusesUnaskedNoauth: the api serves without authentication only when BASALT_AUTH
// says noauth; unset, or a mode not built yet, it does not start, and says why.
func TestAPIRefusesUnaskedNoauth(t *testing.T) {
	rs := redistest.Start(t)
	for _, c := range []struct{ auth, want string }{
		{"", "BASALT_AUTH is not set"},
		{"keystone", "not available yet"},
		{"ldap", "want noauth"},
	} {
		cfg := Config{RedisURL: rs.URL(), Listen: "127.0.0.1:0", Auth: c.auth}
		cfg.setDefaults()
		opts, err := cfg.RedisOptions()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = RunAPI(ctx, cfg, opts, slog.New(slog.DiscardHandler), func(string) { t.Errorf("BASALT_AUTH=%q: the api listened", c.auth) })
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RunAPI with BASALT_AUTH=%q = %v, want an error saying %q", c.auth, err, c.want)
		}
	}
}
