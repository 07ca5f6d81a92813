// Package daemon owns the mapsentry daemon: it wires config, the BPF
// kernel side, discovery (probes), capture, the report publisher and store
// and the socket API together and runs them under one context, in the
// start-up order docs/freeze.md gives (instance lock, frozen records,
// leftovers, then the rest; the store never holds up start-up). Each
// concern lives in its own subpackage: config, instance, store, publish,
// capture, api.
package daemon
