// Package api assembles Basalt's HTTP API: the Cinder Block Storage v3 API on huma v2. It holds
// the middleware (request ids, noauth tokens, microversions, the optional project segment), the
// one function that maps domain errors to Cinder faults, and thin handlers that decode a
// request, make one call to the control plane and encode the answer.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/basalt-storage/basalt"
	"github.com/basalt-storage/basalt/functions/control"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/google/uuid"
)

// Microversions this server implements. Clients negotiate down to MaxVersion, so every
// behaviour up to it is implemented.
var (
	MinVersion = Version{3, 0}
	MaxVersion = Version{3, 54}
)

// A Version is a microversion 3.N.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v >= 3.minor.
func (v Version) AtLeast(minor int) bool { return v.Major > 3 || (v.Major == 3 && v.Minor >= minor) }

func parseVersion(s string) (Version, bool) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 {
		return Version{}, false
	}
	return Version{a, b}, true
}

func (v Version) less(w Version) bool {
	return v.Major < w.Major || (v.Major == w.Major && v.Minor < w.Minor)
}

type reqInfo struct {
	version      Version
	projectInURL string // the project segment of the URL, "" when absent
	base         string // scheme://host of the request
}

type infoKey struct{}

func info(ctx context.Context) reqInfo {
	i, _ := ctx.Value(infoKey{}).(reqInfo)
	if i.version == (Version{}) {
		i.version = MinVersion
	}
	return i
}

// Server is the HTTP API.
type Server struct {
	plane   *control.Plane
	logger  *slog.Logger
	api     huma.API
	mux     *http.ServeMux
	handler http.Handler
	audit   *auditLog // nil: no audit log
}

// New assembles the API over plane.
func New(plane *control.Plane, logger *slog.Logger, opts ...Option) *Server {
	useCinderFaults()
	s := &Server{plane: plane, logger: logger, mux: http.NewServeMux()}
	for _, o := range opts {
		o(s)
	}
	cfg := huma.DefaultConfig("Basalt Block Storage API", "3")
	cfg.Info.Description = "The OpenStack Block Storage (Cinder) v3 API, as served by Basalt. " +
		"Every /v3/ path is also served with a project segment: /v3/{project_id}/..."
	cfg.CreateHooks = nil // no $schema links in bodies: clients compare shapes exactly
	cfg.DocsPath = ""
	cfg.OpenAPIPath = "/openapi"
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"noauth": {Type: "apiKey", In: "header", Name: "X-Auth-Token",
			Description: "user:project. The user admin is an administrator."},
	}
	cfg.Security = []map[string][]string{{"noauth": {}}}
	s.api = humago.New(s.mux, cfg)
	s.registerVersions()
	s.registerVolumes()
	s.registerTypes()
	s.registerServices()
	s.registerMessages()
	s.registerSnapshots()
	s.registerCompat()
	s.registerMetadata("volumes", "volume", metadataStore{get: s.plane.VolumeMetadata,
		set: s.plane.SetVolumeMetadata, del: s.plane.DeleteVolumeMetadata})
	s.registerQuotas()
	s.registerAttachments()
	s.registerManage()
	s.handler = s.middleware(s.idempotent(http.HandlerFunc(s.route)))
	return s
}

// OpenAPI returns the OpenAPI document of the API.
func (s *Server) OpenAPI() *huma.OpenAPI { return s.api.OpenAPI() }

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// collections are the first path segments after /v3/ that name a resource; any other segment in
// that place is a project id.
var collections = map[string]bool{
	"volumes": true, "types": true, "os-services": true, "scheduler-stats": true,
	"os-availability-zone": true, "messages": true, "snapshots": true, "attachments": true,
	"backups": true, "limits": true, "os-quota-sets": true, "qos-specs": true, "extensions": true,
	"os-deadletters": true, "scheduler-explain": true, "openapi.json": true, "openapi.yaml": true,
	"resource_filters": true, "manageable_volumes": true, "os-volume-manage": true,
}

// isCollection reports whether seg names a collection (served or not).
func isCollection(seg string) bool {
	_, ok := unimplemented[seg]
	return ok || collections[seg]
}

