//! Email -> account id for HR records that carry only an email: the workspace members query
//! (`q=user.email IN (...)`, at most 90 addresses a request), then, for the addresses it did
//! not find and when `[admin_api]` is configured, the organisation directory's users search
//! (`{"emails": [...]}`); the answers cached in the state
//! directory for `source.identity_cache_ttl_secs`, so a steady run asks only about people it
//! has not resolved lately. Addresses the query does not find are remembered for at most an
//! hour (a company-wide HR list with many non-members would otherwise spend N/90 requests of
//! the hourly budget on every run), so a person invited this morning resolves within the hour.

use crate::bitbucket::Client;
use crate::model::Email;
use crate::source::hr::EmailResolver;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CACHE_FILE: &str = "identity-cache.json";

pub struct MembersByEmail {
    /// The members query (`source.resolve_by_members`); `None`: not asked.
    client: Option<std::sync::Arc<Client>>,
    /// The organisation's users search, asked about what the members query did not find.
    org: Option<crate::bitbucket::AdminApi>,
    /// The cache file; `None` without a state directory (every run asks).
    cache: Option<PathBuf>,
    ttl: Duration,
}

#[derive(Default, Serialize, Deserialize)]
struct Cache {
    /// Folded email -> (account id, unix seconds it was found).
    found: BTreeMap<String, (String, u64)>,
    /// Folded email -> unix seconds it was last asked about and not found.
    #[serde(default)]
    missing: BTreeMap<String, u64>,
}

/// How long an address the query did not find is not asked about again.
const MISSING_TTL: Duration = Duration::from_secs(3600);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for MembersByEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembersByEmail")
            .field("cache", &self.cache)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl MembersByEmail {
    pub fn new(
        client: Option<std::sync::Arc<Client>>,
        state_dir: Option<&std::path::Path>,
        ttl: Duration,
    ) -> Self {
        MembersByEmail {
            client,
            org: None,
            cache: state_dir.map(|d| d.join(CACHE_FILE)),
            ttl,
        }
    }

    /// Asks the organisation directory too, for what the members query did not find.
    pub fn with_org(mut self, org: Option<crate::bitbucket::AdminApi>) -> Self {
        self.org = org;
        self
    }

    /// The cache as saved; an unreadable one is started afresh (it only saves requests).
    fn load(&self) -> Cache {
        let Some(path) = &self.cache else {
            return Cache::default();
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "identity cache unreadable: every email is asked again");
                Cache::default()
            }),
            Err(_) => Cache::default(),
        }
    }

    fn save(&self, cache: &Cache) {
        let Some(path) = &self.cache else {
            return;
        };
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(cache)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the identity cache: the next run asks again");
        }
    }

    async fn lookup(&self, emails: &[String]) -> Result<Vec<(String, String)>, String> {
        let now = SystemTime::now();
        let mut cache = self.load();
        let fresh = |at: u64| unix(now).saturating_sub(at) < self.ttl.as_secs();
        let missing_ttl = MISSING_TTL.min(self.ttl).as_secs();
        let recently_missing = |at: u64| unix(now).saturating_sub(at) < missing_ttl;
        let mut out = Vec::new();
        let mut ask: Vec<String> = Vec::new();
        let mut asked: std::collections::BTreeSet<String> = Default::default();
        for e in emails {
            let key = Email::new(e).folded().to_owned();
            match cache.found.get(&key) {
                Some((id, at)) if fresh(*at) => out.push((e.clone(), id.clone())),
                _ if cache
                    .missing
                    .get(&key)
                    .is_some_and(|at| recently_missing(*at)) => {}
                _ => {
                    if asked.insert(key) {
                        ask.push(e.clone());
                    }
                }
            }
        }
        let cached = out.len();
        let mut found = 0;
        if !ask.is_empty() {
            let mut answer = match &self.client {
                Some(c) => c.members_by_email(&ask).await.map_err(|e| e.to_string())?,
                None => Vec::new(),
            };
            if let Some(org) = &self.org {
                let answered: std::collections::BTreeSet<String> = answer
                    .iter()
                    .map(|(e, _)| Email::new(e).folded().to_owned())
                    .collect();
                let rest: Vec<String> = ask
                    .iter()
                    .filter(|e| !answered.contains(Email::new(e).folded()))
                    .cloned()
                    .collect();
                if !rest.is_empty() {
                    let from_org = org.users_by_email(&rest).await.map_err(|e| e.to_string())?;
                    tracing::info!(
                        asked = rest.len(),
                        found = from_org.len(),
                        "HR emails the members query did not find, asked of the organisation directory"
                    );
                    answer.extend(from_org);
                }
            }
            found = answer.len();
            // Only what was asked is believed: an answer naming another address is ignored.
            let mut not_found = asked.clone();
            for (email, id) in answer {
                let key = Email::new(&email).folded().to_owned();
                if asked.contains(&key) {
                    not_found.remove(&key);
                    cache.missing.remove(&key);
                    cache.found.insert(key, (id.clone(), unix(now)));
                    out.push((email, id));
                }
            }
            for key in not_found {
                cache.missing.insert(key, unix(now));
            }
            cache.found.retain(|_, (_, at)| fresh(*at));
            cache.missing.retain(|_, at| recently_missing(*at));
            self.save(&cache);
        }
        tracing::info!(
            emails = emails.len(),
            cached,
            asked = ask.len(),
            found,
            "HR emails resolved through the workspace members"
        );
        Ok(out)
    }
}

impl EmailResolver for MembersByEmail {
    fn resolve<'a>(&'a self, emails: &'a [String]) -> crate::source::hr::Resolving<'a> {
        Box::pin(self.lookup(emails))
    }

    fn describe(&self) -> String {
        match (&self.client, &self.org) {
            (Some(_), Some(_)) => {
                "the workspace members query and the organisation directory".into()
            }
            (None, Some(_)) => "the organisation directory".into(),
            _ => "the workspace members query".into(),
        }
    }
}
