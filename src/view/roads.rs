//! Roads of the map: one lane per version between two services, or, when either end is a
//! collapsed group, one lane carrying the summed traffic (rps and 5xx added, the worst
//! p99 and the worst breaker shown as such — percentiles are never averaged). Geometry
//! goes into the map's road mesh; labels and gate tags are the only text.

use std::time::Instant;

use egui::{Align2, Color32, FontId, Pos2, Rect, Shape, Ui, Vec2, pos2, vec2};

use super::map::{LANE_SPACING, Xform, fmt_ms, fmt_rps, lane_width};
use super::paint::{MeshPainter, segment_visible};
use super::theme::{Theme, Thresholds};
use crate::model::types::{BreakerState, LaneKey};
use crate::model::{LaneState, Model};

/// How long a trip's flash lasts.
const FLASH_SECS: f32 = 1.5;
/// A lane shorter than this on screen carries no particles.
const PARTICLE_MIN_LEN: f32 = 30.0;
/// At most one particle per this many points of lane on screen.
pub(super) const PARTICLE_PITCH: f32 = 12.0;
/// About this many particles a frame at most: past it, they spread out (each costs about
/// 0.2 µs, and 20,000 dots at overview zoom are noise, not information).
pub(super) const PARTICLE_BUDGET: f32 = 4000.0;

fn faded(c: Color32, stale: bool) -> Color32 {
    if stale { c.gamma_multiply(0.35) } else { c }
}

/// What a drawn lane stands for, for hover and click.
#[derive(Clone, Copy)]
pub(super) enum Hit<'a> {
    /// One lane between two services.
    Lane(&'a LaneState),
    /// A road with a group at one end (index into the frame's roads).
    Road(usize),
}

/// One drawn lane, for hit testing.
pub(super) struct Geom<'a> {
    pub hit: Hit<'a>,
    pub p0: Pos2,
    pub p1: Pos2,
    pub half_width: f32,
    /// Particles run on it.
    pub particles: bool,
}

/// Everything a road needs from the frame.
pub(super) struct RoadCtx<'f, 'a> {
    pub painter: &'f egui::Painter,
    pub model: &'a Model,
    pub theme: &'f Theme,
    pub thresholds: Thresholds,
    pub xf: Xform,
    /// The map's area on screen: nothing outside it is built.
    pub clip: Rect,
    /// The clock of this frame (trip flashes).
    pub now: Instant,
    /// Particle clock (s), `None` when particles are off.
    pub particle_time: Option<f64>,
    /// Screen points of lane per particle at most (wider when the frame has many lanes).
    pub particle_pitch: f32,
    /// Screen length of the lanes that could carry particles this frame (sets the next
    /// frame's pitch).
    pub particle_len: f32,
    pub selected_lane: Option<&'f LaneKey>,
    pub lanes: &'f mut MeshPainter,
    pub labels: &'f mut Vec<Shape>,
    /// Screen space taken (stations, labels): labels avoid it.
    pub occupied: &'f mut Vec<Rect>,
    pub geoms: &'f mut Vec<Geom<'a>>,
    /// Whether lane labels are readable at this zoom.
    pub label_lanes: bool,
}

/// One road as drawn: its end nodes on screen and the lanes it shows.
pub(super) struct RoadView<'r, 'a> {
    pub from: Rect,
    pub to: Rect,
    pub lanes: &'r [&'a LaneState],
    /// Every caller's data is stale.
    pub stale: bool,
    /// Index in the frame's roads (hit testing of summed roads).
    pub index: usize,
}

/// Particles on a lane: count by request rate (log), speed by latency (slower when slow).
fn particles(rps: f64, p50_ms: Option<f64>) -> (usize, f32) {
    let count = ((1.0 + rps).log2() * 1.5).round().clamp(1.0, 14.0) as usize;
    let speed = (260.0 / (1.0 + p50_ms.unwrap_or(20.0) / 40.0)).clamp(20.0, 220.0) as f32;
    (count, speed)
}

/// Where the lanes of a road run: from the right edge of one node to the left edge of the
/// other; `n` is the unit normal lanes are offset along.
fn ends(from: Rect, to: Rect) -> (Pos2, Pos2, Vec2) {
    let start = pos2(from.right(), from.center().y);
    let end = pos2(to.left(), to.center().y);
    let d = (end - start).normalized();
    (start, end, vec2(-d.y, d.x))
}

