package api

import (
	"context"
	"net/http"

	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
)

func callerAdmin(ctx context.Context) bool { return control.CallerFrom(ctx).Admin }

// VersionLink is a link of the versions document.
type VersionLink struct {
	Rel  string `json:"rel"`
	Type string `json:"type,omitempty"`
	Href string `json:"href"`
}

// MediaType is a media type of the versions document.
type MediaType struct {
	Base string `json:"base"`
	Type string `json:"type"`
}

// APIVersion is one entry of the versions document.
type APIVersion struct {
	ID         string        `json:"id"`
	Status     string        `json:"status"`
	Version    string        `json:"version"`
	MinVersion string        `json:"min_version"`
	Updated    string        `json:"updated"`
	Links      []VersionLink `json:"links"`
	MediaTypes []MediaType   `json:"media-types"`
}

// VersionsOutput is the versions document.
type VersionsOutput struct {
	Body struct {
		Versions []APIVersion `json:"versions"`
	}
}

func versions(ctx context.Context) *VersionsOutput {
	out := &VersionsOutput{}
	out.Body.Versions = []APIVersion{{
		ID: "v3.0", Status: "CURRENT", Version: MaxVersion.String(), MinVersion: MinVersion.String(),
		Updated: "2026-11-22T00:00:00Z",
		Links: []VersionLink{
			{Rel: "describedby", Type: "text/html", Href: "https://docs.openstack.org/"},
			{Rel: "self", Href: info(ctx).base + "/v3/"},
		},
		MediaTypes: []MediaType{{Base: "application/json", Type: "application/vnd.openstack.volume+json;version=3"}},
	}}
	return out
}

func (s *Server) registerVersions() {
	huma.Register(s.api, huma.Operation{OperationID: "list-versions", Method: http.MethodGet, Path: "/",
		Summary: "List API versions", Tags: []string{"versions"}, DefaultStatus: http.StatusMultipleChoices,
		Security: []map[string][]string{}},
		func(ctx context.Context, _ *struct{}) (*VersionsOutput, error) { return versions(ctx), nil })
	huma.Register(s.api, huma.Operation{OperationID: "show-version", Method: http.MethodGet, Path: "/v3/",
		Summary: "Show API v3 details", Tags: []string{"versions"}},
		func(ctx context.Context, _ *struct{}) (*VersionsOutput, error) { return versions(ctx), nil })
}
