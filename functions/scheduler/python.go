package scheduler

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// This file holds the few Python semantics the scheduler must reproduce to decide as Cinder
// does: truthiness, float() of strings, round(x, 2) and oslo's bool_from_string.

// truthy reports whether v is true in Python's sense: None, False, 0, "" and empty containers
// are false, everything else (the string "False" included) is true.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case float64:
		return v != 0
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	case map[string]string:
		return len(v) > 0
	}
	if f, ok := number(v); ok {
		return f != 0
	}
	return true
}

// number returns v as a float64 when it is a Go number. JSON decoding gives float64; other
// numeric types and json.Number are accepted too, so that pools built in Go code work alike.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// isZero reports whether v == 0 in Python: numbers equal to zero and False.
func isZero(v any) bool {
	if b, ok := v.(bool); ok {
		return !b
	}
	f, ok := number(v)
	return ok && f == 0
}

// pyFloat parses s as Python's float(str) does: surrounding whitespace ignored, an optional
// sign, decimal digits with '_' allowed between digits, an optional exponent, or the names
// inf, infinity and nan in any case. Hexadecimal forms, which Go accepts and Python does not,
// are refused. ok is false where Python raises ValueError.
func pyFloat(s string) (f float64, ok bool) {
	if f, ok := simpleDecimal(s); ok {
		return f, true
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	t := s
	if t[0] == '+' || t[0] == '-' {
		t = t[1:]
	}
	if len(t) >= 3 && len(t) <= 8 && (t[0]|0x20 == 'i' || t[0]|0x20 == 'n') {
		neg := s[0] == '-'
		switch strings.ToLower(t) {
		case "inf", "infinity":
			if neg {
				return math.Inf(-1), true
			}
			return math.Inf(1), true
		case "nan":
			return math.NaN(), true
		}
		return 0, false
	}
	underscore := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '+', c == '-':
		case c == '_':
			if i == 0 || i == len(s)-1 || !isDigit(s[i-1]) || !isDigit(s[i+1]) {
				return 0, false
			}
			underscore = true
		default:
			return 0, false
		}
	}
	if underscore {
		s = strings.ReplaceAll(s, "_", "")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
			return f, true // Python overflows to ±inf and underflows to 0 too
		}
		return 0, false
	}
	return f, true
}

// simpleDecimal parses the common case, digits with at most one '.' and at most 15 digits
// in all ("20.0"), exactly as ParseFloat does: the digits as an integer below 2^53 divided
// by an exact power of ten is one correctly rounded IEEE division.
func simpleDecimal(s string) (float64, bool) {
	if len(s) == 0 || len(s) > 16 {
		return 0, false
	}
	var mant uint64
	digits, frac := 0, -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' && frac < 0:
			frac = 0
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if frac >= 0 {
				frac++
			}
		default:
			return 0, false
		}
	}
	if digits == 0 || digits > 15 {
		return 0, false
	}
	if frac <= 0 {
		return float64(mant), true
	}
	return float64(mant) / math.Pow10(frac), true // exact powers up to 1e22
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// toFloat is Python's float(v) for a JSON-decoded value. ok is false where Python raises
// (ValueError for a non-numeric string, TypeError for None, lists and dicts).
func toFloat(v any) (f float64, ok bool) {
	if f, ok := number(v); ok {
		return f, true
	}
	switch v := v.(type) {
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	case string:
		return pyFloat(v)
	}
	return 0, false
}

// round2 is Python's round(x, 2): x rounded to the nearest multiple of 0.01 computed from
// x's exact binary value, ties to even, then converted back to the nearest float64.
func round2(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return x
	}
	// Fast path: when x*100 is far from a half-integer the float product decides the same
	// way as the exact product (its error is below 1.2e-5 for |x| < 1e9), and n/100 with an
	// exact integer n is the correctly rounded quotient, which is what Python's strtod of
	// the rounded decimal string returns.
	if math.Abs(x) < 1e9 {
		y := float64(x * 100)
		fl := math.Floor(y)
		frac := y - fl
		if math.Abs(frac-0.5) > 1e-4 {
			if frac > 0.5 {
				fl++
			}
			return fl / 100
		}
	}
	// Slow path: strconv rounds the exact decimal expansion half to even, as Python's dtoa.
	var buf [64]byte
	b := strconv.AppendFloat(buf[:0], x, 'f', 2, 64)
	r, _ := strconv.ParseFloat(string(b), 64)
	return r
}

// boolFromString is oslo_utils.strutils.bool_from_string(v) with strict=False, default=False:
// booleans are themselves; anything else is turned into its Python str() and matched, case
// and surrounding space ignored, against 1/t/true/on/y/yes (true) and 0/f/false/off/n/no.
// JSON numbers are shown as a Python int when integral, so 1 is true and 1.5 is false.
func boolFromString(v any) bool {
	var s string
	switch v := v.(type) {
	case bool:
		return v
	case string:
		s = v
	default:
		f, ok := number(v)
		return ok && f == 1 // str() of None, a list or a dict is never in the true list
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "on", "y", "yes":
		return true
	}
	return false
}

// num formats a number for a reason: shortest form that reads back exactly ("3.34", "5").
func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
