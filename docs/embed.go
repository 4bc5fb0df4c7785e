// Package docs embeds the API's OpenAPI document, so that the one file in
// docs/openapi.yaml is both the published reference and what the server
// serves at GET /api/v1/openapi.yaml.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
