package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/basalt-storage/basalt"
	"github.com/danielgtaylor/huma/v2"
)

// MetadataOutput is a resource's whole metadata.
type MetadataOutput struct {
	// ETag identifies this version of the metadata (3.15+), for If-Match on replace.
	ETag string `header:"ETag"`
	Body struct {
		Metadata map[string]string `json:"metadata"`
	}
}

// MetadataInput sets metadata.
type MetadataInput struct {
	ID      string `path:"id"`
	IfMatch string `header:"If-Match" doc:"replace only if the metadata's ETag still matches (3.15+)"`
	Body    struct {
		Metadata map[string]string `json:"metadata"`
	}
}

// MetadataIDInput names a resource.
type MetadataIDInput struct {
	ID string `path:"id"`
}

// MetaKeyInput names one metadata item.
type MetaKeyInput struct {
	ID  string `path:"id"`
	Key string `path:"key"`
}

// MetaItem is {"meta": {key: value}}.
type MetaItem struct {
	Meta map[string]string `json:"meta"`
}

// MetaItemOutput is one metadata item.
type MetaItemOutput struct {
	Body MetaItem
}

// MetaItemInput sets one metadata item.
type MetaItemInput struct {
	ID   string `path:"id"`
	Key  string `path:"key"`
	Body MetaItem
}

// metadataStore is what a resource offers for its metadata API.
type metadataStore struct {
	get func(ctx context.Context, id string) (map[string]string, error)
	set func(ctx context.Context, id string, md map[string]string, replace bool) (map[string]string, error)
	del func(ctx context.Context, id, key string) error
}

// registerMetadata registers Cinder's six metadata routes under /v3/<coll>/{id}/metadata.
func (s *Server) registerMetadata(coll, noun string, m metadataStore) {
	tag := []string{coll}
	base := "/v3/" + coll + "/{id}/metadata"
	out := func(ctx context.Context, md map[string]string) *MetadataOutput {
		o := &MetadataOutput{}
		o.Body.Metadata = md
		if o.Body.Metadata == nil {
			o.Body.Metadata = map[string]string{}
		}
		if info(ctx).version.AtLeast(15) {
			o.ETag = etag(o.Body.Metadata)
		}
		return o
	}
	huma.Register(s.api, huma.Operation{OperationID: "list-" + noun + "-metadata", Method: http.MethodGet, Path: base,
		Summary: "Show a " + noun + "'s metadata", Tags: tag},
		func(ctx context.Context, in *MetadataIDInput) (*MetadataOutput, error) {
			md, err := m.get(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			return out(ctx, md), nil
		})
	for _, x := range []struct {
		method, verb string
		replace      bool
	}{{http.MethodPost, "merge", false}, {http.MethodPut, "replace", true}} {
		huma.Register(s.api, huma.Operation{OperationID: x.verb + "-" + noun + "-metadata", Method: x.method, Path: base,
			Summary: "Create or " + x.verb + " a " + noun + "'s metadata", Tags: tag},
			func(ctx context.Context, in *MetadataInput) (*MetadataOutput, error) {
				if in.Body.Metadata == nil {
					return nil, fault(basalt.Errorf(basalt.EINVALID, "Malformed request body: metadata is required."))
				}
				if x.replace && in.IfMatch != "" && info(ctx).version.AtLeast(15) {
					have, err := m.get(ctx, in.ID)
					if err != nil {
						return nil, fault(err)
					}
					if strings.Trim(in.IfMatch, `"`) != etag(have) {
						return nil, newFault(http.StatusPreconditionFailed, "The metadata changed since it was read: If-Match does not match its ETag.")
					}
				}
				md, err := m.set(ctx, in.ID, in.Body.Metadata, x.replace)
				if err != nil {
					return nil, fault(err)
				}
				return out(ctx, md), nil
			})
	}
	huma.Register(s.api, huma.Operation{OperationID: "show-" + noun + "-metadata-item", Method: http.MethodGet, Path: base + "/{key}",
		Summary: "Show one metadata item of a " + noun, Tags: tag},
		func(ctx context.Context, in *MetaKeyInput) (*MetaItemOutput, error) {
			md, err := m.get(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			v, ok := md[in.Key]
			if !ok {
				return nil, fault(basalt.Errorf(basalt.ENOTFOUND, "Metadata item was not found"))
			}
			return &MetaItemOutput{Body: MetaItem{Meta: map[string]string{in.Key: v}}}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "update-" + noun + "-metadata-item", Method: http.MethodPut, Path: base + "/{key}",
		Summary: "Set one metadata item of a " + noun, Tags: tag},
		func(ctx context.Context, in *MetaItemInput) (*MetaItemOutput, error) {
			if _, ok := in.Body.Meta[in.Key]; !ok || len(in.Body.Meta) != 1 {
				return nil, fault(basalt.Errorf(basalt.EINVALID, "Request body and URI mismatch"))
			}
			if _, err := m.set(ctx, in.ID, in.Body.Meta, false); err != nil {
				return nil, fault(err)
			}
			return &MetaItemOutput{Body: in.Body}, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-" + noun + "-metadata-item", Method: http.MethodDelete, Path: base + "/{key}",
		Summary: "Delete one metadata item of a " + noun, Tags: tag, DefaultStatus: http.StatusOK},
		func(ctx context.Context, in *MetaKeyInput) (*struct{}, error) {
			return nil, fault(m.del(ctx, in.ID, in.Key))
		})
}

// etag fingerprints metadata independently of key order.
func etag(md map[string]string) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%q=%q\n", k, md[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}
