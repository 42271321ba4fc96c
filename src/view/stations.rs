//! Stations of the map: a service (name, instances per version, health ring), a collapsed
//! group (a stack of cards: member count, summed inbound traffic, worst health and
//! breaker), the outline an expanded group leaves in its slot, a dimmed far end of a
//! filtered road, and the ghost of a vanished service. Shapes go into the map's station
//! mesh; text is laid out only at a zoom where it can be read.

use std::time::{Duration, Instant};

use egui::{Align2, Color32, Pos2, Rect, Sense, Shape, Ui, pos2, vec2};

use super::ViewState;
use super::bars::fmt_age;
use super::group::{self, Node};
use super::map::{LABEL_MIN_SCALE, NAME_MIN_SCALE, Xform, fmt_rps, world_pins_mut};
use super::paint::MeshPainter;
use super::theme::Theme;
use crate::model::types::{BreakerState, Health, HealthCounts};
use crate::model::{LaneState, Model};

/// Below this zoom a group node shows no member count, traffic or 5xx line (too small).
const LINES_MIN_SCALE: f32 = 0.64;

/// `name` as it fits in `room` points (`width` of each character): whole; else its first
/// word, "…" and as much of its end as fits (`payments…031`: the end is what tells members
/// of a group apart); else "…" and its end (`…api-001`); else cut at the end.
pub(super) fn fit_name(name: &str, room: f32, mut width: impl FnMut(char) -> f32) -> String {
    let widths: Vec<f32> = name.chars().map(&mut width).collect();
    if widths.iter().sum::<f32>() <= room {
        return name.to_owned();
    }
    let ellipsis = width('…');
    let chars: Vec<char> = name.chars().collect();
    let is_sep = |c: char| matches!(c, '-' | '.' | '/');
    // The longest end of the name that fits in `room` after `used`, starting at a word
    // (`payments…031`, not `payments…r-031`) where it can (must, if `aligned`), if it has
    // at least `min` characters.
    let tail_in = |used: f32, min: usize, aligned: bool| {
        let mut used = used;
        let mut tail = 0;
        for w in widths.iter().rev() {
            if used + w > room {
                break;
            }
            used += w;
            tail += 1;
        }
        let from = chars.len() - tail;
        if from > 0
            && !is_sep(chars[from - 1])
            && let Some(k) = chars[from..].iter().position(|c| is_sep(*c))
            && tail - k > min
        {
            tail -= k + 1;
        }
        let from = chars.len() - tail;
        let at_word = from > 0 && is_sep(chars[from - 1]);
        (tail >= min && tail < chars.len() && (at_word || !aligned))
            .then(|| chars[from..].iter().collect::<String>())
    };
    let head_len = super::group::prefix_of(name).map_or(0, |p| p.chars().count().saturating_sub(1));
    let head: f32 = widths[..head_len].iter().sum();
    if head_len > 0
        && let Some(end) = tail_in(head + ellipsis, 2, false)
    {
        let start: String = chars[..head_len].iter().collect();
        return format!("{start}…{end}");
    }
    // No room for the first word: the end alone tells members of a group apart.
    if head_len > 0
        && let Some(end) = tail_in(ellipsis, 3, true)
    {
        return format!("…{end}");
    }
    let mut used = ellipsis;
    let mut out = String::new();
    for (c, w) in chars.iter().zip(&widths) {
        if used + w > room {
            break;
        }
        used += w;
        out.push(*c);
    }
    out.push('…');
    out
}

/// A corner radius worth its vertices: square below 2.5 points, where nobody sees it.
fn corner(radius: f32) -> f32 {
    if radius < 2.5 { 0.0 } else { radius }
}

fn faded(c: Color32, stale: bool) -> Color32 {
    if stale { c.gamma_multiply(0.35) } else { c }
}

/// What a zoom level can show.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lod {
    /// Instances, versions, health ring, stale text.
    pub detail: bool,
    /// Station names.
    pub names: bool,
    /// Lane labels.
    pub lane_labels: bool,
}

