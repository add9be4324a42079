//! One [`Client`] per configured credential, looked up by API family. Two families served by
//! the same credential share its client, so request counts (and, with the worker pool, the
//! rate budget) are per credential, as Bitbucket counts them.

use super::{
    ApiError, ApiFamily, Budget, BudgetSettings, BudgetStatus, Client, ClientOptions,
    CredentialKind, RetryPolicy,
};
use crate::config::Config;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name the org API key goes by in budgets, request counts and metrics (brackets: no
/// `[credentials.NAME]` can be called that).
pub const ADMIN_CREDENTIAL: &str = "[admin_api]";

pub struct Clients {
    by_name: BTreeMap<String, (CredentialKind, Arc<Client>)>,
    /// Indexed by [`ApiFamily::index`]: (credential name, client); [`ApiFamily::ALL`], then
    /// [`ApiFamily::AdminApi`].
    by_family: Vec<(String, CredentialKind, Arc<Client>)>,
}

impl Clients {
    /// Builds the clients; the config guarantees every family names a defined credential.
    pub fn new(cfg: &Config) -> Result<Clients, ApiError> {
        let mut by_name = BTreeMap::new();
        for (name, cred) in &cfg.credentials {
            let client = Client::new(
                ClientOptions {
                    api_url: cfg.bitbucket.api_url.clone(),
                    oauth_token_url: cfg.bitbucket.oauth_token_url.clone(),
                    workspace: cfg.bitbucket.workspace.clone(),
                    timeout: cfg.bitbucket.timeout,
                    retry: RetryPolicy::with_retries(cfg.bitbucket.max_retries),
                },
                cred,
            )?
            .with_budget(Arc::new(Budget::new(
                name,
                BudgetSettings {
                    requests_per_hour: cfg.apply.requests_per_hour,
                    burst: cfg.apply.burst,
                    max_wait: cfg.apply.max_wait,
                    ..BudgetSettings::default()
                },
            )));
            by_name.insert(name.clone(), (cred.kind(), Arc::new(client)));
        }
        // The org API key: a credential of its own, with its own budget (the Admin API
        // counts its requests apart from Bitbucket's).
        let admin = match &cfg.admin_api {
            Some(a) => {
                let client = Client::new(
                    ClientOptions {
                        api_url: a.url.clone(),
                        oauth_token_url: cfg.bitbucket.oauth_token_url.clone(),
                        workspace: cfg.bitbucket.workspace.clone(),
                        timeout: cfg.bitbucket.timeout,
                        retry: RetryPolicy::with_retries(cfg.bitbucket.max_retries),
                    },
                    &crate::config::Credential::AccessToken {
                        token: a.api_key.clone(),
                    },
                )?
                .with_budget(Arc::new(Budget::new(
                    ADMIN_CREDENTIAL,
                    BudgetSettings {
                        requests_per_hour: cfg.apply.requests_per_hour,
                        burst: cfg.apply.burst,
                        max_wait: cfg.apply.max_wait,
                        ..BudgetSettings::default()
                    },
                )));
                let client = Arc::new(client);
                by_name.insert(
                    ADMIN_CREDENTIAL.to_owned(),
                    (CredentialKind::AdminApiKey, Arc::clone(&client)),
                );
                Some(client)
            }
            None => None,
        };
        let mut by_family = Vec::with_capacity(ApiFamily::ALL.len());
        for f in ApiFamily::ALL {
            let found = cfg
                .bitbucket
                .families
                .get(&f)
                .and_then(|n| by_name.get(n).map(|(k, c)| (n.clone(), *k, Arc::clone(c))));
            match found {
                Some(entry) => by_family.push(entry),
                None => {
                    return Err(ApiError::NoCredential {
                        family: f.describe(),
                    })
                }
            }
        }
        // The Admin API's slot: the org key when configured; without `[admin_api]` nothing
        // is ever sent through it (no backend uses it), and it names the groups writer.
        let admin_entry = match admin {
            Some(c) => (ADMIN_CREDENTIAL.to_owned(), CredentialKind::AdminApiKey, c),
            None => by_family[ApiFamily::GroupsWrite.index()].clone(),
        };
        by_family.push(admin_entry);
        Ok(Clients { by_name, by_family })
    }

    /// The Admin API membership backend, when `[admin_api]` is configured; `lookup` answers
    /// who is a workspace member.
    pub fn admin_api(&self, cfg: &Config, lookup: Arc<super::V1Groups>) -> Option<super::AdminApi> {
        let a = cfg.admin_api.as_ref()?;
        Some(super::AdminApi::new(
            self.shared(ApiFamily::AdminApi),
            a.org_id.clone(),
            a.directory.clone(),
            cfg.groups.iter().map(|g| g.name.clone()),
            lookup,
        ))
    }

    pub fn get(&self, f: ApiFamily) -> &Client {
        &self.by_family[f.index()].2
    }

    /// The shared client serving `f` (the seams hold their clients).
    pub fn shared(&self, f: ApiFamily) -> Arc<Client> {
        Arc::clone(&self.by_family[f.index()].2)
    }

    /// The 1.0 groups membership backend, with the credentials of its three families.
    pub fn v1_groups(&self) -> super::V1Groups {
        super::V1Groups::new(
            self.shared(ApiFamily::GroupsRead),
            self.shared(ApiFamily::GroupsWrite),
            self.shared(ApiFamily::MembersRead),
        )
    }

    /// Name of the credential serving `f`.
    pub fn credential(&self, f: ApiFamily) -> &str {
        &self.by_family[f.index()].0
    }

    pub fn kind(&self, f: ApiFamily) -> CredentialKind {
        self.by_family[f.index()].1
    }

    /// Requests sent so far, per credential name.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.by_name
            .iter()
            .map(|(n, (_, c))| (n.clone(), c.request_count()))
            .collect()
    }

    /// Each credential's budget, by credential name.
    pub fn budgets(&self) -> Vec<BudgetStatus> {
        self.by_name
            .values()
            .map(|(_, c)| c.budget().status())
            .collect()
    }

    /// A new run: budgets spent by the last one may try again.
    pub fn new_run(&self) {
        for (_, c) in self.by_name.values() {
            c.budget().new_run();
        }
    }

    /// Distinct credentials, each with a stable index (for per-credential work queues).
    pub fn credential_index(&self, f: ApiFamily) -> usize {
        let name = self.credential(f);
        self.by_name.keys().position(|n| n == name).unwrap_or(0)
    }

    pub fn credential_count(&self) -> usize {
        self.by_name.len()
    }

    /// Attaches every client to `api` (each credential's client records its requests,
    /// latency and 429s there) and points the `rate_budget_remaining` gauge at these
    /// clients' budgets. Call it on every new `Clients` (start-up, each reload) with the same
    /// `Metrics::api` (the metrics module): the counters go on across reloads.
    /// Calling it again is harmless (a client keeps the first handles it was given).
    pub fn set_metrics(&self, api: super::metrics::ApiMetrics) {
        for (name, (_, c)) in &self.by_name {
            c.set_metrics(api.for_credential(name));
        }
        api.watch_budgets(
            self.by_name
                .iter()
                .map(|(name, (_, c))| (name.clone(), c.budget_weak()))
                .collect(),
        );
    }

    pub fn total_requests(&self) -> u64 {
        self.by_name.values().map(|(_, c)| c.request_count()).sum()
    }
}
