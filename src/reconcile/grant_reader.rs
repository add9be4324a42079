//! Which grant-state reader a run reads the group grants of the managed repositories with,
//! and why (`bitbucket.grant_reader`).
//!
//! - `GET /1.0/group-privileges/{ws}` is one request for the whole workspace, but Bitbucket
//!   embeds each group's members in every row, and the rows cover every repository, managed
//!   or not: the largest answer of a run (1.7 GB at 100k people, 2k groups, 20k repositories).
//! - `GET /2.0/repositories/{ws}/{repo}/permissions-config/groups` is one small page per
//!   managed repository (pagelen 100; more pages only for a repository with more than 100
//!   group grants), each a request from the credential's hourly budget.
//!
//! `auto` compares the two in requests (see [`Estimate`]) and, when the reader it chose is
//! refused (403, 404, 405: an endpoint switched off for the workspace, or a credential that
//! may not use it), reads through the other one. Both are complete reads or errors: falling
//! back never turns a failed read into a partial one.

use crate::bitbucket::{
    ApiError, ApiFamily, Client, Clients, GrantState, GroupGrants, PermissionsConfigGrants,
    V1GroupPrivileges,
};
use crate::config::{Config, GrantReader};
use crate::model::{GroupSlug, RepoSlug};
use crate::plan::ActualGroup;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A reader, as the reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reader {
    V1GroupPrivileges,
    V2PermissionsConfig,
}

impl Reader {
    fn family(self) -> ApiFamily {
        match self {
            Reader::V1GroupPrivileges => ApiFamily::GroupPrivilegesRead,
            Reader::V2PermissionsConfig => ApiFamily::PermissionsRead,
        }
    }

    fn other(self) -> Reader {
        match self {
            Reader::V1GroupPrivileges => Reader::V2PermissionsConfig,
            Reader::V2PermissionsConfig => Reader::V1GroupPrivileges,
        }
    }
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reader::V1GroupPrivileges => "1.0 group-privileges",
            Reader::V2PermissionsConfig => "2.0 permissions-config",
        })
    }
}

/// Why the reader was used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// `bitbucket.grant_reader` names it.
    Configured,
    /// `auto`: the cheaper one by the [`Estimate`].
    Cheaper,
    /// `auto`: the credential serving the other one cannot make its calls (an access token).
    OnlyPossible,
    /// `auto`: the other one was refused with `status`; this one read instead.
    Refused { status: u16, message: String },
}

/// What `auto` compares, in requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub managed_repositories: usize,
    /// The 2.0 reader's requests: one page per managed repository.
    pub v2_requests: u64,
    /// The 1.0 listing's estimated size: every group once, with its members embedded
    /// ([`ROW_BYTES`] a row, [`MEMBER_BYTES`] a member). A group with several grants
    /// appears once per grant, and groups with none not at all: this is the listing of a
    /// workspace whose every group holds one grant, usually less than the real one.
    pub v1_bytes: u64,
    /// The 1.0 listing's cost in requests: 1, plus 1 per [`BYTES_PER_REQUEST`] of its body.
    pub v1_requests: u64,
    /// The most 2.0 requests `auto` spends on grants per run: a quarter of what the request
    /// budget (`apply.requests_per_hour`) allows between two runs (`daemon.interval_secs`).
    pub v2_limit: u64,
}

/// An embedded 1.0 user object (`display_name, account_id, uuid, nickname, is_active,
/// is_team, avatar, resource_uri`): about 350 bytes as Bitbucket writes it.
pub const MEMBER_BYTES: u64 = 350;

/// The rest of a 1.0 group-privileges row (`repo`, `privilege`, the group's name and slug,
/// two owner objects, the repository object): about 700 bytes.
pub const ROW_BYTES: u64 = 700;

/// What one request is worth in body: a round trip to Bitbucket (0.1 to 0.3 s) is about the
/// time a MiB takes to arrive and be decoded; each request also spends the hourly budget,
/// which bytes do not.
pub const BYTES_PER_REQUEST: u64 = 1 << 20;

impl Estimate {
    pub fn new(
        managed_repositories: usize,
        groups: &BTreeMap<GroupSlug, ActualGroup>,
        requests_per_hour: u32,
        interval: Duration,
    ) -> Estimate {
        let members: u64 = groups.values().map(|g| g.members.len() as u64).sum();
        let v1_bytes = groups.len() as u64 * ROW_BYTES + members * MEMBER_BYTES;
        let between_runs = u64::from(requests_per_hour).saturating_mul(interval.as_secs()) / 3600;
        Estimate {
            managed_repositories,
            v2_requests: managed_repositories as u64,
            v1_bytes,
            v1_requests: 1 + v1_bytes / BYTES_PER_REQUEST,
            v2_limit: between_runs / 4,
        }
    }

