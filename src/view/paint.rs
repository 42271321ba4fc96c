//! Map geometry built straight into one [`egui::Mesh`]: anti-aliased segments, paths,
//! circles and (rounded) rectangles, with the same one-pixel feathering egui's tessellator
//! gives its shapes. One mesh per layer of the map costs a fraction of one
//! [`egui::Shape`] per lane, particle or ring (measured in `benches/frame.rs`).
//!
//! Polygons are given clockwise on screen (y down), so `rot90` of an edge points out.

use egui::epaint::{Mesh, Vertex, WHITE_UV};
use egui::{Color32, Pos2, Rect, Shape, Stroke, StrokeKind, Vec2, pos2, vec2};

/// Builds one mesh of untextured, feathered triangles (or, as the benchmark's peer, the
/// same primitives as individual egui shapes).
pub struct MeshPainter {
    mesh: Mesh,
    /// Peer mode: one egui shape per primitive instead of the mesh.
    shapes: Option<Vec<Shape>>,
    /// Width of the feathering (one physical pixel), in points.
    feather: f32,
    /// Scratch: the points of the current path.
    points: Vec<Pos2>,
    /// Scratch: the (miter) normals of the current path.
    normals: Vec<Vec2>,
    /// Filled circles, drawn after the mesh as egui circles: egui draws a small one as a
    /// textured quad of a pre-rasterized disc (4 vertices), cheaper than any polygon.
    discs: Vec<Shape>,
}

impl MeshPainter {
    /// A painter for a screen of `pixels_per_point`.
    #[must_use]
    pub fn new(pixels_per_point: f32) -> Self {
        Self {
            mesh: Mesh::default(),
            shapes: None,
            feather: 1.0 / pixels_per_point.max(0.1),
            points: Vec::new(),
            normals: Vec::new(),
            discs: Vec::new(),
        }
    }

    /// A painter whose mesh has room for `vertices` and `indices` (last frame's counts:
    /// a mesh grown by doubling copies itself and touches fresh pages every frame).
    #[must_use]
    pub fn with_capacity(pixels_per_point: f32, vertices: usize, indices: usize) -> Self {
        let mut p = Self::new(pixels_per_point);
        p.mesh.vertices.reserve(vertices);
        p.mesh.indices.reserve(indices);
        p
    }

    /// Vertices and indices so far (the next frame's capacity).
    #[must_use]
    pub fn size(&self) -> (usize, usize) {
        (self.mesh.vertices.len(), self.mesh.indices.len())
    }

    /// The benchmark's peer: every primitive becomes its own egui shape (line segment,
    /// circle, rectangle, path), as the map was drawn before meshes.
    #[must_use]
    pub fn individual_shapes(pixels_per_point: f32) -> Self {
        Self {
            shapes: Some(Vec::new()),
            ..Self::new(pixels_per_point)
        }
    }

    /// Number of vertices so far.
    #[must_use]
    pub fn vertex_count(&self) -> usize {
        self.mesh.vertices.len()
    }

    /// The mesh as one shape (nothing when empty); the peer's shapes one by one.
    #[must_use]
    pub fn into_shapes(self) -> Vec<Shape> {
        match self.shapes {
            Some(shapes) => shapes,
            None if self.mesh.is_empty() => self.discs,
            None => {
                let mut all = Vec::with_capacity(1 + self.discs.len());
                all.push(Shape::mesh(self.mesh));
                all.extend(self.discs);
                all
            }
        }
    }

    fn vertex(&mut self, pos: Pos2, color: Color32) -> u32 {
        let i = self.mesh.vertices.len() as u32;
        self.mesh.vertices.push(Vertex {
            pos,
            uv: WHITE_UV,
            color,
        });
        i
    }

    /// A straight stroke from `a` to `b`, `width` points wide (butt ends).
    pub fn segment(&mut self, a: Pos2, b: Pos2, width: f32, color: Color32) {
        if let Some(shapes) = &mut self.shapes {
            shapes.push(Shape::line_segment([a, b], Stroke::new(width, color)));
            return;
        }
        self.points.clear();
        self.points.extend([a, b]);
        self.stroke_points(false, width, color);
    }

    /// A dashed stroke from `a` to `b`.
    pub fn dashed(&mut self, a: Pos2, b: Pos2, width: f32, color: Color32, dash: f32, gap: f32) {
        let len = (b - a).length();
        let (dash, gap) = (dash.max(1.0), gap.max(1.0));
        if len <= f32::EPSILON {
            return;
        }
        let dir = (b - a) / len;
        let mut t = 0.0;
        while t < len {
            let end = (t + dash).min(len);
            self.segment(a + dir * t, a + dir * end, width, color);
            t = end + gap;
        }
    }

