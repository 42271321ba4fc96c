//! Named colour tokens. Views take colours from here, never from literals.

use egui::Color32;

use crate::model::types::{BreakerState, Health};

/// Error-rate thresholds for lane colours (ratios 0..1); the operator sets them in the
/// header's settings menu, and they persist.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// At or above: degraded.
    pub degraded: f64,
    /// Above: failing.
    pub failing: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            degraded: 0.001,
            failing: 0.10,
        }
    }
}

/// The palette of the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// Map background.
    pub map_bg: Color32,
    /// Station (service node) fill.
    pub node_fill: Color32,
    /// Station outline.
    pub node_stroke: Color32,
    /// Outline of the selected station.
    pub selection: Color32,
    /// Main text.
    pub text: Color32,
    /// Secondary text.
    pub text_dim: Color32,
    /// Lane with errors below the degraded threshold.
    pub lane_ok: Color32,
    /// Lane at or above the degraded threshold.
    pub lane_degraded: Color32,
    /// Lane above the failing threshold.
    pub lane_failing: Color32,
    /// Lane without data.
    pub lane_no_data: Color32,
    /// Health: passing.
    pub health_passing: Color32,
    /// Health: warning.
    pub health_warning: Color32,
    /// Health: critical.
    pub health_critical: Color32,
    /// Breaker glyph: open.
    pub breaker_open: Color32,
    /// Breaker glyph: saturated.
    pub breaker_saturated: Color32,
    /// Breaker glyph: ejecting.
    pub breaker_ejecting: Color32,
    /// Error text.
    pub error: Color32,
    /// Success text.
    pub success: Color32,
    /// Demo-mode badge.
    pub demo_badge: Color32,
    /// Chart colours per version (first version first), cycled.
    pub series: [Color32; 4],
}

impl Theme {
    /// The dark theme.
    #[must_use]
    pub fn dark() -> Self {
        Self {
            map_bg: Color32::from_rgb(20, 23, 28),
            node_fill: Color32::from_rgb(38, 44, 54),
            node_stroke: Color32::from_rgb(90, 100, 115),
            selection: Color32::from_rgb(120, 180, 255),
            text: Color32::from_rgb(225, 230, 236),
            text_dim: Color32::from_rgb(150, 158, 170),
            lane_ok: Color32::from_rgb(70, 190, 120),
            lane_degraded: Color32::from_rgb(235, 180, 50),
            lane_failing: Color32::from_rgb(235, 75, 70),
            lane_no_data: Color32::from_rgb(95, 100, 110),
            health_passing: Color32::from_rgb(70, 190, 120),
            health_warning: Color32::from_rgb(235, 180, 50),
            health_critical: Color32::from_rgb(235, 75, 70),
            breaker_open: Color32::from_rgb(235, 75, 70),
            breaker_saturated: Color32::from_rgb(240, 130, 40),
            breaker_ejecting: Color32::from_rgb(235, 180, 50),
            error: Color32::from_rgb(255, 110, 100),
            success: Color32::from_rgb(110, 210, 140),
            demo_badge: Color32::from_rgb(150, 110, 230),
            series: [
                Color32::from_rgb(110, 170, 255),
                Color32::from_rgb(240, 150, 60),
                Color32::from_rgb(190, 120, 230),
                Color32::from_rgb(90, 200, 200),
            ],
        }
    }

    /// The light theme: the same tokens, for a bright room or a projector.
    #[must_use]
    pub fn light() -> Self {
        Self {
            map_bg: Color32::from_rgb(244, 246, 249),
            node_fill: Color32::from_rgb(255, 255, 255),
            node_stroke: Color32::from_rgb(150, 158, 170),
            selection: Color32::from_rgb(30, 110, 220),
            text: Color32::from_rgb(25, 30, 38),
            text_dim: Color32::from_rgb(95, 103, 115),
            lane_ok: Color32::from_rgb(30, 150, 85),
            lane_degraded: Color32::from_rgb(200, 140, 0),
            lane_failing: Color32::from_rgb(210, 45, 40),
            lane_no_data: Color32::from_rgb(170, 175, 185),
            health_passing: Color32::from_rgb(30, 150, 85),
            health_warning: Color32::from_rgb(200, 140, 0),
            health_critical: Color32::from_rgb(210, 45, 40),
            breaker_open: Color32::from_rgb(210, 45, 40),
            breaker_saturated: Color32::from_rgb(220, 100, 10),
            breaker_ejecting: Color32::from_rgb(200, 140, 0),
            error: Color32::from_rgb(200, 40, 35),
            success: Color32::from_rgb(30, 140, 75),
            demo_badge: Color32::from_rgb(120, 80, 210),
            series: [
                Color32::from_rgb(30, 100, 210),
                Color32::from_rgb(210, 110, 10),
                Color32::from_rgb(140, 60, 190),
                Color32::from_rgb(20, 140, 140),
            ],
        }
    }

    /// Chart colour of the `i`-th version.
    #[must_use]
    pub fn series_color(&self, i: usize) -> Color32 {
        self.series[i % self.series.len()]
    }

    /// Colour of a lane by its 5xx ratio (`None` = no data).
    #[must_use]
    pub fn lane_color(&self, err_ratio: Option<f64>, t: Thresholds) -> Color32 {
        match err_ratio {
            None => self.lane_no_data,
            Some(r) if r > t.failing => self.lane_failing,
            Some(r) if r >= t.degraded => self.lane_degraded,
            Some(_) => self.lane_ok,
        }
    }

    /// Colour of a health state.
    #[must_use]
    pub fn health_color(&self, h: Health) -> Color32 {
        match h {
            Health::Passing => self.health_passing,
            Health::Warning => self.health_warning,
            Health::Critical => self.health_critical,
        }
    }

    /// Colour of a breaker glyph (`None` for closed: no glyph).
    #[must_use]
    pub fn breaker_color(&self, b: BreakerState) -> Option<Color32> {
        match b {
            BreakerState::Closed => None,
            BreakerState::Ejecting { .. } => Some(self.breaker_ejecting),
            BreakerState::Saturated => Some(self.breaker_saturated),
            BreakerState::Open => Some(self.breaker_open),
        }
    }
}