    /// The reader that costs less: 2.0 when its requests are fewer than the 1.0 listing's
    /// and within the budget's share; 1.0 otherwise (one request, whatever the body).
    pub fn cheaper(&self) -> Reader {
        if self.v2_requests < self.v1_requests && self.v2_requests <= self.v2_limit {
            Reader::V2PermissionsConfig
        } else {
            Reader::V1GroupPrivileges
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} managed repositories cost 2.0 {} request(s); the 1.0 listing is estimated at {:.1} MB (every group once with its members), worth {} request(s){}",
            self.managed_repositories,
            self.v2_requests,
            self.v1_bytes as f64 / 1e6,
            self.v1_requests,
            if self.v2_requests > self.v2_limit {
                format!(
                    "; 2.0 may spend at most {} request(s) a run (a quarter of the budget between two runs)",
                    self.v2_limit
                )
            } else {
                String::new()
            }
        )
    }
}

/// How this run read the group grants (the plan header; `grant_reader` in the JSON report).
#[derive(Clone, Debug, Serialize)]
pub struct GrantRead {
    pub reader: Reader,
    pub why: Why,
    /// The choice in words.
    pub detail: String,
    /// Requests the grant read sent, retries and a refused attempt of the other reader
    /// included.
    pub requests: u64,
    /// What `auto` compared (`None` when the configuration chose).
    pub estimate: Option<Estimate>,
}

impl fmt::Display for GrantRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read through {} ({} request(s)): {}",
            self.reader, self.requests, self.detail
        )
    }
}

/// Statuses that mean "this reader is not for this workspace or this credential": the 1.0
/// listing switched off (405, or 404 for an endpoint Bitbucket retired), or a credential that
/// may not make the call (403). Anything else (a 5xx, a cut body, a spent budget) fails the
/// read: the other reader would not make it more complete.
fn is_refusal(e: &ApiError) -> bool {
    matches!(e.status(), Some(403..=405))
}

/// Why the credential serving `reader` can never make its calls, known before any (the
/// sheet: access tokens list no permissions).
fn cannot(clients: &Clients, reader: Reader) -> Option<String> {
    let family = reader.family();
    let kind = clients.kind(family);
    family.known_refusal(kind).map(|why| {
        format!(
            "credential {:?} ({kind}) serves {}: {why}",
            clients.credential(family),
            family.key()
        )
    })
}

/// One read through `reader`, and the requests it sent.
async fn read_with(
    clients: &Clients,
    reader: Reader,
    repos: &[RepoSlug],
) -> (Result<GroupGrants, ApiError>, u64) {
    let client = clients.shared(reader.family());
    let before = client.request_count();
    let read = match reader {
        Reader::V1GroupPrivileges => V1GroupPrivileges(client.clone()).read(repos).await,
        Reader::V2PermissionsConfig => PermissionsConfigGrants(client.clone()).read(repos).await,
    };
    (read, requests_since(&client, before))
}

fn requests_since(client: &Client, before: u64) -> u64 {
    client.request_count().saturating_sub(before)
}