/// One lane's body, particles, gate and flash. Returns whether a flash runs.
#[allow(clippy::too_many_arguments)]
fn lane_body(
    cx: &mut RoadCtx,
    p0: Pos2,
    p1: Pos2,
    n: Vec2,
    width: f32,
    color: Color32,
    dashed: bool,
    selected: bool,
    flow: Option<(f64, Option<f64>)>,
    gate: Option<(BreakerState, String, Option<Instant>)>,
    stale: bool,
) -> bool {
    let xf = cx.xf;
    if selected {
        cx.lanes.segment(p0, p1, width + 5.0, cx.theme.selection);
    }
    if dashed {
        // Stale or no data: dashed, so it never reads as a quiet healthy lane.
        cx.lanes
            .dashed(p0, p1, width, color, 8.0 * xf.scale, 6.0 * xf.scale);
    } else {
        cx.lanes.segment(p0, p1, width, color);
    }
    if let (Some(time), Some((rps, p50))) = (cx.particle_time, flow) {
        let len = (p1 - p0).length();
        if len >= PARTICLE_MIN_LEN {
            cx.particle_len += len;
        }
        let room = (len / cx.particle_pitch) as usize;
        if len >= PARTICLE_MIN_LEN && room > 0 {
            let (count, speed) = particles(rps, p50);
            let count = count.min(room);
            let phase = (time * f64::from(speed * xf.scale) / f64::from(len)).fract() as f32;
            let dot = cx.theme.text.gamma_multiply(0.8);
            let radius = (width * 0.35).clamp(1.5, 4.0);
            for j in 0..count {
                let t = (phase + j as f32 / count as f32).fract();
                let at = p0 + (p1 - p0) * t;
                if cx.clip.expand(radius).contains(at) {
                    cx.lanes.circle(at, radius, dot);
                }
            }
        }
    }
    let mut flashing = false;
    // Toll gate near the callee when the breaker is not closed.
    if let Some((state, tag, trip)) = gate
        && let Some(color) = cx.theme.breaker_color(state)
    {
        let at = p0 + (p1 - p0) * 0.85;
        breaker_glyph(cx, at, n, &tag, faded(color, stale));
        // A trip flashes once: an expanding ring for a moment after it happened.
        if let Some(t) = trip {
            let age = cx.now.saturating_duration_since(t).as_secs_f32();
            if age < FLASH_SECS {
                let k = age / FLASH_SECS;
                cx.lanes.arc(
                    at,
                    (10.0 + 30.0 * k) * xf.scale.max(0.5),
                    0.0,
                    std::f32::consts::TAU,
                    3.0 * (1.0 - k),
                    color,
                );
                flashing = true;
            }
        }
    }
    flashing
}

/// Draws one road between two services, a lane per version. Returns whether a trip flash
/// runs (the map repaints while it does).
pub(super) fn lanes_ui<'a>(cx: &mut RoadCtx<'_, 'a>, road: &RoadView<'_, 'a>) -> bool {
    let (start, end, n) = ends(road.from, road.to);
    let k = road.lanes.len() as f32;
    let xf = cx.xf;
    let stale = road.stale;
    let mut flashing = false;
    for (i, &lane) in road.lanes.iter().enumerate() {
        let offset = (i as f32 - (k - 1.0) / 2.0) * LANE_SPACING * xf.scale;
        let (p0, p1) = (start + n * offset, end + n * offset);
        let stats = lane.stats.as_ref();
        let width = lane_width(stats.map(|s| s.rps)) * xf.scale;
        if !segment_visible(p0, p1, width + 40.0 * xf.scale, cx.clip) {
            continue;
        }
        let base = cx
            .theme
            .lane_color(stats.and_then(|s| s.err5xx_ratio), cx.thresholds);
        let flow = stats
            .filter(|s| !stale && s.rps > 0.0)
            .map(|s| (s.rps, s.p50_ms));
        let gate = stats.map(|s| {
            (
                s.breaker,
                gate_tag(s.breaker),
                cx.model.last_trip(&lane.key),
            )
        });
        flashing |= lane_body(
            cx,
            p0,
            p1,
            n,
            width,
            faded(base, stale),
            stale || stats.is_none(),
            cx.selected_lane == Some(&lane.key),
            flow,
            gate,
            stale,
        );
        cx.geoms.push(Geom {
            hit: Hit::Lane(lane),
            p0,
            p1,
            half_width: width / 2.0,
            particles: flow.is_some(),
        });
        // Label: version, rps, p99 (or why there is none), where it covers nothing; only
        // when zoomed in enough to read it (the tooltip always has the numbers).
        if !cx.label_lanes {
            continue;
        }
        let label = match stats {
            Some(s) if !stale => format!(
                "{} · {} · p99 {}",
                lane.key.version,
                fmt_rps(Some(s.rps)),
                fmt_ms(s.p99_ms)
            ),
            Some(_) => format!("{} · stale", lane.key.version),
            None => format!("{} · no data", lane.key.version),
        };
        // On a road of several lanes, the outer side of this lane comes first, so a label
        // never sits across its neighbour.
        let outer = f32::midpoint(p0.y, p1.y) - f32::midpoint(start.y, end.y);
        let sides = if k > 1.0 && outer.abs() > 0.5 {
            let s = outer.signum();
            [s * 0.6, s, -s]
        } else {
            [0.0_f32, 1.0, -1.0]
        };
        place_label(cx, p0, p1, sides, label, stale);
    }
    flashing
}

