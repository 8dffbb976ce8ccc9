//! Results: one [`Row`] per measurement, the machine they ran on, the
//! table printed at the end, the JSON file and the SVG chart.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// What a row measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The core alone, in memory ([`crate::mem`]).
    Core,
    /// Replicated writes to a runtime's 3-replica cluster on loopback.
    Vr,
    /// The floor: TCP ping-pong with the same runtime.
    Floor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Core => "core",
            Kind::Vr => "vr",
            Kind::Floor => "floor",
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `mio`, `tokio`, `glommio`, or `core` for the in-memory core.
    pub runtime: String,
    /// What was measured.
    pub kind: Kind,
    /// Bytes per operation (the ping-pong sends the Request frame's size).
    pub op_size: usize,
    /// Concurrent clients, each with one request outstanding.
    pub clients: usize,
    /// `Config::batch_ops_max` of the cluster (1: no Prepare batching);
    /// `None` for a floor.
    pub batch_ops_max: Option<u32>,
    /// Core and VR rows: the entries per Prepare the primary sent during
    /// the row, on average (how much batching actually happened).
    pub prepare_batch_mean: Option<f64>,
    /// Percentage of requests that were read-only (core rows; 0 elsewhere).
    pub read_percent: u8,
    /// Whether the primary answered read-only requests under a lease.
    pub leases: bool,
    /// Operations counted.
    pub ops: u64,
    /// The time they were counted over.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: f64,
    /// Largest latency, microseconds.
    pub max_us: f64,
    /// Failed operations (none expected).
    pub errors: u64,
    /// VR rows: the floor's median round trip at the same clients and size.
    pub floor_p50_us: Option<f64>,
    /// VR rows: `p50_us / (2 × floor_p50_us)`. A replicated write takes two
    /// round trips in sequence, so 1.0 would be a write as fast as the
    /// network allows; the target for one client is at most 1.5.
    pub latency_vs_floor: Option<f64>,
    /// VR rows: `ops_per_sec` as a fraction of the floor's round trips per
    /// second at the same clients and size.
    pub throughput_vs_floor: Option<f64>,
    /// VR rows: the replicas' views after the run (0 unless a view change
    /// happened, which would make the row suspect).
    pub views: Vec<u64>,
}

impl Row {
    /// A row with latency percentiles from `latency_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: &str,
        kind: Kind,
        op_size: usize,
        clients: usize,
        batch_ops_max: Option<u32>,
        ops: u64,
        seconds: f64,
        latency_ns: &Histogram<u64>,
        errors: u64,
    ) -> Row {
        let us = |q: f64| latency_ns.value_at_quantile(q) as f64 / 1000.0;
        Row {
            runtime: runtime.to_owned(),
            kind,
            op_size,
            clients,
            batch_ops_max,
            prepare_batch_mean: None,
            read_percent: 0,
            leases: false,
            ops,
            seconds,
            ops_per_sec: ops as f64 / seconds.max(1e-9),
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: latency_ns.max() as f64 / 1000.0,
            errors,
            floor_p50_us: None,
            latency_vs_floor: None,
            throughput_vs_floor: None,
            views: Vec::new(),
        }
    }
}

/// Fills in every VR row's comparison with the floor row of the same
/// runtime, operation size and clients.
pub fn attach_floors(rows: &mut [Row]) {
    let floors: Vec<Row> = rows
        .iter()
        .filter(|r| r.kind == Kind::Floor)
        .cloned()
        .collect();
    for row in rows.iter_mut().filter(|r| r.kind == Kind::Vr) {
        let floor = floors.iter().find(|f| {
            f.runtime == row.runtime && f.op_size == row.op_size && f.clients == row.clients
        });
        if let Some(floor) = floor {
            row.floor_p50_us = Some(floor.p50_us);
            row.latency_vs_floor = Some(row.p50_us / (2.0 * floor.p50_us));
            row.throughput_vs_floor = Some(row.ops_per_sec / floor.ops_per_sec);
        }
    }
}

