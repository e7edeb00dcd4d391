//! The printed table, the targets of the issue, and the machine description.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use crate::load::Summary;

/// One line of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub summary: Option<Summary>,
    pub note: String,
    pub is_ceiling: bool,
    pub entities_per_sec: Option<f64>,
    pub peak_rss: Option<u64>,
    pub restart: Option<Duration>,
    /// The broker process's CPU during the measured load.
    pub broker_cpu: Option<BrokerCpu>,
}

/// What the broker process used of the machine while a scenario ran: the
/// figure that does not move with the machine's other tenants as req/s does,
/// so it is the one to compare between two builds.
#[derive(Debug, Clone, Copy)]
pub struct BrokerCpu {
    /// CPU time (user + system, all threads) over the scenario's requests.
    pub per_request: Duration,
    /// CPU time over wall time: 2.0 is both cores of a 2-core machine.
    pub cores: f64,
}

impl BrokerCpu {
    /// `None` when nothing was answered or no time passed.
    pub fn of(cpu: Duration, requests: u64, elapsed: Duration) -> Option<Self> {
        if requests == 0 || elapsed.is_zero() {
            return None;
        }
        Some(BrokerCpu {
            per_request: cpu / u32::try_from(requests).unwrap_or(u32::MAX),
            cores: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        })
    }
}

impl Row {
    pub fn measured(name: &str, summary: Summary) -> Self {
        Row {
            name: name.into(),
            summary: Some(summary),
            ..Row::default()
        }
    }

    pub fn unmeasured(name: &str) -> Self {
        Row {
            name: name.into(),
            ..Row::default()
        }
    }

