//! spine-dash: a native desktop dashboard for a micro-services spine — a service registry
//! (Consul or etcd) plus an Envoy sidecar beside every instance.

pub mod app;
pub mod config;
pub mod demo;
pub mod fuzzing;
pub mod io;
pub mod launch;
pub mod metrics;
pub mod model;
pub mod net;
pub mod registry;
pub mod sdk_cli;
pub mod view;