/// Where and when the numbers were taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available (`nproc`).
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `/proc/loadavg` before the first measurement.
    pub load_before: String,
    /// `/proc/loadavg` after the last.
    pub load_after: String,
    /// Seconds since the Unix epoch at the start.
    pub started_unix_s: u64,
}

impl Machine {
    /// What can be read of this machine now (`load_after` is left empty).
    pub fn probe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_before: load_average(),
            load_after: String::new(),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The first three fields of `/proc/loadavg`: 1, 5 and 15-minute load.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything one run of the runner produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// `closed` or `open at N ops/s`.
    pub load: String,
    /// Seconds of warm-up and of measurement per row.
    pub warmup_s: f64,
    /// Seconds of measurement per row.
    pub measure_s: f64,
    /// Caveats that apply to every row.
    pub notes: Vec<String>,
    /// The measurements, in the order taken.
    pub rows: Vec<Row>,
}

/// The caveats printed under the table and saved with the JSON.
pub fn standard_notes() -> Vec<String> {
    vec![
        "batch: Config::batch_ops_max, the most requests per Prepare (1: no batching); per prep: entries per Prepare the primary actually sent, on average".into(),
        "core: 3 replicas and the clients in one thread, no encoding, closed loop; each replica is handed everything sent to it since its last turn (one turn of a replica loop); latency sampled on 1 request in 16 (wall clock)".into(),
        "reads: share of read-only requests (core); lease: answered by the primary under a lease, else through the log".into(),
        "vs floor: p50 / (2 x ping-pong p50) of the same runtime, size and clients; ops/s / ping-pong round trips per second".into(),
        "closed loop: each client sends its next request when the previous one is answered; percentiles are per answered request and understate what open-loop arrivals would see (coordinated omission; see --rate)".into(),
    ]
}

fn op_name(op_size: usize) -> String {
    if op_size >= 1024 && op_size.is_multiple_of(1024) {
        format!("{}KiB", op_size / 1024)
    } else {
        format!("{op_size}B")
    }
}

fn ratio(value: Option<f64>, percent: bool) -> String {
    match value {
        Some(v) if percent => format!("{:.0}%", v * 100.0),
        Some(v) => format!("{v:.2}x"),
        None => "-".into(),
    }
}

/// The table, as printed.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<5} {:>5} {:>7} {:>5} {:>8} {:>5} {:>5} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "runtime",
        "kind",
        "op",
        "clients",
        "batch",
        "per prep",
        "reads",
        "lease",
        "ops/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "p50/2rtt",
        "ops/floor"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<5} {:>5} {:>7} {:>5} {:>8} {:>5} {:>5} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9}",
            r.runtime,
            r.kind.name(),
            op_name(r.op_size),
            r.clients,
            r.batch_ops_max.map_or("-".into(), |b| b.to_string()),
            r.prepare_batch_mean.map_or("-".into(), |m| format!("{m:.1}")),
            if r.kind == Kind::Core { format!("{}%", r.read_percent) } else { "-".into() },
            if r.leases { "on" } else { "-" },
            r.ops_per_sec,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            ratio(r.latency_vs_floor, false),
            ratio(r.throughput_vs_floor, true),
        );
    }
    out
}

/// Writes `report` as pretty JSON to `path`.
pub fn write_json(report: &Report, path: &Path) -> io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
    std::fs::write(path, json + "\n")
}

