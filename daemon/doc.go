// Package daemon owns the mapsentry daemon: it wires config, the BPF
// kernel side, discovery (probes), capture, the store and the socket API
// together and runs them under one context. Each concern lives in its own
// subpackage: config, store, capture, api.
package daemon
