//! The embedded demo spine: a registry speaking the Consul HTTP API subset, real HTTP
//! services, an Envoy-like sidecar per instance, health checks, traffic and faults, all on
//! 127.0.0.1. A simulator for learning, demos and tests — never a production registry.