/// Draws a road with a collapsed group at one end (or both): one lane with the summed
/// traffic of all its lanes. Returns whether a trip flash runs.
pub(super) fn aggregate_ui<'a>(cx: &mut RoadCtx<'_, 'a>, road: &RoadView<'_, 'a>) -> bool {
    let (p0, p1, n) = ends(road.from, road.to);
    let sum = Summary::of(road.lanes);
    let xf = cx.xf;
    let width = lane_width(sum.rps) * xf.scale;
    if !segment_visible(p0, p1, width + 40.0 * xf.scale, cx.clip) {
        return false;
    }
    let stale = road.stale;
    let base = cx.theme.lane_color(sum.err_ratio(), cx.thresholds);
    let flow = sum
        .rps
        .filter(|r| !stale && *r > 0.0)
        .map(|r| (r, sum.p50_weighted));
    let tag = match sum.not_closed {
        0 | 1 => gate_tag(sum.breaker),
        more => format!("{} +{}", gate_tag(sum.breaker), more - 1),
    };
    let flashing = lane_body(
        cx,
        p0,
        p1,
        n,
        width,
        faded(base, stale),
        stale || sum.rps.is_none(),
        false,
        flow,
        Some((sum.breaker, tag, sum.last_trip)),
        stale,
    );
    cx.geoms.push(Geom {
        hit: Hit::Road(road.index),
        p0,
        p1,
        half_width: width / 2.0,
        particles: flow.is_some(),
    });
    if cx.label_lanes {
        let label = match sum.rps {
            Some(r) if !stale => format!(
                "{} · {} · worst p99 {}",
                lanes_text(sum.lanes),
                fmt_rps(Some(r)),
                fmt_ms(sum.p99_max)
            ),
            Some(_) => format!("{} · stale", lanes_text(sum.lanes)),
            None => format!("{} · no data", lanes_text(sum.lanes)),
        };
        place_label(cx, p0, p1, [0.0, 1.0, -1.0], label, stale);
    }
    flashing
}

/// Puts a lane label along `p0`–`p1` where it covers nothing (first the middle, then
/// nudged to `sides`), or nowhere.
fn place_label(cx: &mut RoadCtx, p0: Pos2, p1: Pos2, sides: [f32; 3], label: String, stale: bool) {
    let galley = cx
        .painter
        .layout_no_wrap(label, cx.xf.font(11.0), faded(cx.theme.text, stale));
    let nudge = galley.size().y + 4.0;
    let candidates = sides
        .into_iter()
        .flat_map(|side| [0.5_f32, 0.35, 0.65, 0.25, 0.75].map(|t| (t, side)));
    let place = candidates.into_iter().find_map(|(t, side)| {
        let at = p0 + (p1 - p0) * t + vec2(0.0, side * nudge);
        let r = Align2::CENTER_CENTER
            .anchor_size(at, galley.size())
            .expand(2.0);
        (!cx.occupied.iter().any(|o| o.intersects(r))).then_some(r)
    });
    if let Some(r) = place {
        cx.occupied.push(r);
        cx.labels.push(Shape::rect_filled(
            r,
            3.0,
            cx.theme.map_bg.gamma_multiply(0.85),
        ));
        cx.labels
            .push(Shape::galley(r.min + vec2(2.0, 2.0), galley, cx.theme.text));
    }
}

