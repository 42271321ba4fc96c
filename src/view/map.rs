//! The highway map: stations (services) and roads (caller → callee) split into one lane per
//! version; lane width follows request rate, colour follows 5xx ratio; labels show rps and
//! p99; a toll-gate glyph marks a lane whose breaker is not closed.
//!
//! Positions live in world coordinates from the deterministic layout; the view fits them
//! into the available area with one uniform scale, so opening a panel shrinks the map
//! instead of squeezing its columns.
//!
//! Built for thousands of stations: geometry goes into two meshes per frame (roads below,
//! stations above; [`super::paint`]), anything off screen is skipped, text is laid out
//! only when readable at the current zoom, and on a large mesh services sharing a name
//! prefix collapse into one group node ([`super::group`]) until expanded. A filter draws
//! only what matches (and, dimmed, the far ends of its roads).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use egui::{Align2, FontId, Pos2, Rect, Sense, Ui, Vec2, pos2, vec2};

use super::group::{self, FILTER_EXPAND_MAX, Grouping, NameSet, NodeKind, Scene};
use super::layout::Placement;
use super::paint::MeshPainter;
use super::roads::{self, Geom, Hit, RoadView};
use super::stations::{self, Lod, NodeLook, NodeStats};
use super::theme::Theme;
use super::{Camera, CameraBy, ViewState};
use crate::model::filter::Filter;
use crate::model::types::LaneKey;
use crate::model::{LaneState, Model};

/// Size of a station, in world units.
pub(super) const NODE_SIZE: Vec2 = vec2(140.0, 56.0);
/// Horizontal distance between layers (room for lane labels between stations).
const COLUMN_PITCH: f32 = 330.0;
/// Vertical distance between stations of one layer.
const ROW_PITCH: f32 = 120.0;
/// Distance between the centre lines of neighbouring lanes.
pub(super) const LANE_SPACING: f32 = 14.0;
/// Margin around the map, in screen points.
const MARGIN: f32 = 30.0;
/// A pointer this close to a lane (screen points, beyond its half width) hovers it.
const LANE_HIT: f32 = 6.0;
/// Below this zoom lane labels and station details are not drawn (unreadable clutter).
pub(super) const LABEL_MIN_SCALE: f32 = 0.45;
/// Below this zoom stations lose their names too (a group keeps its name).
pub(super) const NAME_MIN_SCALE: f32 = 0.22;
/// Below this zoom expanded groups draw collapsed again (semantic zoom).
pub const COLLAPSE_SCALE: f32 = 0.15;
/// With more stations than this on screen (and below [`NAME_MIN_SCALE`]), stations are
/// hit-tested by the map instead of being one widget each.
const MAX_STATION_WIDGETS: usize = 300;
/// Zoom limits (screen points per world unit).
const MIN_SCALE: f32 = 0.01;
const MAX_SCALE: f32 = 4.0;
/// Frame pace while particles move (only when the window has focus).
const PARTICLE_FRAME: Duration = Duration::from_millis(33);

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
        Some(v) if v >= 10_000.0 => format!("{:.0} k rps", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0} rps"),
        Some(v) => format!("{v:.1} rps"),
    }
}

/// World → screen: one uniform scale plus an offset.
#[derive(Clone, Copy)]
pub(super) struct Xform {
    pub scale: f32,
    pub offset: Vec2,
}

impl Xform {
    pub fn pos(self, p: Pos2) -> Pos2 {
        pos2(p.x * self.scale, p.y * self.scale) + self.offset
    }

    pub fn rect(self, r: Rect) -> Rect {
        Rect::from_min_max(self.pos(r.min), self.pos(r.max))
    }

    pub fn font(self, size: f32) -> FontId {
        FontId::proportional((size * self.scale).max(9.0))
    }
}