    pub fn unavailable(name: &str, why: &str) -> Self {
        Row {
            name: name.into(),
            note: format!("not available: {why}"),
            ..Row::default()
        }
    }
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

/// Microseconds up to 10 ms, milliseconds above.
fn cpu(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{} µs", thousands(us.round() as u64))
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// Thousands separators make req/s readable at a glance.
pub fn thousands(x: u64) -> String {
    let digits = x.to_string();
    let mut out = String::new();
    // A comma goes before every digit whose distance from the end is a
    // multiple of three (written without `is_multiple_of`, newer than the MSRV).
    let phase = digits.len() % 3;
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == phase {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Requests per second; a decimal below 100, where rounding would hide it.
pub fn rate(x: f64) -> String {
    if x < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x.round() as u64)
    }
}

/// The results as a Markdown table (readable in a terminal too). `of ceiling`
/// is req/s divided by the ceiling's req/s, when the ceiling was measured;
/// `broker CPU/req` and `broker cores` are the broker process's CPU time
/// during the scenario per request and per second of wall time (with
/// `--database`, PostgreSQL's own CPU is not in them).
pub fn table(rows: &[Row]) -> String {
    let ceiling = rows
        .iter()
        .find(|r| r.is_ceiling)
        .and_then(|r| r.summary.as_ref())
        .map(|s| s.per_sec);
    let mut lines = vec![
        "| scenario | requests | req/s | p50 ms | p95 ms | p99 ms | errors | of ceiling | broker CPU/req | broker cores | notes |"
            .to_owned(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|".to_owned(),
    ];
    for r in rows {
        let line = match &r.summary {
            Some(s) => {
                let fraction = match ceiling {
                    Some(c) if c > 0.0 => format!("{:.1} %", 100.0 * s.per_sec / c),
                    _ => "–".into(),
                };
                let (per_request, cores) = match r.broker_cpu {
                    Some(c) => (cpu(c.per_request), format!("{:.2}", c.cores)),
                    None => ("–".into(), "–".into()),
                };
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    thousands(s.requests),
                    rate(s.per_sec),
                    ms(s.p50_ms),
                    ms(s.p95_ms),
                    ms(s.p99_ms),
                    s.errors,
                    fraction,
                    per_request,
                    cores,
                    r.note
                )
            }
            None => format!("| {} | – | – | – | – | – | – | – | – | – | {} |", r.name, r.note),
        };
        lines.push(line);
    }
    lines.join("\n")
}

/// "met", or how far off the figure is, relative to the target.
pub fn verdict(value: f64, target: f64, higher_is_better: bool) -> String {
    let met = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    if met {
        "met".into()
    } else if higher_is_better {
        format!("missed by {:.0} %", 100.0 * (target - value) / target)
    } else {
        format!("missed by {:.0} % (over)", 100.0 * (value - target) / target)
    }
}

/// The targets next to the figures.
pub fn targets(rows: &[Row], entities: u64) -> String {
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let per_sec = |name: &str| find(name).and_then(|r| r.summary.as_ref()).map(|s| s.per_sec);
    let mut out = String::from("| target | measured | verdict |\n|---|---:|---|\n");
    let mut line = |target: &str, measured: Option<(String, String)>| {
        let (m, v) = measured.unwrap_or_else(|| ("not run".into(), "–".into()));
        let _ = writeln!(out, "| {target} | {m} | {v} |");
    };
    for (name, target) in [
        ("create", 20_000.0),
        ("partial-update", 25_000.0),
        ("update-attrs", 15_000.0),
    ] {
        line(
            &format!("{name} ≥ {} req/s", thousands(target as u64)),
            per_sec(name).map(|v| (format!("{} req/s", rate(v)), verdict(v, target, true))),
        );
    }
    line(
        "batch upsert ≥ 150,000 entities/s",
        find("batch-upsert").and_then(|r| r.entities_per_sec).map(|v| {
            (
                format!("{} entities/s", thousands(v.round() as u64)),
                verdict(v, 150_000.0, true),
            )
        }),
    );
    let at = if entities == 100_000 {
        String::new()
    } else {
        format!(" (measured at {})", thousands(entities))
    };
    let q = find("query-q").and_then(|r| r.summary.clone());
    line(
        &format!("query type+q on 100k ≥ 3,000 req/s{at}"),
        q.as_ref()
            .map(|s| (format!("{} req/s", rate(s.per_sec)), verdict(s.per_sec, 3000.0, true))),
    );
    line(
        &format!("query type+q on 100k p95 ≤ 20 ms{at}"),
        q.as_ref()
            .map(|s| (format!("{} ms", ms(s.p95_ms)), verdict(s.p95_ms, 20.0, false))),
    );
    let aggregated = find("temporal-aggregated").and_then(|r| r.summary.clone());
    line(
        "temporal aggregated, 1 entity × 100k instances ≥ 300 req/s",
        aggregated
            .as_ref()
            .map(|s| (format!("{} req/s", rate(s.per_sec)), verdict(s.per_sec, 300.0, true))),
    );
    line(
        "temporal aggregated p95 ≤ 50 ms",
        aggregated
            .as_ref()
            .map(|s| (format!("{} ms", ms(s.p95_ms)), verdict(s.p95_ms, 50.0, false))),
    );
    line(
        "notification latency p99 ≤ 10 ms",
        find("notification-latency")
            .and_then(|r| r.summary.as_ref())
            .map(|s| (format!("{} ms", ms(s.p99_ms)), verdict(s.p99_ms, 10.0, false))),
    );
    let at_1m = if entities >= 1_000_000 {
        String::new()
    } else {
        format!(" (measured at {})", thousands(entities))
    };
    // Below 1M a "met" would claim more than was measured.
    let small = entities < 1_000_000;
    let scaled = |v: String| {
        if small {
            format!("{v} at this size; 1M not measured")
        } else {
            v
        }
    };
    line(
        &format!("1M entities: peak RSS ≤ 1.5 GB{at_1m}"),
        find("footprint").and_then(|r| r.peak_rss).map(|b| {
            let gb = b as f64 / 1e9;
            (format!("{gb:.2} GB"), scaled(verdict(gb, 1.5, false)))
        }),
    );
    line(
        &format!("1M entities: restart ready ≤ 2 s{at_1m}"),
        find("cold-start").and_then(|r| r.restart).map(|d| {
            let s = d.as_secs_f64();
            (format!("{s:.2} s"), scaled(verdict(s, 2.0, false)))
        }),
    );
    out
}

/// CPU count and model, memory, load: what BENCHMARKS.md must state.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1048576.0)
        .unwrap_or(0.0);
    format!(
        "machine: {cpus} CPUs, {model}, {mem_gib:.1} GiB RAM; load average {}",
        loadavg()
    )
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(21_000.0, 20_000.0, true), "met");
        assert_eq!(verdict(5_000.0, 20_000.0, true), "missed by 75 %");
        assert_eq!(verdict(15.0, 20.0, false), "met");
        assert_eq!(verdict(30.0, 20.0, false), "missed by 50 % (over)");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn table_shows_the_ceiling_fraction() {
        let s = |per_sec| Summary {
            requests: 10,
            per_sec,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms: 3.0,
            errors: 0,
        };
        let mut ceiling = Row::measured("ceiling", s(1000.0));
        ceiling.is_ceiling = true;
        let mut retrieve = Row::measured("retrieve", s(250.0));
        retrieve.broker_cpu = BrokerCpu::of(Duration::from_millis(30), 10, Duration::from_millis(40));
        let mut batch = Row::measured("batch-upsert", s(2.0));
        batch.broker_cpu = BrokerCpu::of(Duration::from_millis(300), 10, Duration::from_secs(5));
        let rows = vec![retrieve, batch, ceiling, Row::unavailable("temporal", "x")];
        let t = table(&rows);
        assert!(
            t.contains("| retrieve | 10 | 250 | 1.00 | 2.00 | 3.00 | 0 | 25.0 % | 3,000 µs | 0.75 |"),
            "{t}"
        );
        assert!(
            t.contains("| batch-upsert | 10 | 2.0 | 1.00 | 2.00 | 3.00 | 0 | 0.2 % | 30.0 ms | 0.06 |"),
            "{t}"
        );
        assert!(
            t.contains("| ceiling | 10 | 1,000 | 1.00 | 2.00 | 3.00 | 0 | 100.0 % | – | – |"),
            "{t}"
        );
        assert!(t.contains("| temporal | – |"), "{t}");
    }

    #[test]
    fn broker_cpu_needs_requests_and_time() {
        let c = BrokerCpu::of(Duration::from_secs(3), 1000, Duration::from_secs(2)).expect("measured");
        assert_eq!(c.per_request, Duration::from_millis(3));
        assert!((c.cores - 1.5).abs() < 1e-9, "{}", c.cores);
        assert!(BrokerCpu::of(Duration::from_secs(3), 0, Duration::from_secs(2)).is_none());
        assert!(BrokerCpu::of(Duration::from_secs(3), 5, Duration::ZERO).is_none());
    }
}
