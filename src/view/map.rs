//! The highway map: stations (services), roads (caller → callee) split into one lane per
//! version; lane width follows request rate, colour follows 5xx ratio; labels show rps and
//! p99; a toll-gate glyph marks a lane whose breaker is not closed.
//!
//! Positions live in world coordinates from the deterministic layout; the view fits them
//! into the available area with one uniform scale, so opening a panel shrinks the map
//! instead of squeezing its columns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Ui, Vec2, pos2, vec2};

use super::bars::fmt_age;
use super::theme::Theme;
use super::{Camera, ViewState};
use crate::model::filter::Filter;
use crate::model::types::{BreakerState, Health, HealthCounts, LaneKey};
use crate::model::{LaneState, Model};

/// Size of a station, in world units.
const NODE_SIZE: Vec2 = vec2(140.0, 56.0);
/// Horizontal distance between layers (room for lane labels between stations).
const COLUMN_PITCH: f32 = 330.0;
/// Vertical distance between stations of one layer.
const ROW_PITCH: f32 = 120.0;
/// Distance between the centre lines of neighbouring lanes.
const LANE_SPACING: f32 = 14.0;
/// Margin around the map, in screen points.
const MARGIN: f32 = 30.0;
/// A pointer this close to a lane (screen points, beyond its half width) hovers it.
const LANE_HIT: f32 = 6.0;
/// How long a trip's flash lasts.
const FLASH_SECS: f32 = 1.5;
/// Below this zoom lane labels are not drawn (they would be unreadable clutter).
const LABEL_MIN_SCALE: f32 = 0.45;
/// Zoom limits (screen points per world unit).
const MIN_SCALE: f32 = 0.1;
const MAX_SCALE: f32 = 4.0;
/// Frame pace while particles move (only when the window has focus).
const PARTICLE_FRAME: std::time::Duration = std::time::Duration::from_millis(33);

/// Lane width in world units from requests per second (log scale), `None` = no data.
#[must_use]
pub fn lane_width(rps: Option<f64>) -> f32 {
    match rps {
        None => 1.5,
        Some(r) => 2.0 + 2.5 * (1.0 + r.max(0.0)).log10() as f32,
    }
}

/// Formats a latency for a label.
#[must_use]
pub fn fmt_ms(ms: Option<f64>) -> String {
    match ms {
        None => "–".into(),
        Some(v) if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) if v >= 10.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
    }
}

/// Formats a request rate for a label.
#[must_use]
pub fn fmt_rps(rps: Option<f64>) -> String {
    match rps {
        None => "no data".into(),
        Some(v) if v >= 100.0 => format!("{v:.0} rps"),
        Some(v) => format!("{v:.1} rps"),
    }
}

fn faded(c: Color32, stale: bool) -> Color32 {
    if stale { c.gamma_multiply(0.35) } else { c }
}

/// World → screen: one uniform scale plus an offset.
#[derive(Clone, Copy)]
struct Xform {
    scale: f32,
    offset: Vec2,
}

impl Xform {
    fn pos(self, p: Pos2) -> Pos2 {
        pos2(p.x * self.scale, p.y * self.scale) + self.offset
    }

    fn rect(self, r: Rect) -> Rect {
        Rect::from_min_max(self.pos(r.min), self.pos(r.max))
    }

    fn font(self, size: f32) -> FontId {
        FontId::proportional((size * self.scale).max(9.0))
    }
}

/// World rectangle of a station: where the operator pinned it, else its kept slot.
fn world_rect(view: &ViewState, name: &str) -> Option<Rect> {
    if let Some([x, y]) = view.pins.get(name) {
        return Some(Rect::from_center_size(pos2(*x, *y), NODE_SIZE));
    }
    let slot = view.placement.slots.get(name)?;
    let x = slot.layer as f32 * COLUMN_PITCH + NODE_SIZE.x / 2.0;
    let y = slot.row2 as f32 * ROW_PITCH / 2.0;
    Some(Rect::from_center_size(pos2(x, y), NODE_SIZE))
}

