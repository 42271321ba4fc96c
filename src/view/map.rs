//! The highway map: stations (services), roads (caller → callee) split into one lane per
//! version; lane width follows request rate, colour follows 5xx ratio; labels show rps and
//! p99; a toll-gate glyph marks a lane whose breaker is not closed.

use std::collections::BTreeSet;
use std::time::Instant;

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Ui, Vec2, pos2, vec2};

use super::ViewState;
use super::layout::{Layout, layered};
use super::theme::Theme;
use crate::model::types::{BreakerState, Health, HealthCounts};
use crate::model::{LaneState, Model};

/// Size of a station.
const NODE_SIZE: Vec2 = vec2(150.0, 58.0);
/// Distance between the centre lines of neighbouring lanes.
const LANE_SPACING: f32 = 20.0;

/// Lane width in points from requests per second (log scale), `None` = no data.
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

/// Draws the map into the remaining space of `ui`.
pub fn map_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, theme: &Theme, now: Instant) {
    let (rect, bg) = ui.allocate_exact_size(ui.available_size(), Sense::click());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, theme.map_bg);
    if bg.clicked() {
        view.selected = None;
    }

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
    let node_rect = |name: &str| node_rect(&layout, name, rect);
    let registry_stale = model.registry_status.is_stale(now, model.registry_interval);

    // Roads first, stations on top.
    for (caller, callee) in &roads {
        let (Some(a), Some(b)) = (node_rect(caller), node_rect(callee)) else {
            continue;
        };
        let lanes: Vec<&LaneState> = model
            .lanes
            .values()
            .filter(|l| &l.key.caller == caller && &l.key.service == callee)
            .filter(|l| view.filter_matches(&l.key.service) || view.filter_matches(&l.key.caller))
            .collect();
        let stale = model.caller_stale(caller, now);
        road_ui(ui, &painter, theme, view, a, b, &lanes, stale);
    }
    for name in &services {
        let Some(r) = node_rect(name) else { continue };
        if !view.filter_matches(name) {
            continue;
        }
        station_ui(ui, &painter, model, view, theme, name, r, registry_stale);
    }
}

fn node_rect(layout: &Layout, name: &str, area: Rect) -> Option<Rect> {
    let &(layer, row) = layout.slots.get(name)?;
    let rows_in_layer = layout
        .slots
        .values()
        .filter(|(l, _)| *l == layer)
        .count()
        .max(1);
    let margin = 30.0;
    let col_w = ((area.width() - 2.0 * margin - NODE_SIZE.x) / (layout.layers.max(2) - 1) as f32)
        .max(NODE_SIZE.x + 40.0);
    let row_h = ((area.height() - 2.0 * margin) / rows_in_layer as f32).max(NODE_SIZE.y + 30.0);
    let x = area.left() + margin + col_w * layer as f32;
    let y = area.top() + margin + row_h * (row as f32 + 0.5) - NODE_SIZE.y / 2.0;
    Some(Rect::from_min_size(pos2(x, y), NODE_SIZE))
}

