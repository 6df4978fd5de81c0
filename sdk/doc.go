// Package sdk is the root of what AVON plugin authors import.
//
// The SDK is public and stable within a major protocol version. It must
// never import anything under github.com/avonzt/avon/core: a test in this
// package enforces it, so that the SDK can become its own module.
//
// Layout:
//
//	errdef      typed errors that keep their identity across the plugin boundary
//	config      how a plugin describes and decodes its own `config { }` body
//	kms, ca, acme, policy, pqc
//	            the plugin kinds: interfaces, request/response structs, errors
//	host        the services the core offers every plugin (RNG, clock, storage, audit, wired plugins)
//	plugin      Serve (a plugin's main is one call to it) and the client side the core uses
//	plugintest  building and serving plugins in tests; conformance kits live in <kind>/<kind>test
//	proto       protobuf definitions and generated code, one package per kind and major version
//
// See docs/plugins.md for the plugin author's guide.
package sdk
