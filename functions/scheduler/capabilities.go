package scheduler

import (
	"slices"
	"strconv"
	"strings"

	"github.com/basalt-storage/basalt"
)

// CapabilitiesFilter passes pools whose capabilities satisfy every extra spec of the request's
// volume type (capabilities_filter.py and extra_specs_ops.py). Keys scoped with anything but
// "capabilities:" are ignored; "capabilities:" is stripped and the rest walked through nested
// capability dicts on ':'; a missing key fails. List values pass when any element matches.
// The first word of a spec value may be an operator:
//
//	=                     float(value) >= float(operand) (sic)
//	== != >= <=           float comparison
//	s== s!= s< s<= s> s>= string comparison
//	<in>                  operand is a substring (or element, or dict key) of value
//	<is>                  bool_from_string(value) is bool_from_string(operand)
//	<or> a <or> b ...     value is one of the string words a, b, ...
//	anything else         value == the whole spec value, no coercion (a bool or a number
//	                      never equals a string)
//
// Only the first word after an operator counts. A null value fails every operator; so does a
// value an operator cannot convert. An extend of an attached volume fails on a pool that
// reports online_extend_support false. It is safe for concurrent use.
type CapabilitiesFilter struct{}

var _ Filter = CapabilitiesFilter{}

// Name returns "CapabilitiesFilter".
func (CapabilitiesFilter) Name() string { return "CapabilitiesFilter" }

// Fits reports whether p satisfies r.Type's extra specs.
func (f CapabilitiesFilter) Fits(r *Request, p *basalt.Pool) (bool, string) {
	return fitsOne(f, newQuery(r, ratioConfig{}), p)
}

func (CapabilitiesFilter) pass(q *query, i int) bool {
	if q.onlineExt != nil && noOnlineExtend(q.onlineExt.vals[i]) {
		return false
	}
	for j := range q.specs {
		if !q.verdicts[j][q.cols[j].codes[i]] {
			return false
		}
	}
	return true
}

func (CapabilitiesFilter) why(q *query, i int) string {
	if q.onlineExt != nil && noOnlineExtend(q.onlineExt.vals[i]) {
		return "online_extend_support is false and the volume is attached"
	}
	for j := range q.specs {
		sp, val := &q.specs[j], q.cols[j].vals[i]
		if _, absent := val.(absentT); absent {
			return "missing capability " + strconv.Quote(sp.key)
		}
		if !sp.matchAny(val) {
			return sp.key + " " + showCap(val) + " does not match " + strconv.Quote(sp.req)
		}
	}
	return ""
}

// noOnlineExtend reports whether an online_extend_support value forbids extending an
// attached volume: only the boolean false does.
func noOnlineExtend(v any) bool {
	ok, isBool := v.(bool)
	return isBool && !ok
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case basalt.Capabilities:
		return m, true
	}
	return nil, false
}

