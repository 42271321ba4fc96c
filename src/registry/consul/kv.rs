//! KV mode (to come).