var requestIDRE = regexp.MustCompile(`^req-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// middleware handles what every request shares: the request id, noauth tokens, the
// microversion and the optional project segment.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := r.Header.Get("X-Openstack-Request-Id")
		if !requestIDRE.MatchString(rid) {
			rid = "req-" + uuid.NewString()
		}
		h := w.Header()
		h.Set("X-Openstack-Request-Id", rid)
		h.Set("X-Compute-Request-Id", rid)
		scheme := "http"
		if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
			scheme = "https"
		}
		ri := reqInfo{version: MinVersion, base: scheme + "://" + r.Host}
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			s.logger.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
				"request_id", rid, "duration", time.Since(start))
		}()

		path := r.URL.Path
		if path == "/v3" {
			http.Redirect(rec, r, "/v3/", http.StatusFound)
			return
		}
		if !strings.HasPrefix(path, "/v3/") {
			next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), infoKey{}, ri)))
			return
		}
		// Microversion (also echoed on errors).
		ver, ok, verr := negotiate(r.Header.Values("OpenStack-API-Version"))
		if verr != nil {
			writeFault(rec, verr.status, verr.msg)
			return
		}
		if ok {
			ri.version = ver
		}
		h.Set("OpenStack-API-Version", "volume "+ri.version.String())
		h.Add("Vary", "OpenStack-API-Version")

		// noauth: no token means "here is your token" (Cinder's noauth middleware).
		token := r.Header.Get("X-Auth-Token")
		if token == "" {
			user := r.Header.Get("X-Auth-User")
			if user == "" {
				user = "admin"
			}
			project := r.Header.Get("X-Auth-Project-Id")
			if project == "" {
				project = "admin"
			}
			h.Set("X-Auth-Token", user+":"+project)
			h.Set("X-Server-Management-Url", ri.base+path)
			rec.WriteHeader(http.StatusNoContent)
			return
		}
		user, project, _ := strings.Cut(token, ":")
		if project == "" {
			project = user
		}
		if user == "" {
			// A token must name a user: ":project" would act with no one's name on it.
			h.Set("WWW-Authenticate", `Keystone uri="noauth"`)
			writeFault(rec, http.StatusUnauthorized, "The request you have made requires authentication.")
			return
		}
		caller := control.Caller{UserID: user, ProjectID: project, Admin: user == "admin", RequestID: rid}

		// Optional project segment: /v3/{project_id}/<collection>...
		rest := strings.TrimPrefix(path, "/v3/")
		seg, tail, _ := strings.Cut(rest, "/")
		if seg != "" && !isCollection(seg) {
			if seg != project {
				writeFault(rec, http.StatusBadRequest, "Malformed request url")
				return
			}
			ri.projectInURL = seg
			r.URL.Path = "/v3/" + tail
			r.URL.RawPath = ""
		}
		ctx := control.WithCaller(context.WithValue(r.Context(), infoKey{}, ri), caller)
		if s.audit != nil && audited(r.Method, caller) {
			entry := AuditRecord{Time: start.UTC(), RequestID: rid, User: caller.UserID, Project: caller.ProjectID,
				Admin: caller.Admin, Method: r.Method, Path: r.URL.Path, Resource: auditResource(r.URL.Path),
				Action: peekAction(r)}
			defer func() {
				entry.Status = rec.status
				if entry.Status == 0 {
					entry.Status = http.StatusOK
				}
				entry.Outcome = outcome(entry.Status)
				s.audit.write(entry)
			}()
		}
		next.ServeHTTP(rec, r.WithContext(ctx))
	})
}

type versionError struct {
	status int
	msg    string
}

// negotiate reads the OpenStack-API-Version header: "volume 3.NN" or "volume latest", possibly
// in a comma-separated list. It reports whether a version was given.
func negotiate(values []string) (Version, bool, *versionError) {
	for _, hv := range values {
		for _, part := range strings.Split(hv, ",") {
			f := strings.Fields(part)
			if len(f) != 2 || f[0] != "volume" {
				continue
			}
			if f[1] == "latest" {
				return MaxVersion, true, nil
			}
			v, ok := parseVersion(f[1])
			if !ok {
				return Version{}, false, &versionError{http.StatusBadRequest,
					fmt.Sprintf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", f[1])}
			}
			if v.less(MinVersion) || MaxVersion.less(v) {
				return Version{}, false, &versionError{http.StatusNotAcceptable,
					fmt.Sprintf("Version %s is not supported by the API. Minimum is %s and maximum is %s.", v, MinVersion, MaxVersion)}
			}
			return v, true, nil
		}
	}
	return Version{}, false, nil
}

// route dispatches to huma's mux, answering unmatched paths with Cinder faults instead of
// ServeMux's plain text.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	_, pattern := s.mux.Handler(r)
	matched := pattern != "" &&
		!(pattern == "GET /" && r.URL.Path != "/") &&
		!(pattern == "GET /v3/" && r.URL.Path != "/v3/")
	if !matched {
		seg, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v3/"), "/")
		if what, ok := unimplemented[seg]; ok && strings.HasPrefix(r.URL.Path, "/v3/") {
			notImplemented(w, what)
			return
		}
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			if m == r.Method {
				continue
			}
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, p := s.mux.Handler(r2); p != "" && p != "GET /" && p != "GET /v3/" {
				writeFault(w, http.StatusMethodNotAllowed, "The method "+r.Method+" is not allowed for this resource.")
				return
			}
		}
		writeFault(w, http.StatusNotFound, "The resource could not be found.")
		return
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		ct := r.Header.Get("Content-Type")
		if ct != "" && !strings.HasPrefix(ct, "application/json") && r.ContentLength != 0 {
			writeFault(w, http.StatusUnsupportedMediaType, "Unsupported Content-Type")
			return
		}
		if ct == "" {
			r.Header.Set("Content-Type", "application/json")
		}
	}
	s.mux.ServeHTTP(w, r)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// faultNames maps an HTTP status to Cinder's fault key.
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
	405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
	501: "notImplemented", 503: "serviceUnavailable",
}

// Fault is Cinder's error body: {"<faultName>": {"code": N, "message": "..."}}.
type Fault struct {
	status int
	name   string
	// retryAfter is the Retry-After header, in seconds: "0" on overLimit faults (as Cinder's),
	// unavailableRetryAfter on serviceUnavailable faults.
	retryAfter string
	Code       int    `json:"code"`
	Message    string `json:"message"`
	// RetryAfter is set on overLimit faults.
	RetryAfter string `json:"retryAfter,omitempty"`
}

// unavailableRetryAfter is the Retry-After of a 503: a dependency (Redis, an agent) did not
// answer in time, and a retry a moment later may find it back.
const unavailableRetryAfter = "1"

// Error implements error.
func (f *Fault) Error() string { return f.Message }

// GetStatus implements huma.StatusError.
func (f *Fault) GetStatus() int { return f.status }

// GetHeaders implements huma.HeadersError: overLimit (as Cinder's) and serviceUnavailable
// faults carry Retry-After.
func (f *Fault) GetHeaders() http.Header {
	h := http.Header{}
	if f.retryAfter != "" {
		h.Set("Retry-After", f.retryAfter)
	}
	return h
}

// MarshalJSON wraps the fault in its name.
func (f *Fault) MarshalJSON() ([]byte, error) {
	type plain Fault
	return json.Marshal(map[string]*plain{f.name: (*plain)(f)})
}

// Schema describes the fault body for OpenAPI.
func (f *Fault) Schema(r huma.Registry) *huma.Schema {
	return &huma.Schema{Type: "object", Description: `A Cinder fault: {"<faultName>": {"code": N, "message": "..."}}`,
		AdditionalProperties: &huma.Schema{Type: "object", Properties: map[string]*huma.Schema{
			"code": {Type: "integer"}, "message": {Type: "string"}}}}
}

func newFault(status int, msg string) *Fault {
	if status == http.StatusUnprocessableEntity {
		status = http.StatusBadRequest
	}
	name, ok := faultNames[status]
	if !ok {
		name = "computeFault"
	}
	f := &Fault{status: status, name: name, Code: status, Message: msg}
	switch status {
	case http.StatusRequestEntityTooLarge:
		f.RetryAfter, f.retryAfter = "0", "0"
	case http.StatusServiceUnavailable:
		f.retryAfter = unavailableRetryAfter
	}
	return f
}

func writeFault(w http.ResponseWriter, status int, msg string) {
	f := newFault(status, msg)
	w.Header().Set("Content-Type", "application/json")
	for k, v := range f.GetHeaders() {
		w.Header()[k] = v
	}
	w.WriteHeader(f.status)
	_ = json.NewEncoder(w).Encode(f)
}

var setFaultShape sync.Once

// useCinderFaults makes huma's own errors (validation, body size, bad JSON) take Cinder's
// fault shape. huma exposes this hook only as a package variable; this is the one place
// Basalt sets it, once, before the first operation is registered.
func useCinderFaults() {
	setFaultShape.Do(func() { huma.NewError = cinderError })
}

func cinderError(status int, msg string, errs ...error) huma.StatusError {
	var parts []string
	for _, e := range errs {
		var d *huma.ErrorDetail
		if errors.As(e, &d) {
			loc := strings.TrimPrefix(strings.TrimPrefix(d.Location, "body."), "body")
			switch {
			case loc == "" && strings.Contains(d.Message, "invalid character"),
				loc == "" && strings.Contains(d.Message, "unexpected end"):
				parts = append(parts, "Malformed request body: "+d.Message)
			case loc == "":
				parts = append(parts, d.Message)
			default:
				parts = append(parts, fmt.Sprintf("Invalid input for field/attribute %s. Value: %v. %s", loc, d.Value, d.Message))
			}
		} else if e != nil {
			parts = append(parts, e.Error())
		}
	}
	if len(parts) > 0 {
		msg = strings.Join(parts, "; ")
	}
	if status == http.StatusRequestEntityTooLarge {
		msg = "Request is too large: " + msg
	}
	return newFault(status, msg)
}

// fault maps a domain error to its HTTP fault. It is the only such mapping.
func fault(err error) error {
	if err == nil {
		return nil
	}
	var f *Fault
	if errors.As(err, &f) {
		return f
	}
	status := http.StatusInternalServerError
	switch basalt.ErrorCode(err) {
	case basalt.EINVALID:
		status = http.StatusBadRequest
	case basalt.EFORBIDDEN:
		status = http.StatusForbidden
	case basalt.ENOTFOUND:
		status = http.StatusNotFound
	case basalt.ECONFLICT:
		status = http.StatusConflict
	case basalt.EOVERLIMIT:
		status = http.StatusRequestEntityTooLarge
	case basalt.EUNAVAILABLE:
		status = http.StatusServiceUnavailable
	}
	return newFault(status, basalt.ErrorMessage(err))
}