// showCap formats a capability value for a reason, Python-like.
func showCap(v any) string {
	if l, ok := v.([]any); ok {
		parts := make([]string, len(l))
		for i, e := range l {
			parts[i] = showCap(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	switch v := v.(type) {
	case bool:
		if v {
			return "True"
		}
		return "False"
	}
	return show(v)
}

// op is an extra-spec operator.
type op uint8

const (
	opEqual   op = iota // no operator: exact equality with the whole spec value
	opAtLeast           // =
	opFloatEq           // ==
	opFloatNe           // !=
	opFloatGe           // >=
	opFloatLe           // <=
	opStrEq             // s==
	opStrNe             // s!=
	opStrLt             // s<
	opStrLe             // s<=
	opStrGt             // s>
	opStrGe             // s>=
	opIn                // <in>
	opIs                // <is>
	opOr                // <or>
)

// opNamed returns the operator a spec value's first word names, if any.
func opNamed(word string) (op, bool) {
	switch word {
	case "=":
		return opAtLeast, true
	case "==":
		return opFloatEq, true
	case "!=":
		return opFloatNe, true
	case ">=":
		return opFloatGe, true
	case "<=":
		return opFloatLe, true
	case "s==":
		return opStrEq, true
	case "s!=":
		return opStrNe, true
	case "s<":
		return opStrLt, true
	case "s<=":
		return opStrLe, true
	case "s>":
		return opStrGt, true
	case "s>=":
		return opStrGe, true
	case "<in>":
		return opIn, true
	case "<is>":
		return opIs, true
	case "<or>":
		return opOr, true
	}
	return opEqual, false
}

// spec is one extra spec that CapabilitiesFilter checks, parsed once per request.
type spec struct {
	key   string   // the extra spec key, as written
	path  []string // capability keys to walk
	col   colKey   // the path, naming the PoolSet column of its values
	req   string   // the extra spec value, as written
	op    op
	words []string // the words after the operator
	// The first operand word, converted once: float(word) for numeric operators (numOK false
	// where Python raises ValueError) and bool_from_string(word) for <is>.
	num   float64
	numOK bool
	is    bool
}

// compileSpecs parses the extra specs CapabilitiesFilter checks, in key order (Cinder walks
// the type's dict; the outcome is the same, the order only decides which reason is given).
func compileSpecs(t *basalt.VolumeType) []spec {
	if t == nil || len(t.ExtraSpecs) == 0 {
		return nil
	}
	keys := make([]string, 0, len(t.ExtraSpecs))
	for k := range t.ExtraSpecs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	specs := make([]spec, 0, len(keys))
	for _, k := range keys {
		path := strings.Split(k, ":")
		if len(path) > 1 && path[0] != "capabilities" {
			continue // scoped for someone else: provisioning:type, RESKEY:..., vendor:...
		}
		col := colKey{path: k}
		if path[0] == "capabilities" {
			path = path[1:]
			col.path, col.root = strings.TrimPrefix(k, "capabilities:"), len(path) == 0
		}
		sp := parseSpec(k, path, t.ExtraSpecs[k])
		sp.col = col
		specs = append(specs, sp)
	}
	return specs
}

func parseSpec(key string, path []string, req string) spec {
	sp := spec{key: key, path: path, req: req}
	words := strings.Fields(req)
	if len(words) == 0 {
		return sp
	}
	o, ok := opNamed(words[0])
	if !ok {
		return sp
	}
	sp.op, sp.words = o, words[1:]
	if len(sp.words) > 0 {
		sp.num, sp.numOK = pyFloat(sp.words[0])
		sp.is = boolFromString(sp.words[0])
	}
	return sp
}

// matchAny reports whether the capability value matches, any element of a list value
// sufficing.
func (sp *spec) matchAny(val any) bool {
	if l, ok := val.([]any); ok {
		for _, e := range l {
			if sp.match(e) {
				return true
			}
		}
		return false
	}
	return sp.match(val)
}

// match is extra_specs_ops.match(value, req). Where Python raises TypeError (a string
// operator between a string and a number, <in> on a number, float() of a list) Cinder fails
// the whole request; here the value does not match.
func (sp *spec) match(value any) bool {
	if sp.op == opEqual {
		s, ok := value.(string)
		return ok && s == sp.req
	}
	if value == nil {
		return false
	}
	if sp.op == opOr {
		// <or> a <or> b: every other word is a value, whatever the words between are.
		// "<or>" alone raises IndexError in Cinder; it matches nothing here.
		s, isStr := value.(string)
		for i := 0; i < len(sp.words); i += 2 {
			if isStr && sp.words[i] == s {
				return true
			}
		}
		return false
	}
	if len(sp.words) == 0 {
		return false
	}
	w := sp.words[0]
	switch sp.op {
	case opAtLeast, opFloatEq, opFloatNe, opFloatGe, opFloatLe:
		x, ok := toFloat(value)
		if !ok || !sp.numOK {
			return false
		}
		switch sp.op {
		case opAtLeast, opFloatGe:
			return x >= sp.num
		case opFloatEq:
			return x == sp.num
		case opFloatNe:
			return x != sp.num
		default:
			return x <= sp.num
		}
	case opStrEq, opStrNe:
		s, ok := value.(string)
		eq := ok && s == w
		return eq == (sp.op == opStrEq)
	case opStrLt, opStrLe, opStrGt, opStrGe:
		s, ok := value.(string)
		if !ok {
			return false
		}
		switch sp.op {
		case opStrLt:
			return s < w
		case opStrLe:
			return s <= w
		case opStrGt:
			return s > w
		default:
			return s >= w
		}
	case opIn:
		switch v := value.(type) {
		case string:
			return strings.Contains(v, w)
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok && s == w {
					return true
				}
			}
			return false
		default:
			if m, ok := asMap(value); ok {
				_, has := m[w]
				return has
			}
			return false
		}
	case opIs:
		return boolFromString(value) == sp.is
	}
	return false
}
