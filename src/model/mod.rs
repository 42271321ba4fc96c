//! Pure data and rules: services, instances, versions, splits, breaker states, lanes,
//! source freshness. No I/O, no egui; time is passed in.

pub mod types;
