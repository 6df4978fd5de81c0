// Package config is how a plugin describes its own `config { }` body.
//
// The core cannot know a plugin's settings. Each plugin reports a Schema at
// start; the core decodes the operator's HCL body against it (every mistake
// a diagnostic with file:line:col, before the plugin sees anything) and
// hands the plugin a plain JSON object, which the plugin reads with
// Unmarshal into its own struct:
//
//	var Schema = config.Schema{Attributes: []config.Attribute{
//		{Name: "path", Type: cty.String, Default: cty.StringVal("keystore.avks"), Description: "keystore file"},
//		{Name: "passphrase", Type: cty.String, Required: true, Sensitive: true, Description: "unlocks the keystore"},
//	}}
//
//	type Config struct {
//		Path       string `json:"path"`
//		Passphrase string `json:"passphrase"`
//	}
//
//	var c Config
//	err := config.Unmarshal(req.Config, &c)
//
// The package does no I/O.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// Schema describes a plugin's configuration body: top-level attributes.
type Schema struct {
	Attributes []Attribute
}

// Attribute is one setting.
type Attribute struct {
	Name        string   // an HCL identifier
	Type        cty.Type // any cty type: string, number, bool, list/map/set/object of those
	Required    bool
	Sensitive   bool      // redacted in logs (Redact)
	Description string    // shown in diagnostics
	Default     cty.Value // cty.NilVal for none; must conform to Type
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// Validate checks the schema itself.
func (s Schema) Validate() error {
	seen := map[string]bool{}
	for _, a := range s.Attributes {
		if !identRE.MatchString(a.Name) {
			return fmt.Errorf("config schema: attribute name %q is not an identifier", a.Name)
		}
		if seen[a.Name] {
			return fmt.Errorf("config schema: attribute %q declared twice", a.Name)
		}
		seen[a.Name] = true
		if a.Type == cty.NilType {
			return fmt.Errorf("config schema: attribute %q has no type", a.Name)
		}
		if a.Default != cty.NilVal {
			if a.Required {
				return fmt.Errorf("config schema: attribute %q is required and has a default", a.Name)
			}
			if _, err := convert.Convert(a.Default, a.Type); err != nil {
				return fmt.Errorf("config schema: default of %q does not conform to %s: %v", a.Name, a.Type.FriendlyName(), err)
			}
		}
	}
	return nil
}

// wireAttr is an attribute's JSON wire form.
type wireAttr struct {
	Name        string          `json:"name"`
	Type        json.RawMessage `json:"type"`
	Required    bool            `json:"required,omitempty"`
	Sensitive   bool            `json:"sensitive,omitempty"`
	Description string          `json:"description,omitempty"`
	Default     json.RawMessage `json:"default,omitempty"`
}

// MarshalJSON encodes the schema for the wire.
func (s Schema) MarshalJSON() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	out := struct {
		Attributes []wireAttr `json:"attributes"`
	}{Attributes: []wireAttr{}}
	for _, a := range s.Attributes {
		t, err := ctyjson.MarshalType(a.Type)
		if err != nil {
			return nil, fmt.Errorf("config schema: type of %q: %w", a.Name, err)
		}
		w := wireAttr{Name: a.Name, Type: t, Required: a.Required, Sensitive: a.Sensitive, Description: a.Description}
		if a.Default != cty.NilVal {
			v, _ := convert.Convert(a.Default, a.Type)
			d, err := ctyjson.Marshal(v, a.Type)
			if err != nil {
				return nil, fmt.Errorf("config schema: default of %q: %w", a.Name, err)
			}
			w.Default = d
		}
		out.Attributes = append(out.Attributes, w)
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes the wire form and validates it.
func (s *Schema) UnmarshalJSON(b []byte) error {
	var in struct {
		Attributes []wireAttr `json:"attributes"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("config schema: %w", err)
	}
	var out Schema
	for _, w := range in.Attributes {
		t, err := ctyjson.UnmarshalType(w.Type)
		if err != nil {
			return fmt.Errorf("config schema: type of %q: %w", w.Name, err)
		}
		a := Attribute{Name: w.Name, Type: t, Required: w.Required, Sensitive: w.Sensitive, Description: w.Description}
		if len(w.Default) > 0 {
			v, err := ctyjson.Unmarshal(w.Default, t)
			if err != nil {
				return fmt.Errorf("config schema: default of %q: %w", w.Name, err)
			}
			a.Default = v
		}
		out.Attributes = append(out.Attributes, a)
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*s = out
	return nil
}

func (s Schema) objectType() cty.Type {
	at := map[string]cty.Type{}
	for _, a := range s.Attributes {
		at[a.Name] = a.Type
	}
	return cty.Object(at)
}

// Decode decodes body against the schema and returns the JSON object a
// plugin receives. Unknown attributes and blocks, wrong types and missing
// required attributes are diagnostics with ranges. A nil body decodes as
// an empty one (defaults applied, required attributes reported).
func Decode(body hcl.Body, s Schema, ctx *hcl.EvalContext) ([]byte, hcl.Diagnostics) {
	if err := s.Validate(); err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid plugin config schema", Detail: err.Error()}}
	}
	var missingRange *hcl.Range
	if body == nil {
		body = hcl.EmptyBody()
	} else {
		r := body.MissingItemRange()
		missingRange = &r
	}
	spec := hcldec.ObjectSpec{}
	for _, a := range s.Attributes {
		// Required is checked below to give a better message.
		var sp hcldec.Spec = &hcldec.AttrSpec{Name: a.Name, Type: a.Type}
		if a.Default != cty.NilVal {
			sp = &hcldec.DefaultSpec{Primary: sp, Default: &hcldec.LiteralSpec{Value: a.Default}}
		}
		spec[a.Name] = sp
	}
	val, diags := hcldec.Decode(body, spec, ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	var missing []Attribute
	for _, a := range s.Attributes {
		if a.Required && val.GetAttr(a.Name).IsNull() {
			missing = append(missing, a)
		}
	}
	for _, a := range missing {
		detail := fmt.Sprintf("The attribute %q is required", a.Name)
		if a.Description != "" {
			detail += ": " + a.Description
		}
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing required plugin setting",
			Detail: detail + ".", Subject: missingRange})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	if !val.IsWhollyKnown() {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Unknown value in plugin config", Subject: missingRange}}
	}
	ot := s.objectType()
	v, err := convert.Convert(val, ot)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid plugin config", Detail: err.Error(), Subject: missingRange}}
	}
	b, err := ctyjson.Marshal(v, ot)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid plugin config", Detail: err.Error(), Subject: missingRange}}
	}
	return b, nil
}

// Unmarshal reads a decoded configuration into v. Unknown fields are an
// error: the schema and the struct must agree.
func Unmarshal(data []byte, v any) error {
	if len(data) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("plugin config: %w", err)
	}
	if dec.More() {
		return errors.New("plugin config: trailing data after the object")
	}
	return nil
}

// Redact returns data with every Sensitive attribute's value replaced by
// "(sensitive)", for logging. Unparseable input yields "{}".
func Redact(s Schema, data []byte) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return []byte("{}")
	}
	for _, a := range s.Attributes {
		if _, ok := m[a.Name]; ok && a.Sensitive {
			m[a.Name] = json.RawMessage(`"(sensitive)"`)
		}
	}
	out, _ := json.Marshal(m) // map keys come out sorted
	return out
}
