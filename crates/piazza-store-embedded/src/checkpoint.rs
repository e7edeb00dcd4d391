//! WAL checkpoints off the writer thread.
//!
//! A checkpoint copies the pages committed to the WAL back into the database
//! file. SQLite's default runs one on the committing connection whenever
//! the WAL reaches 1,000 pages: on our single writer that was about a sixth
//! of its time, and every commit that triggered one waited for it.
//!
//! Here a thread of its own checkpoints (PASSIVE: it never blocks the writer
//! or a reader), at most every [`PAUSE`], on its own connection, after the
//! writer nudges it. A page rewritten by many commits in between (the right
//! edge of every index, under steady writes) is then copied once.
//!
//! The WAL can only start over from its beginning once a checkpoint has
//! caught up with the last commit, which a checkpointer racing a busy
//! writer never quite does. So when the WAL holds [`RESTART_AT`] pages, the
//! writer, between two transactions, asks for a RESTART checkpoint and
//! waits for it: it copies what the last pass left and waits for readers
//! to leave the old log, and the next commit starts the WAL over. That
//! wait (20–40 ms, mostly the database file's sync) is the write path's
//! slowest moment, hence the high threshold: at 16,384 pages it came every
//! ~0.3 s under steady writes and tripled the p99 of updates.
//! If SQLite's own threshold ([`WRITER_FALLBACK`]) is ever reached (the
//! checkpointer is stuck behind a long read), the writer checkpoints itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The least time between two background checkpoints. Every pass copies
/// and syncs what it finds, so the pause sets how often a page rewritten
/// by many commits is copied: a pause of 100 or 400 ms instead of 20 ms
/// made single-entity writes 7–23 % faster (BENCHMARKS.md, "The
/// checkpointer's pause"). The WAL still starts over at [`RESTART_AT`]
/// pages, as counted by the last pass: at most one pause late.
const PAUSE: Duration = Duration::from_millis(250);

/// WAL pages (256 MiB of 4 KiB pages) at which the writer has the WAL restarted.
pub(crate) const RESTART_AT: u32 = 65_536;

/// What the WAL file is cut back to when it starts over: only a WAL that
/// outgrew the restart threshold (a long read held the restart off). Up
/// to there the file is kept and overwritten in place: cutting it to 64 MiB
/// at each restart cost 10–15 % of update throughput, spent by the kernel
/// allocating the blocks again.
pub(crate) const WAL_KEPT_BYTES: u64 = 320 << 20;

/// WAL pages at which SQLite's automatic checkpoint on the writer kicks in.
pub(crate) const WRITER_FALLBACK: u32 = 4 * RESTART_AT;

/// How long a restart waits for readers still on the old log.
const READERS_WAIT: Duration = Duration::from_millis(200);

enum Request {
    /// Something was committed: copy it when the pause is over.
    Nudge,
    /// Copy everything and let the WAL start over; answers whether it could.
    Restart(mpsc::Sender<bool>),
}

pub(crate) struct Checkpointer {
    requests: Option<mpsc::SyncSender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Pages in the WAL as of the last pass.
    frames: Arc<AtomicU32>,
    /// Pages at which to ask for the next restart (raised after a failed one).
    restart_at: u32,
    threshold: u32,
}

impl Checkpointer {
    /// Starts checkpointing on `connection`, restarting the WAL at
    /// `threshold` pages.
    pub(crate) fn start(connection: Connection, threshold: u32) -> rusqlite::Result<Self> {
        // No busy handler: SQLite's sleeps 1, 2, 5, 10… ms between tries,
        // far longer than our readers hold the log; `restart` polls instead.
        connection.busy_timeout(Duration::ZERO)?;
        let (requests, received) = mpsc::sync_channel(4);
        let frames = Arc::new(AtomicU32::new(0));
        let seen = frames.clone();
        let thread = thread::Builder::new()
            .name("piazza-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&connection, &received, &seen))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
            frames,
            restart_at: threshold,
            threshold,
        })
    }

    /// Called by the writer after each transaction, outside of any.
    pub(crate) fn after_commit(&mut self) {
        let Some(requests) = &self.requests else { return };
        // Full: a nudge is already pending, which is all we need.
        let _ = requests.try_send(Request::Nudge);
        let frames = self.frames.load(Ordering::Acquire);
        if frames < self.restart_at {
            return;
        }
        let (reply, answer) = mpsc::channel();
        let restarted = requests.send(Request::Restart(reply)).is_ok() && answer.recv().unwrap_or(false);
        self.restart_at = if restarted {
            self.threshold
        } else {
            frames + self.threshold
        };
    }

    /// Stops the checkpointer and closes its connection.
    pub(crate) fn finish(mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite checkpoint thread panicked");
            }
        }
    }
}