    /// A stroke along `points` (closed: back to the first one).
    pub fn path(&mut self, points: &[Pos2], closed: bool, width: f32, color: Color32) {
        if let Some(shapes) = &mut self.shapes {
            let stroke = Stroke::new(width, color);
            shapes.push(if closed {
                Shape::closed_line(points.to_vec(), stroke)
            } else {
                Shape::line(points.to_vec(), stroke)
            });
            return;
        }
        self.points.clear();
        self.points.extend_from_slice(points);
        self.stroke_points(closed, width, color);
    }

    /// A filled circle.
    pub fn circle(&mut self, center: Pos2, radius: f32, color: Color32) {
        let list = self.shapes.as_mut().unwrap_or(&mut self.discs);
        list.push(Shape::circle_filled(center, radius, color));
    }

    /// An arc of a circle from angle `a0` over `span` radians (clockwise on screen), stroked.
    pub fn arc(
        &mut self,
        center: Pos2,
        radius: f32,
        a0: f32,
        span: f32,
        width: f32,
        color: Color32,
    ) {
        let steps = ((span.abs() / 0.2).ceil() as usize).max(2);
        self.points.clear();
        self.points.extend((0..=steps).map(|k| {
            let a = a0 + span * k as f32 / steps as f32;
            center + vec2(a.cos(), a.sin()) * radius
        }));
        let closed = span.abs() >= std::f32::consts::TAU - 1e-3;
        if closed {
            self.points.pop();
        }
        if let Some(shapes) = &mut self.shapes {
            let stroke = Stroke::new(width, color);
            let pts = self.points.clone();
            shapes.push(if closed {
                Shape::closed_line(pts, stroke)
            } else {
                Shape::line(pts, stroke)
            });
            return;
        }
        self.stroke_points(closed, width, color);
    }

    /// A filled rectangle with corners rounded by `radius`.
    pub fn rect(&mut self, rect: Rect, radius: f32, color: Color32) {
        if let Some(shapes) = &mut self.shapes {
            shapes.push(Shape::rect_filled(rect, radius, color));
            return;
        }
        self.rounded_rect_points(rect, radius);
        self.fill_points(color);
    }

    /// The outline of a rectangle with corners rounded by `radius`, centred on its edge.
    pub fn rect_stroke(&mut self, rect: Rect, radius: f32, width: f32, color: Color32) {
        if let Some(shapes) = &mut self.shapes {
            shapes.push(Shape::rect_stroke(
                rect,
                radius,
                Stroke::new(width, color),
                StrokeKind::Middle,
            ));
            return;
        }
        self.rounded_rect_points(rect, radius);
        self.stroke_points(true, width, color);
    }

    /// Corner points, clockwise from the top-left corner.
    fn rounded_rect_points(&mut self, rect: Rect, radius: f32) {
        self.points.clear();
        let r = radius.min(rect.width() / 2.0).min(rect.height() / 2.0);
        if r < 0.5 {
            self.points.extend([
                rect.left_top(),
                rect.right_top(),
                rect.right_bottom(),
                rect.left_bottom(),
            ]);
            return;
        }
        let quarter = std::f32::consts::FRAC_PI_2;
        let steps = (circle_segments(r) / 4).max(2);
        let corners = [
            (pos2(rect.left() + r, rect.top() + r), 2.0 * quarter),
            (pos2(rect.right() - r, rect.top() + r), 3.0 * quarter),
            (pos2(rect.right() - r, rect.bottom() - r), 0.0),
            (pos2(rect.left() + r, rect.bottom() - r), quarter),
        ];
        for (c, a0) in corners {
            for k in 0..=steps {
                let a = a0 + quarter * k as f32 / steps as f32;
                self.points.push(c + vec2(a.cos(), a.sin()) * r);
            }
        }
        // A fully rounded side has no straight part: drop the repeated points.
        self.points.dedup_by(|a, b| a.distance_sq(*b) < 1e-6);
        if self.points.len() > 1
            && self.points[0].distance_sq(self.points[self.points.len() - 1]) < 1e-6
        {
            self.points.pop();
        }
    }

