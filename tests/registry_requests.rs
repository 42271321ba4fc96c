//! Registry requests per refresh do not grow with the mesh: against synthetic spines of 10
//! and 200 services (the demo registry counts its answers), a health change, a split change
//! and a new instance cost the same number of answers; only the start (every service's
//! instances, read once) grows. `cargo bench --bench registry_requests` adds 2,000.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

#[path = "support/registry_counts.rs"]
mod registry_counts;

use registry_counts::measure;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_per_change_do_not_grow_with_the_mesh() {
    let small = measure(10, None).await;
    let large = measure(200, None).await;
    println!("{small:?}\n{large:?}");
    assert_eq!(small.health_change, large.health_change);
    assert_eq!(small.split_change, large.split_change);
    assert_eq!(small.new_instance, large.new_instance);
    // One answer of one bulk query for a health or split change; the catalog, the checks
    // and the new service's instances for a registration.
    assert_eq!(small.health_change, 1);
    assert_eq!(small.split_change, 1);
    assert_eq!(small.new_instance, 3);
    // What does grow: the first read of every service (one each), and a full poll (three
    // per service: instances, resolver, splitter).
    assert_eq!(large.initial - small.initial, 190);
    assert_eq!(large.poll - small.poll, 3 * 190);
}