/// Reads the group grants on `repos` (the managed repositories) through the reader
/// `bitbucket.grant_reader` picks, given the groups already read (their sizes estimate the
/// 1.0 listing).
pub async fn read_grants(
    cfg: &Config,
    clients: &Clients,
    repos: &[RepoSlug],
    groups: &BTreeMap<GroupSlug, ActualGroup>,
) -> Result<(GroupGrants, GrantRead), ApiError> {
    let (first, why, detail, estimate) = match cfg.bitbucket.grant_reader {
        GrantReader::V1GroupPrivileges => (
            Reader::V1GroupPrivileges,
            Why::Configured,
            "bitbucket.grant_reader = \"v1_group_privileges\"".to_owned(),
            None,
        ),
        GrantReader::V2PermissionsConfig => (
            Reader::V2PermissionsConfig,
            Why::Configured,
            "bitbucket.grant_reader = \"v2_permissions_config\"".to_owned(),
            None,
        ),
        GrantReader::Auto => {
            let e = Estimate::new(
                repos.len(),
                groups,
                cfg.apply.requests_per_hour,
                cfg.interval,
            );
            let cheaper = e.cheaper();
            let (reader, why, detail) = match cannot(clients, cheaper) {
                Some(reason) => (
                    cheaper.other(),
                    Why::OnlyPossible,
                    format!("auto: {} would be cheaper, but {reason}", cheaper),
                ),
                None => (cheaper, Why::Cheaper, format!("auto: {}", e.describe())),
            };
            (reader, why, detail, Some(e))
        }
    };
    let (read, mut requests) = read_with(clients, first, repos).await;
    let refused = match read {
        Ok(grants) => {
            let done = GrantRead {
                reader: first,
                why,
                detail,
                requests,
                estimate,
            };
            tracing::info!(reader = %done.reader, requests = done.requests, why = %done.detail, "group grants read");
            return Ok((grants, done));
        }
        Err(e) if is_refusal(&e) => e,
        Err(e) => return Err(e),
    };
    let second = first.other();
    let no_fallback = match cfg.bitbucket.grant_reader {
        GrantReader::Auto => cannot(clients, second).map(|reason| {
            format!(
                "{reason}; serve it with a credential that can (bitbucket.families.{})",
                second.family().key()
            )
        }),
        configured => Some(format!(
            "bitbucket.grant_reader = \"{}\" allows no other reader; \"auto\" reads through {second} when {first} is refused",
            configured.key()
        )),
    };
    if let Some(why) = no_fallback {
        return Err(ApiError::GrantReadRefused {
            refused: Box::new(refused),
            why: format!("{second} cannot replace it: {why}"),
        });
    }
    tracing::warn!(error = %refused, reader = %second, "the grant reader was refused; reading through the other one");
    let (read, more) = read_with(clients, second, repos).await;
    requests += more;
    let grants = read?;
    let done = GrantRead {
        reader: second,
        why: Why::Refused {
            status: refused.status().unwrap_or_default(),
            message: refused.to_string(),
        },
        detail: format!("auto: {first} was refused ({refused})"),
        requests,
        estimate,
    };
    tracing::info!(reader = %done.reader, requests = done.requests, why = %done.detail, "group grants read");
    Ok((grants, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;
    use crate::plan::ActualMember;

    fn groups(sizes: &[usize]) -> BTreeMap<GroupSlug, ActualGroup> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let members = (0..*n)
                    .map(|m| {
                        let id = crate::model::synthetic_account_id(&format!("g{i}m{m}"));
                        (
                            AccountId::parse(&id).expect("well-formed"),
                            ActualMember {
                                display_name: String::new(),
                            },
                        )
                    })
                    .collect();
                (
                    GroupSlug::from_name(&format!("g{i}")),
                    ActualGroup {
                        name: format!("g{i}"),
                        members,
                    },
                )
            })
            .collect()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_few_repositories_are_read_through_2_0_when_the_groups_are_large() {
        // 6,000 memberships: a 1.0 listing of at least 2.1 MB, worth 3 requests.
        let g = groups(&[3000, 3000]);
        let e = Estimate::new(2, &g, 900, HOUR);
        assert_eq!(e.v1_bytes, 2 * ROW_BYTES + 6000 * MEMBER_BYTES);
        assert_eq!(e.v1_requests, 3);
        assert_eq!(e.cheaper(), Reader::V2PermissionsConfig);
        assert_eq!(
            Estimate::new(3, &g, 900, HOUR).cheaper(),
            Reader::V1GroupPrivileges
        );
        // Small groups: one request of 1.0 beats any 2.0 read but an empty one.
        let small = groups(&[20, 20, 20]);
        assert_eq!(
            Estimate::new(1, &small, 900, HOUR).cheaper(),
            Reader::V1GroupPrivileges
        );
        assert_eq!(
            Estimate::new(0, &small, 900, HOUR).cheaper(),
            Reader::V2PermissionsConfig
        );
    }

    #[test]
    fn the_budget_caps_what_2_0_may_spend_between_two_runs() {
        // 60,000 memberships: a 21 MB listing, worth 21 requests; at 900 an hour and a run
        // every 5 minutes, 2.0 may spend 18 a run.
        let big = groups(&[60_000]);
        let e = Estimate::new(18, &big, 900, Duration::from_secs(300));
        assert_eq!(e.v2_limit, 18);
        assert_eq!(e.cheaper(), Reader::V2PermissionsConfig);
        let e = Estimate::new(19, &big, 900, Duration::from_secs(300));
        assert_eq!(e.cheaper(), Reader::V1GroupPrivileges);
        assert!(
            e.describe().contains("at most 18 request(s) a run"),
            "{}",
            e.describe()
        );
    }
}