impl Lod {
    /// The level of detail at `scale` (screen points per world unit).
    pub fn at(scale: f32) -> Self {
        Self {
            detail: scale >= LABEL_MIN_SCALE,
            names: scale >= NAME_MIN_SCALE,
            lane_labels: scale >= LABEL_MIN_SCALE,
        }
    }
}

/// A group node's traffic: lanes into its members, from outside and inside it.
#[derive(Debug, Clone, Default)]
pub(super) struct NodeStats {
    /// Summed rps into the group from other nodes; `None` without data.
    pub rps_in: Option<f64>,
    /// Lanes into the group from other nodes (with or without data).
    pub lanes_in: usize,
    /// 5xx per second over every lane into a member (inside lanes too).
    pub err_rps: f64,
    /// Requests per second of the lanes the 5xx ratio is over.
    pub err_base_rps: f64,
    /// Worst breaker of any lane into a member.
    pub breaker: BreakerState,
    /// Lanes into members whose breaker is not closed.
    pub not_closed: usize,
}

impl NodeStats {
    /// Counts one lane into a member (`internal`: from another member).
    pub fn add_lane(&mut self, lane: &LaneState, internal: bool) {
        self.lanes_in += usize::from(!internal);
        let Some(s) = &lane.stats else { return };
        if !internal {
            *self.rps_in.get_or_insert(0.0) += s.rps;
        }
        if let Some(e) = s.err5xx_ratio {
            self.err_rps += e * s.rps;
            self.err_base_rps += s.rps;
        }
        self.breaker = self.breaker.worst(s.breaker);
        if s.breaker != BreakerState::Closed {
            self.not_closed += 1;
        }
    }
}

/// Everything a station needs from the frame.
pub(super) struct NodeLook<'f> {
    pub painter: &'f egui::Painter,
    pub model: &'f Model,
    pub theme: &'f Theme,
    pub xf: Xform,
    pub lod: Lod,
    pub now: Instant,
    /// The registry's data is stale: stations are hatched.
    pub registry_stale: bool,
    /// Stations are widgets (click, drag, hover, accessibility); else the map hit-tests.
    pub widgets: bool,
    pub mesh: &'f mut MeshPainter,
    pub texts: &'f mut Vec<Shape>,
}

