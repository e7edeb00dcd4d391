//! Group commit with the disk flush off the writer thread.
//!
//! The writer commits with `synchronous=NORMAL`: SQLite appends the
//! transaction to the WAL, in the OS page cache, without waiting for the
//! disk. The writer then hands the group's answers to the flusher and goes
//! on with the next group, while the flusher `fdatasync`s the WAL and only
//! then answers. An acknowledged write is therefore on disk exactly as with
//! `synchronous=FULL`, but the sync of one group (3–4 ms on a cloud disk)
//! overlaps the work of the next instead of stalling the writer, and one
//! sync covers every group that committed while the previous one ran.
//!
//! What this gives up: readers may see a group's rows a few milliseconds
//! before its writers are answered, so a power cut in that window loses
//! rows nobody was told were stored (but may have read).
//!
//! A failed sync is not retried: after one, the kernel may have dropped the
//! dirty pages and a later sync can succeed without them ("fsyncgate").
//! The store then answers every write with an error until it is restarted,
//! and recovers from the WAL as it is on disk.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use crate::Pending;

/// Makes everything committed so far durable.
pub(crate) type SyncFn = Box<dyn FnMut() -> io::Result<()> + Send>;

/// The flusher thread and the way to it.
pub(crate) struct Flusher {
    sender: Option<mpsc::Sender<Vec<Pending>>>,
    thread: Option<thread::JoinHandle<()>>,
    broken: Arc<AtomicBool>,
}

impl Flusher {
    /// Starts a flusher that syncs `sync`.
    pub(crate) fn start(sync: SyncFn) -> io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let broken = Arc::new(AtomicBool::new(false));
        let flag = broken.clone();
        let thread = thread::Builder::new()
            .name("piazza-sqlite-flush".into())
            .spawn(move || flush_loop(sync, receiver, &flag))?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            broken,
        })
    }

    /// Whether a sync has failed: nothing written since can be promised.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Answers `committed` once it is on disk.
    pub(crate) fn answer_when_durable(&self, committed: Vec<Pending>) {
        if committed.is_empty() {
            return;
        }
        let Some(sender) = &self.sender else { return };
        if let Err(mpsc::SendError(lost)) = sender.send(committed) {
            // Only if the flusher thread died: its answers cannot be promised.
            for pending in lost {
                pending.fail("the flusher thread has stopped");
            }
        }
    }

    /// Waits until every handed answer was synced and sent.
    pub(crate) fn finish(mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite flusher thread panicked");
            }
        }
    }
}

fn flush_loop(mut sync: SyncFn, receiver: mpsc::Receiver<Vec<Pending>>, broken: &AtomicBool) {
    while let Ok(mut answers) = receiver.recv() {
        // Groups that committed while the last sync ran share this one.
        while let Ok(more) = receiver.try_recv() {
            answers.extend(more);
        }
        if broken.load(Ordering::Acquire) {
            fail_all(answers, BROKEN);
            continue;
        }
        match sync() {
            Ok(()) => answers.into_iter().for_each(Pending::answer),
            Err(e) => {
                tracing::error!(error = %e, "syncing the WAL failed; every write is refused until a restart");
                broken.store(true, Ordering::Release);
                fail_all(answers, &format!("the disk refused to sync the write: {e}"));
            }
        }
    }
}

/// Why writes are refused after a failed sync.
pub(crate) const BROKEN: &str = "an earlier write could not be synced to disk; restart the broker";

fn fail_all(answers: Vec<Pending>, why: &str) {
    for pending in answers {
        pending.fail(why);
    }
}

/// Syncs the WAL of the database at `database`. The file is kept open and
/// reopened only if SQLite replaced it (it deletes the WAL only when its
/// last connection closes, but a stale descriptor would sync nothing).
pub(crate) fn wal_sync(database: &Path) -> io::Result<SyncFn> {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    let path = PathBuf::from(name);
    let mut wal = open_wal(&path)?;
    // The WAL's directory entry must survive a power cut too.
    if let Some(dir) = database.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(Box::new(move || {
        if !same_file(&wal, &path)? {
            wal = open_wal(&path)?;
        }
        wal.sync_data()
    }))
}

fn open_wal(path: &Path) -> io::Result<File> {
    File::options().read(true).write(true).open(path)
}

#[cfg(unix)]
fn same_file(open: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (open.metadata()?, std::fs::metadata(path)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> io::Result<bool> {
    std::fs::metadata(path).map(|_| true)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    fn answered() -> (Pending, oneshot::Receiver<piazza_store::StoreResult<()>>) {
        let (reply, answer) = oneshot::channel();
        (Pending::Exec(reply, Ok(())), answer)
    }

    #[test]
    fn answers_wait_for_the_sync() {
        let (entered, syncing) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let flusher = Flusher::start(Box::new(move || {
            entered.send(()).expect("test alive");
            released.recv().map_err(io::Error::other)
        }))
        .expect("start");
        let (pending, mut answer) = answered();
        flusher.answer_when_durable(vec![pending]);
        syncing.recv_timeout(Duration::from_secs(10)).expect("sync started");
        std::thread::sleep(Duration::from_millis(50));
        assert!(answer.try_recv().is_err(), "answered before the sync finished");
        release.send(()).expect("flusher alive");
        flusher.finish();
        assert!(answer.try_recv().expect("answered").is_ok());
    }

    #[test]
    fn a_failed_sync_fails_its_writes_and_every_later_one() {
        let flusher = Flusher::start(Box::new(|| Err(io::Error::other("EIO")))).expect("start");
        let (first, mut first_answer) = answered();
        flusher.answer_when_durable(vec![first]);
        while !flusher.is_broken() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (second, mut second_answer) = answered();
        flusher.answer_when_durable(vec![second]);
        flusher.finish();
        let first = first_answer
            .try_recv()
            .expect("answered")
            .expect_err("a failed sync is an error");
        assert!(first.to_string().contains("EIO"), "{first}");
        let second = second_answer.try_recv().expect("answered").expect_err("refused");
        assert!(second.to_string().contains("restart"), "{second}");
    }

    #[test]
    fn the_wal_sync_follows_a_replaced_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("db");
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"first").expect("write");
        let mut sync = wal_sync(&database).expect("open");
        sync().expect("sync");
        std::fs::remove_file(&wal).expect("remove");
        assert!(sync().is_err(), "a deleted WAL cannot be synced");
        std::fs::write(&wal, b"second").expect("write");
        sync().expect("sync of the new WAL");
    }
}
