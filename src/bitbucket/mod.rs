//! Bitbucket Cloud client: 1.0 groups and group-privileges, 2.0 repositories, members and
//! permissions-config. See shared/bitbucket-api.md for the behaviour this follows.

mod admin;
mod api;
pub mod budget;
mod client;
mod clients;
pub mod detect;
pub mod dto;
pub mod grants;
pub mod membership;
pub mod metrics;
pub mod retry;
pub mod skim;

pub use crate::family::{ApiFamily, CredentialKind};
pub use admin::AdminApi;
pub use api::{Principal, PrincipalKind, Target, Written};
pub use budget::{Budget, BudgetSettings, BudgetStatus, Spent};
pub use client::{each_in_array, expect, Answer, ApiError, Body, Client, ClientOptions, Expect};
pub use clients::{Clients, ADMIN_CREDENTIAL};
pub use grants::{GrantState, GroupGrants, PermissionsConfigGrants, V1GroupPrivileges};
pub use membership::{MembershipBackend, V1Groups, WriteError};
pub use retry::RetryPolicy;