fn checkpoint_loop(connection: &Connection, requests: &mpsc::Receiver<Request>, frames: &AtomicU32) {
    let mut last_pass = Instant::now() - PAUSE;
    // When a nudged pass is due.
    let mut due: Option<Instant> = None;
    loop {
        let request = match due {
            None => requests.recv().ok(),
            Some(at) => match requests.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(request) => Some(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    checkpoint(connection, "PASSIVE", frames);
                    last_pass = Instant::now();
                    due = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        match request {
            None => return,
            Some(Request::Nudge) => {
                due.get_or_insert(last_pass + PAUSE);
            }
            Some(Request::Restart(reply)) => {
                let restarted = restart(connection, frames);
                if restarted {
                    frames.store(0, Ordering::Release);
                }
                last_pass = Instant::now();
                due = None;
                let _ = reply.send(restarted);
            }
        }
    }
}

/// Copies the whole WAL and waits (polling, up to [`READERS_WAIT`]) for
/// readers to leave it, so that the next commit starts it over.
fn restart(connection: &Connection, frames: &AtomicU32) -> bool {
    let deadline = Instant::now() + READERS_WAIT;
    loop {
        if checkpoint(connection, "RESTART", frames) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(250));
    }
}

/// Runs one checkpoint; returns whether it copied the whole WAL.
fn checkpoint(connection: &Connection, mode: &str, frames: &AtomicU32) -> bool {
    let outcome = connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match outcome {
        Ok((busy, log, copied)) => {
            frames.store(u32::try_from(log.max(0)).unwrap_or(u32::MAX), Ordering::Release);
            busy == 0 && copied == log
        }
        Err(e) => {
            tracing::warn!(error = %e, mode, "WAL checkpoint failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rusqlite::Connection;

    use super::Checkpointer;

    /// A writer whose own checkpoints are off, with 500 rows (~130 pages) committed.
    fn writer_with_rows(path: &std::path::Path) -> Connection {
        let mut writer = Connection::open(path).expect("open");
        writer
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
            .expect("schema");
        let transaction = writer.transaction().expect("begin");
        for _ in 0..500 {
            transaction
                .execute("INSERT INTO t VALUES (randomblob(1000))", [])
                .expect("insert");
        }
        transaction.commit().expect("commit");
        writer
    }

    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn committed_pages_reach_the_database_file_without_the_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let _writer = writer_with_rows(&path);
        let size = || std::fs::metadata(&path).expect("stat").len();
        assert!(size() < 100_000, "the writer checkpointed by itself");
        let mut checkpointer = Checkpointer::start(Connection::open(&path).expect("open"), 1_000_000).expect("start");
        checkpointer.after_commit();
        eventually("the table's pages were not copied into the database file", || {
            size() >= 500_000
        });
        checkpointer.finish();
    }

    #[test]
    fn a_large_wal_is_restarted_between_transactions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let writer = writer_with_rows(&path);
        let wal_pages = |c: &Connection| -> i64 {
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .expect("checkpoint")
        };
        let mut checkpointer = Checkpointer::start(Connection::open(&path).expect("open"), 50).expect("start");
        checkpointer.after_commit();
        eventually("no background pass saw the WAL", || {
            checkpointer.frames.load(std::sync::atomic::Ordering::Acquire) >= 50
        });
        // Over the threshold: this call waits for the restart.
        checkpointer.after_commit();
        assert_eq!(checkpointer.frames.load(std::sync::atomic::Ordering::Acquire), 0);
        writer.execute("INSERT INTO t VALUES (1)", []).expect("insert");
        let pages = wal_pages(&writer);
        assert!(
            pages < 10,
            "the next commit should start the WAL over, found {pages} pages"
        );
        checkpointer.finish();
    }
}
