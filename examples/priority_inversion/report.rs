//! Turning waits into numbers: percentiles, table rows, JSON lines, and the CDF chart.

use std::time::Duration;

/// One (scenario, lock) result.
pub struct Result {
    pub scenario: &'static str,
    pub lock: &'static str,
    pub label: &'static str,
    /// The foreground's waits, sorted.
    pub waits: Vec<Duration>,
    /// proxy-lock's counters over the run (donations, sections run by proxy); `None` for the
    /// other locks.
    pub counted: Option<(u64, u64)>,
}

impl Result {
    /// The wait at quantile `q` in µs (nearest rank).
    pub fn at_us(&self, q: f64) -> f64 {
        let i = ((self.waits.len() - 1) as f64 * q).round() as usize;
        self.waits[i].as_secs_f64() * 1e6
    }

    pub fn max_us(&self) -> f64 {
        self.waits.last().map_or(0.0, |d| d.as_secs_f64() * 1e6)
    }

    pub fn header() -> String {
        format!(
            "  {:<24} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
            "lock", "n", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "donations", "proxied"
        )
    }

    pub fn row(&self) -> String {
        let (donations, proxied) = match self.counted {
            Some((d, p)) => (d.to_string(), p.to_string()),
            None => ("-".into(), "-".into()),
        };
        format!(
            "  {:<24} {:>6} {:>9.1} {:>9.0} {:>9.0} {:>9.0} {:>10} {:>8}",
            self.label,
            self.waits.len(),
            self.at_us(0.5),
            self.at_us(0.99),
            self.at_us(0.999),
            self.max_us(),
            donations,
            proxied
        )
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"scenario\":\"{}\",\"lock\":\"{}\",\"n\":{},\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"max_us\":{:.2}}}",
            self.scenario,
            self.lock,
            self.waits.len(),
            self.at_us(0.5),
            self.at_us(0.99),
            self.at_us(0.999),
            self.max_us()
        )
    }
}

/// The headline: worst waits of std against proxy-lock's guard and `run` APIs (and pthread PI
/// where the scenario is its case).
pub fn headline(scenario: &str, results: &[&Result]) -> String {
    let max_of = |lock: &str| {
        results
            .iter()
            .find(|r| r.lock == lock)
            .map(|r| r.max_us() / 1e3)
    };
    let (Some(std), Some(ours)) = (max_of("std"), max_of("proxy_lock")) else {
        return String::new();
    };
    let mut line = format!(
        "{scenario}: worst wait {std:.1} ms with std, {ours:.2} ms with proxy_lock ({:.0}x)",
        std / ours.max(1e-6)
    );
    if let Some(run) = max_of("proxy_lock_run") {
        line += &format!(
            ", {run:.2} ms with proxy_lock::run ({:.0}x)",
            std / run.max(1e-6)
        );
    }
    if let Some(pi) = max_of("pthread_pi") {
        line += &format!(", {pi:.2} ms with pthread PI");
    }
    if let Some(rw) = max_of("pthread_rwlock") {
        line += &format!(", {rw:.1} ms with a pthread rwlock");
    }
    line
}

/// Fraction of waits below which the chart's y axis starts: most waits take well under a
/// microsecond, and the curves differ only in the tail.
const CDF_FROM: f64 = 0.8;

/// Draws one panel per scenario (two per row) with one CDF curve (log x) per lock, as SVG. The
/// y axis shows the top of the distribution, from `CDF_FROM`.
pub fn chart(path: &str, scenarios: &[(&str, Vec<&Result>)]) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(230, 159, 0),
        RGBColor(204, 121, 167),
        RGBColor(0, 114, 178),
        RGBColor(0, 158, 115),
    ];
    let rows = scenarios.len().div_ceil(2).max(1);
    let cols = scenarios.len().clamp(1, 2);
    let root = SVGBackend::new(path, (640 * cols as u32, 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((rows, cols));
    for ((name, results), panel) in scenarios.iter().zip(panels.iter()) {
        let top = results.iter().map(|r| r.max_us()).fold(10.0, f64::max) * 1.5;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{name}: foreground waits, CDF (top {:.0}%)",
                    (1.0 - CDF_FROM) * 100.0
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(45)
            .build_cartesian_2d((1f64..top).log_scale(), CDF_FROM..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("wait (µs, log)")
            .y_desc("fraction of waits ≤ x")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, r) in results.iter().enumerate() {
            let color = colors[i % colors.len()];
            let n = r.waits.len();
            let step = (n / 400).max(1);
            let first = ((n as f64 * CDF_FROM) as usize).min(n - 1);
            let points = (first..n)
                .step_by(step)
                .chain(std::iter::once(n - 1))
                .map(|k| {
                    let us = (r.waits[k].as_secs_f64() * 1e6).max(1.0);
                    (us, (k + 1) as f64 / n as f64)
                });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(r.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
