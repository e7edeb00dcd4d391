//! The ingestion figure: `piazza import gtfs` on a real feed, timed from
//! the importer's own per-file log line (`file="stop_times.txt" rows=…
//! secs=…`) and its summary line.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::report::{rate, thousands};

pub struct GtfsFigures {
    pub stop_times: u64,
    pub stop_times_secs: f64,
    pub entities: u64,
    pub total_secs: f64,
}

impl GtfsFigures {
    pub fn entities_per_sec(&self) -> f64 {
        self.entities as f64 / self.total_secs.max(1e-9)
    }

    pub fn note(&self) -> String {
        format!(
            "stop_times: {} rows in {:.1} s = {} rows/s; whole feed: {} entities in {:.1} s = {} entities/s",
            thousands(self.stop_times),
            self.stop_times_secs,
            rate(self.stop_times as f64 / self.stop_times_secs.max(1e-9)),
            thousands(self.entities),
            self.total_secs,
            rate(self.entities_per_sec())
        )
    }
}

/// Runs the import into `data_dir` (fresh) and reads the figures.
pub fn gtfs(bin: &Path, feed: &Path, data_dir: &Path) -> anyhow::Result<GtfsFigures> {
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).with_context(|| format!("cannot clear {}", data_dir.display()))?;
    }
    let started = Instant::now();
    let output = Command::new(bin)
        .args(["import", "gtfs"])
        .arg(feed)
        .arg("--data-dir")
        .arg(data_dir)
        .env("PIAZZA_LOG", "info")
        .output()
        .context("cannot run piazza import")?;
    let total_secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("piazza import gtfs failed: {stderr}");
    }
    let line = stderr
        .lines()
        .find(|l| l.contains("file=\"stop_times.txt\""))
        .context("the importer logged no stop_times line")?;
    let stop_times = field(line, "rows=").context("rows= in the stop_times line")?;
    let stop_times_secs = field(line, "secs=").context("secs= in the stop_times line")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let entities = stdout
        .rsplit('(')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("the summary line has no record count")?;
    Ok(GtfsFigures {
        stop_times: stop_times as u64,
        stop_times_secs,
        entities,
        total_secs,
    })
}

/// The number after `key` in a `key=value` log line.
fn field(line: &str, key: &str) -> Option<f64> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_are_read_from_the_log_line() {
        let line = r#"2026-01-01T00:00:00Z  INFO piazza_import::gtfs: imported file="stop_times.txt" rows=107752 secs=21.5 per_sec=5011.7"#;
        assert_eq!(super::field(line, "rows="), Some(107752.0));
        assert_eq!(super::field(line, "secs="), Some(21.5));
    }
}