impl NodeLook<'_> {
    /// A station's name at its top left, shortened to stop short of the ring: see
    /// [`fit_name`].
    fn name(&mut self, rect: Rect, text: &str, color: Color32) {
        let zoom = self.xf.scale;
        let room = (rect.width() - (10.0 + 32.0) * zoom).max(10.0);
        let font = self.xf.font(15.0);
        let fitted = self
            .painter
            .fonts_mut(|f| fit_name(text, room, |c| f.glyph_width(&font, c)));
        let galley = self.painter.layout_no_wrap(fitted, font, color);
        let at = rect.left_top() + vec2(10.0, 8.0) * zoom;
        self.texts.push(Shape::galley(at, galley, color));
    }

    /// A secondary line of a station, cut at its right edge.
    fn line(&mut self, rect: Rect, dy: f32, text: String, color: Color32) {
        let zoom = self.xf.scale;
        let mut job = egui::text::LayoutJob::simple_singleline(text, self.xf.font(11.0), color);
        job.wrap =
            egui::text::TextWrapping::truncate_at_width((rect.width() - 14.0 * zoom).max(10.0));
        let galley = self.painter.layout_job(job);
        let at = rect.left_top() + vec2(10.0, dy) * zoom;
        self.texts.push(Shape::galley(at, galley, color));
    }

    fn text(&mut self, at: Pos2, align: Align2, text: String, size: f32, color: Color32) {
        let galley = self.painter.layout_no_wrap(text, self.xf.font(size), color);
        let r = align.anchor_size(at, galley.size());
        self.texts.push(Shape::galley(r.min, galley, color));
    }

    /// Body and outline of a station; `outline` is the health colour (or the stroke).
    fn body(&mut self, rect: Rect, outline: Color32, selected: bool, stale: bool) {
        let zoom = self.xf.scale;
        if rect.height() < 4.0 && !selected {
            // A few pixels: the outline's colour is all that can be seen.
            self.mesh.rect(rect, 0.0, faded(outline, stale));
            return;
        }
        let radius = corner(8.0 * zoom);
        self.mesh
            .rect(rect, radius, faded(self.theme.node_fill, stale));
        let w = if selected { 3.0_f32 } else { 2.0 }.min(rect.height() / 4.0);
        self.mesh.rect_stroke(
            rect.shrink(w / 2.0),
            (radius - w / 2.0).max(0.0),
            w,
            faded(outline, stale),
        );
        if selected {
            self.mesh.rect_stroke(
                rect.expand(4.75),
                10.0 * zoom + 0.75,
                1.5,
                self.theme.selection,
            );
        }
    }

    /// A rollout plan's progress or another dashboard's marker (see
    /// [`super::shift::station_badge`]) just above `rect`, anchored at its `align` corner:
    /// amber when it needs attention.
    fn plan_badge(&mut self, rect: Rect, align: Align2, badge: (String, bool)) {
        let (text, attention) = badge;
        let color = if attention {
            self.theme.lane_degraded
        } else {
            self.theme.selection
        };
        let at = match align.x() {
            egui::Align::Min => rect.left_top(),
            egui::Align::Center => rect.center_top(),
            egui::Align::Max => rect.right_top(),
        };
        self.text(at - vec2(0.0, 4.0), align, text, 11.0, color);
    }

    /// Diagonal hatching over `rect`: the mark of stale data, and a "last good" line.
    fn stale_marks(&mut self, rect: Rect) {
        let zoom = self.xf.scale;
        hatch(
            self.mesh,
            rect,
            10.0 * zoom,
            self.theme.text_dim.gamma_multiply(0.35),
        );
        if self.lod.detail {
            let since = fmt_age(self.model.registry_status.age(self.now));
            self.text(
                rect.center_bottom() + vec2(0.0, 4.0),
                Align2::CENTER_TOP,
                format!("stale · last good {since}"),
                10.0,
                self.theme.text_dim,
            );
        }
    }
}

