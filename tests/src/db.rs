//! A fresh database per test: a SQLite file in a temp dir, or a new PostgreSQL database on the
//! server named by `TEST_DATABASE_URL`.

use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A database that lives as long as this value (SQLite) or the server (PostgreSQL).
pub struct TestDb {
    pub kind: DbKind,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

const PG_HELP: &str = "TEST_DATABASE_URL is not set: these tests need a real PostgreSQL. Start a \
     throwaway one with `eval \"$(bash .ci/pg-start.sh)\"` (or point TEST_DATABASE_URL at any \
     server where the user may CREATE DATABASE)";

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = berth_coordinator::store::sqlite_url(&dir.path().join("berth.db"));
        TestDb {
            kind: DbKind::Sqlite,
            url,
            _dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database. Fails (never skips) when no server is configured.
    pub async fn postgres() -> TestDb {
        let admin_url = std::env::var("TEST_DATABASE_URL").expect(PG_HELP);
        sqlx::any::install_default_drivers();
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at TEST_DATABASE_URL: {e}. {PG_HELP}")
            });
        pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        pool.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("TEST_DATABASE_URL has a database name");
        TestDb {
            kind: DbKind::Postgres,
            url: format!("{base}/{name}"),
            _dir: None,
        }
    }

    /// Both backends, for suites that must pass on each.
    pub async fn each() -> Vec<TestDb> {
        vec![TestDb::sqlite(), TestDb::postgres().await]
    }

    /// A raw pool on this database, for tests that read tables directly.
    pub async fn raw_pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("connect test db")
    }
}