fn color(runtime: &str) -> RGBColor {
    match runtime {
        "mio" => RGBColor(0xd6, 0x27, 0x28),
        "tokio" => RGBColor(0x1f, 0x77, 0xb4),
        "glommio" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

/// Draws, for each operation size, throughput and median latency against
/// clients for every runtime (solid) and its ping-pong floor (dashed), on
/// log scales, as an SVG file at `path`.
pub fn write_chart(rows: &[Row], path: &Path) -> io::Result<()> {
    let mut op_sizes: Vec<usize> = rows
        .iter()
        .filter(|r| r.kind != Kind::Core)
        .map(|r| r.op_size)
        .collect();
    op_sizes.sort_unstable();
    op_sizes.dedup();
    if op_sizes.is_empty() {
        op_sizes.push(16);
    }
    let height = 380 * op_sizes.len() as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(io::Error::other)?;
    let panels = root.split_evenly((op_sizes.len(), 2));
    for (i, &op_size) in op_sizes.iter().enumerate() {
        let these: Vec<&Row> = rows
            .iter()
            .filter(|r| r.kind != Kind::Core && r.op_size == op_size)
            .collect();
        draw_panel(&panels[2 * i], &these, op_size, Metric::Throughput)
            .map_err(io::Error::other)?;
        draw_panel(&panels[2 * i + 1], &these, op_size, Metric::Latency)
            .map_err(io::Error::other)?;
    }
    root.present().map_err(io::Error::other)
}

#[derive(Clone, Copy)]
enum Metric {
    Throughput,
    Latency,
}

type DrawResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[&Row],
    op_size: usize,
    metric: Metric,
) -> DrawResult {
    let value = |r: &Row| match metric {
        Metric::Throughput => r.ops_per_sec.max(1.0),
        Metric::Latency => r.p50_us.max(0.1),
    };
    let clients_max = rows.iter().map(|r| r.clients).max().unwrap_or(1).max(2) as f64;
    let (lo, hi) = rows
        .iter()
        .map(|r| value(r))
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if rows.is_empty() {
        (1.0, 10.0)
    } else {
        (lo / 2.0, hi * 2.0)
    };
    let title = match metric {
        Metric::Throughput => format!("{} ops: ops/s (higher is better)", op_name(op_size)),
        Metric::Latency => format!(
            "{} ops: p50 latency, us (lower is better)",
            op_name(op_size)
        ),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..clients_max * 1.2).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 1000.0 {
                format!("{:.0}k", y / 1000.0)
            } else {
                format!("{y:.1}")
            }
        })
        .draw()?;
    let mut runtimes: Vec<&str> = rows.iter().map(|r| r.runtime.as_str()).collect();
    runtimes.dedup();
    runtimes.sort_unstable();
    runtimes.dedup();
    for runtime in runtimes {
        let color = color(runtime);
        // One line per batch_ops_max (`None`: the floor), so that batching's
        // effect shows as the gap between two lines of one colour.
        let mut series: Vec<(Kind, Option<u32>)> = rows
            .iter()
            .filter(|r| r.runtime == runtime)
            .map(|r| (r.kind, r.batch_ops_max))
            .collect();
        series.sort_by_key(|&(kind, batch)| (kind == Kind::Floor, batch));
        series.dedup();
        for (kind, batch) in series {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.runtime == runtime && r.kind == kind && r.batch_ops_max == batch)
                .map(|r| (r.clients as f64, value(r)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if points.is_empty() {
                continue;
            }
            let label = match (kind, batch) {
                (Kind::Floor, _) => format!("{runtime} ping-pong floor"),
                (_, Some(1)) => format!("{runtime} replicated write, no batching"),
                (_, Some(b)) => format!("{runtime} replicated write, batches <= {b}"),
                (_, None) => format!("{runtime} replicated write"),
            };
            // Without batching: a thin line; batched: a thick one.
            let style = color.stroke_width(if batch == Some(1) { 1 } else { 2 });
            match kind {
                Kind::Floor => {
                    chart
                        .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
                        .label(label)
                        .legend(move |(x, y)| {
                            DashedPathElement::new(vec![(x, y), (x + 20, y)], 5, 3, style)
                        });
                }
                _ => {
                    chart
                        .draw_series(LineSeries::new(points.clone(), style))?
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
            }
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(match metric {
            Metric::Throughput => SeriesLabelPosition::LowerRight,
            Metric::Latency => SeriesLabelPosition::UpperLeft,
        })
        .draw()?;
    Ok(())
}
