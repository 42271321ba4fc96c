//! spine-dash binary.
fn main() {}