    /// Fills the convex polygon in `self.points` (clockwise), feathered outwards.
    fn fill_points(&mut self, color: Color32) {
        let n = self.points.len();
        if n < 3 || color == Color32::TRANSPARENT {
            return;
        }
        self.closed_normals();
        let half = self.feather / 2.0;
        let base = self.mesh.vertices.len() as u32;
        self.mesh.vertices.reserve(2 * n);
        for i in 0..n {
            let (p, nrm) = (self.points[i], self.normals[i]);
            self.vertex(p - nrm * half, color);
            self.vertex(p + nrm * half, Color32::TRANSPARENT);
        }
        self.fan_and_fringe(base, n);
    }

    /// Triangles of a convex ring of `n` (inner, outer) vertex pairs from `base`: a fan
    /// over the inner ones and a band to the outer ones.
    fn fan_and_fringe(&mut self, base: u32, n: usize) {
        let inner = |i: usize| base + 2 * i as u32;
        self.mesh.indices.reserve(3 * (3 * n - 2));
        for i in 1..n - 1 {
            self.mesh.add_triangle(inner(0), inner(i), inner(i + 1));
        }
        for i in 0..n {
            let j = (i + 1) % n;
            let (a_in, a_out, b_in, b_out) = (inner(i), inner(i) + 1, inner(j), inner(j) + 1);
            self.mesh.add_triangle(a_in, a_out, b_out);
            self.mesh.add_triangle(a_in, b_out, b_in);
        }
    }

    /// Strokes `self.points` (open or closed), feathered on both sides.
    fn stroke_points(&mut self, closed: bool, width: f32, color: Color32) {
        let n = self.points.len();
        if n < 2 || width <= 0.0 || color == Color32::TRANSPARENT {
            return;
        }
        if closed {
            self.closed_normals();
        } else {
            self.open_normals();
        }
        let f = self.feather;
        let base = self.mesh.vertices.len() as u32;
        let segments = if closed { n } else { n - 1 } as u32;
        if width > f {
            // Four rows per point: fringe, edge, edge, fringe.
            let (outer, inner) = (f32::midpoint(width, f), (width - f) / 2.0);
            self.mesh.vertices.reserve(4 * n);
            for i in 0..n {
                let (p, nrm) = (self.points[i], self.normals[i]);
                self.vertex(p + nrm * outer, Color32::TRANSPARENT);
                self.vertex(p + nrm * inner, color);
                self.vertex(p - nrm * inner, color);
                self.vertex(p - nrm * outer, Color32::TRANSPARENT);
            }
            self.mesh.indices.reserve(18 * segments as usize);
            for s in 0..segments {
                let a = base + 4 * s;
                let b = base + 4 * ((s + 1) % n as u32);
                for k in 0..3 {
                    self.mesh.add_triangle(a + k, a + k + 1, b + k);
                    self.mesh.add_triangle(a + k + 1, b + k + 1, b + k);
                }
            }
        } else {
            // Thinner than a pixel: one pixel wide, fainter (as egui does).
            let faint = color.gamma_multiply(width / f);
            self.mesh.vertices.reserve(3 * n);
            for i in 0..n {
                let (p, nrm) = (self.points[i], self.normals[i]);
                self.vertex(p + nrm * f, Color32::TRANSPARENT);
                self.vertex(p, faint);
                self.vertex(p - nrm * f, Color32::TRANSPARENT);
            }
            self.mesh.indices.reserve(12 * segments as usize);
            for s in 0..segments {
                let a = base + 3 * s;
                let b = base + 3 * ((s + 1) % n as u32);
                for k in 0..2 {
                    self.mesh.add_triangle(a + k, a + k + 1, b + k);
                    self.mesh.add_triangle(a + k + 1, b + k + 1, b + k);
                }
            }
        }
    }

    /// Miter normals of the closed polygon in `self.points`.
    fn closed_normals(&mut self) {
        let n = self.points.len();
        self.normals.clear();
        for i in 0..n {
            let prev = self.points[(i + n - 1) % n];
            let (p, next) = (self.points[i], self.points[(i + 1) % n]);
            let n0 = (p - prev).normalized().rot90();
            let n1 = (next - p).normalized().rot90();
            self.normals.push(miter(n0, n1));
        }
    }

