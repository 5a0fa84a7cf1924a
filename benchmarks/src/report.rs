//! Writes each case's table (`<case>.md`) and plot (`<case>.svg`), and the index of a run.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::runner::LoadResult;

/// One system's outcome in one case.
#[derive(Debug, Clone)]
pub struct Row {
    /// The system's name.
    pub system: String,
    /// What the client measured, if the run worked.
    pub result: Option<LoadResult>,
    /// Server CPU seconds during the measured phase.
    pub server_cpu_s: f64,
    /// Server peak RSS, KiB.
    pub server_peak_rss_kib: u64,
    /// Why the system has no result (a build or run failure), if so.
    pub failure: Option<String>,
}

/// One case: a payload size and a concurrency, every system.
#[derive(Debug, Clone)]
pub struct Case {
    /// File name stem, e.g. `echo-1k-c100`.
    pub name: String,
    /// Human title.
    pub title: String,
    /// The systems' rows.
    pub rows: Vec<Row>,
    /// Each system's QPS in every round, in round order (`None` for a failed round).
    pub rounds: Vec<(String, Vec<Option<f64>>)>,
    /// How this case was measured, when not as the run's setup says.
    pub method: Option<String>,
}

/// A median of per-round ratios with how sure it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedRatio {
    /// The median per-round ratio.
    pub median: f64,
    /// The 95% confidence interval of the median: order statistics around the middle
    /// (distribution-free, so it assumes nothing about the machine's noise).
    pub low: f64,
    /// The interval's upper end.
    pub high: f64,
    /// How many rounds paired.
    pub rounds: usize,
}

impl PairedRatio {
    /// The median and its 95% confidence interval of `ratios` (any order; non-finite values
    /// dropped), or `None` if none is left.
    #[must_use]
    pub fn of(mut ratios: Vec<f64>) -> Option<Self> {
        ratios.retain(|r| r.is_finite());
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let median = if n % 2 == 1 {
            ratios[n / 2]
        } else {
            (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
        };
        // Ranks n/2 ± 1.96·√n/2 (normal approximation of the binomial): the median lies
        // between them with 95% probability. Fewer than 6 rounds cannot say more than the range.
        let half = 1.96 * (n as f64).sqrt() / 2.0;
        let lo = ((n as f64 / 2.0 - half).floor() as usize).min(n - 1);
        let hi = ((n as f64 / 2.0 + half).ceil() as usize).clamp(1, n) - 1;
        let (low, high) = if n < 6 {
            (ratios[0], ratios[n - 1])
        } else {
            (ratios[lo], ratios[hi])
        };
        Some(Self {
            median,
            low,
            high,
            rounds: n,
        })
    }
}

impl Case {
    /// The median over rounds of `a`'s QPS divided by `b`'s QPS in the same round, with its
    /// confidence interval: systems measured back to back share the machine's state, so
    /// per-round ratios are steadier than a ratio of medians on a noisy machine.
    #[must_use]
    pub fn paired_ratio(&self, a: &str, b: &str) -> Option<PairedRatio> {
        let of = |name: &str| {
            self.rounds
                .iter()
                .find(|(s, _)| s == name)
                .map(|(_, q)| q.clone())
        };
        let (qa, qb) = (of(a)?, of(b)?);
        PairedRatio::of(
            qa.iter()
                .zip(&qb)
                .filter_map(|(x, y)| Some((*x)? / (*y)?))
                .collect(),
        )
    }

    /// The row of `system`, if it has a result.
    #[must_use]
    pub fn result(&self, system: &str) -> Option<&LoadResult> {
        self.rows
            .iter()
            .find(|r| r.system == system)?
            .result
            .as_ref()
    }
}

/// How the run was set up, printed above every table.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// When, UTC.
    pub date: String,
    /// The machine.
    pub machine: String,
    /// Runtimes, pinning, durations.
    pub setup: String,
}

/// The markdown table of `case`.
#[must_use]
pub fn table(case: &Case) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| system | QPS | p50 µs | p90 µs | p99 µs | p999 µs | errors | client CPU s | server CPU s | client peak RSS MiB | server peak RSS MiB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &case.rows {
        match (&r.result, &r.failure) {
            (Some(x), _) => {
                let _ = writeln!(
                    s,
                    "| {} | {:.0}{} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} |",
                    r.system,
                    x.qps,
                    x.qps_range
                        .map(|(lo, hi)| format!(" ({lo:.0}–{hi:.0})"))
                        .unwrap_or_default(),
                    x.p50_us,
                    x.p90_us,
                    x.p99_us,
                    x.p999_us,
                    x.errors,
                    x.client_cpu_s,
                    r.server_cpu_s,
                    x.client_peak_rss_kib as f64 / 1024.0,
                    r.server_peak_rss_kib as f64 / 1024.0
                );
            }
            (None, failure) => {
                let why = failure.as_deref().unwrap_or("no result").replace('|', "/");
                let _ = writeln!(s, "| {} | failed: {why} | | | | | | | | | |", r.system);
            }
        }
    }
    s
}