/// World rectangle of a node: where the operator pinned it, else its kept slot.
fn world_rect(placement: &Placement, pins: &BTreeMap<String, [f32; 2]>, key: &str) -> Option<Rect> {
    if let Some([x, y]) = pins.get(key) {
        return Some(Rect::from_center_size(pos2(*x, *y), NODE_SIZE));
    }
    let slot = placement.slots.get(key)?;
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

pub(super) fn distance_to_segment(p: Pos2, a: Pos2, b: Pos2) -> f32 {
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
/// the topmost first) or within the column. Nothing selected: the top-left station. On the
/// grouped map, only services drawn on their own take part.
#[must_use]
pub fn step_selection(model: &Model, view: &ViewState, step: Step) -> Option<String> {
    let placement = if view.groups.active {
        &view.groups.placement
    } else {
        &view.placement
    };
    let slot = |n: &str| placement.slots.get(n).map(|s| (s.layer, s.row2));
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
                    placement
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

/// Services whose callers' sidecars are all stale (or absent): one pass over the sidecars
/// per frame, not one per road (20,000 sidecars × 2,000 callers would be 40 M checks).
fn stale_callers(model: &Model, now: Instant) -> impl Fn(&str) -> bool + '_ {
    let prom_stale = model.prometheus.as_ref().map(|p| p.is_stale(now));
    let fresh: NameSet = if prom_stale.is_some() {
        NameSet::default()
    } else {
        model
            .sidecars
            .values()
            .filter(|s| !s.status.is_stale(now, model.scrape_interval))
            .map(|s| s.service.as_str())
            .collect()
    };
    move |caller| prom_stale.unwrap_or_else(|| !fresh.contains(caller))
}

/// Whether particles move this frame: on, not paused, focused (unless allowed otherwise)
/// and touched recently (unless that limit is off). Also keeps the input clock.
fn particles_move(ui: &Ui, view: &mut ViewState) -> bool {
    let (time, active, focused) = ui.input(|i| {
        let active = !i.events.is_empty()
            || i.pointer.is_moving()
            || i.pointer.any_down()
            || i.smooth_scroll_delta != Vec2::ZERO;
        (i.time, active, i.viewport().focused.unwrap_or(true))
    });
    let rt = &mut view.map_runtime;
    if active || rt.last_input_secs.is_none() {
        rt.last_input_secs = Some(time);
    }
    let idle_secs = time - rt.last_input_secs.unwrap_or(time);
    let recent = view.particles_idle_secs == 0 || idle_secs < f64::from(view.particles_idle_secs);
    let moving = view.particles && !view.paused && (focused || view.particles_unfocused) && recent;
    if moving {
        rt.particle_secs = time;
    }
    moving
}

/// One drawn road of the frame: two nodes and the lanes between them.
struct SceneRoad<'m> {
    from: usize,
    to: usize,
    lanes: Vec<&'m LaneState>,
}

/// Draws the map into the remaining space of `ui`.
pub fn map_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, theme: &Theme, now: Instant) {
    let (rect, bg) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, theme.map_bg);
    let animate = particles_move(ui, view);
    view.map_runtime.particles_moving = false;

    if model.services.is_empty() {
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

    // Which map: every service, or groups by name prefix (large meshes).
    let names: Vec<&str> = model.services.keys().map(String::as_str).collect();
    let groups = if view.groups.mode.active(names.len()) {
        group::groups_of(names.iter().copied())
    } else {
        BTreeMap::new()
    };
    let grouped = !groups.is_empty();
    if grouped != view.groups.active {
        view.groups.active = grouped;
    }

    // Which services the filter shows (names and predicates; a bad filter shows all and
    // the header says why).
    let filter = Filter::parse(&view.filter).unwrap_or_default();
    let matched: Option<NameSet> = (!filter.is_empty()).then(|| {
        names
            .iter()
            .copied()
            .filter(|n| model.matches(n, &filter, now))
            .collect()
    });
    let filter_changed = view.map_runtime.last_filter != view.filter;
    if filter_changed {
        view.map_runtime.last_filter.clone_from(&view.filter);
    }

    // Which groups are open this frame: the operator's (unless zoomed far out), and, with
    // a filter matching few services, every group holding a match.
    let scale_now = world_camera(view, grouped).map_or(1.0, |c| c.scale);
    let zoomed_out = scale_now < COLLAPSE_SCALE;
    let few_matches = matched
        .as_ref()
        .is_some_and(|m| m.len() <= FILTER_EXPAND_MAX);
    let open = |key: &str| {
        (!zoomed_out && view.groups.expanded.contains(key))
            || (few_matches
                && groups.get(key).is_some_and(|members| {
                    members
                        .iter()
                        .any(|m| matched.as_ref().is_some_and(|s| s.contains(m)))
                }))
    };
    let scene = Scene::build(&names, &groups, open);

    // Lanes by node pair (intra-group lanes stay inside their node).
    let mut lane_nodes: Vec<(usize, usize, &LaneState)> = Vec::with_capacity(model.lanes.len());
    for lane in model.lanes.values() {
        let (Some(a), Some(b)) = (
            scene.node_of(&lane.key.caller),
            scene.node_of(&lane.key.service),
        ) else {
            continue;
        };
        if a != b {
            lane_nodes.push((a, b, lane));
        }
    }
    if grouped {
        // Stable: lanes of one pair keep their (caller, service, version) order.
        lane_nodes.sort_by_key(|(a, b, _)| (*a, *b));
    }
    let mut scene_roads: Vec<SceneRoad> = Vec::new();
    for chunk in lane_nodes.chunk_by(|x, y| (x.0, x.1) == (y.0, y.1)) {
        scene_roads.push(SceneRoad {
            from: chunk[0].0,
            to: chunk[0].1,
            lanes: chunk.iter().map(|(_, _, l)| *l).collect(),
        });
    }

    // Placement: kept slots; new nodes take free rows (members near their group).
    {
        let keys: BTreeSet<&str> = scene.nodes.iter().map(|n| n.key.as_ref()).collect();
        let node_roads: Vec<(&str, &str)> = scene_roads
            .iter()
            .map(|r| {
                (
                    scene.nodes[r.from].key.as_ref(),
                    scene.nodes[r.to].key.as_ref(),
                )
            })
            .collect();
        let placement = world_placement_mut(view, grouped);
        let was_settled = placement.slots.values().any(|s| !s.provisional);
        let moved = placement.update_near(&keys, &node_roads, |name| {
            group::prefix_of(name)
                .map(group::group_key)
                .and_then(|k| groups.get_key_value(&k).map(|(k, _)| k.as_str()))
        });
        let settled = placement.slots.values().any(|s| !s.provisional);
        // Ghosts and groups keep their slot while they exist; then the row is free again.
        let gone = model.gone_services(now);
        let forget: Vec<String> = placement
            .slots
            .keys()
            .filter(|k| {
                !model.services.contains_key(k.as_str())
                    && !groups.contains_key(k.as_str())
                    && !gone.iter().any(|(g, _)| g == *k)
            })
            .cloned()
            .collect();
        for key in forget {
            placement.forget(&key);
        }
        let expanded = if grouped {
            view.groups.expanded.len()
        } else {
            0
        };
        let rt = &mut view.map_runtime;
        let expanding = expanded != rt.expanded_seen;
        rt.expanded_seen = expanded;
        if (!was_settled && settled) || (moved && !expanding && rt.camera_by == CameraBy::Fit) {
            // The first roads just laid the map out, or stations joined or took their
            // place on a map the operator has not panned or zoomed since its fit: fit it
            // (again). Expanding a group moves nobody.
            *world_camera_mut(view, grouped) = None;
        }
    }

    // What is drawn: matching nodes, and (dimmed) the far ends of their roads.
    let node_matches: Vec<usize> = scene
        .nodes
        .iter()
        .map(|n| match &matched {
            None => n.members.len(),
            Some(m) => n.members.iter().filter(|s| m.contains(*s)).count(),
        })
        .collect();
    let lane_shown = |l: &LaneState| {
        matched
            .as_ref()
            .is_none_or(|m| m.contains(l.key.caller.as_str()) || m.contains(l.key.service.as_str()))
    };
    let mut context = vec![false; scene.nodes.len()];
    if matched.is_some() {
        for r in &scene_roads {
            if r.lanes.iter().any(|l| lane_shown(l)) {
                context[r.from] |= node_matches[r.from] == 0;
                context[r.to] |= node_matches[r.to] == 0;
            }
        }
    }
    let drawn = |i: usize| node_matches[i] > 0 || context[i];

    // Camera: kept across refreshes; fitted at first sight, on `f`, and when an expanded
    // group or a new filter has nothing on screen.
    let (placement, pins) = world_ref(view, grouped);
    let world_rects: Vec<Option<Rect>> = scene
        .nodes
        .iter()
        .map(|n| world_rect(placement, pins, &n.key))
        .collect();
    let placeholder_rects: Vec<(String, usize, Rect)> = scene
        .expanded
        .iter()
        .filter_map(|(k, n)| world_rect(placement, pins, k).map(|r| (k.clone(), *n, r)))
        .collect();
    let drawn_bounds = |only: &dyn Fn(usize) -> bool| {
        world_rects
            .iter()
            .enumerate()
            .filter(|(i, _)| drawn(*i) && only(*i))
            .filter_map(|(_, r)| *r)
            .fold(Rect::NOTHING, Rect::union)
    };
    if world_camera(view, grouped).is_none() {
        view.map_runtime.camera_by = CameraBy::Fit;
    }
    let mut cam = world_camera(view, grouped).unwrap_or_else(|| {
        let all = drawn_bounds(&|_| true);
        let all = placeholder_rects
            .iter()
            .filter(|_| matched.is_none())
            .fold(all, |b, (_, _, r)| b.union(*r));
        fit(all, rect)
    });
    let on_screen = |cam: Camera, only: &dyn Fn(usize) -> bool| {
        let xf = xform(cam, rect);
        world_rects
            .iter()
            .enumerate()
            .any(|(i, r)| drawn(i) && only(i) && r.is_some_and(|r| rect.intersects(xf.rect(r))))
    };
    if let Some(key) = view.groups.reveal.take() {
        let prefix = key.trim_end_matches('*');
        let members = |i: usize| {
            scene.nodes[i].kind == NodeKind::Service && scene.nodes[i].key.starts_with(prefix)
        };
        let bounds = drawn_bounds(&members);
        if bounds.is_positive() && !on_screen(cam, &members) {
            cam = fit(bounds, rect);
        }
    }
    if filter_changed && matched.is_some() {
        let matching = |i: usize| node_matches[i] > 0;
        let bounds = drawn_bounds(&matching);
        if bounds.is_positive() && !on_screen(cam, &matching) {
            cam = fit(bounds, rect);
        }
    }
    if let Some(p) = ui
        .input(|i| i.pointer.hover_pos())
        .filter(|p| rect.contains(*p))
        && ui.ui_contains_pointer()
    {
        let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = pinch * (scroll / 400.0).exp();
        if (factor - 1.0).abs() > 1e-4 {
            cam = zoom_at(cam, rect, p, factor);
            view.map_runtime.camera_by = CameraBy::Operator;
        }
    }
    if bg.dragged() {
        view.map_runtime.camera_by = CameraBy::Operator;
        let d = bg.drag_delta();
        cam.offset[0] += d.x;
        cam.offset[1] += d.y;
    }
    *world_camera_mut(view, grouped) = Some(cam);
    let xf = xform(cam, rect);
    let screen: Vec<Option<Rect>> = world_rects.iter().map(|r| r.map(|r| xf.rect(r))).collect();

    // Per node: inbound traffic and worst breaker (a group's node carries its lanes).
    let stale_caller = stale_callers(model, now);
    let mut stats = vec![NodeStats::default(); scene.nodes.len()];
    for lane in model.lanes.values() {
        if let Some(i) = scene.node_of(&lane.key.service)
            && scene.nodes[i].kind == NodeKind::Group
        {
            stats[i].add_lane(lane, scene.node_of(&lane.key.caller) == Some(i));
        }
    }

    let ppp = ui.ctx().pixels_per_point();
    let new_painter = |(vertices, indices): (usize, usize)| {
        if view.map_runtime.individual_shapes {
            MeshPainter::individual_shapes(ppp)
        } else {
            // Room for a bit more than last frame: one allocation, no copies.
            MeshPainter::with_capacity(ppp, vertices + vertices / 8, indices + indices / 8)
        }
    };
    let mut lanes_mesh = new_painter(view.map_runtime.mesh_sizes[0]);
    let mut labels: Vec<egui::Shape> = Vec::new();
    let mut station_mesh = new_painter(view.map_runtime.mesh_sizes[1]);
    let mut texts: Vec<egui::Shape> = Vec::new();
    let lod = Lod::at(xf.scale);
    let registry_stale = model.registry_status.is_stale(now, model.registry_interval);

    // Labels must not cover stations or each other.
    let mut occupied: Vec<Rect> = if lod.lane_labels {
        screen
            .iter()
            .enumerate()
            .filter(|(i, r)| drawn(*i) && r.is_some_and(|r| rect.intersects(r)))
            .filter_map(|(_, r)| r.map(|r| r.expand(2.0)))
            .collect()
    } else {
        Vec::new()
    };
    let mut geoms: Vec<Geom> = Vec::new();
    let particle_time = (view.particles && !view.paused).then_some(view.map_runtime.particle_secs);
    let selected_lane: Option<LaneKey> = view.selected_lane.clone();
    let mut flashing = false;
    {
        let mut cx = roads::RoadCtx {
            painter: &painter,
            model,
            theme,
            thresholds: view.thresholds,
            xf,
            clip: rect,
            now,
            particle_time,
            // Spread the particles out when last frame's lanes would take more than the
            // budget at the normal pitch.
            particle_pitch: (view.map_runtime.particle_len / roads::PARTICLE_BUDGET)
                .max(roads::PARTICLE_PITCH),
            particle_len: 0.0,
            selected_lane: selected_lane.as_ref(),
            lanes: &mut lanes_mesh,
            labels: &mut labels,
            occupied: &mut occupied,
            geoms: &mut geoms,
            label_lanes: lod.lane_labels,
        };
        for (ri, r) in scene_roads.iter().enumerate() {
            let (Some(a), Some(b)) = (screen[r.from], screen[r.to]) else {
                continue;
            };
            if !drawn(r.from) || !drawn(r.to) || !rect.intersects(a.union(b)) {
                continue; // filtered out or off screen
            }
            let lanes: Vec<&LaneState> =
                r.lanes.iter().copied().filter(|l| lane_shown(l)).collect();
            if lanes.is_empty() {
                continue;
            }
            let both_services = scene.nodes[r.from].kind == NodeKind::Service
                && scene.nodes[r.to].kind == NodeKind::Service;
            let road = RoadView {
                from: a,
                to: b,
                lanes: &lanes,
                stale: lanes.iter().all(|l| stale_caller(&l.key.caller)),
                index: ri,
            };
            flashing |= if both_services {
                roads::lanes_ui(&mut cx, &road)
            } else {
                roads::aggregate_ui(&mut cx, &road)
            };
        }
        view.map_runtime.particle_len = cx.particle_len;
    }

    // Stations: ghosts, expanded groups' outlines, nodes.
    let gone = model.gone_services(now);
    let (placement, pins) = world_ref(view, grouped);
    for (name, at) in &gone {
        if let Some(r) = world_rect(placement, pins, name).map(|r| xf.rect(r))
            && rect.intersects(r)
        {
            stations::ghost(
                &painter,
                &mut station_mesh,
                &mut texts,
                theme,
                xf,
                name,
                r,
                now.saturating_duration_since(*at),
            );
        }
    }
    let visible: Vec<usize> = (0..scene.nodes.len())
        .filter(|&i| drawn(i) && screen[i].is_some_and(|r| rect.intersects(r)))
        .collect();
    let widgets = lod.names || visible.len() <= MAX_STATION_WIDGETS;
    note_focus(view, &scene, &visible, grouped);
    let mut look = NodeLook {
        painter: &painter,
        model,
        theme,
        xf,
        lod,
        now,
        registry_stale,
        widgets,
        mesh: &mut station_mesh,
        texts: &mut texts,
    };
    if matched.is_none() {
        for (key, members, r) in &placeholder_rects {
            let r = xf.rect(*r);
            if rect.intersects(r) {
                stations::placeholder_ui(ui, &mut look, view, key, *members, r);
            }
        }
    }
    for &i in &visible {
        let Some(r) = screen[i] else { continue };
        let node = &scene.nodes[i];
        if context[i] {
            stations::context_ui(&mut look, node, r);
            continue;
        }
        match node.kind {
            NodeKind::Service => {
                stations::service_ui(ui, &mut look, view, grouped, &node.key, r);
            }
            NodeKind::Group => {
                let matching = matched.is_some().then_some(node_matches[i]);
                stations::group_ui(ui, &mut look, view, grouped, node, &stats[i], matching, r);
            }
        }
    }

    view.map_runtime.mesh_sizes = [lanes_mesh.size(), station_mesh.size()];
    painter.extend(lanes_mesh.into_shapes());
    painter.extend(labels);
    painter.extend(station_mesh.into_shapes());
    painter.extend(texts);

    let moving = particle_time.is_some() && geoms.iter().any(|g| g.particles);
    if (animate && moving) || flashing {
        view.map_runtime.particles_moving = animate && moving;
        if ui.input(|i| i.viewport().focused.unwrap_or(true)) || view.particles_unfocused {
            ui.ctx().request_repaint_after(PARTICLE_FRAME);
        }
    }

    // Hover and click on lanes: the nearest lane under the pointer. Without station
    // widgets (far out, thousands on screen), the map finds the station under the pointer.
    let hovered = bg.hover_pos().and_then(|p| {
        geoms
            .iter()
            .map(|g| (distance_to_segment(p, g.p0, g.p1) - g.half_width, g))
            .filter(|(d, _)| *d <= LANE_HIT)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, g)| g.hit)
    });
    let station_under = |p: Pos2| {
        visible
            .iter()
            .copied()
            .find(|&i| !context[i] && screen[i].is_some_and(|r| r.contains(p)))
    };
    if !widgets
        && (bg.clicked() || bg.double_clicked())
        && let Some(i) = bg.interact_pointer_pos().and_then(station_under)
    {
        {
            let node = &scene.nodes[i];
            match node.kind {
                NodeKind::Service => view.select(Some(node.key.to_string())),
                NodeKind::Group if bg.double_clicked() => view.groups.toggle(&node.key),
                NodeKind::Group => view.select_group(Some(node.key.to_string())),
            }
            return;
        }
    }
    if bg.clicked() {
        match hovered {
            Some(Hit::Lane(l)) => {
                view.select(Some(l.key.service.clone()));
                view.selected_lane = Some(l.key.clone());
            }
            _ => view.select_group(None),
        }
    }
    match hovered {
        Some(Hit::Lane(lane)) => {
            bg.on_hover_ui_at_pointer(|ui| roads::lane_tooltip_ui(ui, model, &lane.key, lane));
        }
        Some(Hit::Road(ri)) => {
            if let Some(r) = scene_roads.get(ri) {
                let from = scene.nodes[r.from].key.as_ref();
                let to = scene.nodes[r.to].key.as_ref();
                let lanes: Vec<&LaneState> =
                    r.lanes.iter().copied().filter(|l| lane_shown(l)).collect();
                bg.on_hover_ui_at_pointer(|ui| roads::road_tooltip_ui(ui, from, to, &lanes));
            }
        }
        None => {}
    }
}