/// The camera that fits `bounds` (world) into `area` (never enlarging past 1:1), centred.
fn fit(bounds: Rect, area: Rect) -> Camera {
    let inner = area.shrink(MARGIN);
    let scale = (inner.width() / bounds.width().max(1.0))
        .min(inner.height() / bounds.height().max(1.0))
        .clamp(MIN_SCALE, 1.0);
    let offset = inner.center() - area.min - bounds.center().to_vec2() * scale;
    Camera {
        scale,
        offset: [offset.x, offset.y],
    }
}

fn xform(cam: Camera, area: Rect) -> Xform {
    Xform {
        scale: cam.scale,
        offset: area.min.to_vec2() + vec2(cam.offset[0], cam.offset[1]),
    }
}

/// Zooms by `factor` keeping the world point under `pointer` where it is.
fn zoom_at(cam: Camera, area: Rect, pointer: Pos2, factor: f32) -> Camera {
    let scale = (cam.scale * factor).clamp(MIN_SCALE, MAX_SCALE);
    let off = vec2(cam.offset[0], cam.offset[1]);
    let local = pointer - area.min;
    let world = (local - off) / cam.scale;
    let offset = local - world * scale;
    Camera {
        scale,
        offset: [offset.x, offset.y],
    }
}

/// One drawn lane, for hit testing.
struct LaneGeom<'a> {
    lane: &'a LaneState,
    p0: Pos2,
    p1: Pos2,
    half_width: f32,
}

fn distance_to_segment(p: Pos2, a: Pos2, b: Pos2) -> f32 {
    let ab = b - a;
    let t = ((p - a).dot(ab) / ab.length_sq().max(f32::EPSILON)).clamp(0.0, 1.0);
    (a + ab * t).distance(p)
}

/// A move of the keyboard selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// To a caller of the selected station.
    Left,
    /// To a callee of the selected station.
    Right,
    /// To the station above in the same column.
    Up,
    /// To the station below in the same column.
    Down,
}

/// Where an arrow key takes the selection: along roads (left = a caller, right = a callee,
/// the topmost first) or within the column. Nothing selected: the top-left station.
#[must_use]
pub fn step_selection(model: &Model, view: &ViewState, step: Step) -> Option<String> {
    let slot = |n: &str| view.placement.slots.get(n).map(|s| (s.layer, s.row2));
    let known = |n: &&String| model.services.contains_key(n.as_str());
    let Some(cur) = view
        .selected
        .as_deref()
        .filter(|s| model.services.contains_key(*s))
    else {
        return model
            .services
            .keys()
            .filter_map(|n| slot(n).map(|p| (p, n)))
            .min()
            .map(|(_, n)| n.clone());
    };
    let roads = model.roads();
    let pick = |names: Vec<&String>| {
        names
            .into_iter()
            .filter(known)
            .filter_map(|n| slot(n).map(|p| (p, n)))
            .min()
            .map(|(_, n)| n.clone())
    };
    let (layer, row) = slot(cur)?;
    match step {
        Step::Right => pick(
            roads
                .iter()
                .filter(|(a, _)| a == cur)
                .map(|(_, b)| b)
                .collect(),
        ),
        Step::Left => pick(
            roads
                .iter()
                .filter(|(_, b)| b == cur)
                .map(|(a, _)| a)
                .collect(),
        ),
        Step::Up | Step::Down => {
            let mut column: Vec<(i32, &String)> = model
                .services
                .keys()
                .filter_map(|n| {
                    view.placement
                        .slots
                        .get(n)
                        .filter(|s| s.layer == layer)
                        .map(|s| (s.row2, n))
                })
                .collect();
            column.sort();
            let next = if step == Step::Down {
                column.iter().find(|(r, _)| *r > row)
            } else {
                column.iter().rev().find(|(r, _)| *r < row)
            };
            next.map(|(_, n)| (*n).clone())
        }
    }
}