/// Writes `<dir>/<case>.md` and `<dir>/<case>.svg`.
///
/// # Errors
/// If a file cannot be written.
pub fn write_case(dir: &Path, case: &Case, info: &RunInfo) -> Result<(), crate::BoxError> {
    std::fs::create_dir_all(dir)?;
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", case.title);
    let _ = writeln!(
        md,
        "Run {} on {}.\n\n{}\n",
        info.date,
        info.machine,
        case.method.as_deref().unwrap_or(&info.setup)
    );
    md.push_str(&table(case));
    md.push_str(&rounds_table(case));
    let _ = writeln!(md, "\n![QPS and p99 per system]({}.svg)", case.name);
    std::fs::write(dir.join(format!("{}.md", case.name)), md)?;
    plot(&dir.join(format!("{}.svg", case.name)), case)?;
    Ok(())
}

/// Every round's QPS per system (the data the ratios and their intervals come from), empty
/// for a case measured once.
#[must_use]
pub fn rounds_table(case: &Case) -> String {
    let n = case.rounds.iter().map(|(_, q)| q.len()).max().unwrap_or(0);
    if n < 2 {
        return String::new();
    }
    let mut md = String::from("\nQPS per round:\n\n| round |");
    for (system, _) in &case.rounds {
        let _ = write!(md, " {system} |");
    }
    md.push_str("\n|---:|");
    md.push_str(&"---:|".repeat(case.rounds.len()));
    md.push('\n');
    for i in 0..n {
        let _ = write!(md, "| {} |", i + 1);
        for (_, qps) in &case.rounds {
            match qps.get(i).copied().flatten() {
                Some(q) => {
                    let _ = write!(md, " {q:.0} |");
                }
                None => md.push_str(" failed |"),
            }
        }
        md.push('\n');
    }
    md
}

fn plot(path: &Path, case: &Case) -> Result<(), crate::BoxError> {
    let rows: Vec<(&str, &LoadResult)> = case
        .rows
        .iter()
        .filter_map(|r| Some((r.system.as_str(), r.result.as_ref()?)))
        .collect();
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let n = rows.len().max(1) as u32;
    fn qps(r: &LoadResult) -> f64 {
        r.qps
    }
    fn p99(r: &LoadResult) -> f64 {
        r.p99_us as f64
    }
    type Metric = fn(&LoadResult) -> f64;
    let panels: [(_, &str, Metric); 2] = [
        (&left, "QPS (higher is better)", qps),
        (&right, "p99 latency, µs (lower is better)", p99),
    ];
    for (area, title, value) in panels {
        let max = rows.iter().map(|(_, r)| value(r)).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} — {title}", case.title), ("sans-serif", 14))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0u32..n).into_segmented(), 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len())
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => rows
                    .get(*i as usize)
                    .map_or(String::new(), |r| r.0.to_string()),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        chart.draw_series(rows.iter().enumerate().map(|(i, (_, r))| {
            let i = i as u32;
            let color = Palette99::pick(i as usize).filled();
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), value(r)),
                ],
                color,
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Case, PairedRatio, rounds_table};

    #[test]
    fn the_rounds_table_lists_every_round_and_marks_failures() {
        let case = Case {
            name: "c".into(),
            title: "C".into(),
            rows: Vec::new(),
            rounds: vec![
                ("a".into(), vec![Some(10.4), Some(12.0)]),
                ("b".into(), vec![Some(9.0), None]),
            ],
            method: None,
        };
        let md = rounds_table(&case);
        assert!(md.contains("| round | a | b |"), "{md}");
        assert!(md.contains("| 1 | 10 | 9 |"), "{md}");
        assert!(md.contains("| 2 | 12 | failed |"), "{md}");
        let once = Case {
            rounds: vec![("a".into(), vec![Some(1.0)])],
            ..case
        };
        assert_eq!(rounds_table(&once), "");
    }

    #[test]
    fn the_median_interval_narrows_with_more_rounds() {
        // 1..=100 in a scrambled order: median 50.5, and the order statistics at ranks
        // 50 ± 9.8 bound it.
        let ratios: Vec<f64> = (0..100).map(|i| f64::from((i * 37) % 100 + 1)).collect();
        let r = PairedRatio::of(ratios).expect("ratios");
        assert_eq!(r.rounds, 100);
        assert!((r.median - 50.5).abs() < 1e-9);
        assert_eq!((r.low, r.high), (41.0, 60.0));
        // Four times the rounds halves the interval's width (in ranks, relative to n).
        let many: Vec<f64> = (0..400).map(|i| f64::from(i % 100 + 1)).collect();
        let m = PairedRatio::of(many).expect("ratios");
        assert!(m.high - m.low < r.high - r.low);
    }

    #[test]
    fn few_rounds_give_the_range_and_bad_values_are_dropped() {
        let r = PairedRatio::of(vec![0.9, f64::NAN, 1.1, f64::INFINITY, 1.0]).expect("ratios");
        assert_eq!(r.rounds, 3);
        assert_eq!((r.low, r.median, r.high), (0.9, 1.0, 1.1));
        assert_eq!(PairedRatio::of(vec![f64::NAN]), None);
        assert_eq!(PairedRatio::of(Vec::new()), None);
    }
}
