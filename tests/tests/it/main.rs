//! The integration tests, one module per area, linked into one test binary: each binary
//! links every function and the AWS SDKs, so one binary instead of fourteen keeps a clean
//! build's `target/` (and its link time) a fraction of the size. The modules share one moto
//! server ([`coach_testkit::moto::Moto::shared`]); tests isolate themselves by unique names.
//! Run one area with `cargo test -p coach-integration-tests --test it -- retrieval::`.

/// Runs each `async fn test(store: Store)` twice, over each index store: `s3::test` and
/// `postgres::test`.
macro_rules! over_both_stores {
    ($($test:ident),* $(,)?) => {
        mod s3 {
            $(#[tokio::test]
            async fn $test() {
                super::$test(coach_testkit::stack::Store::S3).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(coach_testkit::stack::Store::Postgres).await
            })*
        }
    };
}

mod access;
mod api_keys;
mod assist;
mod audit;
mod auth;
mod chat;
mod documents;
mod embedding;
mod emulator;
mod events;
mod faults;
mod feedback;
mod health;
mod index;
mod logs;
mod mcp;
mod openai;
mod openapi;
mod policies;
mod postgres;
mod profile;
mod providers;
mod ratelimit;
mod readme;
mod refresh;
mod retrieval;
mod sandbox;
mod streams;
mod sweep;
mod titles;
mod usage;