/// One service's station.
pub(super) fn service_ui(
    ui: &Ui,
    look: &mut NodeLook,
    view: &mut ViewState,
    grouped: bool,
    name: &str,
    rect: Rect,
) {
    let Some(svc) = look.model.services.get(name) else {
        return;
    };
    let (zoom, theme, stale) = (look.xf.scale, look.theme, look.registry_stale);
    let mut counts = HealthCounts::default();
    for inst in &svc.instances {
        counts.add(inst.health);
    }
    let selected = view.selected.as_deref() == Some(name);
    let ring = counts
        .worst()
        .map_or(theme.node_stroke, |h| theme.health_color(h));
    look.body(rect, ring, selected, stale);
    if look.lod.names {
        look.name(rect, name, faded(theme.text, stale));
    }
    if look.lod.detail {
        instances(look, svc, rect, stale);
        health_ring(
            look.mesh,
            rect.right_top() + vec2(-16.0, 16.0) * zoom,
            9.0 * zoom,
            &counts,
            theme,
        );
    }
    if stale {
        look.stale_marks(rect);
    }
    if look.lod.names
        && let Some(badge) = super::shift::station_badge(look.model, name, look.now)
    {
        look.plan_badge(rect, Align2::CENTER_BOTTOM, badge);
    }
    let pinned = world_pins_mut(view, grouped).contains_key(name);
    if pinned {
        let at = rect.left_top() + vec2(2.0, 2.0) * zoom;
        look.mesh.circle(at, 3.5 * zoom.max(0.5), theme.selection);
    }
    if !look.widgets {
        return;
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
        let world = (c - look.xf.offset) / look.xf.scale;
        world_pins_mut(view, grouped).insert(name.to_owned(), [world.x, world.y]);
    }
    let group = group::prefix_of(name)
        .map(group::group_key)
        .filter(|k| grouped && view.groups.expanded.contains(k));
    resp.context_menu(|ui| {
        if ui
            .add_enabled(pinned, egui::Button::new("Unpin (back to its slot)"))
            .clicked()
        {
            world_pins_mut(view, grouped).remove(name);
            ui.close();
        }
        if ui.button("Select").clicked() {
            view.select(Some(name.to_owned()));
            ui.close();
        }
        if let Some(key) = &group
            && ui.button(format!("Collapse {key}")).clicked()
        {
            view.groups.toggle(key);
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

/// One dot per instance, grouped by version; a version with more instances than fit shows
/// a dot of its worst health and the count.
fn instances(
    look: &mut NodeLook,
    svc: &crate::model::types::ServiceEntry,
    rect: Rect,
    stale: bool,
) {
    let (zoom, theme) = (look.xf.scale, look.theme);
    let mut x = rect.left() + 10.0 * zoom;
    let y = rect.bottom() - 14.0 * zoom;
    let versions = svc.versions();
    let right = rect.right() - 6.0 * zoom;
    for version in &versions {
        let galley =
            look.painter
                .layout_no_wrap(version.clone(), look.xf.font(11.0), theme.text_dim);
        let w = galley.size().x;
        look.texts.push(Shape::galley(
            pos2(x, y - galley.size().y / 2.0),
            galley,
            theme.text_dim,
        ));
        x += w + 4.0 * zoom;
        let mut counts = HealthCounts::default();
        for inst in svc.instances.iter().filter(|i| &i.version == version) {
            counts.add(inst.health);
        }
        let n = counts.total() as usize;
        let room = ((right - x) / (11.0 * zoom) / versions.len() as f32).floor() as usize;
        if n <= room.max(1) {
            for inst in svc.instances.iter().filter(|i| &i.version == version) {
                look.mesh.circle(
                    pos2(x + 4.0 * zoom, y),
                    4.0 * zoom,
                    faded(theme.health_color(inst.health), stale),
                );
                x += 11.0 * zoom;
            }
        } else if let Some(worst) = counts.worst() {
            look.mesh.circle(
                pos2(x + 4.0 * zoom, y),
                4.0 * zoom,
                faded(theme.health_color(worst), stale),
            );
            x += 11.0 * zoom;
            let label = format!("×{n}");
            let galley = look
                .painter
                .layout_no_wrap(label, look.xf.font(11.0), theme.text_dim);
            let w = galley.size().x;
            look.texts.push(Shape::galley(
                pos2(x, y - galley.size().y / 2.0),
                galley,
                theme.text_dim,
            ));
            x += w;
        }
        x += 8.0 * zoom;
    }
}

/// A collapsed group: a stack of cards with its name, member count, inbound traffic,
/// worst health (ring and outline) and worst breaker.
#[allow(clippy::too_many_arguments)]
pub(super) fn group_ui(
    ui: &Ui,
    look: &mut NodeLook,
    view: &mut ViewState,
    grouped: bool,
    node: &Node,
    stats: &NodeStats,
    matching: Option<usize>,
    rect: Rect,
) {
    let key = node.key.as_ref();
    let (zoom, theme, stale) = (look.xf.scale, look.theme, look.registry_stale);
    let mut counts = HealthCounts::default();
    for m in &node.members {
        if let Some(svc) = look.model.services.get(*m) {
            for inst in &svc.instances {
                counts.add(inst.health);
            }
        }
    }
    let selected = view.groups.selected.as_deref() == Some(key);
    let ring = counts
        .worst()
        .map_or(theme.node_stroke, |h| theme.health_color(h));
    // The cards behind: this node stands for several stations.
    for k in [2.0_f32, 1.0] {
        let behind = rect.translate(vec2(5.0, -5.0) * k * zoom);
        let radius = corner(8.0 * zoom);
        look.mesh.rect(
            behind,
            radius,
            faded(theme.node_fill, stale).gamma_multiply(0.9),
        );
        look.mesh.rect_stroke(
            behind.shrink(0.5),
            radius,
            1.0,
            faded(theme.node_stroke, stale),
        );
    }
    look.body(rect, ring, selected, stale);
    let n = node.members.len();
    if zoom >= NAME_MIN_SCALE / 2.0 {
        look.name(rect, key, faded(theme.text, stale));
    }
    // Member count, traffic in and 5xx: only where 11-point text is at least 7 pixels.
    if zoom >= LINES_MIN_SCALE {
        let line = match matching {
            Some(m) => format!("{m} of {n} match"),
            None if stats.lanes_in == 0 => format!("{n} services · no callers"),
            None => format!("{n} services · {} in", fmt_rps(stats.rps_in)),
        };
        look.line(rect, 28.0, line, theme.text_dim);
        let err = (stats.err_base_rps > 0.0).then(|| stats.err_rps / stats.err_base_rps);
        if let Some(e) = err.filter(|e| *e >= view.thresholds.degraded) {
            let color = theme.lane_color(Some(e), view.thresholds);
            look.line(rect, 42.0, format!("5xx {:.2} %", e * 100.0), color);
        }
    }
    if look.lod.detail {
        health_ring(
            look.mesh,
            rect.right_top() + vec2(-16.0, 16.0) * zoom,
            9.0 * zoom,
            &counts,
            theme,
        );
    }
    // The worst breaker inside, as a tag on top (its lanes are not drawn while collapsed).
    if let Some(color) = theme.breaker_color(stats.breaker)
        && look.lod.names
    {
        let tag = match stats.breaker {
            BreakerState::Open => "OPEN",
            BreakerState::Saturated => "SATURATED",
            BreakerState::Ejecting { .. } => "EJECTING",
            BreakerState::Closed => "",
        };
        let text = if stats.not_closed > 1 {
            format!("{tag} ×{}", stats.not_closed)
        } else {
            tag.to_owned()
        };
        let galley = look.painter.layout_no_wrap(
            text,
            egui::FontId::monospace((10.0 * zoom).max(7.0)),
            theme.map_bg,
        );
        let r = Align2::RIGHT_BOTTOM
            .anchor_size(rect.right_top() + vec2(-4.0, -8.0) * zoom, galley.size())
            .expand(2.0);
        look.mesh.rect(r, 2.0, faded(color, stale));
        look.texts
            .push(Shape::galley(r.min + vec2(2.0, 2.0), galley, theme.map_bg));
    }
    if stale {
        look.stale_marks(rect);
    }
    // A member's plan or marker (the first one, in name order), named: the breaker tag
    // takes the right of the top edge, this the left.
    if look.lod.names
        && let Some((member, (badge, attention))) = node
            .members
            .iter()
            .find_map(|m| super::shift::station_badge(look.model, m, look.now).map(|b| (*m, b)))
    {
        look.plan_badge(
            rect,
            Align2::LEFT_BOTTOM,
            (format!("{member}: {badge}"), attention),
        );
    }
    let pinned = world_pins_mut(view, grouped).contains_key(key);
    if pinned {
        let at = rect.left_top() + vec2(2.0, 2.0) * zoom;
        look.mesh.circle(at, 3.5 * zoom.max(0.5), theme.selection);
    }
    if !look.widgets {
        return;
    }
    let resp = ui.interact(
        rect,
        ui.scope_id().with(("station", key)),
        Sense::click_and_drag(),
    );
    resp.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Button, true, format!("group {key}"))
    });
    if resp.double_clicked() {
        view.groups.toggle(key);
    } else if resp.clicked() {
        view.select_group(Some(key.to_owned()));
    }
    if resp.dragged() {
        let c = rect.center() + resp.drag_delta();
        let world = (c - look.xf.offset) / look.xf.scale;
        world_pins_mut(view, grouped).insert(key.to_owned(), [world.x, world.y]);
    }
    resp.context_menu(|ui| {
        if ui.button(format!("Expand {key} ({n} services)")).clicked() {
            view.groups.toggle(key);
            ui.close();
        }
        if ui
            .add_enabled(pinned, egui::Button::new("Unpin (back to its slot)"))
            .clicked()
        {
            world_pins_mut(view, grouped).remove(key);
            ui.close();
        }
    });
    resp.on_hover_ui(|ui| {
        ui.strong(format!("{key} · {n} services"));
        ui.label(format!(
            "{} passing · {} warning · {} critical instances",
            counts.passing, counts.warning, counts.critical
        ));
        ui.label(format!("{} in from other stations", fmt_rps(stats.rps_in)));
        if stats.not_closed > 0 {
            ui.label(format!(
                "{} lanes inside with a breaker not closed (worst: {})",
                stats.not_closed,
                stats.breaker.label()
            ));
        }
        ui.weak("double-click (or e) to expand");
    });
}

/// The slot of an expanded group: a dashed outline with its name; double-click collapses.
pub(super) fn placeholder_ui(
    ui: &Ui,
    look: &mut NodeLook,
    view: &mut ViewState,
    key: &str,
    members: usize,
    rect: Rect,
) {
    let (zoom, theme) = (look.xf.scale, look.theme);
    let c = theme.text_dim.gamma_multiply(0.6);
    look.mesh
        .rect(rect, corner(8.0 * zoom), theme.map_bg.gamma_multiply(0.85));
    dashed_rect(look.mesh, rect, c, zoom);
    if look.lod.names {
        look.name(rect, key, c);
        look.text(
            rect.left_bottom() + vec2(10.0, -8.0) * zoom,
            Align2::LEFT_BOTTOM,
            format!("expanded · {members} services"),
            11.0,
            c,
        );
    }
    if !look.widgets {
        return;
    }
    let resp = ui.interact(rect, ui.scope_id().with(("expanded", key)), Sense::click());
    resp.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Button, true, format!("expanded group {key}"))
    });
    if resp.double_clicked() {
        view.groups.toggle(key);
    } else if resp.clicked() {
        view.select_group(Some(key.to_owned()));
    }
    resp.context_menu(|ui| {
        if ui.button(format!("Collapse {key}")).clicked() {
            view.groups.toggle(key);
            ui.close();
        }
    });
    resp.on_hover_text("double-click (or e) to collapse");
}

