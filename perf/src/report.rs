//! Reporting for benchmarks: an aligned text table, a markdown table, JSON result files and a
//! small hand-written SVG plot, each stamped with the machine and command that produced it.
//!
//! Every file a benchmark writes to `results/` goes through here so that every figure carries
//! the CPU model, core count, kernel, date and command line it was measured with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A result file that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating the results directory or writing a file failed.
    #[error("cannot write {path}: {source} (is the results directory writable?)")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The value could not be turned into JSON.
    #[error("cannot encode results as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The machine and command a result was measured with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// UTC date and time of the run, ISO 8601.
    pub date: String,
    /// The command line of the run.
    pub command: String,
    /// Load averages (1, 5, 15 minutes, from `/proc/loadavg`) when the run started: other
    /// work on the machine makes wall-clock figures noisy.
    pub load: String,
}

impl Machine {
    /// Detects the machine this process runs on and the command it was started with.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        // Count the machine's CPUs, not the ones this (possibly pinned) thread may use.
        let cores = std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
            .ok()
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().map(|n| n.get()).ok())
            .unwrap_or(1);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let load = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            cpu,
            cores,
            kernel,
            date: utc_date(secs),
            command,
            load,
        }
    }

    /// One line describing the machine, for the head of a table.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} cores), Linux {}, {}, load average {}",
            self.cpu, self.cores, self.kernel, self.date, self.load
        )
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after the well-known era-based algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// A table of results: column headers and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are left blank, extra cells are kept.
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    /// Rows so far.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    fn widths(&self) -> Vec<usize> {
        let n = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .chain([&self.headers])
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The table as aligned plain text: text columns left-aligned, numbers right-aligned.
    pub fn to_text(&self) -> String {
        let w = self.widths();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    out.push_str("  ");
                }
                if is_number(c) {
                    let _ = write!(out, "{c:>width$}");
                } else {
                    let _ = write!(out, "{c:<width$}");
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&mut out, &self.headers);
        let rule: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
        line(&mut out, &rule);
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }

    /// The table as a GitHub-flavoured markdown table.
    pub fn to_markdown(&self) -> String {
        let w = self.widths();
        let mut out = String::new();
        let cell = |cells: &[String], i: usize| cells.get(i).cloned().unwrap_or_default();
        out.push('|');
        for i in 0..w.len() {
            let _ = write!(out, " {} |", cell(&self.headers, i));
        }
        out.push_str("\n|");
        for i in 0..w.len() {
            let numeric = !self.rows.is_empty() && self.rows.iter().all(|r| is_number(&cell(r, i)));
            out.push_str(if numeric { "---:|" } else { "---|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push('|');
            for i in 0..w.len() {
                let _ = write!(out, " {} |", cell(r, i));
            }
            out.push('\n');
        }
        out
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

/// One named line (or set of bars) in a plot.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line plot: series of `(x, y)` points over shared axes.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Title above the plot.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// Whether the x axis is logarithmic (base 2): for batch sizes and frame sizes.
    pub log2_x: bool,
    /// The series to draw.
    pub series: Vec<Series>,
    /// Small print under the plot (machine, command).
    pub footnote: String,
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

impl Plot {
    /// Renders the plot as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (w, h) = (760.0, 460.0);
        let (left, right, top, bottom) = (70.0, 190.0, 40.0, 70.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let tx = |x: f64| if self.log2_x { x.max(1e-9).log2() } else { x };
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(tx(x));
            x1 = x1.max(tx(x));
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let ystep = nice_step(y1, 6.0);
        let ymax = if y1 > 0.0 {
            (y1 / ystep).ceil() * ystep
        } else {
            1.0
        };
        let sx = |x: f64| left + (tx(x) - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + ph - y / ymax * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            left + pw / 2.0,
            esc(&self.title)
        );
        // Y grid and labels.
        let mut y = 0.0;
        while y <= ymax + ystep * 0.01 {
            let py = sy(y);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                py + 4.0,
                trim_num(y)
            );
            y += ystep;
        }
        // X ticks: the distinct x values of the data (they are the measured points).
        let mut xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let mut last_px = f64::NEG_INFINITY;
        for x in xs {
            let px = sx(x);
            if px - last_px < 28.0 {
                continue;
            }
            last_px = px;
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + ph,
                top + ph + 16.0,
                trim_num(x)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            top + ph + 36.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            top + ph / 2.0,
            top + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, ser) in self.series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let path: Vec<String> = ser
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in &ser.points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
            let ly = top + 10.0 + i as f64 * 18.0;
            let lx = left + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                esc(&ser.name)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="8" y="{:.1}" font-size="9" fill="#555">{}</text>"##,
            h - 8.0,
            esc(&self.footnote)
        );
        s.push_str("</svg>\n");
        s
    }
}

fn trim_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The workspace's `results/` directory (or `$FERRITE_RESULTS` when set).
pub fn results_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRITE_RESULTS") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("results")
}