/// "1 lane", "12 lanes".
fn lanes_text(n: usize) -> String {
    if n == 1 {
        "1 lane".to_owned()
    } else {
        format!("{n} lanes")
    }
}

/// The tag of a gate: `OPEN`, `SATURATED`, `EJECT n/m` (nothing for closed).
fn gate_tag(b: BreakerState) -> String {
    match b {
        BreakerState::Closed => String::new(),
        BreakerState::Open => "OPEN".to_owned(),
        BreakerState::Saturated => "SATURATED".to_owned(),
        BreakerState::Ejecting { ejected, total } => format!("EJECT {ejected}/{total}"),
    }
}

/// A gate post with a barrier across the lane, and a tag.
fn breaker_glyph(cx: &mut RoadCtx, at: Pos2, n: Vec2, tag: &str, color: Color32) {
    let s = cx.xf.scale;
    let post = Rect::from_center_size(at + n * 9.0 * s, vec2(6.0, 6.0) * s);
    cx.lanes.rect(post, 1.0, color);
    cx.lanes
        .segment(at + n * 9.0 * s, at - n * 9.0 * s, 3.0 * s, color);
    if tag.is_empty() || s < 0.2 {
        return; // closed, or too far out to read
    }
    let galley = cx.painter.layout_no_wrap(
        tag.to_owned(),
        FontId::monospace((10.0 * s).max(7.0)),
        cx.theme.map_bg,
    );
    let r = Align2::CENTER_BOTTOM
        .anchor_size(at - n * 12.0 * s - vec2(0.0, 2.0), galley.size())
        .expand(2.0);
    cx.labels.push(Shape::rect_filled(r, 2.0, color));
    cx.labels.push(Shape::galley(
        r.min + vec2(2.0, 2.0),
        galley,
        cx.theme.map_bg,
    ));
}

/// The lanes of a summed road, added up.
#[derive(Debug, Clone, Default)]
pub(super) struct Summary {
    /// Number of lanes.
    pub lanes: usize,
    /// Summed rps of the lanes with data; `None` when none has data.
    pub rps: Option<f64>,
    /// Summed 5xx per second (rps × 5xx ratio) of the lanes that had requests.
    pub err_rps: f64,
    /// Summed rps of the lanes that had requests (the 5xx ratio's base).
    pub err_base_rps: f64,
    /// The worst p99 of any lane.
    pub p99_max: Option<f64>,
    /// Request-weighted mean p50 (only for particle speed, never shown).
    pub p50_weighted: Option<f64>,
    /// The worst breaker state.
    pub breaker: BreakerState,
    /// Lanes whose breaker is not closed.
    pub not_closed: usize,
    /// The latest trip of any lane.
    pub last_trip: Option<Instant>,
}

impl Summary {
    /// Adds up `lanes`.
    pub fn of(lanes: &[&LaneState]) -> Self {
        let mut s = Self {
            lanes: lanes.len(),
            ..Self::default()
        };
        let mut p50_sum = 0.0;
        let mut p50_weight = 0.0;
        for lane in lanes {
            let Some(st) = &lane.stats else { continue };
            *s.rps.get_or_insert(0.0) += st.rps;
            if let Some(e) = st.err5xx_ratio {
                s.err_rps += e * st.rps;
                s.err_base_rps += st.rps;
            }
            if let Some(p) = st.p99_ms {
                s.p99_max = Some(s.p99_max.map_or(p, |m: f64| m.max(p)));
            }
            if let Some(p) = st.p50_ms {
                p50_sum += p * st.rps;
                p50_weight += st.rps;
            }
            s.breaker = s.breaker.worst(st.breaker);
            if st.breaker != BreakerState::Closed {
                s.not_closed += 1;
            }
        }
        s.p50_weighted = (p50_weight > 0.0).then(|| p50_sum / p50_weight);
        s
    }

    /// The summed 5xx ratio, `None` without requests.
    pub fn err_ratio(&self) -> Option<f64> {
        (self.err_base_rps > 0.0).then(|| self.err_rps / self.err_base_rps)
    }
}

