//! The point of the VFS: one `write` per transaction, not two per page.
//! Alone in its test binary, as the count is the process's.

use rusqlite::{Connection, OpenFlags};

#[test]
fn a_transaction_of_many_pages_is_written_in_one_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = piazza_wal_vfs::register().expect("register");
    let mut connection =
        Connection::open_with_flags_and_vfs(dir.path().join("db.sqlite"), OpenFlags::default(), vfs).expect("open");
    connection
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);",
        )
        .expect("schema");
    let before = piazza_wal_vfs::wal_write_calls();
    for round in 0..20 {
        let transaction = connection.transaction().expect("begin");
        // 20 rows of 3 KB: about 20 pages a transaction, 40 writes without gathering.
        for id in 0..20 {
            transaction
                .execute(
                    "INSERT INTO t (id, body) VALUES (?1, zeroblob(3000))",
                    [round * 20 + id],
                )
                .expect("insert");
        }
        transaction.commit().expect("commit");
    }
    let calls = piazza_wal_vfs::wal_write_calls() - before;
    let frames: i64 = connection
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
        .expect("frames");
    assert!(frames >= 20 * 20, "{frames} frames");
    assert!(
        calls <= 20,
        "{calls} write calls for 20 transactions of {frames} frames"
    );
}
