//! The page caches' sizes, and the writer's quirk that sets them apart.
//!
//! While a database is under 1 GiB, every commit that split a b-tree page
//! makes SQLite walk its whole page cache: `balance_nonroot` swaps two
//! pages through the number of the lock-byte page (262,145 with 4 KiB
//! pages), which leaves the cache's largest key past the end of the
//! database, and the commit then drops the cache's pages "beyond the end"
//! by visiting every one of them (SQLite 3.46 to 3.54 at least). With
//! 64 MiB that walk was a quarter of the writer's time under single-entity
//! writes; with 8 MiB, single-entity writes on a fresh store were 6–23 %
//! faster (BENCHMARKS.md, "The writer's page cache"). Past that page the
//! walk cannot happen and the small cache only misses: loading 1M
//! entities, 2,850 entities/s with the small cache throughout against
//! 3,380 with it grown (one run each). Readers never commit.

use rusqlite::Connection;

/// The writer's page cache while the database is under 1 GiB, in KiB.
pub(crate) const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// Each reader's page cache, in KiB (allocated as used); the writer's once
/// the database is past 1 GiB.
pub(crate) const READER_CACHE_KIB: u32 = 64 * 1024;

/// Sizes the writer's page cache: small at first, the readers' size once
/// the database is past the lock-byte page (databases only grow while the
/// store runs, so it never shrinks again).
#[derive(Default)]
pub(crate) struct WriterCache {
    grown: bool,
    /// Commits until the database's size is looked at again; the first
    /// call looks (and sets the size).
    until_next_look: u32,
}

impl WriterCache {
    /// How often (in commits) the database's size is looked at.
    const EVERY: u32 = 256;

    /// Called once before the first transaction and after each commit.
    pub(crate) fn after_commit(&mut self, connection: &Connection) {
        if self.grown {
            return;
        }
        if self.until_next_look > 0 {
            self.until_next_look -= 1;
            return;
        }
        self.until_next_look = Self::EVERY - 1;
        let kib = match database_size(connection) {
            Ok((pages, page_size)) if past_lock_byte_page(pages, page_size) => {
                self.grown = true;
                READER_CACHE_KIB
            }
            Ok(_) => WRITER_CACHE_KIB,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the database's size");
                return;
            }
        };
        if let Err(e) = connection.execute_batch(&format!("PRAGMA cache_size=-{kib};")) {
            tracing::warn!(error = %e, "cannot size the writer's page cache");
        }
    }
}

/// The database's size: (pages, bytes per page).
fn database_size(connection: &Connection) -> rusqlite::Result<(i64, i64)> {
    connection.query_row(
        "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Whether a database of `pages` pages reaches the page holding SQLite's
/// lock byte (the first page past 1 GiB), the number `balance_nonroot`
/// parks pages at.
fn past_lock_byte_page(pages: i64, page_size: i64) -> bool {
    pages > (1 << 30) / page_size.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_cache_grows_only_past_the_lock_byte_page() {
        assert!(!past_lock_byte_page(262_144, 4096));
        assert!(past_lock_byte_page(262_145, 4096));
        assert!(!past_lock_byte_page(16_384, 65_536));
        assert!(past_lock_byte_page(16_385, 65_536));
        let dir = tempfile::tempdir().expect("temp dir");
        let connection = Connection::open(dir.path().join("db")).expect("open");
        connection.execute_batch("CREATE TABLE t(x);").expect("schema");
        let (pages, page_size) = database_size(&connection).expect("size");
        assert!(
            pages >= 1 && page_size >= 512,
            "read {pages} pages of {page_size} bytes"
        );
        let mut cache = WriterCache::default();
        for _ in 0..3 * WriterCache::EVERY {
            cache.after_commit(&connection);
        }
        let kib: i64 = connection
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .expect("cache size");
        assert!(!cache.grown);
        assert_eq!(
            kib,
            -i64::from(WRITER_CACHE_KIB),
            "a small database keeps the small cache"
        );
    }
}
