//! `piazza export` and `piazza import ndjson`: a whole store, every tenant
//! and its history, to NDJSON and back, to move between the embedded store
//! and PostgreSQL (`piazza-dump` has the format).

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use piazza_dump::{Counts, ExportOptions, ImportOptions};
use piazza_store::Store;

/// Which store: the embedded one in a data dir, or PostgreSQL.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Folder of the embedded store; unused with `--database`. No server may be running on it.
    #[arg(long, env = "PIAZZA_DATA_DIR", default_value = "./piazza-data")]
    data_dir: PathBuf,
    /// PostgreSQL instead of the embedded store: `postgres://user@host:port/database`.
    #[arg(long, env = "PIAZZA_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where the dump goes: a file (written whole or not at all), or `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: String,
    /// Records read from the store at a time.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    page_size: u64,
}

#[derive(clap::Args)]
pub struct NdjsonArgs {
    /// The dump written by `piazza export`, or `-` for standard input.
    file: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Import into a store that holds data: each tenant of the dump is cleared first, other tenants are kept.
    #[arg(long)]
    force: bool,
    /// Records written per storage transaction (larger is faster: fewer commits).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
}

/// The store chosen, and how to name it to the operator.
struct Opened {
    store: Arc<dyn Store>,
    backend: &'static str,
    described: String,
}

async fn open(args: &StoreArgs, must_exist: bool) -> anyhow::Result<Opened> {
    if let Some(url) = &args.database {
        // Few connections: a dump is read and written one page at a time.
        let config = piazza_store_postgres::PostgresConfig {
            pool_size: 2,
            ..Default::default()
        };
        let store = crate::open_store(Some(url), config, &args.data_dir).await?;
        return Ok(Opened {
            store,
            backend: "postgres",
            described: "the PostgreSQL database".into(),
        });
    }
    let dir = &args.data_dir;
    // Opening creates a data dir: an export of a mistyped path would
    // otherwise be a valid, empty dump.
    if must_exist && !dir.join("piazza.sqlite").is_file() {
        bail!("{} is not a piazza data dir (it has no piazza.sqlite)", dir.display());
    }
    if crate::import::in_use(dir) {
        bail!(
            "{} is in use by a running piazza server: stop it, then run this again",
            dir.display()
        );
    }
    let store = crate::open_store(None, piazza_store_postgres::PostgresConfig::default(), dir).await?;
    Ok(Opened {
        store,
        backend: "embedded",
        described: format!("the embedded store in {}", dir.display()),
    })
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let opened = open(&args.store, true).await?;
    let options = ExportOptions {
        piazza: env!("CARGO_PKG_VERSION").to_owned(),
        backend: opened.backend.to_owned(),
        page_size: usize::try_from(args.page_size).unwrap_or(1000),
    };
    let started = Instant::now();
    let progress = Bar::new();
    let counts = if args.output == "-" {
        let stdout = std::io::stdout().lock();
        piazza_dump::export(
            &*opened.store,
            BufWriter::with_capacity(1 << 20, stdout),
            &options,
            &progress,
        )
        .await?
    } else {
        // Written aside and renamed at the end: a file at the given path is a complete dump.
        let path = PathBuf::from(&args.output);
        let partial = aside(&path);
        let file = File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        let written = piazza_dump::export(
            &*opened.store,
            BufWriter::with_capacity(1 << 20, file),
            &options,
            &progress,
        )
        .await;
        let counts = match written {
            Ok(counts) => counts,
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                return Err(error.into());
            }
        };
        std::fs::rename(&partial, &path).with_context(|| format!("cannot rename to {}", path.display()))?;
        counts
    };
    // Standard output may be the dump: the summary goes to standard error.
    eprintln!(
        "exported {} from {}{}\n{counts}",
        rate(&counts, started),
        opened.described,
        if args.output == "-" {
            String::new()
        } else {
            format!(" to {}", args.output)
        }
    );
    Ok(())
}

pub async fn import(args: NdjsonArgs) -> anyhow::Result<()> {
    let opened = open(&args.store, false).await?;
    if !args.force {
        piazza_dump::check_target(&*opened.store).await?;
    }
    let started = Instant::now();
    let progress = Bar::new();
    let options = |expected_records| ImportOptions {
        force: args.force,
        batch_size: usize::try_from(args.batch_size).unwrap_or(5000),
        expected_records,
    };
    let mut checked = None;
    let counts = if args.file == "-" {
        // A pipe cannot be read twice: checked as it is written.
        let stdin = BufReader::with_capacity(1 << 20, std::io::stdin().lock());
        piazza_dump::import(&*opened.store, stdin, &options(None), &progress).await?
    } else {
        // A file is checked whole first, so a bad one writes nothing.
        let path = Path::new(&args.file);
        let read = || -> anyhow::Result<BufReader<File>> {
            let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            Ok(BufReader::with_capacity(1 << 20, file))
        };
        progress.begin_phase("checking", None);
        let scanned = piazza_dump::scan(read()?).with_context(|| format!("{} was not imported", path.display()))?;
        progress.end_phase();
        checked = Some(started.elapsed());
        piazza_dump::import(
            &*opened.store,
            read()?,
            &options(Some(scanned.counts.total())),
            &progress,
        )
        .await?
    };
    let scan = checked
        .map(|c| format!(", the file checked in {:.1} s first", c.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "imported {} into {} (counts checked against the trailer and the store{scan})\n{counts}",
        rate(&counts, started),
        opened.described
    );
    Ok(())
}

/// `dump.ndjson` → `dump.ndjson.partial`.
fn aside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn rate(counts: &Counts, started: Instant) -> String {
    let seconds = started.elapsed().as_secs_f64();
    let total = counts.total();
    format!(
        "{total} records in {seconds:.1} s ({:.0}/s)",
        total as f64 / seconds.max(1e-6)
    )
}

/// The progress bar, on standard error when it is a terminal: one bar per
/// phase (checking a file, exporting, importing).
struct Bar {
    current: std::sync::Mutex<ProgressBar>,
}

impl Bar {
    fn new() -> Self {
        Self {
            current: std::sync::Mutex::new(ProgressBar::hidden()),
        }
    }

    fn begin_phase(&self, label: &str, total: Option<u64>) {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = if total.is_some() {
            "{msg:>10} [{bar:40.cyan/blue}] {human_pos}/{human_len} {rate} ETA {eta}"
        } else {
            "{msg:>10} {spinner} {human_pos} {elapsed}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            // Whole records per second: indicatif's own {per_sec} shows decimals.
            let style = style.with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            });
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        if total.is_none() {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        if let Ok(mut current) = self.current.lock() {
            current.finish_and_clear();
            *current = bar;
        }
    }

    fn end_phase(&self) {
        if let Ok(current) = self.current.lock() {
            current.finish_and_clear();
        }
    }
}

impl piazza_dump::Progress for Bar {
    fn begin(&self, label: &str, total: Option<u64>) {
        self.begin_phase(label, total);
    }

    fn advance(&self, records: u64) {
        if let Ok(current) = self.current.lock() {
            current.inc(records);
        }
    }

    fn end(&self) {
        self.end_phase();
    }
}
