package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

var pathParamRE = regexp.MustCompile(`\{([a-z_]+)\}`)

// openAPI generates the OpenAPI 3.1 document of the route table.
func (a *API) openAPI() ([]byte, error) {
	sc := newSchemas()
	problem := sc.of(reflect.TypeFor[Problem]())
	problemResp := map[string]any{"description": "A problem (RFC 9457); its type URI says which (" + ProblemBase + "...).",
		"content": map[string]any{"application/problem+json": map[string]any{"schema": problem}}}
	paths := map[string]any{}
	for i := range a.routes {
		rt := &a.routes[i]
		var params []any
		for _, m := range pathParamRE.FindAllStringSubmatch(rt.Pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.Query {
			typ := q.Type
			if typ == "" {
				typ = "string"
			}
			params = append(params, map[string]any{"name": q.Name, "in": "query", "required": q.Required, "description": q.Description,
				"schema": map[string]any{"type": typ}})
		}
		if rt.Paged {
			params = append(params,
				map[string]any{"name": "page_size", "in": "query", "description": fmt.Sprintf("items per page, 1 to %d (default %d)", MaxPageSize, DefaultPageSize),
					"schema": map[string]any{"type": "integer", "minimum": 1, "maximum": MaxPageSize}},
				map[string]any{"name": "page_token", "in": "query", "description": "next_page_token of the previous page",
					"schema": map[string]any{"type": "string"}})
		}
		if rt.Conditional {
			params = append(params, map[string]any{"name": "If-Match", "in": "header", "required": true,
				"description": "the ETag of the resource as last read (428 without it, 412 when it changed since)", "schema": map[string]any{"type": "string"}})
		}
		op := map[string]any{
			"operationId":  rt.OperationID,
			"summary":      rt.Summary,
			"tags":         []string{rt.Tag},
			"security":     []any{map[string]any{"oauth2": []string{string(rt.Scope)}}, map[string]any{"localSocket": []string{}}},
			"x-avon-scope": string(rt.Scope),
		}
		if rt.Audit != "" {
			op["x-avon-audit-action"] = rt.Audit
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.Request != nil {
			op["requestBody"] = map[string]any{"required": true,
				"content": map[string]any{"application/json": map[string]any{"schema": sc.of(reflect.TypeOf(rt.Request))}}}
		}
		ok := map[string]any{"description": http.StatusText(rt.Status)}
		if rt.Response != nil {
			ct := rt.ContentType
			schema := sc.of(reflect.TypeOf(rt.Response))
			if ct == "" {
				ct = "application/json"
			} else {
				schema = map[string]any{"type": "string", "contentMediaType": ct}
			}
			ok["content"] = map[string]any{ct: map[string]any{"schema": schema}}
		}
		headers := map[string]any{"X-Request-Id": map[string]any{"description": "the request's id", "schema": map[string]any{"type": "string"}}}
		if rt.ETag {
			headers["ETag"] = map[string]any{"description": "strong entity tag of the resource", "schema": map[string]any{"type": "string"}}
		}
		ok["headers"] = headers
		op["responses"] = map[string]any{strconv.Itoa(rt.Status): ok, "default": problemResp}
		item, _ := paths[rt.Pattern].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.Pattern] = item
		}
		item[strings.ToLower(rt.Method)] = op
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": a.opts.Title, "version": a.opts.Version,
			"description": "The AVON core's Admin API. Conventions (problems, pagination, ETags, auditing): docs/admin-api.md."},
		"paths": paths,
		"components": map[string]any{
			"schemas": sc.comps,
			"securitySchemes": map[string]any{
				"oauth2": map[string]any{"type": "oauth2", "description": "Operator access tokens (core/oauth).",
					"flows": map[string]any{"authorizationCode": map[string]any{"authorizationUrl": "/oauth/authorize", "tokenUrl": "/oauth/token",
						"scopes": map[string]any{string(ScopeRead): "read the core's state", string(ScopeWrite): "change the core's state"}}}},
				"localSocket": map[string]any{"type": "http", "scheme": "peercred",
					"description": "The local admin socket (data_dir/admin.sock): the kernel's peer credentials; root and the core's user hold every scope."},
			},
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%w: openapi document: %v", ErrInvalidRoute, err)
	}
	return b, nil
}
