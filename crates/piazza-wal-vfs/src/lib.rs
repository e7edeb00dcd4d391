//! A SQLite VFS that hands each transaction's WAL frames to the kernel in
//! one `write`, instead of two per frame.
//!
//! SQLite appends a WAL frame as two `write` calls, its 24-byte header and
//! then its page. A create in the embedded store dirties ~21 pages, so the
//! writer thread made 42 system calls per create and spent a quarter of its
//! time in the kernel (BENCHMARKS.md, 2026-12-08, night). On this machine's
//! ext4, 21 frames written as 42 calls took 53–68 µs and as one call
//! 16–18 µs. This VFS is the default one (`unix`) with one difference:
//! appends to a WAL file are gathered in memory and written with one call.
//!
//! When the gathered frames reach the file is what keeps SQLite correct
//! (the rules in detail are `gather::Gathered`'s):
//! - **At the end of each commit frame**, and everything SQLite writes
//!   after it (checksums rewritten, padding) straight through. A
//!   transaction's frames are published in the WAL index, where other
//!   connections (with their own file handles) start reading them from the
//!   file, only after all of that. So once `COMMIT` returns, the
//!   transaction is in the kernel as it was before, and a write error
//!   still fails the commit, before it is published. A commit frame is the
//!   one whose header holds the database size (bytes 4–7 non-zero).
//! - **Before anything else touches the file** on the same handle: a read,
//!   a sync, a size query, a truncate, a file control, a close, or a write
//!   that does not continue the gathered ones (SQLite rewrites a frame
//!   that a transaction writes twice). The file then reads as if every
//!   write had gone straight through.
//! - When the gathered frames reach [`FLUSH_AT`] bytes (a large transaction
//!   spilling pages before its commit).
//!
//! A write that fails when the frames are handed over fails the call that
//! handed them (for a commit, the commit itself, which SQLite then rolls
//! back); the frames are dropped, as a failed direct write would have left
//! them. Every other file (the database, its shared memory, journals) goes
//! straight to the default VFS.

mod gather;
mod shim;

pub use shim::wal_write_calls;

/// The name to open connections with (`Connection::open_with_flags_and_vfs`).
pub const NAME: &str = "piazza-wal";

/// Gathered WAL bytes at which they are written even before a commit.
pub const FLUSH_AT: usize = 4 << 20;

/// Why the VFS could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot register the {NAME} SQLite VFS: {}", self.0)
    }
}

impl std::error::Error for Error {}

/// Registers the VFS with SQLite (once per process; later calls return
/// the first call's result) and returns its name.
pub fn register() -> Result<&'static str, Error> {
    shim::register().map(|()| NAME)
}
