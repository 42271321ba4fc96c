//! The inspector's charts: per version of the selected service, p50/p95/p99, requests per
//! second and 5xx %, on one linked time axis ("seconds ago"), over 1, 5, 15 or 60 minutes.
//! A window without data is a gap in the line, never a zero.

use std::time::{Duration, Instant};

use egui::{Color32, Ui};
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints};

use super::ViewState;
use super::theme::Theme;
use crate::model::Model;
use crate::model::history::HistoryPoint;

/// Chart windows the operator can pick, seconds.
pub const WINDOWS_SECS: [u64; 4] = [60, 300, 900, 3600];

/// Splits a series into runs without gaps: a gap point, or two points further apart than
/// `max_step`, ends a run.
#[must_use]
pub fn segments(
    points: &[HistoryPoint],
    now: Instant,
    max_step: Duration,
    value: impl Fn(&HistoryPoint) -> Option<f64>,
) -> Vec<Vec<[f64; 2]>> {
    let mut out: Vec<Vec<[f64; 2]>> = Vec::new();
    let mut run: Vec<[f64; 2]> = Vec::new();
    let mut last_at: Option<Instant> = None;
    for p in points {
        let far = last_at.is_some_and(|t| p.at.saturating_duration_since(t) > max_step);
        match value(p) {
            Some(v) if !far => run.push([-now.saturating_duration_since(p.at).as_secs_f64(), v]),
            Some(v) => {
                if !run.is_empty() {
                    out.push(std::mem::take(&mut run));
                }
                run.push([-now.saturating_duration_since(p.at).as_secs_f64(), v]);
            }
            None => {
                if !run.is_empty() {
                    out.push(std::mem::take(&mut run));
                }
            }
        }
        last_at = Some(p.at);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// What one line of a chart shows: a name suffix, a style and the value it picks.
type Picker<'a> = (&'a str, LineStyle, fn(&HistoryPoint) -> Option<f64>);

/// One chart: for each version, one line per value picker.
#[allow(clippy::too_many_arguments)]
fn chart_ui(
    ui: &mut Ui,
    id: &str,
    unit: &str,
    series: &[(String, Color32, Vec<HistoryPoint>)],
    pickers: &[Picker<'_>],
    window_secs: f64,
    now: Instant,
    max_step: Duration,
    min_top: f64,
    legend: bool,
) {
    let link = egui::Id::unique("inspector charts");
    let mut plot = Plot::new(id);
    if legend {
        plot = plot.legend(Legend::default().position(egui_plot::Corner::LeftTop));
    }
    plot.height(110.0)
        .link_axis(link, [true, false])
        .link_cursor(link, [true, false])
        .include_x(-window_secs)
        .include_x(0.0)
        .include_y(0.0)
        .include_y(min_top)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .y_axis_label(unit)
        .x_axis_formatter(|mark, _| format!("{:.0} s", mark.value))
        .show(ui, |plot| {
            for (version, color, points) in series {
                for (what, style, pick) in pickers {
                    let name = if what.is_empty() {
                        version.clone()
                    } else {
                        format!("{version} {what}")
                    };
                    for run in segments(points, now, max_step, pick) {
                        plot.line(
                            Line::new(name.clone(), PlotPoints::from(run))
                                .color(*color)
                                .style(*style)
                                .width(1.5),
                        );
                    }
                }
            }
        });
}

/// The charts of the selected service's versions.
pub fn version_charts_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    service: &str,
    theme: &Theme,
    now: Instant,
) {
    let Some(svc) = model.services.get(service) else {
        return;
    };
    ui.horizontal(|ui| {
        ui.strong("History");
        for secs in WINDOWS_SECS {
            let label = format!("{} min", secs / 60);
            if ui
                .selectable_label(view.chart_window_secs == secs, label)
                .clicked()
            {
                view.chart_window_secs = secs;
            }
        }
    });
    let window = Duration::from_secs(view.chart_window_secs.max(60));
    let series: Vec<(String, Color32, Vec<HistoryPoint>)> = svc
        .versions()
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let points: Vec<HistoryPoint> = model
                .version_history(service, &v)?
                .points_since(now, window)
                .collect();
            Some((v, theme.series_color(i), points))
        })
        .collect();
    if series.iter().all(|(_, _, p)| p.is_empty()) {
        ui.colored_label(
            theme.text_dim,
            "no history yet: it starts with the first full window of the callers' sidecars",
        );
        return;
    }
    let max_step = crate::model::history::max_step(model.slowest_sidecar_interval(), window);
    let w = window.as_secs_f64();
    ui.horizontal_wrapped(|ui| {
        ui.colored_label(
            theme.text_dim,
            "latency: p50 dotted · p95 dashed · p99 solid ·",
        );
        for (v, c, _) in &series {
            ui.colored_label(*c, v);
        }
    });
    chart_ui(
        ui,
        "latency",
        "ms",
        &series,
        &[
            ("p50", LineStyle::Dotted { spacing: 4.0 }, |p| p.p50_ms),
            ("p95", LineStyle::dashed_dense(), |p| p.p95_ms),
            ("p99", LineStyle::Solid, |p| p.p99_ms),
        ],
        w,
        now,
        max_step,
        10.0,
        false,
    );
    chart_ui(
        ui,
        "rps",
        "rps",
        &series,
        &[("", LineStyle::Solid, |p| p.rps)],
        w,
        now,
        max_step,
        1.0,
        true,
    );
    chart_ui(
        ui,
        "errors",
        "5xx %",
        &series,
        &[("", LineStyle::Solid, |p| p.err_pct)],
        w,
        now,
        max_step,
        1.0,
        true,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(now: Instant, ago_secs: u64, rps: Option<f64>) -> HistoryPoint {
        let mut p = HistoryPoint::gap(now.checked_sub(Duration::from_secs(ago_secs)).unwrap());
        p.rps = rps;
        p
    }

    #[test]
    fn gaps_and_holes_split_the_line() {
        let now = Instant::now() + Duration::from_secs(100);
        let points = [
            pt(now, 10, Some(5.0)),
            pt(now, 9, Some(6.0)),
            pt(now, 8, None),
            pt(now, 7, Some(7.0)),
            pt(now, 2, Some(8.0)), // 5 s hole: no update at all
            pt(now, 1, Some(9.0)),
        ];
        let runs = segments(&points, now, Duration::from_secs(3), |p| p.rps);
        assert_eq!(
            runs,
            vec![
                vec![[-10.0, 5.0], [-9.0, 6.0]],
                vec![[-7.0, 7.0]],
                vec![[-2.0, 8.0], [-1.0, 9.0]],
            ]
        );
        assert!(segments(&[], now, Duration::from_secs(3), |p| p.rps).is_empty());
    }
}
