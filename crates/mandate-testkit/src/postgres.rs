//! The PostgreSQL the multi-node tests and benchmarks use: this machine's
//! (`MANDATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), driven with `psql`, and a
//! schema of its own per test or run.

use std::process::Command;

/// The database the tests use.
#[must_use]
pub fn database_url() -> String {
    std::env::var("MANDATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `sql`; fails, saying what is needed, if PostgreSQL or `psql` is
/// not there.
///
/// # Panics
/// If `psql` cannot run or `sql` fails.
pub fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([&database_url(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql is needed for these tests: {e}"));
    assert!(
        out.status.success(),
        "PostgreSQL at {} is needed for these tests (see docs/scale-out.md): {}",
        database_url(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The single value `sql` selects.
///
/// # Panics
/// If `psql` cannot run or `sql` fails.
#[must_use]
pub fn psql_value(sql: &str) -> String {
    let out = Command::new("psql")
        .args([&database_url(), "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A schema of its own for one test or run, dropped when it ends.
#[derive(Debug)]
pub struct Schema(String);

impl Schema {
    /// Creates `{prefix}_{pid}_{nanos}`.
    ///
    /// # Panics
    /// As [`psql`].
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("{prefix}_{}_{nanos}", std::process::id());
        psql(&format!("CREATE SCHEMA {name}"));
        Self(name)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The database URL whose connections work in this schema.
    #[must_use]
    pub fn url(&self) -> String {
        let base = database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &database_url(),
                "-qc",
                &format!("DROP SCHEMA {} CASCADE", self.0),
            ])
            .output();
    }
}
