//! Several rows to one INSERT statement.
//!
//! An edit writes its history instances, its value rows and its name rows
//! a handful at a time. One statement per row spent a fifth of each row's
//! cost on the statement itself: finding it in the statement cache and
//! handing it back, starting and ending it in SQLite (BENCHMARKS.md,
//! "Writes: fewer statements and copies per edit"). The rows of one edit
//! and table now go in one statement of up to `MAX_ROWS` rows.

use std::sync::OnceLock;

use rusqlite::{ToSql, Transaction};

/// The most rows one statement takes.
pub(crate) const MAX_ROWS: usize = 16;

/// The `INSERT` statements of one table and column list, for 1 to
/// `MAX_ROWS` rows, their texts made once.
pub(crate) struct MultiRowInsert {
    /// The statement up to `VALUES`, e.g. `INSERT INTO t(a, b) VALUES`.
    head: &'static str,
    columns: usize,
    texts: OnceLock<Vec<String>>,
}

impl MultiRowInsert {
    pub(crate) const fn new(head: &'static str, columns: usize) -> Self {
        Self {
            head,
            columns,
            texts: OnceLock::new(),
        }
    }

    /// Inserts `rows`, `MAX_ROWS` to a statement, each as the `N` cells
    /// `cells` gives (`N` is the statement's column count); returns how
    /// many rows were inserted (`OR IGNORE` may skip some).
    pub(crate) fn run<'a, R, const N: usize>(
        &self,
        tx: &Transaction<'_>,
        rows: &'a [R],
        cells: impl Fn(&'a R) -> [&'a dyn ToSql; N],
    ) -> rusqlite::Result<usize> {
        debug_assert_eq!(N, self.columns, "{}", self.head);
        let mut inserted = 0;
        for chunk in rows.chunks(MAX_ROWS) {
            let params = chunk.iter().flat_map(&cells);
            inserted += tx
                .prepare_cached(self.text(chunk.len()))?
                .execute(rusqlite::params_from_iter(params))?;
        }
        Ok(inserted)
    }

    fn text(&self, rows: usize) -> &str {
        let texts = self.texts.get_or_init(|| {
            let row = format!("({})", vec!["?"; self.columns].join(", "));
            (1..=MAX_ROWS)
                .map(|n| format!("{} {}", self.head, vec![row.as_str(); n].join(", ")))
                .collect()
        });
        &texts[rows.clamp(1, MAX_ROWS) - 1]
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ToSql;

    use super::{MultiRowInsert, MAX_ROWS};

    /// Every row goes in, in order, whatever the count against the chunk
    /// size; `OR IGNORE` skips are not counted.
    #[test]
    fn rows_go_in_whole_and_in_order_across_chunks() {
        static INSERT: MultiRowInsert = MultiRowInsert::new("INSERT OR IGNORE INTO t(a, b) VALUES", 2);
        let mut connection = rusqlite::Connection::open_in_memory().expect("sqlite");
        connection
            .execute_batch("CREATE TABLE t(n INTEGER PRIMARY KEY, a INTEGER UNIQUE, b TEXT)")
            .expect("schema");
        for count in [0, 1, MAX_ROWS - 1, MAX_ROWS, MAX_ROWS + 1, 3 * MAX_ROWS + 5] {
            let tx = connection.transaction().expect("tx");
            tx.execute("DELETE FROM t", []).expect("empty");
            let rows: Vec<(i64, String)> = (0..count as i64).map(|i| (i, format!("r{i}"))).collect();
            fn cells(row: &(i64, String)) -> [&dyn ToSql; 2] {
                [&row.0, &row.1]
            }
            assert_eq!(INSERT.run(&tx, &rows, cells).expect("insert"), count);
            let again = INSERT.run(&tx, &rows[..count.min(3)], cells).expect("insert");
            assert_eq!(again, 0, "ignored rows are not counted");
            let stored: Vec<(i64, String)> = tx
                .prepare("SELECT a, b FROM t ORDER BY n")
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .expect("rows");
            assert_eq!(stored, rows, "{count} rows");
        }
    }
}
