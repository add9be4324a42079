//! bbsync keeps Bitbucket Cloud group membership and repository access equal to what the
//! company directory says.
//!
//! The map, in the order a reconcile runs:
//! - [`config`]: TOML + environment -> validated [`config::Config`] (secrets redacted).
//! - [`source`]: directory sources (LDIF today) -> [`source::Directory`], failing closed.
//! - [`mapping`]: directory + rules -> [`mapping::Desired`] (pure).
//! - [`bitbucket`]: the HTTP client for 1.0 groups / group-privileges and 2.0 endpoints.
//! - [`plan`]: `plan(desired, actual, policy)` -> [`plan::Plan`] (pure, managed scope only).
//! - [`apply`]: runs a plan, records every outcome in the audit trail.
//! - [`reconcile`]: one whole run, glued together.
//! - [`check`]: proves what the configured credentials can do, family by family.
//! - [`report`]: human and JSON renderings of a run.
//! - [`demo`]: the self-contained demo (embedded emulator + sample directory).
//! - [`metrics`]: the Prometheus registry (kinds and outcomes as labels only).
//! - [`model`]: the newtypes everything above shares.

pub mod apply;
pub mod bitbucket;
pub mod check;
pub mod config;
pub mod demo;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod source;
pub mod time;
pub mod tls;