/// Keeps [`super::MapRuntime::focus`]: the services on screen (a group node's members
/// too: its numbers are theirs), pinned or selected. Rebuilt only when it changed.
fn note_focus(view: &mut ViewState, scene: &Scene, visible: &[usize], grouped: bool) {
    use std::hash::Hasher;
    let (_, pins) = world_ref(view, grouped);
    let mut names: Vec<&str> = visible
        .iter()
        .flat_map(|&i| scene.nodes[i].members.iter().copied())
        .chain(
            pins.keys()
                .filter_map(|k| scene.node_of(k).map(|_| k.as_str())),
        )
        .chain(view.selected.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut h = group::Fnv::default();
    for n in &names {
        h.write(n.as_bytes());
        h.write_u8(0);
    }
    let hash = h.finish();
    let rt = &view.map_runtime;
    if hash == rt.focus_hash && rt.focus.len() == names.len() {
        return;
    }
    let focus: Vec<String> = names.into_iter().map(str::to_owned).collect();
    let rt = &mut view.map_runtime;
    rt.focus = focus;
    rt.focus_hash = hash;
    rt.focus_changed = true;
}

fn world_camera(view: &ViewState, grouped: bool) -> Option<Camera> {
    if grouped {
        view.groups.camera
    } else {
        view.camera
    }
}

fn world_camera_mut(view: &mut ViewState, grouped: bool) -> &mut Option<Camera> {
    if grouped {
        &mut view.groups.camera
    } else {
        &mut view.camera
    }
}

fn world_placement_mut(view: &mut ViewState, grouped: bool) -> &mut Placement {
    if grouped {
        &mut view.groups.placement
    } else {
        &mut view.placement
    }
}

fn world_ref(view: &ViewState, grouped: bool) -> (&Placement, &BTreeMap<String, [f32; 2]>) {
    if grouped {
        (&view.groups.placement, &view.groups.pins)
    } else {
        (&view.placement, &view.pins)
    }
}

/// Pins of the map being drawn (drag = move and pin).
pub(super) fn world_pins_mut(
    view: &mut ViewState,
    grouped: bool,
) -> &mut BTreeMap<String, [f32; 2]> {
    if grouped {
        &mut view.groups.pins
    } else {
        &mut view.pins
    }
}

/// The header's "groups" menu: grouping mode, expand / collapse all, and every group with
/// its size (ticked = expanded).
pub fn groups_menu_ui(ui: &mut Ui, model: &Model, view: &mut ViewState) {
    let label = if view.groups.active {
        format!("groups ({} open)", view.groups.expanded.len())
    } else {
        "groups".to_owned()
    };
    ui.menu_button(label, |ui| {
        ui.label("Services sharing a name prefix (payments-api, payments-ledger) form a group (payments-*)");
        for mode in [Grouping::Auto, Grouping::Prefix, Grouping::Off] {
            if ui.radio(view.groups.mode == mode, mode.label()).clicked() {
                view.groups.mode = mode;
            }
        }
        let groups = group::groups_of(model.services.keys().map(String::as_str));
        if !view.groups.mode.active(model.services.len()) || groups.is_empty() {
            ui.weak("no groups on this map");
            return;
        }
        ui.separator();
        ui.horizontal(|ui| {
            if ui.button("expand all").clicked() {
                view.groups.expanded = groups.keys().cloned().collect();
            }
            if ui.button("collapse all").clicked() {
                view.groups.expanded.clear();
            }
        });
        egui::ScrollArea::vertical()
            .max_height(320.0)
            .show(ui, |ui| {
                for (key, members) in &groups {
                    let mut open = view.groups.expanded.contains(key);
                    if ui
                        .checkbox(&mut open, format!("{key} ({})", members.len()))
                        .changed()
                    {
                        view.groups.toggle(key);
                    }
                }
            });
    });
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

    fn rect_of(view: &ViewState, name: &str) -> Rect {
        world_rect(&view.placement, &view.pins, name).unwrap()
    }

    #[test]
    fn fit_never_enlarges_and_centres() {
        let view = view_of(&["a", "b"], &[("a", "b")]);
        let bounds = rect_of(&view, "a").union(rect_of(&view, "b"));
        let area = Rect::from_min_size(pos2(10.0, 20.0), vec2(2000.0, 1000.0));
        let xf = xform(fit(bounds, area), area);
        assert!((xf.scale - 1.0).abs() < f32::EPSILON);
        let a = xf.rect(rect_of(&view, "a"));
        let b = xf.rect(rect_of(&view, "b"));
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
        assert_eq!(rect_of(&view, "b").center(), pos2(5.0, 7.0));
        assert!(rect_of(&view, "a").center().y.abs() < 1e-6);
    }

    #[test]
    fn segment_distance() {
        let d = distance_to_segment(pos2(5.0, 3.0), pos2(0.0, 0.0), pos2(10.0, 0.0));
        assert!((d - 3.0).abs() < 1e-6);
        let end = distance_to_segment(pos2(13.0, 4.0), pos2(0.0, 0.0), pos2(10.0, 0.0));
        assert!((end - 5.0).abs() < 1e-6);
    }

    #[test]
    fn big_rates_read_in_thousands() {
        assert_eq!(fmt_rps(Some(12_345.0)), "12 k rps");
        assert_eq!(fmt_rps(Some(345.0)), "345 rps");
        assert_eq!(fmt_rps(None), "no data");
    }
}
