//! Throw-away databases for tests, in one place for every test suite that
//! needs PostgreSQL (the conformance suite here, the HTTP suite, process
//! tests).
//!
//! The server is `PIAZZA_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each [`TestDatabase`] is
//! a new database named `piazza_test_<pid>_<random>`, dropped when the value
//! is dropped. When the server cannot be reached, tests say so loudly and
//! skip — unless `PIAZZA_TEST_REQUIRE_SERVICES=1` (set by `.ci/run`), where
//! a missing server is a failure.

use std::io::Write as _;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "piazza_test_";

/// A database created for one test (or one test binary).
pub struct TestDatabase {
    admin: Config,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database; `None` (after a loud message) when
    /// PostgreSQL is unreachable and services are not required.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable and `PIAZZA_TEST_REQUIRE_SERVICES=1`,
    /// or when it answers but refuses to create the database.
    pub async fn create() -> Option<TestDatabase> {
        let server = std::env::var("PIAZZA_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let mut admin = match Config::from_str(&server) {
            Ok(config) => config,
            Err(e) => panic!("PIAZZA_TEST_DATABASE_URL is not a database URL ({e}): {server}"),
        };
        admin.connect_timeout(Duration::from_secs(5));
        let client = match connect(&admin).await {
            Ok(client) => client,
            Err(e) => return unreachable_server(&server, &e),
        };
        collect_leftovers(&client, &admin).await;
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
            panic!(
                "cannot create the test database {name} on {server}: {}",
                crate::explain(&e)
            );
        }
        let url = database_url(&server, &name);
        Some(TestDatabase { admin, name, url })
    }

    /// The URL of the database (for `PostgresStore::connect` or `--database`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    /// Drops the database, closing any connection still open to it. Runs
    /// on a thread of its own: a `Drop` cannot await, and may run inside or
    /// outside a runtime.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = connect(&admin).await.ok()?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            loud(&format!("could not drop the test database {}", self.name));
        }
    }
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn unreachable_server(server: &str, error: &tokio_postgres::Error) -> Option<TestDatabase> {
    let why = format!("PostgreSQL at {server} is unreachable ({})", crate::explain(error));
    if required() {
        panic!("{why}, and PIAZZA_TEST_REQUIRE_SERVICES=1: start PostgreSQL or set PIAZZA_TEST_DATABASE_URL");
    }
    loud(&format!("{why}: SKIPPING the PostgreSQL tests"));
    None
}

/// Whether `store` narrows geo-queries with PostGIS. When it does not (the
/// server has no PostGIS package), says so loudly, or fails when services
/// are required: CI installs PostGIS, so a silently disabled PostGIS path
/// cannot pass there.
///
/// # Panics
/// When PostGIS is not in use and `PIAZZA_TEST_REQUIRE_SERVICES=1`.
pub fn has_postgis(store: &crate::PostgresStore) -> bool {
    if store.uses_postgis() {
        return true;
    }
    let why = "PostGIS is not in use on the test server (install postgresql-15-postgis-3)";
    if required() {
        panic!("{why}, and PIAZZA_TEST_REQUIRE_SERVICES=1");
    }
    loud(&format!("{why}: the PostGIS path is NOT TESTED"));
    false
}

/// Whether a missing service fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("PIAZZA_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Writes to the real stderr, past the test harness's capture, so that a
/// skip is seen even when the test passes.
pub fn loud(message: &str) {
    let _ = writeln!(std::io::stderr(), "\n!!! piazza tests: {message} !!!\n");
}

/// The URL of database `name` on the server of `server`.
fn database_url(server: &str, name: &str) -> String {
    if server.contains("://") {
        let (base, query) = match server.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (server, None),
        };
        // Everything up to the path: scheme, user, host, port.
        let authority_end = base
            .find("://")
            .and_then(|start| base[start + 3..].find('/').map(|slash| start + 3 + slash))
            .unwrap_or(base.len());
        let mut url = format!("{}/{name}", &base[..authority_end]);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        url
    } else {
        format!("{server} dbname={name}")
    }
}

/// Drops the test databases of processes that no longer exist (a test
/// binary killed before its `Drop` ran, or a database held by a `static`).
/// Only on this machine's server, where the pid in the name means something.
async fn collect_leftovers(client: &Client, admin: &Config) {
    let local = admin.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => matches!(name.as_str(), "127.0.0.1" | "localhost" | "::1"),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    });
    if !local || !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<_, String>(0) else {
            continue;
        };
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or("");
        let alive = pid.parse::<u32>().is_err() || std::path::Path::new(&format!("/proc/{pid}")).exists();
        let safe = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !alive && safe {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn the_database_replaces_the_path_of_the_server_url() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(database_url("host=h user=u", "x"), "host=h user=u dbname=x");
    }
}