/// Draws the map into the remaining space of `ui`.
pub fn map_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, theme: &Theme, now: Instant) {
    let (rect, bg) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, theme.map_bg);

    let services: BTreeSet<String> = model.services.keys().cloned().collect();
    if services.is_empty() {
        let msg = if model.registry_status.last_ok.is_none() {
            match &model.registry_status.last_error {
                Some(e) => format!("Registry not reachable yet — retrying\n{e}"),
                None => "Connecting to the registry…".to_owned(),
            }
        } else {
            "The registry lists no services".to_owned()
        };
        painter.text(
            rect.center(),
            Align2::CENTER_CENTER,
            msg,
            FontId::proportional(16.0),
            theme.text_dim,
        );
        return;
    }
    let roads = model.roads();
    let settled = |v: &ViewState| v.placement.slots.values().any(|s| !s.provisional);
    let was_settled = settled(view);
    view.placement.update(&services, &roads);
    if !was_settled && settled(view) {
        // The first roads just laid the map out: fit it once (later refreshes never do).
        view.camera = None;
    }
    // Ghosts keep their slot while they are shown; then the row is free again.
    let gone = model.gone_services(now);
    let forget: Vec<String> = view
        .placement
        .slots
        .keys()
        .filter(|n| !services.contains(*n) && !gone.iter().any(|(g, _)| g == *n))
        .cloned()
        .collect();
    for name in forget {
        view.placement.forget(&name);
    }
    // Which stations the filter shows (names and predicates; a bad filter shows all and
    // the header says why).
    let filter = Filter::parse(&view.filter).unwrap_or_default();
    let shown: BTreeSet<&str> = services
        .iter()
        .filter(|n| filter.is_empty() || model.matches(n, &filter, now))
        .map(String::as_str)
        .collect();

    // Camera: kept across refreshes; fitted only at first sight or on `f`.
    let mut cam = view.camera.unwrap_or_else(|| {
        let bounds = services
            .iter()
            .filter_map(|n| world_rect(view, n))
            .fold(Rect::NOTHING, Rect::union);
        fit(bounds, rect)
    });
    if let Some(p) = ui
        .input(|i| i.pointer.hover_pos())
        .filter(|p| rect.contains(*p))
        && ui.ui_contains_pointer()
    {
        let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = pinch * (scroll / 400.0).exp();
        if (factor - 1.0).abs() > 1e-4 {
            cam = zoom_at(cam, rect, p, factor);
        }
    }
    if bg.dragged() {
        let d = bg.drag_delta();
        cam.offset[0] += d.x;
        cam.offset[1] += d.y;
    }
    view.camera = Some(cam);
    let xf = xform(cam, rect);
    let screen_rects: BTreeMap<String, Rect> = services
        .iter()
        .filter_map(|n| world_rect(view, n).map(|r| (n.clone(), xf.rect(r))))
        .collect();
    let registry_stale = model.registry_status.is_stale(now, model.registry_interval);
    let time = ui.input(|i| i.time);
    let animate = view.particles && !view.paused;
    let mut moving = false;

    // Labels must not cover stations or each other.
    let mut occupied: Vec<Rect> = screen_rects.values().map(|r| r.expand(2.0)).collect();
    let mut geoms: Vec<LaneGeom> = Vec::new();
    // Roads first, stations on top. Lanes are sorted by (caller, service, version): one
    // pass groups them into roads.
    let mut stale_callers: BTreeMap<&str, bool> = BTreeMap::new();
    let lanes_all: Vec<&LaneState> = model.lanes.values().collect();
    for road_lanes in
        lanes_all.chunk_by(|a, b| a.key.caller == b.key.caller && a.key.service == b.key.service)
    {
        let first = &road_lanes[0].key;
        let (caller, service) = (&first.caller, &first.service);
        let (Some(a), Some(b)) = (screen_rects.get(caller), screen_rects.get(service)) else {
            continue;
        };
        if !rect.intersects(a.union(*b)) {
            continue; // off screen
        }
        let lanes: Vec<&LaneState> = road_lanes
            .iter()
            .copied()
            .filter(|l| {
                shown.contains(l.key.service.as_str()) || shown.contains(l.key.caller.as_str())
            })
            .collect();
        let stale = *stale_callers
            .entry(caller.as_str())
            .or_insert_with(|| model.caller_stale(caller, now));
        let road = Road {
            from: *a,
            to: *b,
            stale,
            time: animate.then_some(time),
            now,
        };
        moving |= road_ui(
            &painter,
            model,
            theme,
            view,
            xf,
            &road,
            &lanes,
            &mut occupied,
            &mut geoms,
        );
    }
    for (name, at) in &gone {
        if let Some(r) = world_rect(view, name).map(|r| xf.rect(r))
            && rect.intersects(r)
        {
            ghost_ui(
                &painter,
                theme,
                xf,
                name,
                r,
                now.saturating_duration_since(*at),
            );
        }
    }
    for (name, r) in &screen_rects {
        if shown.contains(name.as_str()) && rect.intersects(*r) {
            station_ui(
                ui,
                &painter,
                model,
                view,
                theme,
                xf,
                name,
                *r,
                registry_stale,
                now,
            );
        }
    }
    if moving && ui.input(|i| i.viewport().focused.unwrap_or(true)) {
        ui.ctx().request_repaint_after(PARTICLE_FRAME);
    }

    // Hover and click on lanes: the nearest lane under the pointer.
    let hovered = bg.hover_pos().and_then(|p| {
        geoms
            .iter()
            .map(|g| (distance_to_segment(p, g.p0, g.p1) - g.half_width, g))
            .filter(|(d, _)| *d <= LANE_HIT)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, g)| g.lane)
    });
    if bg.clicked() {
        view.select(hovered.map(|l| l.key.service.clone()));
        view.selected_lane = hovered.map(|l| l.key.clone());
    }
    if let Some(lane) = hovered {
        bg.on_hover_ui_at_pointer(|ui| lane_tooltip_ui(ui, model, &lane.key, lane));
    }
}