/// The far end of a filtered road: dimmed, name only, not a widget.
pub(super) fn context_ui(look: &mut NodeLook, node: &Node, rect: Rect) {
    let theme = look.theme;
    let zoom = look.xf.scale;
    let radius = corner(8.0 * zoom);
    look.mesh
        .rect(rect, radius, theme.node_fill.gamma_multiply(0.4));
    look.mesh.rect_stroke(
        rect.shrink(0.5),
        radius,
        1.0,
        theme.node_stroke.gamma_multiply(0.5),
    );
    if look.lod.names {
        look.text(
            rect.left_top() + vec2(10.0, 8.0) * zoom,
            Align2::LEFT_TOP,
            node.key.to_string(),
            15.0,
            theme.text_dim.gamma_multiply(0.7),
        );
    }
}

/// A service that vanished from the registry: a faded, dashed outline in its old slot.
#[allow(clippy::too_many_arguments)]
pub(super) fn ghost(
    painter: &egui::Painter,
    mesh: &mut MeshPainter,
    texts: &mut Vec<Shape>,
    theme: &Theme,
    xf: Xform,
    name: &str,
    rect: Rect,
    gone_for: Duration,
) {
    let c = theme.text_dim.gamma_multiply(0.6);
    dashed_rect(mesh, rect, c, xf.scale);
    if xf.scale < NAME_MIN_SCALE {
        return;
    }
    let mut text = |at: Pos2, align: Align2, t: String, size: f32| {
        let galley = painter.layout_no_wrap(t, xf.font(size), c);
        let r = align.anchor_size(at, galley.size());
        texts.push(Shape::galley(r.min, galley, c));
    };
    text(
        rect.left_top() + vec2(10.0, 8.0) * xf.scale,
        Align2::LEFT_TOP,
        name.to_owned(),
        15.0,
    );
    text(
        rect.left_bottom() + vec2(10.0, -8.0) * xf.scale,
        Align2::LEFT_BOTTOM,
        format!("gone {}", fmt_age(Some(gone_for))),
        11.0,
    );
}

