//! The two server store backends behind one fixture, so that one test
//! suite runs against both (as `store_tests!` expands it): SQLite in a temp
//! directory, and PostgreSQL in a fresh schema of the database named by
//! `SOTTO_TEST_POSTGRES_URL` (dropped afterwards, so runs are independent
//! and may be parallel). Without that variable the PostgreSQL half prints
//! why it is skipped.

#![allow(clippy::new_without_default)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use sotto_store::server::*;

pub trait Backend {
    type Store: ServerStore + 'static;

    /// Opens (again) the store over this fixture's database, with the
    /// server secret at `secret` (default: [`Backend::default_secret`]).
    fn open_with(&self, secret: Option<&Path>) -> Result<Self::Store>;

    fn open(&self) -> Self::Store {
        self.open_with(None).unwrap()
    }

    /// Where the secret is when none is named.
    fn default_secret(&self) -> PathBuf;

    /// A scratch directory of the test.
    fn scratch(&self) -> &Path;

    /// One integer from `sql` (`$1` bound to `param` when given).
    fn int(&self, sql: &str, param: Option<&[u8]>) -> i64;

    /// One byte-string column of every row of `sql`.
    fn blobs(&self, sql: &str) -> Vec<Vec<u8>>;

    /// Whether anything the database holds (its files; every row) contains
    /// `needle`.
    fn holds(&self, needle: &[u8]) -> bool;

    /// Group commit's (writes, commits), where the backend has it.
    fn group_commit(_store: &Self::Store) -> Option<(u64, u64)> {
        None
    }

    /// Groups of writes the backend tried and stored nothing of, where it
    /// has them.
    fn groups_declined(_store: &Self::Store) -> Option<u64> {
        None
    }

    /// A second store over the same database, as a second server node
    /// opens it; `None` where one process owns the database (SQLite).
    fn second_node(&self) -> Option<Self::Store> {
        None
    }

    fn count(&self, table: &str) -> i64 {
        self.int(&format!("SELECT COUNT(*) FROM {table}"), None)
    }
}

pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    fn open_with(&self, secret: Option<&Path>) -> Result<SqliteStore> {
        SqliteStore::open_with(&self.dir.path().join("data"), secret)
    }

    fn default_secret(&self) -> PathBuf {
        self.dir.path().join("data").join(SECRET_FILE)
    }

    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn int(&self, sql: &str, param: Option<&[u8]>) -> i64 {
        let c = rusqlite::Connection::open(self.dir.path().join("data").join(DB_FILE)).unwrap();
        match param {
            Some(p) => c.query_row(sql, [p], |r| r.get(0)),
            None => c.query_row(sql, [], |r| r.get(0)),
        }
        .unwrap()
    }

    fn blobs(&self, sql: &str) -> Vec<Vec<u8>> {
        let c = rusqlite::Connection::open(self.dir.path().join("data").join(DB_FILE)).unwrap();
        let mut stmt = c.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows
    }

    fn holds(&self, needle: &[u8]) -> bool {
        let mut seen = 0;
        let mut found = false;
        for entry in std::fs::read_dir(self.dir.path().join("data")).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == SECRET_FILE {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            seen += bytes.len();
            found |= bytes.windows(needle.len()).any(|w| w == needle);
        }
        assert!(seen > 0, "the database has files");
        found
    }

    fn group_commit(store: &SqliteStore) -> Option<(u64, u64)> {
        Some(store.write_stats())
    }
}

/// A schema of its own in the test database.
pub struct Postgres {
    url: String,
    schema: String,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

static SCHEMAS: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// `None` (and a line saying so) when `SOTTO_TEST_POSTGRES_URL` is
    /// unset.
    pub fn new() -> Option<Postgres> {
        let Some(base) = test_url() else {
            // Straight to stderr: the test harness captures eprintln!, and a
            // skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: SOTTO_TEST_POSTGRES_URL unset (the PostgreSQL half of this test)"
            );
            return None;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "sotto_test_{}_{}_{}",
            std::process::id(),
            SCHEMAS.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                .await
                .expect("connect to SOTTO_TEST_POSTGRES_URL");
            tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA {schema}; SET search_path TO {schema}"
                ))
                .await
                .unwrap();
            client
        });
        Some(Postgres {
            url: in_schema(&base, &schema),
            schema,
            dir: tempfile::tempdir().unwrap(),
            rt,
            client,
        })
    }

    /// The URL of this fixture's schema (for a second store: a second
    /// node).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs statements in this fixture's schema.
    pub fn exec(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(sql)).unwrap();
    }
}

/// The test database's URL, if set.
pub fn test_url() -> Option<String> {
    std::env::var("SOTTO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// `url` with every connection's `search_path` set to `schema`.
pub fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = self.rt.block_on(self.client.batch_execute(&sql));
    }
}

impl Backend for Postgres {
    type Store = PostgresStore;

    fn open_with(&self, secret: Option<&Path>) -> Result<PostgresStore> {
        PostgresStore::open(&self.url, secret.unwrap_or(&self.default_secret()))
    }

    fn default_secret(&self) -> PathBuf {
        self.dir.path().join(SECRET_FILE)
    }

    fn second_node(&self) -> Option<PostgresStore> {
        Some(self.open())
    }

    fn group_commit(store: &PostgresStore) -> Option<(u64, u64)> {
        Some(store.write_stats())
    }

    fn groups_declined(store: &PostgresStore) -> Option<u64> {
        Some(store.groups_declined())
    }

    fn scratch(&self) -> &Path {
        self.dir.path()
    }

    fn int(&self, sql: &str, param: Option<&[u8]>) -> i64 {
        self.rt.block_on(async {
            let row = match param {
                Some(p) => self.client.query_one(sql, &[&p]).await,
                None => self.client.query_one(sql, &[]).await,
            };
            row.unwrap().get(0)
        })
    }

    fn blobs(&self, sql: &str) -> Vec<Vec<u8>> {
        self.rt.block_on(async {
            let rows = self.client.query(sql, &[]).await.unwrap();
            rows.iter().map(|r| r.get(0)).collect()
        })
    }

    fn holds(&self, needle: &[u8]) -> bool {
        self.rt.block_on(async {
            let tables = self
                .client
                .query(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                    &[&self.schema],
                )
                .await
                .unwrap();
            assert!(!tables.is_empty(), "the schema has tables");
            // Every row as text: bytea shows as hex.
            let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
            let plain = String::from_utf8_lossy(needle).into_owned();
            for t in tables {
                let table: String = t.get(0);
                let rows = self
                    .client
                    .query(&format!("SELECT t::text FROM {table} t"), &[])
                    .await
                    .unwrap();
                for r in rows {
                    let text: String = r.get(0);
                    if text.contains(&hex) || text.contains(&plain) {
                        return true;
                    }
                }
            }
            false
        })
    }
}