fn lane_tooltip_ui(ui: &mut Ui, model: &Model, key: &LaneKey, lane: &LaneState) {
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

/// One road as drawn: its stations' screen rectangles, staleness and the animation clock.
struct Road {
    from: Rect,
    to: Rect,
    stale: bool,
    /// Seconds since start when particles move, `None` when they don't.
    time: Option<f64>,
    /// The clock of this frame (trip flashes).
    now: Instant,
}

/// Particles on a lane: count by request rate (log), speed by latency (slower when slow).
fn particles(rps: f64, p50_ms: Option<f64>) -> (usize, f32) {
    let count = ((1.0 + rps).log2() * 1.5).round().clamp(1.0, 14.0) as usize;
    let speed = (260.0 / (1.0 + p50_ms.unwrap_or(20.0) / 40.0)).clamp(20.0, 220.0) as f32;
    (count, speed)
}

/// Draws one road's lanes; returns whether particles are moving on it.
#[allow(clippy::too_many_arguments)]
fn road_ui<'a>(
    painter: &egui::Painter,
    model: &Model,
    theme: &Theme,
    view: &ViewState,
    xf: Xform,
    road: &Road,
    lanes: &[&'a LaneState],
    occupied: &mut Vec<Rect>,
    geoms: &mut Vec<LaneGeom<'a>>,
) -> bool {
    let (from, to, stale) = (road.from, road.to, road.stale);
    let start = pos2(from.right(), from.center().y);
    let end = pos2(to.left(), to.center().y);
    let d = (end - start).normalized();
    let n = vec2(-d.y, d.x);
    let k = lanes.len() as f32;
    let mut moving = false;
    for (i, lane) in lanes.iter().enumerate() {
        let offset = (i as f32 - (k - 1.0) / 2.0) * LANE_SPACING * xf.scale;
        let (p0, p1) = (start + n * offset, end + n * offset);
        let stats = lane.stats.as_ref();
        let base = theme.lane_color(stats.and_then(|s| s.err5xx_ratio), view.thresholds);
        let color = faded(base, stale);
        let width = lane_width(stats.map(|s| s.rps)) * xf.scale;
        if view.selected_lane.as_ref() == Some(&lane.key) {
            painter.line_segment([p0, p1], Stroke::new(width + 5.0, theme.selection));
        }
        if stale || stats.is_none() {
            // Stale or no data: dashed, so it never reads as a quiet healthy lane.
            painter.extend(egui::Shape::dashed_line(
                &[p0, p1],
                Stroke::new(width, color),
                8.0 * xf.scale,
                6.0 * xf.scale,
            ));
        } else {
            painter.line_segment([p0, p1], Stroke::new(width, color));
        }
        geoms.push(LaneGeom {
            lane,
            p0,
            p1,
            half_width: width / 2.0,
        });
        if let (Some(time), Some(s)) = (road.time, stats)
            && !stale
            && s.rps > 0.0
        {
            let (count, speed) = particles(s.rps, s.p50_ms);
            let len = (p1 - p0).length().max(1.0);
            let phase = (time * f64::from(speed * xf.scale) / f64::from(len)).fract() as f32;
            let dot = theme.text.gamma_multiply(0.8);
            for j in 0..count {
                let t = (phase + j as f32 / count as f32).fract();
                painter.circle_filled(p0 + (p1 - p0) * t, (width * 0.35).clamp(1.5, 4.0), dot);
            }
            moving = true;
        }

        // Toll gate near the callee when the breaker is not closed.
        if let Some(state) = stats.map(|s| s.breaker)
            && let Some(color) = theme.breaker_color(state)
        {
            let at = p0 + (p1 - p0) * 0.85;
            breaker_glyph(painter, xf, at, n, state, faded(color, stale), theme);
            // A trip flashes once: an expanding ring for a moment after it happened.
            if let Some(t) = model.last_trip(&lane.key) {
                let age = road.now.saturating_duration_since(t).as_secs_f32();
                if age < FLASH_SECS {
                    let k = age / FLASH_SECS;
                    painter.circle_stroke(
                        at,
                        (10.0 + 30.0 * k) * xf.scale.max(0.5),
                        Stroke::new(3.0 * (1.0 - k), color),
                    );
                    moving = true;
                }
            }
        }

        // Label: version, rps, p99 (or why there is none), where it covers nothing; only
        // when zoomed in enough to read it (the tooltip always has the numbers).
        if xf.scale < LABEL_MIN_SCALE {
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
        let galley = painter.layout_no_wrap(label, xf.font(11.0), faded(theme.text, stale));
        // Along the lane first, then nudged sideways (lanes of one road run close). On a
        // road of several lanes, the outer side of this lane comes first, so a label never
        // sits across its neighbour.
        let nudge = galley.size().y + 4.0;
        let outer = f32::midpoint(p0.y, p1.y) - f32::midpoint(start.y, end.y);
        let sides = if k > 1.0 && outer.abs() > 0.5 {
            let s = outer.signum();
            [s * 0.6, s, -s]
        } else {
            [0.0_f32, 1.0, -1.0]
        };
        let candidates = sides
            .into_iter()
            .flat_map(|side| [0.5_f32, 0.35, 0.65, 0.25, 0.75].map(|t| (t, side)));
        let place = candidates.into_iter().find_map(|(t, side)| {
            let at = p0 + (p1 - p0) * t + vec2(0.0, side * nudge);
            let r = Align2::CENTER_CENTER
                .anchor_size(at, galley.size())
                .expand(2.0);
            (!occupied.iter().any(|o| o.intersects(r))).then_some(r)
        });
        if let Some(r) = place {
            occupied.push(r);
            painter.rect_filled(r, 3.0, theme.map_bg.gamma_multiply(0.85));
            painter.galley(r.min + vec2(2.0, 2.0), galley, theme.text);
        }
    }
    moving
}

fn breaker_glyph(
    painter: &egui::Painter,
    xf: Xform,
    at: Pos2,
    n: Vec2,
    b: BreakerState,
    color: Color32,
    theme: &Theme,
) {
    // A gate post with a barrier across the lane, and a tag.
    let s = xf.scale;
    let post = Rect::from_center_size(at + n * 9.0 * s, vec2(6.0, 6.0) * s);
    painter.rect_filled(post, 1.0, color);
    painter.line_segment(
        [at + n * 9.0 * s, at - n * 9.0 * s],
        Stroke::new(3.0 * s, color),
    );
    let tag = match b {
        BreakerState::Closed => return,
        BreakerState::Open => "OPEN".to_owned(),
        BreakerState::Saturated => "SATURATED".to_owned(),
        BreakerState::Ejecting { ejected, total } => format!("EJECT {ejected}/{total}"),
    };
    let galley = painter.layout_no_wrap(tag, FontId::monospace((10.0 * s).max(7.0)), theme.map_bg);
    let r = Align2::CENTER_BOTTOM
        .anchor_size(at - n * 12.0 * s - vec2(0.0, 2.0), galley.size())
        .expand(2.0);
    painter.rect_filled(r, 2.0, color);
    painter.galley(r.min + vec2(2.0, 2.0), galley, theme.map_bg);
}

#[allow(clippy::too_many_arguments)]
fn station_ui(
    ui: &Ui,
    painter: &egui::Painter,
    model: &Model,
    view: &mut ViewState,
    theme: &Theme,
    xf: Xform,
    name: &str,
    rect: Rect,
    stale: bool,
    now: Instant,
) {
    let Some(svc) = model.services.get(name) else {
        return;
    };
    let zoom = xf.scale;
    let mut counts = HealthCounts::default();
    for inst in &svc.instances {
        counts.add(inst.health);
    }
    let selected = view.selected.as_deref() == Some(name);
    let ring = counts
        .worst()
        .map_or(theme.node_stroke, |h| theme.health_color(h));
    painter.rect_filled(rect, 8.0 * zoom, faded(theme.node_fill, stale));
    painter.rect_stroke(
        rect,
        8.0 * zoom,
        Stroke::new(if selected { 3.0 } else { 2.0 }, faded(ring, stale)),
        StrokeKind::Inside,
    );
    if selected {
        painter.rect_stroke(
            rect.expand(4.0),
            10.0 * zoom,
            Stroke::new(1.5, theme.selection),
            StrokeKind::Outside,
        );
    }
    painter.text(
        rect.left_top() + vec2(10.0, 8.0) * zoom,
        Align2::LEFT_TOP,
        name,
        xf.font(15.0),
        faded(theme.text, stale),
    );
    // One dot per instance, grouped by version.
    let mut x = rect.left() + 10.0 * zoom;
    let y = rect.bottom() - 14.0 * zoom;
    for version in svc.versions() {
        let galley = painter.layout_no_wrap(version.clone(), xf.font(11.0), theme.text_dim);
        let w = galley.size().x;
        painter.galley(pos2(x, y - galley.size().y / 2.0), galley, theme.text_dim);
        x += w + 4.0 * zoom;
        for inst in svc.instances.iter().filter(|i| i.version == version) {
            painter.circle_filled(
                pos2(x + 4.0 * zoom, y),
                4.0 * zoom,
                faded(theme.health_color(inst.health), stale),
            );
            x += 11.0 * zoom;
        }
        x += 8.0 * zoom;
    }
    health_ring(
        painter,
        rect.right_top() + vec2(-16.0, 16.0) * zoom,
        9.0 * zoom,
        &counts,
        theme,
    );
    if stale {
        hatch(
            painter,
            rect,
            10.0 * zoom,
            theme.text_dim.gamma_multiply(0.35),
        );
        let since = fmt_age(model.registry_status.age(now));
        painter.text(
            rect.center_bottom() + vec2(0.0, 4.0),
            Align2::CENTER_TOP,
            format!("stale · last good {since}"),
            xf.font(10.0),
            theme.text_dim,
        );
    }
    if let Some((badge, attention)) = super::shift::station_badge(model, name, now) {
        painter.text(
            rect.center_top() - vec2(0.0, 4.0),
            Align2::CENTER_BOTTOM,
            badge,
            xf.font(11.0),
            if attention {
                theme.lane_degraded
            } else {
                theme.selection
            },
        );
    }
    let pinned = view.pins.contains_key(name);
    if pinned {
        let at = rect.left_top() + vec2(2.0, 2.0) * zoom;
        painter.circle_filled(at, 3.5 * zoom.max(0.5), theme.selection);
    }
    let resp = ui.interact(
        rect,
        ui.scope_id().with(("station", name)),
        Sense::click_and_drag(),
    );
    resp.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Button, true, format!("station {name}"))
    });
    if resp.clicked() {
        view.select(Some(name.to_owned()));
    }
    if resp.dragged() {
        // Drag = move and pin (world units).
        let c = rect.center() + resp.drag_delta();
        let world = (c - xf.offset) / xf.scale;
        view.pins.insert(name.to_owned(), [world.x, world.y]);
    }
    resp.context_menu(|ui| {
        if ui
            .add_enabled(pinned, egui::Button::new("Unpin (back to its slot)"))
            .clicked()
        {
            view.pins.remove(name);
            ui.close();
        }
        if ui.button("Select").clicked() {
            view.select(Some(name.to_owned()));
            ui.close();
        }
    });
    resp.on_hover_ui(|ui| {
        ui.strong(name);
        ui.label(format!(
            "{} passing · {} warning · {} critical",
            counts.passing, counts.warning, counts.critical
        ));
        for inst in svc.instances.iter().filter(|i| i.health != Health::Passing) {
            ui.colored_label(
                theme.health_color(inst.health),
                format!(
                    "{} {}: {}",
                    inst.id,
                    inst.health.as_str(),
                    inst.check_output
                ),
            );
        }
    });
}

