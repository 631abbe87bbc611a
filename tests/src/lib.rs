//! Test kit for Coach: runs moto's server on loopback, creates the AWS resources Coach
//! needs (the same definitions the local stack uses), and loads sample events.
//!
//! Integration tests (`tests/tests/it/`, one binary) call the function handlers directly with events
//! from `events/`, against real S3 and DynamoDB APIs served by moto. Nothing here mocks
//! the SDK, and no traffic leaves loopback. Each function's AWS calls are held to its IAM
//! policies in template.yaml ([`iam`]), which moto does not enforce; model providers are
//! fakes that answer from the providers' documented wire formats ([`providers`]).

pub mod bench;
pub mod child;
pub mod collection;
pub mod events;
pub mod flows;
pub mod iam;
pub mod logs;
pub mod moto;
pub mod postgres;
pub mod providers;
pub mod queues;
pub mod stack;
pub mod tls_front;
pub mod tokens;
