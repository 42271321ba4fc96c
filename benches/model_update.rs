//! Model update at scale (issue 6, benchmark 3): a warm model of 2,000 services and
//! 20,000 instances (one Envoy sidecar each, an hour of history) takes, once per second,
//! a full registry snapshot plus 2,000 sidecar scrapes (every sidecar is scraped every
//! 10 s, a tenth of them each second). The scrapes are real Envoy `/stats/prometheus`
//! text (`synthetic::envoy_text`, ~100 KB per sidecar) parsed by our parser, then applied
//! as one batch (`Model::apply_batch`: what `App::drain_events` does per frame). Prints
//! the median and p90 of the apply (the UI thread's work; goal ≤ 50 ms) and, apart, of the
//! parse (done by the io tasks, off the UI thread).
//!
//! `cargo bench --bench model_update`; under `cargo test --all-targets` (no `--bench`) a
//! smoke run on 20 services.

use std::time::{Duration, Instant};

use spine_dash::io::IoEvent;
use spine_dash::metrics::parse_envoy_stats;
use spine_dash::model::synthetic::{LargeSpine, envoy_text};

/// CPU time this thread has run (`/proc/thread-self/schedstat`, ns): on a machine shared
/// with other builds, wall time also counts the time other processes held the cores.
fn cpu_now() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_p90(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() * 9 / 10])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (services, instances, history_secs, rounds) = if full {
        (2_000, 10, 3_600, 15)
    } else {
        (20, 3, 30, 3)
    };
    let spine = LargeSpine::mesh(services, instances);
    let now = Instant::now();
    let started = Instant::now();
    let mut m = spine.model(now, history_secs);
    println!(
        "update model: {services} services, {} instances (sidecars), {} lanes, {history_secs} s \
         of history, built in {:.1} s",
        spine.instances(),
        m.lanes.len(),
        started.elapsed().as_secs_f64()
    );
    // Every sidecar scraped every 10 s: staleness after 20 s, a tenth scraped each second.
    m.scrape_interval = Duration::from_secs(10);
    let first_secs = history_secs.max(2);
    let mut apply = Vec::new();
    let mut parse = Vec::new();
    let mut parts = Vec::new();
    let mut apply_cpu = Vec::new();
    let mut bytes = 0;
    // Round 0 is a warm-up (the interval change makes its refresh a full one).
    for round in 0..=rounds {
        let at = now + Duration::from_secs(round + 1);
        let instance = (round as usize) % instances;
        let bodies: Vec<(String, String)> = (0..services)
            .map(|s| {
                let scrape = spine.scrape(s, first_secs + round + 1);
                (spine.stats_url(s, instance), envoy_text(&scrape))
            })
            .collect();
        bytes = bodies.iter().map(|(_, b)| b.len()).sum::<usize>();
        let started = Instant::now();
        let scrapes: Vec<(String, _)> = bodies
            .into_iter()
            .map(|(url, body)| (url, parse_envoy_stats(&body)))
            .collect();
        let parsed = started.elapsed();
        let mut events = vec![IoEvent::Registry {
            at,
            result: Ok(Some(spine.snapshot())),
            next_within: Duration::from_mins(1),
        }];
        events.extend(scrapes.into_iter().map(|(url, result)| IoEvent::Scrape {
            url,
            at,
            result: result.map_err(|e| e.to_string()),
        }));
        // `apply_batch`, in its three parts: the snapshot, the scrapes, the one refresh.
        let mut events = events.into_iter();
        let cpu_started = cpu_now();
        let started = Instant::now();
        if let Some(snapshot) = events.next() {
            m.apply_deferred(snapshot, at);
        }
        let registry = started.elapsed();
        for event in events {
            m.apply_deferred(event, at);
        }
        let taken_in = started.elapsed();
        m.finish_batch(at);
        let applied = started.elapsed();
        let applied_cpu = cpu_now().saturating_sub(cpu_started);
        if round > 0 {
            apply.push(applied);
            apply_cpu.push(applied_cpu);
            parse.push(parsed);
            parts.push((
                registry,
                taken_in.saturating_sub(registry),
                applied.saturating_sub(taken_in),
            ));
        }
    }
    // The peer, on the same model and the same kind of batch: the lanes rebuilt from all
    // 20,000 sidecars (what every event did before; `Model::apply` then paid this per
    // event, 2,001 times per batch).
    let mut full = Vec::new();
    for round in rounds + 1..=rounds + 3 {
        let at = now + Duration::from_secs(round + 1);
        let instance = (round as usize) % instances;
        let mut events = vec![IoEvent::Registry {
            at,
            result: Ok(Some(spine.snapshot())),
            next_within: Duration::from_mins(1),
        }];
        events.extend((0..services).map(|s| IoEvent::Scrape {
            url: spine.stats_url(s, instance),
            at,
            result: Ok(spine.scrape(s, first_secs + round + 1)),
        }));
        m.mark_all_lanes();
        let cpu_started = cpu_now();
        m.apply_batch(events, at);
        full.push(cpu_now().saturating_sub(cpu_started));
    }
    // Steady state in the app: the same 2,000 scrapes per second arrive spread over ~60
    // frames, each frame's events one batch (~34 scrapes, no registry change).
    let per_frame = services.div_ceil(60);
    let mut frames = Vec::new();
    let round = rounds + 4;
    let at = now + Duration::from_secs(round + 1);
    let instance = (round as usize) % instances;
    for (f, chunk) in (0..services)
        .collect::<Vec<_>>()
        .chunks(per_frame)
        .enumerate()
    {
        let frame_at = at + Duration::from_millis(16 * f as u64);
        let events: Vec<IoEvent> = chunk
            .iter()
            .map(|&s| IoEvent::Scrape {
                url: spine.stats_url(s, instance),
                at: frame_at,
                result: Ok(spine.scrape(s, first_secs + round + 1)),
            })
            .collect();
        let cpu_started = cpu_now();
        m.apply_batch(events, frame_at);
        frames.push(cpu_now().saturating_sub(cpu_started));
    }
    let with_data = m.lanes.values().filter(|l| l.stats.is_some()).count();
    println!(
        "update after {rounds} rounds: {with_data} of {} lanes with data, {} sidecars",
        m.lanes.len(),
        m.sidecars.len()
    );
    let (median, p90) = median_p90(apply);
    println!(
        "update apply snapshot + {services} scrapes   median {:>8.2} ms   p90 {:>8.2} ms   \
         (goal ≤ 50 ms; {rounds} rounds)",
        ms(median),
        ms(p90)
    );
    let (median, p90) = median_p90(apply_cpu);
    println!(
        "update   CPU time of the same                median {:>8.2} ms   p90 {:>8.2} ms",
        ms(median),
        ms(p90)
    );
    let incremental_cpu = median;
    let (full_median, _) = median_p90(full);
    println!(
        "update   peer: the same batch rebuilding every lane  CPU median {:>8.2} ms ({:.1}× ours); \
         one rebuild per event, as before: ~{:.0} s per batch",
        ms(full_median),
        full_median.as_secs_f64() / incremental_cpu.as_secs_f64().max(1e-9),
        full_median.as_secs_f64() * (services as f64 + 1.0)
    );
    let (frame_median, frame_p90) = median_p90(frames);
    println!(
        "update   per frame: {per_frame} scrapes as one batch   CPU median {:>8.2} ms   p90 {:>8.2} ms",
        ms(frame_median),
        ms(frame_p90)
    );
    let part = |pick: fn(&(Duration, Duration, Duration)) -> Duration| {
        ms(median_p90(parts.iter().map(pick).collect()).0)
    };
    println!(
        "update   of which: registry snapshot {:.2} ms, taking in the scrapes {:.2} ms, \
         refresh (lanes, history, tape, drift) {:.2} ms (medians)",
        part(|p| p.0),
        part(|p| p.1),
        part(|p| p.2)
    );
    let (median, p90) = median_p90(parse);
    println!(
        "update parse {services} bodies ({:.0} MB)     median {:>8.2} ms   p90 {:>8.2} ms   \
         (io tasks, one core)",
        bytes as f64 / 1e6,
        ms(median),
        ms(p90)
    );
}