/// A service that vanished from the registry: a faded, dashed outline in its old slot.
fn ghost_ui(
    painter: &egui::Painter,
    theme: &Theme,
    xf: Xform,
    name: &str,
    rect: Rect,
    gone_for: std::time::Duration,
) {
    let c = theme.text_dim.gamma_multiply(0.6);
    let pts = [
        rect.left_top(),
        rect.right_top(),
        rect.right_bottom(),
        rect.left_bottom(),
        rect.left_top(),
    ];
    painter.extend(egui::Shape::dashed_line(
        &pts,
        Stroke::new(1.5, c),
        6.0 * xf.scale,
        4.0 * xf.scale,
    ));
    painter.text(
        rect.left_top() + vec2(10.0, 8.0) * xf.scale,
        Align2::LEFT_TOP,
        name,
        xf.font(15.0),
        c,
    );
    painter.text(
        rect.left_bottom() + vec2(10.0, -8.0) * xf.scale,
        Align2::LEFT_BOTTOM,
        format!("gone {}", fmt_age(Some(gone_for))),
        xf.font(11.0),
        c,
    );
}

/// Diagonal hatching over `rect`: the mark of stale data.
fn hatch(painter: &egui::Painter, rect: Rect, spacing: f32, color: Color32) {
    let p = painter.with_clip_rect(rect.intersect(painter.clip_rect()));
    let spacing = spacing.max(4.0);
    let h = rect.height();
    let mut x = rect.left() - h;
    while x < rect.right() {
        p.line_segment(
            [pos2(x, rect.bottom()), pos2(x + h, rect.top())],
            Stroke::new(1.0, color),
        );
        x += spacing;
    }
}

