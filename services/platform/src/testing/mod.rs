//! Test helpers shared by the services' test suites: a fresh PostgreSQL database per test.
//!
//! The server is `CRM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without a reachable server the PostgreSQL tests are skipped with a notice written straight
//! to the terminal (not swallowed by the test harness), unless `CRM_REQUIRE_POSTGRES=1`, in
//! which case they fail: CI sets it so that a PostgreSQL suite that did not run cannot pass.

use std::io::Write;

use sqlx::{Connection, Executor, PgConnection};

/// Default server of the PostgreSQL test suite.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test, dropped by [`TestDatabase::drop_database`].
pub struct TestDatabase {
    /// URL of the new database, with the server's (owner) credentials.
    pub url: String,
    name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("CRM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned())
}

fn required() -> bool {
    std::env::var("CRM_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

/// Replaces the database of a `postgres://user@host:port/db?params` URL.
fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    let query = url[path_start..].find('?').map_or("", |i| &url[path_start + i..]);
    format!("{}/{database}{query}", &url[..path_start])
}

impl TestDatabase {
    /// Creates an empty database, or returns None (after saying so) when no server is reachable
    /// and PostgreSQL is not required.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let admin_url = admin_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(err) => {
                assert!(
                    !required(),
                    "CRM_REQUIRE_POSTGRES is set but PostgreSQL at {admin_url} is unreachable: {err}"
                );
                let _ = writeln!(
                    std::io::stderr(),
                    "\nPOSTGRESQL SUITE SKIPPED ({test}): no server at {admin_url} ({err}); set CRM_TEST_POSTGRES_URL or CRM_REQUIRE_POSTGRES=1"
                );
                return None;
            }
        };
        let name = format!("crm_test_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|err| panic!("cannot create test database {name}: {err}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { url, name, admin_url })
    }

    /// Drops the database (connections to it are terminated).
    pub async fn drop_database(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await;
            let _ = admin.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database() {
        assert_eq!(
            super::with_database("postgres://pg@h:5432/postgres", "x"),
            "postgres://pg@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://pg@h/postgres?sslmode=disable", "x"),
            "postgres://pg@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://pg@h", "x"), "postgres://pg@h/x");
    }
}

pub mod jwks;
