package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/basalt-storage/basalt"
)

// checkVolumeKeys applies the checks of Cinder's JSON schemas for the "volume" object of a
// volume create or update (cinder/api/schemas/volumes.py) that huma's schema, which serves every
// microversion, cannot make: when strict, keys that no json tag of fields names are refused;
// with needOne, the object must hold at least one key. raw is the object as sent, which the
// message quotes as Cinder does, in Python's notation. The error is EINVALID.
func checkVolumeKeys(raw []byte, fields reflect.Type, strict, needOne bool) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil // not an object: huma's schema has refused it already
	}
	if strict {
		known := jsonNames(fields)
		var extra []string
		for k := range obj {
			if !slices.Contains(known, k) {
				extra = append(extra, k)
			}
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			quoted := make([]string, len(extra))
			for i, k := range extra {
				quoted[i] = pyString(k)
			}
			verb := "was"
			if len(extra) > 1 {
				verb = "were"
			}
			return basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute volume. Value: %s. Additional properties are not allowed (%s %s unexpected)",
				pyRepr(raw), strings.Join(quoted, ", "), verb)
		}
	}
	if needOne && len(obj) == 0 {
		return basalt.Errorf(basalt.EINVALID, "Invalid input for field/attribute volume. Value: {}. {} is not valid under any of the given schemas")
	}
	return nil
}

// jsonNames returns the JSON names of the fields of struct type t.
func jsonNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "-" && name != "" {
			names = append(names, name)
		}
	}
	return names
}

// pyRepr writes the JSON value raw as Python writes repr(json.loads(raw)), the way Cinder
// quotes a value in a validation error: objects keep their order. It returns raw itself if it
// is not valid JSON.
func pyRepr(raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var b strings.Builder
	if err := writePyRepr(dec, &b); err != nil {
		return string(raw)
	}
	return b.String()
}

func writePyRepr(dec *json.Decoder, b *strings.Builder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		closing := byte(']')
		if t == '{' {
			closing = '}'
		}
		b.WriteByte(byte(t))
		for i := 0; dec.More(); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			if t == '{' {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				b.WriteString(pyString(k.(string)))
				b.WriteString(": ")
			}
			if err := writePyRepr(dec, b); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		b.WriteByte(closing)
	case string:
		b.WriteString(pyString(t))
	case json.Number:
		b.WriteString(pyNumber(t))
	case bool:
		if t {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case nil:
		b.WriteString("None")
	}
	return nil
}

// pyNumber writes a JSON number as Python's repr of the int or float json.loads makes of it.
func pyNumber(n json.Number) string {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		if s == "-0" {
			return "0"
		}
		return s // JSON integers have no leading zeros: the text is Python's
	}
	f, err := n.Float64()
	if err != nil {
		return s
	}
	_, exp, _ := strings.Cut(strconv.FormatFloat(f, 'e', -1, 64), "e")
	if e, _ := strconv.Atoi(exp); e < -4 || e >= 16 {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	s = strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// pyString writes s as Python's repr of a str: single quotes unless s holds a single quote and
// no double quote, with backslash escapes for the quote, backslashes and unprintable runes.
func pyString(s string) string {
	q := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteRune(q)
	for _, r := range s {
		switch {
		case r == q || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteRune(q)
	return b.String()
}
