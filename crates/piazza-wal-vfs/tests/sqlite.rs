//! The VFS under SQLite itself: what a transaction commits is in the WAL
//! file when `COMMIT` returns, for other connections and for recovery.

use rusqlite::{Connection, OpenFlags};

fn open_gathering(path: &std::path::Path) -> Connection {
    let vfs = piazza_wal_vfs::register().expect("register");
    let connection = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).expect("open");
    connection
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0; \
             CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k INTEGER, body BLOB); \
             CREATE INDEX IF NOT EXISTS t_k ON t (k);",
        )
        .expect("schema");
    connection
}

/// Inserts `rows` rows of 1,500 bytes with scattered keys: many pages.
fn insert(connection: &mut Connection, first: i64, rows: i64) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    for id in first..first + rows {
        transaction.execute(
            "INSERT INTO t (id, k, body) VALUES (?1, ?2, zeroblob(1500))",
            [id, (id * 7919) % 1009],
        )?;
    }
    transaction.commit()
}

fn count(connection: &Connection) -> i64 {
    connection
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn each_commit_is_visible_to_a_connection_on_the_default_vfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let mut writer = open_gathering(&path);
    let reader = Connection::open(&path).expect("reader");
    for round in 0..40 {
        insert(&mut writer, round * 25, 25).expect("insert");
        // The reader finds the new frames through the WAL index, in the file.
        assert_eq!(count(&reader), (round + 1) * 25);
        let indexed: i64 = reader
            .query_row("SELECT count(*) FROM t INDEXED BY t_k WHERE k >= 0", [], |r| r.get(0))
            .expect("by index");
        assert_eq!(indexed, (round + 1) * 25);
    }
    let check: String = reader
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
}

#[test]
fn the_wal_on_disk_recovers_every_commit_without_the_writer_closing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let mut writer = open_gathering(&path);
    for round in 0..10 {
        insert(&mut writer, round * 40, 40).expect("insert");
    }
    // What a crash of the process would leave: the database file and the
    // WAL as the kernel has them, no shared memory, the writer never closed.
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&path, copy.path().join("db.sqlite")).expect("copy db");
    std::fs::copy(dir.path().join("db.sqlite-wal"), copy.path().join("db.sqlite-wal")).expect("copy wal");
    let recovered = Connection::open(copy.path().join("db.sqlite")).expect("open copy");
    assert_eq!(count(&recovered), 400);
    let check: String = recovered
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    drop(writer);
}

#[test]
fn a_spilled_transaction_rolled_back_leaves_nothing_and_the_next_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let mut writer = open_gathering(&path);
    insert(&mut writer, 0, 10).expect("insert");
    // A cache of 50 pages: a 6,000-row transaction (~9 MB) spills frames
    // to the WAL (past the gathering limit) before it ends.
    writer.execute_batch("PRAGMA cache_size=50").expect("cache");
    {
        let transaction = writer.transaction().expect("begin");
        for id in 1_000..7_000 {
            transaction
                .execute("INSERT INTO t (id, k, body) VALUES (?1, ?1, zeroblob(1500))", [id])
                .expect("insert");
        }
        transaction.rollback().expect("rollback");
    }
    insert(&mut writer, 10, 10).expect("insert after rollback");
    let reader = Connection::open(&path).expect("reader");
    assert_eq!(count(&reader), 20);
    let big: i64 = reader
        .query_row("SELECT count(*) FROM t WHERE id >= 1000", [], |r| r.get(0))
        .expect("big");
    assert_eq!(big, 0);
    drop(writer);
    drop(reader);
    let reopened = open_gathering(&path);
    assert_eq!(count(&reopened), 20);
    let check: String = reopened
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
}

#[test]
fn a_checkpoint_and_a_restarted_wal_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let mut writer = open_gathering(&path);
    let checkpointer = open_gathering(&path);
    for round in 0..6 {
        insert(&mut writer, round * 30, 30).expect("insert");
        // TRUNCATE empties the WAL: the next commit starts it over at 0.
        checkpointer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
    }
    drop(writer);
    drop(checkpointer);
    let reader = Connection::open(&path).expect("reader");
    assert_eq!(count(&reader), 180);
}

#[test]
fn a_spilled_transaction_that_commits_is_recovered_whole_from_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let mut writer = open_gathering(&path);
    insert(&mut writer, 0, 10).expect("insert");
    // A small cache: pages spill to the WAL and are written again at the
    // commit, after which SQLite rewrites the checksums of the frames
    // from the first one rewritten. Those headers must reach the file
    // before the commit returns, or recovery stops at the first of them.
    writer.execute_batch("PRAGMA cache_size=20").expect("cache");
    insert(&mut writer, 1_000, 3_000).expect("spilled insert");
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&path, copy.path().join("db.sqlite")).expect("copy db");
    std::fs::copy(dir.path().join("db.sqlite-wal"), copy.path().join("db.sqlite-wal")).expect("copy wal");
    let recovered = Connection::open(copy.path().join("db.sqlite")).expect("open copy");
    assert_eq!(count(&recovered), 3_010);
    let check: String = recovered
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    drop(writer);
}