fn dashed_rect(mesh: &mut MeshPainter, rect: Rect, color: Color32, zoom: f32) {
    let corners = [
        rect.left_top(),
        rect.right_top(),
        rect.right_bottom(),
        rect.left_bottom(),
        rect.left_top(),
    ];
    for w in corners.windows(2) {
        mesh.dashed(w[0], w[1], 1.5, color, 6.0 * zoom, 4.0 * zoom);
    }
}

/// Diagonal hatching over `rect` (45°, `spacing` apart), clipped to it.
fn hatch(mesh: &mut MeshPainter, rect: Rect, spacing: f32, color: Color32) {
    let spacing = spacing.max(4.0);
    let h = rect.height();
    let mut x = rect.left() - h;
    while x < rect.right() {
        // The line (x, bottom) → (x + h, top), cut to the rectangle's sides.
        let t0 = ((rect.left() - x) / h).clamp(0.0, 1.0);
        let t1 = ((rect.right() - x) / h).clamp(0.0, 1.0);
        if t1 > t0 {
            let at = |t: f32| pos2(x + t * h, rect.bottom() - t * h);
            mesh.segment(at(t0), at(t1), 1.0, color);
        }
        x += spacing;
    }
}

/// Smallest arc of the health ring for a state any instance is in (radians).
const MIN_SPAN: f32 = 0.35;

