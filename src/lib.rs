//! bbsync keeps Bitbucket Cloud group membership and repository access equal to what the
//! company directory says.
//!
//! The modules form layers; a module uses only modules of its own layer or below, so the
//! graph of `crate::` imports has no cycle and no edge is imported by the core. Bottom to top:
//!
//! 1. **Vocabulary**, shared by everything above, importing nothing of the crate:
//!    - [`model`]: domain newtypes (account ids, slugs, keys, permissions, DNs).
//!    - [`secret`]: [`secret::Secret`], a value that never prints.
//!    - [`family`]: API families and credential kinds, with what the API sheet says of them.
//!    - [`time`], [`tls`]: timestamps and the TLS set-up both network edges share.
//! 2. **Settings**: [`config`]: TOML + environment -> validated, plain settings per section
//!    (secrets redacted). It builds no runtime object and imports no edge.
//! 3. **Core**, pure functions over plain data, no I/O:
//!    - [`directory`]: the directory snapshot (people, groups, skipped entries).
//!    - [`mapping`]: directory + rules -> [`mapping::Desired`].
//!    - [`plan`]: `plan(desired, actual, policy)` -> [`plan::Plan`] (managed scope only).
//! 4. **Edges**, each building its runtime objects from its settings:
//!    - [`source`]: LDIF and LDAP readers -> [`directory::Directory`], failing closed.
//!    - [`bitbucket`]: the HTTP client, its retry policy, and the membership and grant-state
//!      seams with their Bitbucket implementations.
//!    - [`apply`]: runs a plan through those seams; the audit trail.
//!    - [`state`]: what must survive a restart (when people went missing), written atomically.
//!    - [`lock`]: one writer per workspace (an exclusive `flock` in the state directory).
//! 5. **Orchestration**: [`reconcile`] (one whole run), [`daemon`] (runs on a schedule until
//!    stopped), [`review`] (plans written for review,
//!    approval of held revocations), [`check`] (what the credentials can do), [`report`] (human
//!    and JSON renderings), [`metrics`] (the Prometheus registry), [`demo`] (embedded emulator +
//!    sample directory).
//!
//! `main.rs` is the CLI only: it parses arguments and calls into the layers above.

pub mod apply;
pub mod bitbucket;
pub mod check;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod directory;
pub mod family;
pub mod lock;
pub mod mapping;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod review;
pub mod secret;
pub mod source;
pub mod state;
pub mod time;
pub mod tls;