    /// Normals of the open path in `self.points` (the ends take their segment's).
    fn open_normals(&mut self) {
        let n = self.points.len();
        self.normals.clear();
        for i in 0..n {
            let n0 = (i > 0).then(|| (self.points[i] - self.points[i - 1]).normalized().rot90());
            let n1 =
                (i + 1 < n).then(|| (self.points[i + 1] - self.points[i]).normalized().rot90());
            self.normals.push(match (n0, n1) {
                (Some(a), Some(b)) => miter(a, b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => Vec2::ZERO,
            });
        }
    }
}

/// The normal at a corner between edges with unit normals `a` and `b`, long enough that
/// an offset along it keeps both edges' offsets (clamped at sharp corners).
fn miter(a: Vec2, b: Vec2) -> Vec2 {
    let m = (a + b) / 2.0;
    let len_sq = m.length_sq();
    if len_sq < 0.1 { a } else { m / len_sq }
}

/// Segments of a circle of `radius` points: smooth enough, never wasteful.
fn circle_segments(radius: f32) -> usize {
    ((radius * 1.5).ceil() as usize).clamp(6, 48)
}

/// Whether the segment `a`–`b` (with `margin` around it) may touch `clip`.
#[must_use]
pub fn segment_visible(a: Pos2, b: Pos2, margin: f32, clip: Rect) -> bool {
    Rect::from_two_pos(a, b).expand(margin).intersects(clip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn painter() -> MeshPainter {
        MeshPainter::new(1.0)
    }

    #[test]
    fn a_segment_is_one_quad_with_fringes() {
        let mut p = painter();
        p.segment(pos2(0.0, 0.0), pos2(10.0, 0.0), 4.0, Color32::RED);
        assert_eq!(p.vertex_count(), 8);
        let mesh = p.mesh;
        assert!(mesh.is_valid());
        assert_eq!(mesh.indices.len(), 18);
        // Solid core spans ±1.5, fringe reaches ±2.5 (one pixel of feathering).
        let ys: Vec<f32> = mesh.vertices.iter().map(|v| v.pos.y).collect();
        assert!(ys.iter().any(|y| (y - 2.5).abs() < 1e-4));
        assert!(ys.iter().any(|y| (y + 1.5).abs() < 1e-4));
        let solid = mesh
            .vertices
            .iter()
            .filter(|v| v.color == Color32::RED)
            .count();
        assert_eq!(solid, 4);
    }

    #[test]
    fn hairlines_fade_instead_of_vanishing() {
        let mut p = painter();
        p.segment(pos2(0.0, 0.0), pos2(10.0, 0.0), 0.5, Color32::WHITE);
        assert_eq!(p.vertex_count(), 6);
        let core = p.mesh.vertices[1].color;
        assert!(core.a() < 255 && core.a() > 0, "{core:?}");
    }

    #[test]
    fn fills_are_feathered_outwards() {
        let mut p = painter();
        let r = Rect::from_min_max(pos2(0.0, 0.0), pos2(10.0, 10.0));
        p.rect(r, 0.0, Color32::BLUE);
        let mesh = p.mesh;
        assert!(mesh.is_valid());
        // Inner corners inside the rectangle, outer ones outside.
        for (k, v) in mesh.vertices.iter().enumerate() {
            let inside = r.contains(v.pos) && r.shrink(0.1).contains(v.pos);
            assert_eq!(inside, k % 2 == 0, "{k}: {:?}", v.pos);
        }
        let mut c = painter();
        c.circle(pos2(5.0, 5.0), 3.0, Color32::BLUE);
        assert_eq!(c.vertex_count(), 0, "circles stay egui's discs");
        assert_eq!(c.into_shapes().len(), 1);
    }

    #[test]
    fn dashes_cover_about_their_share() {
        let mut p = painter();
        p.dashed(
            pos2(0.0, 0.0),
            pos2(100.0, 0.0),
            2.0,
            Color32::WHITE,
            8.0,
            6.0,
        );
        // 100 / (8 + 6) → 8 dashes, 8 vertices each.
        assert_eq!(p.vertex_count(), 8 * 8);
        assert_eq!(p.into_shapes().len(), 1, "one mesh");
        assert!(painter().into_shapes().is_empty());
        let mut peer = MeshPainter::individual_shapes(1.0);
        peer.dashed(
            pos2(0.0, 0.0),
            pos2(100.0, 0.0),
            2.0,
            Color32::WHITE,
            8.0,
            6.0,
        );
        assert_eq!(peer.into_shapes().len(), 8, "one shape per dash");
    }

    #[test]
    fn culling_by_segment_bounds() {
        let clip = Rect::from_min_max(pos2(0.0, 0.0), pos2(100.0, 100.0));
        assert!(segment_visible(
            pos2(-50.0, 50.0),
            pos2(150.0, 50.0),
            1.0,
            clip
        ));
        assert!(!segment_visible(
            pos2(-50.0, -10.0),
            pos2(150.0, -10.0),
            1.0,
            clip
        ));
        assert!(segment_visible(
            pos2(-50.0, -10.0),
            pos2(150.0, -10.0),
            12.0,
            clip
        ));
    }
}