#[allow(clippy::too_many_arguments)]
fn road_ui(
    ui: &Ui,
    painter: &egui::Painter,
    theme: &Theme,
    view: &mut ViewState,
    from: Rect,
    to: Rect,
    lanes: &[&LaneState],
    stale: bool,
) {
    let start = pos2(from.right(), from.center().y);
    let end = pos2(to.left(), to.center().y);
    let d = (end - start).normalized();
    let n = vec2(-d.y, d.x);
    let k = lanes.len() as f32;
    for (i, lane) in lanes.iter().enumerate() {
        let offset = (i as f32 - (k - 1.0) / 2.0) * LANE_SPACING;
        let (p0, p1) = (start + n * offset, end + n * offset);
        let stats = lane.stats.as_ref();
        let color = faded(
            theme.lane_color(stats.and_then(|s| s.err5xx_ratio), view.thresholds),
            stale,
        );
        let width = lane_width(stats.map(|s| s.rps));
        painter.line_segment([p0, p1], Stroke::new(width, color));

        // Click on a lane selects its callee.
        let hit = Rect::from_two_pos(p0, p1).expand(width.max(6.0));
        let id = ui.scope_id().with(("lane", &lane.key));
        let resp = ui.interact(hit, id, Sense::click());
        if resp.clicked() {
            view.selected = Some(lane.key.service.clone());
        }

        // Label: version, rps, p99 (or why there is none).
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
        let mid = p0 + (p1 - p0) * 0.45;
        let galley =
            painter.layout_no_wrap(label, FontId::proportional(11.0), faded(theme.text, stale));
        let label_rect = Align2::CENTER_CENTER
            .anchor_size(mid, galley.size())
            .expand(2.0);
        painter.rect_filled(label_rect, 3.0, theme.map_bg.gamma_multiply(0.85));
        painter.galley(label_rect.min + vec2(2.0, 2.0), galley, theme.text);

        // Toll gate near the callee when the breaker is not closed.
        if let Some(state) = stats.map(|s| s.breaker)
            && let Some(color) = theme.breaker_color(state)
        {
            let at = p0 + (p1 - p0) * 0.82;
            breaker_glyph(painter, at, n, state, faded(color, stale), theme);
        }
    }
}

fn breaker_glyph(
    painter: &egui::Painter,
    at: Pos2,
    n: Vec2,
    b: BreakerState,
    color: Color32,
    theme: &Theme,
) {
    // A gate post with a barrier across the lane, and a tag.
    let post = Rect::from_center_size(at + n * 9.0, vec2(6.0, 6.0));
    painter.rect_filled(post, 1.0, color);
    painter.line_segment([at + n * 9.0, at - n * 9.0], Stroke::new(3.0, color));
    let tag = match b {
        BreakerState::Closed => return,
        BreakerState::Open => "OPEN".to_owned(),
        BreakerState::Saturated => "SATURATED".to_owned(),
        BreakerState::Ejecting { ejected, total } => format!("EJECT {ejected}/{total}"),
    };
    let galley = painter.layout_no_wrap(tag, FontId::monospace(10.0), theme.map_bg);
    let r = Align2::CENTER_BOTTOM
        .anchor_size(at - n * 12.0 - vec2(0.0, 2.0), galley.size())
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
    name: &str,
    r: Rect,
    stale: bool,
) {
    let Some(svc) = model.services.get(name) else {
        return;
    };
    let mut counts = HealthCounts::default();
    for i in &svc.instances {
        counts.add(i.health);
    }
    let selected = view.selected.as_deref() == Some(name);
    let ring = counts
        .worst()
        .map_or(theme.node_stroke, |h| theme.health_color(h));
    painter.rect_filled(r, 8.0, faded(theme.node_fill, stale));
    painter.rect_stroke(
        r,
        8.0,
        Stroke::new(if selected { 3.0 } else { 2.0 }, faded(ring, stale)),
        StrokeKind::Inside,
    );
    if selected {
        painter.rect_stroke(
            r.expand(4.0),
            10.0,
            Stroke::new(1.5, theme.selection),
            StrokeKind::Outside,
        );
    }
    painter.text(
        r.left_top() + vec2(10.0, 8.0),
        Align2::LEFT_TOP,
        name,
        FontId::proportional(15.0),
        faded(theme.text, stale),
    );
    // One dot per instance, grouped by version.
    let mut x = r.left() + 10.0;
    let y = r.bottom() - 14.0;
    for version in svc.versions() {
        let galley =
            painter.layout_no_wrap(version.clone(), FontId::proportional(11.0), theme.text_dim);
        let w = galley.size().x;
        painter.galley(pos2(x, y - galley.size().y / 2.0), galley, theme.text_dim);
        x += w + 4.0;
        for inst in svc.instances.iter().filter(|i| i.version == version) {
            painter.circle_filled(
                pos2(x + 4.0, y),
                4.0,
                faded(theme.health_color(inst.health), stale),
            );
            x += 11.0;
        }
        x += 8.0;
    }
    let resp = ui.interact(r, ui.scope_id().with(("station", name)), Sense::click());
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