/// The tooltip of one lane.
pub(super) fn lane_tooltip_ui(ui: &mut Ui, model: &Model, key: &LaneKey, lane: &LaneState) {
    // Monospace: the proportional font has no arrow.
    ui.label(
        egui::RichText::new(format!("{} → {} {}", key.caller, key.service, key.version))
            .monospace()
            .strong(),
    );
    match &lane.stats {
        None => {
            ui.label(if model.prometheus.is_some() {
                "no data (no samples in Prometheus over the rate window)"
            } else {
                "no data yet (needs two scrapes of the caller's sidecars)"
            });
        }
        Some(s) => {
            ui.label(format!(
                "{} · 5xx {}",
                fmt_rps(Some(s.rps)),
                s.err5xx_ratio
                    .map_or("–".into(), |e| format!("{:.2} %", e * 100.0))
            ));
            ui.label(format!(
                "p50 {} · p95 {} · p99 {}",
                fmt_ms(s.p50_ms),
                fmt_ms(s.p95_ms),
                fmt_ms(s.p99_ms)
            ));
            ui.label(format!("breaker: {}", s.breaker.label()));
        }
    }
    if let Some(w) = model.configured_weight(&key.service, &key.version) {
        ui.label(format!(
            "configured weight {} %",
            crate::model::types::format_pct(w)
        ));
    }
}

/// The tooltip of a summed road: totals, then the lanes that are not closed.
pub(super) fn road_tooltip_ui(ui: &mut Ui, from: &str, to: &str, lanes: &[&LaneState]) {
    let sum = Summary::of(lanes);
    ui.label(
        egui::RichText::new(format!("{from} → {to}"))
            .monospace()
            .strong(),
    );
    ui.label(format!(
        "{} · {} · 5xx {}",
        lanes_text(sum.lanes),
        fmt_rps(sum.rps),
        sum.err_ratio()
            .map_or("–".into(), |e| format!("{:.2} %", e * 100.0))
    ));
    ui.label(format!("worst p99 {}", fmt_ms(sum.p99_max)));
    if sum.not_closed == 0 {
        ui.label("every breaker closed");
    }
    for lane in lanes.iter().filter(|l| {
        l.stats
            .as_ref()
            .is_some_and(|s| s.breaker != BreakerState::Closed)
    }) {
        if let Some(s) = &lane.stats {
            ui.label(
                egui::RichText::new(format!(
                    "{} → {} {}: {}",
                    lane.key.caller,
                    lane.key.service,
                    lane.key.version,
                    s.breaker.label()
                ))
                .monospace(),
            );
        }
    }
    ui.weak("double-click the group to expand it");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::WindowStats;

    fn lane(rps: f64, err: Option<f64>, p99: f64, breaker: BreakerState) -> LaneState {
        LaneState {
            key: LaneKey {
                caller: "a".into(),
                service: "b".into(),
                version: "v1".into(),
            },
            stats: Some(WindowStats {
                rps,
                err5xx_ratio: err,
                p50_ms: Some(p99 / 4.0),
                p95_ms: Some(p99 / 2.0),
                p99_ms: Some(p99),
                breaker,
            }),
            window: None,
            updated_at: None,
        }
    }

    #[test]
    fn summed_roads_add_rates_and_errors_and_keep_the_worst() {
        let a = lane(90.0, Some(0.0), 20.0, BreakerState::Closed);
        let b = lane(10.0, Some(0.5), 300.0, BreakerState::Saturated);
        let c = lane(0.0, None, 5.0, BreakerState::Open);
        let mut none = lane(1.0, None, 1.0, BreakerState::Closed);
        none.stats = None;
        let s = Summary::of(&[&a, &b, &c, &none]);
        assert_eq!(s.lanes, 4);
        assert!((s.rps.unwrap() - 100.0).abs() < 1e-9);
        assert!((s.err_ratio().unwrap() - 0.05).abs() < 1e-9, "5 of 100");
        assert_eq!(s.p99_max, Some(300.0), "worst, never an average");
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(s.not_closed, 2);
        let empty = Summary::of(&[&none]);
        assert_eq!(empty.rps, None, "no data is not 0 rps");
        assert_eq!(empty.err_ratio(), None);
    }
}
