//! The highway map: stations (services), roads (caller → callee) split into one lane per
//! version; lane width follows request rate, colour follows 5xx ratio; labels show rps and
//! p99; a toll-gate glyph marks a lane whose breaker is not closed.
//!
//! Positions live in world coordinates from the deterministic layout; the view fits them
//! into the available area with one uniform scale, so opening a panel shrinks the map
//! instead of squeezing its columns.

use std::collections::BTreeSet;
use std::time::Instant;

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Ui, Vec2, pos2, vec2};

use super::ViewState;
use super::layout::{Layout, layered};
use super::theme::Theme;
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

/// World rectangle of a station: layers left to right, rows centred on y = 0.
fn world_rect(layout: &Layout, name: &str) -> Option<Rect> {
    let &(layer, row) = layout.slots.get(name)?;
    let rows = layout
        .slots
        .values()
        .filter(|(l, _)| *l == layer)
        .count()
        .max(1);
    let x = layer as f32 * COLUMN_PITCH;
    let y = (row as f32 - (rows as f32 - 1.0) / 2.0) * ROW_PITCH;
    Some(Rect::from_center_size(
        pos2(x + NODE_SIZE.x / 2.0, y),
        NODE_SIZE,
    ))
}

/// Fits the world bounds into `area` (never enlarging past 1:1), centred.
fn fit(layout: &Layout, area: Rect) -> Xform {
    let mut bounds = Rect::NOTHING;
    for name in layout.slots.keys() {
        if let Some(r) = world_rect(layout, name) {
            bounds = bounds.union(r);
        }
    }
    let inner = area.shrink(MARGIN);
    let scale = (inner.width() / bounds.width().max(1.0))
        .min(inner.height() / bounds.height().max(1.0))
        .clamp(0.2, 1.0);
    let offset = inner.center().to_vec2() - bounds.center().to_vec2() * scale;
    Xform { scale, offset }
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

/// Draws the map into the remaining space of `ui`.
pub fn map_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, theme: &Theme, now: Instant) {
    let (rect, bg) = ui.allocate_exact_size(ui.available_size(), Sense::click());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, theme.map_bg);

    let services: BTreeSet<String> = model.services.keys().cloned().collect();
    if services.is_empty() {
        let msg = if model.registry_status.last_ok.is_none() {
            match &model.registry_status.last_error {
                Some(e) => format!("Registry not reachable yet — retrying every second\n{e}"),
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
    let layout = layered(&services, &roads);
    let xf = fit(&layout, rect);
    let screen_rect = |name: &str| world_rect(&layout, name).map(|r| xf.rect(r));
    let registry_stale = model.registry_status.is_stale(now, model.registry_interval);

    // Labels must not cover stations or each other.
    let mut occupied: Vec<Rect> = services
        .iter()
        .filter_map(|s| screen_rect(s))
        .map(|r| r.expand(2.0))
        .collect();
    let mut geoms: Vec<LaneGeom> = Vec::new();
    // Roads first, stations on top.
    for (caller, callee) in &roads {
        let (Some(a), Some(b)) = (screen_rect(caller), screen_rect(callee)) else {
            continue;
        };
        let lanes: Vec<&LaneState> = model
            .lanes
            .values()
            .filter(|l| &l.key.caller == caller && &l.key.service == callee)
            .filter(|l| view.filter_matches(&l.key.service) || view.filter_matches(&l.key.caller))
            .collect();
        let stale = model.caller_stale(caller, now);
        road_ui(
            &painter,
            theme,
            view,
            xf,
            a,
            b,
            &lanes,
            stale,
            &mut occupied,
            &mut geoms,
        );
    }
    for name in &services {
        let Some(r) = screen_rect(name) else { continue };
        if view.filter_matches(name) {
            station_ui(
                ui,
                &painter,
                model,
                view,
                theme,
                xf,
                name,
                r,
                registry_stale,
            );
        }
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
        view.selected = hovered.map(|l| l.key.service.clone());
    }
    if let Some(lane) = hovered {
        bg.on_hover_ui_at_pointer(|ui| lane_tooltip_ui(ui, model, &lane.key, lane));
    }
}

fn lane_tooltip_ui(ui: &mut Ui, model: &Model, key: &LaneKey, lane: &LaneState) {
    ui.strong(format!("{} → {} {}", key.caller, key.service, key.version));
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

#[allow(clippy::too_many_arguments)]
fn road_ui<'a>(
    painter: &egui::Painter,
    theme: &Theme,
    view: &ViewState,
    xf: Xform,
    from: Rect,
    to: Rect,
    lanes: &[&'a LaneState],
    stale: bool,
    occupied: &mut Vec<Rect>,
    geoms: &mut Vec<LaneGeom<'a>>,
) {
    let start = pos2(from.right(), from.center().y);
    let end = pos2(to.left(), to.center().y);
    let d = (end - start).normalized();
    let n = vec2(-d.y, d.x);
    let k = lanes.len() as f32;
    for (i, lane) in lanes.iter().enumerate() {
        let offset = (i as f32 - (k - 1.0) / 2.0) * LANE_SPACING * xf.scale;
        let (p0, p1) = (start + n * offset, end + n * offset);
        let stats = lane.stats.as_ref();
        let color = faded(
            theme.lane_color(stats.and_then(|s| s.err5xx_ratio), view.thresholds),
            stale,
        );
        let width = lane_width(stats.map(|s| s.rps)) * xf.scale;
        painter.line_segment([p0, p1], Stroke::new(width, color));
        geoms.push(LaneGeom {
            lane,
            p0,
            p1,
            half_width: width / 2.0,
        });

        // Label: version, rps, p99 (or why there is none), where it covers nothing.
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
        // Along the lane first, then nudged sideways (lanes of one road run close).
        let nudge = galley.size().y + 4.0;
        let candidates = [0.0_f32, 1.0, -1.0]
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

        // Toll gate near the callee when the breaker is not closed.
        if let Some(state) = stats.map(|s| s.breaker)
            && let Some(color) = theme.breaker_color(state)
        {
            let at = p0 + (p1 - p0) * 0.85;
            breaker_glyph(painter, xf, at, n, state, faded(color, stale), theme);
        }
    }
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
    let resp = ui.interact(rect, ui.scope_id().with(("station", name)), Sense::click());
    resp.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Button, true, format!("station {name}"))
    });
    if resp.clicked() {
        view.selected = Some(name.to_owned());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_never_enlarges_and_centres() {
        let services: BTreeSet<String> = ["a", "b"].iter().map(|s| (*s).to_owned()).collect();
        let layout = layered(&services, &[("a".into(), "b".into())]);
        let area = Rect::from_min_size(Pos2::ZERO, vec2(2000.0, 1000.0));
        let xf = fit(&layout, area);
        assert!((xf.scale - 1.0).abs() < f32::EPSILON);
        let a = xf.rect(world_rect(&layout, "a").unwrap());
        let b = xf.rect(world_rect(&layout, "b").unwrap());
        assert!(
            (f32::midpoint(a.left(), b.right()) - 1000.0).abs() < 0.5,
            "centred"
        );
        let small = Rect::from_min_size(Pos2::ZERO, vec2(300.0, 300.0));
        assert!(fit(&layout, small).scale < 1.0);
    }

    #[test]
    fn segment_distance() {
        let d = distance_to_segment(pos2(5.0, 3.0), pos2(0.0, 0.0), pos2(10.0, 0.0));
        assert!((d - 3.0).abs() < 1e-6);
        let end = distance_to_segment(pos2(13.0, 4.0), pos2(0.0, 0.0), pos2(10.0, 0.0));
        assert!((end - 5.0).abs() < 1e-6);
    }
}
