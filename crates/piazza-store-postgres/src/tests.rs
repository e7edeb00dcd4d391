//! The conformance suite on a fresh database per case, and what only this
//! backend has: migrations, and several stores (processes) on one database.

use std::sync::Arc;

use piazza_store::Store;

use crate::testing::TestDatabase;
use crate::{PostgresStore, DEFAULT_POOL_SIZE};

/// A store on a new database; the database is dropped with the guard.
async fn fresh() -> Option<(Arc<dyn Store>, TestDatabase)> {
    let database = TestDatabase::create().await?;
    let store = PostgresStore::connect(database.url(), 4).await.expect("connect");
    Some((Arc::new(store) as Arc<dyn Store>, database))
}

piazza_store::conformance_suite!(fresh);

#[tokio::test]
async fn migrations_are_applied_once_even_when_processes_start_together() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let starts = (0..4).map(|_| {
        let url = database.url().to_owned();
        tokio::spawn(async move { PostgresStore::connect(&url, 1).await })
    });
    for start in starts {
        let store = start.await.expect("task").expect("connect");
        assert_eq!(store.schema_version().await.expect("version"), crate::migrate::latest());
    }
    let again = PostgresStore::connect(database.url(), DEFAULT_POOL_SIZE)
        .await
        .expect("reconnect");
    assert_eq!(again.schema_version().await.expect("version"), crate::migrate::latest());
}
