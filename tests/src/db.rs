//! Fresh databases for tests: a SQLite file in a new temp directory (removed on drop), or a
//! new database on the Postgres server named by `DATABASE_URL`. Postgres tests never skip:
//! without `DATABASE_URL` they fail and say how to get one.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

use crate::Backend;

const MISSING_DATABASE_URL: &str = "Postgres tests need DATABASE_URL (a server where this user may \
     CREATE DATABASE), or run scripts/test, which starts a throwaway cluster";

/// An empty database nobody else uses. `url` is what the server or store connects to.
pub struct FreshDatabase {
    pub url: String,
    pub backend: Backend,
    location: Location,
}

enum Location {
    SqliteDir(PathBuf),
    Postgres { admin_url: String, name: String },
}

pub async fn fresh_database(backend: Backend) -> FreshDatabase {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("agentry-e2e-{unique}"));
            std::fs::create_dir_all(&dir).expect("create the test database directory");
            let url = format!("sqlite://{}/agentry.db", dir.display());
            FreshDatabase {
                url,
                backend,
                location: Location::SqliteDir(dir),
            }
        }
        Backend::Postgres => {
            let admin_url = std::env::var("DATABASE_URL").expect(MISSING_DATABASE_URL);
            let name = format!("agentry_t_{unique}");
            let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!("cannot connect to DATABASE_URL: {e}\n{MISSING_DATABASE_URL}")
            });
            admin
                .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
            let _ = admin.close().await;
            let url = with_database(&admin_url, &name);
            FreshDatabase {
                url,
                backend,
                location: Location::Postgres { admin_url, name },
            }
        }
    }
}

impl FreshDatabase {
    /// Runs one raw statement on its own connection; returns the rows affected.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await?;
                let done = conn.execute(sql).await?;
                let _ = conn.close().await;
                Ok(done.rows_affected())
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await?;
                let done = conn.execute(sql).await?;
                let _ = conn.close().await;
                Ok(done.rows_affected())
            }
        }
    }

    /// `SELECT COUNT(*) FROM {table}`.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let counted = match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect to the test database");
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&mut conn)
                    .await
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url)
                    .await
                    .expect("connect to the test database");
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&mut conn)
                    .await
            }
        };
        counted.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Drops a Postgres test database (best effort; the cluster may be throwaway anyway).
    pub async fn drop_database(&self) {
        if let Location::Postgres { admin_url, name } = &self.location
            && let Ok(mut admin) = PgConnection::connect(admin_url).await
        {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = admin.execute(drop.as_str()).await;
            let _ = admin.close().await;
        }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if let Location::SqliteDir(dir) = &self.location {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `postgres://user@host:port/db?opts` with `db` replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_get_the_test_database() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t"),
            "postgres://u@h:5432/t"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "t"),
            "postgres://u@h:5432/t"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "t"),
            "postgres://u@h/t?sslmode=disable"
        );
    }
}