/// Writes `contents` to `path`, creating its directory.
pub fn write_file(path: &Path, contents: &str) -> Result<(), ReportError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes each `(name, contents)` pair into `dir` and says so on stdout.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<(), ReportError> {
    for (name, contents) in files {
        let path = dir.join(name);
        write_file(&path, contents)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// A result file: the benchmark's name, the machine, and its results.
#[derive(Debug, Serialize)]
struct ResultFile<'a, T: Serialize> {
    benchmark: &'a str,
    machine: &'a Machine,
    results: &'a T,
}

/// Writes `results` as pretty JSON with the benchmark name and machine attached.
pub fn write_json<T: Serialize>(
    path: &Path,
    benchmark: &str,
    machine: &Machine,
    results: &T,
) -> Result<(), ReportError> {
    let v = ResultFile {
        benchmark,
        machine,
        results,
    };
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    write_file(path, &s)
}

/// Writes a markdown page: a title, the machine and command, free text, then the table.
pub fn write_markdown(
    path: &Path,
    title: &str,
    machine: &Machine,
    preface: &str,
    table: &Table,
) -> Result<(), ReportError> {
    let mut s = format!(
        "# {title}\n\nMachine: {}, {} cores, Linux {}; measured {}.\n\nCommand: `{}`\n\n",
        machine.cpu, machine.cores, machine.kernel, machine.date, machine.command
    );
    if !preface.is_empty() {
        s.push_str(preface.trim_end());
        s.push_str("\n\n");
    }
    s.push_str(&table.to_markdown());
    write_file(path, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn text_table_aligns_columns() {
        let mut t = Table::new(["case", "Mpps"]);
        t.push(["64 B", "61.2"]);
        t.push(["1514 B batch 256", "9.75"]);
        let text = t.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        // Numbers are right-aligned: both end in the same column.
        assert_eq!(lines[2].len(), lines[3].len());
        assert!(lines[2].starts_with("64 B "));
        let md = t.to_markdown();
        assert!(md.contains("|---|---:|"), "{md}");
        assert!(md.contains("| 1514 B batch 256 | 9.75 |"), "{md}");
    }

    #[test]
    fn svg_has_every_series_and_escapes_text() {
        let p = Plot {
            title: "a < b".into(),
            x_label: "batch".into(),
            y_label: "Mpps".into(),
            log2_x: true,
            series: vec![
                Series {
                    name: "zero-copy".into(),
                    points: vec![(1.0, 10.0), (32.0, 60.0), (256.0, 70.0)],
                },
                Series {
                    name: "copy".into(),
                    points: vec![(1.0, 5.0), (32.0, 30.0)],
                },
            ],
            footnote: "m".into(),
        };
        let svg = p.to_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn json_file_carries_machine() {
        let dir = std::env::temp_dir().join(format!("ferrite-report-{}", std::process::id()));
        let path = dir.join("x.json");
        let m = Machine::detect();
        write_json(&path, "demo", &m, &vec![1, 2, 3]).expect("write json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read back"))
                .expect("valid json");
        assert_eq!(v["benchmark"], "demo");
        assert_eq!(v["machine"]["cores"], m.cores);
        assert_eq!(v["results"][2], 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