/// The health ring: arcs for passing / warning / critical instances, by count.
fn health_ring(painter: &egui::Painter, c: Pos2, r: f32, counts: &HealthCounts, theme: &Theme) {
    let total = counts.passing + counts.warning + counts.critical;
    if total == 0 {
        painter.circle_stroke(c, r, Stroke::new(2.0, theme.lane_no_data));
        return;
    }
    let mut a0 = -std::f32::consts::FRAC_PI_2;
    for (n, h) in [
        (counts.critical, Health::Critical),
        (counts.warning, Health::Warning),
        (counts.passing, Health::Passing),
    ] {
        if n == 0 {
            continue;
        }
        let span = std::f32::consts::TAU * n as f32 / total as f32;
        let steps = ((span / 0.2).ceil() as usize).max(2);
        let pts: Vec<Pos2> = (0..=steps)
            .map(|k| {
                let a = a0 + span * k as f32 / steps as f32;
                c + vec2(a.cos(), a.sin()) * r
            })
            .collect();
        painter.add(egui::Shape::line(
            pts,
            Stroke::new((r * 0.45).max(2.0), theme.health_color(h)),
        ));
        a0 += span;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(names: &[&str], roads: &[(&str, &str)]) -> ViewState {
        let services: BTreeSet<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let roads: Vec<(String, String)> = roads
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let mut view = ViewState::default();
        view.placement.update(&services, &roads);
        view
    }

    #[test]
    fn fit_never_enlarges_and_centres() {
        let view = view_of(&["a", "b"], &[("a", "b")]);
        let bounds = world_rect(&view, "a")
            .unwrap()
            .union(world_rect(&view, "b").unwrap());
        let area = Rect::from_min_size(pos2(10.0, 20.0), vec2(2000.0, 1000.0));
        let xf = xform(fit(bounds, area), area);
        assert!((xf.scale - 1.0).abs() < f32::EPSILON);
        let a = xf.rect(world_rect(&view, "a").unwrap());
        let b = xf.rect(world_rect(&view, "b").unwrap());
        assert!(
            (f32::midpoint(a.left(), b.right()) - 1010.0).abs() < 0.5,
            "centred"
        );
        let small = Rect::from_min_size(Pos2::ZERO, vec2(300.0, 300.0));
        assert!(fit(bounds, small).scale < 1.0);
    }

    #[test]
    fn zoom_keeps_the_point_under_the_pointer() {
        let area = Rect::from_min_size(pos2(0.0, 40.0), vec2(800.0, 600.0));
        let cam = Camera {
            scale: 0.5,
            offset: [30.0, 10.0],
        };
        let pointer = pos2(300.0, 200.0);
        let before = (pointer - xform(cam, area).offset) / cam.scale;
        let zoomed = zoom_at(cam, area, pointer, 2.0);
        assert!((zoomed.scale - 1.0).abs() < 1e-6);
        let after = (pointer - xform(zoomed, area).offset) / zoomed.scale;
        assert!((before - after).length() < 1e-3);
        assert!((zoom_at(cam, area, pointer, 1000.0).scale - MAX_SCALE).abs() < 1e-6);
    }

    #[test]
    fn a_pin_overrides_the_slot() {
        let mut view = view_of(&["a", "b"], &[("a", "b")]);
        view.pins.insert("b".into(), [5.0, 7.0]);
        assert_eq!(world_rect(&view, "b").unwrap().center(), pos2(5.0, 7.0));
        assert!(world_rect(&view, "a").unwrap().center().y.abs() < 1e-6);
    }

    #[test]
    fn segment_distance() {
        let d = distance_to_segment(pos2(5.0, 3.0), pos2(0.0, 0.0), pos2(10.0, 0.0));
        assert!((d - 3.0).abs() < 1e-6);
        let end = distance_to_segment(pos2(13.0, 4.0), pos2(0.0, 0.0), pos2(10.0, 0.0));
        assert!((end - 5.0).abs() < 1e-6);
    }
}
