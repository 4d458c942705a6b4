package api_test

import (
	"bytes"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/basalt-storage/basalt/functions/api"
)

var update = flag.Bool("update", false, "rewrite openapi/openapi.yaml")

// TestOpenAPIIsCurrent fails when openapi/openapi.yaml differs from what the code emits; run
// `make openapi` (or this test with -update) after changing the API.
func TestOpenAPIIsCurrent(t *testing.T) {
	got, err := api.New(nil, slog.New(slog.DiscardHandler)).OpenAPI().YAML()
	if err != nil {
		t.Fatalf("OpenAPI().YAML() = %v", err)
	}
	path := filepath.Join("..", "..", "openapi", "openapi.yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (run make openapi)", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run make openapi and commit it", path)
	}
	for _, p := range []string{"/v3/volumes", "/v3/volumes/{volume_id}", "/v3/types", "/v3/os-services", "/v3/scheduler-stats/get_pools", "/v3/messages"} {
		if !bytes.Contains(got, []byte(p+":")) {
			t.Errorf("the OpenAPI document lacks path %s", p)
		}
	}
}