/// The health ring: arcs for passing / warning / critical instances, by count.
fn health_ring(mesh: &mut MeshPainter, c: Pos2, r: f32, counts: &HealthCounts, theme: &Theme) {
    let total = counts.total();
    let width = (r * 0.45).max(2.0);
    if total == 0 {
        mesh.arc(c, r, 0.0, std::f32::consts::TAU, 2.0, theme.lane_no_data);
        return;
    }
    // One critical instance among 300 still shows: a share never drawn below MIN_SPAN.
    let tau = std::f32::consts::TAU;
    let share = |n: u32| {
        if n == 0 {
            0.0
        } else {
            (tau * n as f32 / total as f32).max(MIN_SPAN)
        }
    };
    let (crit, warn) = (share(counts.critical), share(counts.warning));
    let pass = if counts.passing == 0 {
        0.0
    } else {
        (tau - crit - warn).max(MIN_SPAN)
    };
    let scale = tau / (crit + warn + pass);
    let mut a0 = -std::f32::consts::FRAC_PI_2;
    for (span, h) in [
        (crit, Health::Critical),
        (warn, Health::Warning),
        (pass, Health::Passing),
    ] {
        if span > 0.0 {
            mesh.arc(c, r, a0, span * scale, width, theme.health_color(h));
            a0 += span * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_first_word_and_their_end() {
        let w = |_: char| 1.0;
        assert_eq!(fit_name("payments-api-001", 20.0, w), "payments-api-001");
        assert_eq!(fit_name("payments-worker-031", 14.0, w), "payments…031");
        assert_eq!(fit_name("payments-api-001", 9.0, w), "…api-001");
        assert_eq!(fit_name("gateway-public", 5.0, w), "gate…");
        assert_eq!(fit_name("verylongname", 6.0, w), "veryl…");
    }
}
