//! The Atlassian Admin API membership backend (organisation-managed workspaces,
//! shared/bitbucket-api.md section 5): groups found by name in the organisation's directory,
//! memberships read in one cursor-paged users search for every managed group (there is no
//! "members of a group" listing), added and removed by account id. Requests go through the
//! org API key's own [`Client`], so its budget, retries and 429 handling are the same as for
//! every Bitbucket credential.

use super::membership::{BoxFuture, MembershipBackend, WriteError};
use super::{expect, ApiError, ApiFamily, Body, Client, V1Groups, Written};
use crate::model::{AccountId, GroupSlug};
use crate::plan::{ActualGroup, ActualMember, OrgStatus, OrgUser};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Records asked for per page (the Admin API's largest page).
const PAGE_LIMIT: u64 = 100;
/// Group ids (or names) sent in one search body.
const IDS_PER_SEARCH: usize = 100;
/// A paged read longer than this is taken for a loop, not for a directory.
const MAX_PAGES: usize = 100_000;

/// `{data: [...], links: {next?}}`.
#[derive(Deserialize)]
struct AdminPage<T> {
    data: Vec<T>,
    #[serde(default)]
    links: Links,
}

#[derive(Deserialize, Default)]
struct Links {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct AdminGroup {
    id: String,
    name: String,
}

/// A user of the users search; `accountId` (v2), `account_id` (older models) accepted.
#[derive(Deserialize)]
struct AdminUser {
    #[serde(alias = "account_id", rename = "accountId")]
    account_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// Present when the search asked for `expand: ["groups"]`.
    #[serde(default)]
    groups: Option<Vec<GroupRef>>,
    /// `active`, `suspended` or `no_membership` (the directory membership).
    #[serde(default, rename = "membershipStatus")]
    membership_status: Option<String>,
}

/// A user's group: an object with its id, or the bare id.
#[derive(Deserialize)]
#[serde(untagged)]
enum GroupRef {
    Object {
        #[serde(alias = "groupId")]
        id: String,
    },
    Id(String),
}

impl GroupRef {
    fn id(&self) -> &str {
        match self {
            GroupRef::Object { id } | GroupRef::Id(id) => id,
        }
    }
}

/// The cursor to send back: v2 gives it bare, v1 as a URL carrying `cursor=`.
fn cursor_of(next: &str) -> String {
    url::Url::parse(next)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| next.to_owned())
}

/// The Admin API's groups and memberships, for one organisation directory.
pub struct AdminApi {
    client: Arc<Client>,
    org: String,
    directory: String,
    /// The managed groups' names (the config's group rules), by the slug Bitbucket shows.
    names: BTreeMap<GroupSlug, String>,
    /// slug -> directory group id, from the last search or create.
    ids: std::sync::Mutex<HashMap<GroupSlug, String>>,
    /// Who is a workspace member (people the plan adds): the 2.0 member lookups of
    /// [`V1Groups`], which the Admin API has no cheaper answer for.
    lookup: Arc<V1Groups>,
}

impl AdminApi {
    pub fn new(
        client: Arc<Client>,
        org: String,
        directory: String,
        names: impl IntoIterator<Item = String>,
        lookup: Arc<V1Groups>,
    ) -> AdminApi {
        AdminApi {
            client,
            org,
            directory,
            names: names
                .into_iter()
                .map(|n| (GroupSlug::from_name(&n), n))
                .collect(),
            ids: std::sync::Mutex::new(HashMap::new()),
            lookup,
        }
    }

    fn dir_url(&self, rest: &[&str]) -> String {
        let mut segments = vec!["v2", "orgs", &self.org, "directories", &self.directory];
        segments.extend_from_slice(rest);
        self.client.url(&segments)
    }

    /// Every page of a POST search, the cursor sent back in the body.
    async fn search<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        mut body: serde_json::Map<String, Value>,
    ) -> Result<Vec<T>, ApiError> {
        let url = self.dir_url(&[what, "search"]);
        body.insert("limit".into(), json!(PAGE_LIMIT));
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for _ in 0..MAX_PAGES {
            let sent = Value::Object(body.clone());
            let answer = self
                .client
                .send_expecting(Method::POST, &url, Body::Json(&sent), expect::object)
                .await?
                .ok()?;
            let page: AdminPage<T> = answer.json()?;
            out.extend(page.data);
            let Some(next) = page.links.next.filter(|n| !n.is_empty()) else {
                return Ok(out);
            };
            let cursor = cursor_of(&next);
            if !seen.insert(cursor.clone()) {
                return Err(ApiError::Paging {
                    endpoint: url,
                    next: "(cursor)".into(),
                    why: "repeats a cursor already followed",
                });
            }
            body.insert("cursor".into(), Value::String(cursor));
        }
        Err(ApiError::Paging {
            endpoint: url,
            next: "(cursor)".into(),
            why: "goes on past the page limit",
        })
    }

    /// The directory groups of `names`, found by name (exact, case-insensitive).
    async fn find_groups(&self, names: &[String]) -> Result<Vec<AdminGroup>, ApiError> {
        let mut found = Vec::new();
        for chunk in names.chunks(IDS_PER_SEARCH) {
            let mut body = serde_json::Map::new();
            body.insert("groupNames".into(), json!(chunk));
            found.extend(self.search::<AdminGroup>("groups", body).await?);
        }
        if let Ok(mut ids) = self.ids.lock() {
            for g in &found {
                ids.insert(GroupSlug::from_name(&g.name), g.id.clone());
            }
        }
        Ok(found)
    }

    /// (email, account id) of the directory users with these emails (`users/search` with
    /// `emails`; only the asked addresses are believed).
    pub async fn users_by_email(
        &self,
        emails: &[String],
    ) -> Result<Vec<(String, String)>, ApiError> {
        let asked: BTreeSet<String> = emails
            .iter()
            .map(|e| crate::model::Email::new(e).folded().to_owned())
            .collect();
        let mut out = Vec::new();
        for chunk in emails.chunks(IDS_PER_SEARCH) {
            let mut body = serde_json::Map::new();
            body.insert("emails".into(), json!(chunk));
            for u in self.search::<AdminUser>("users", body).await? {
                if let Some(email) = u
                    .email
                    .filter(|e| asked.contains(crate::model::Email::new(e).folded()))
                {
                    out.push((email, u.account_id));
                }
            }
        }
        Ok(out)
    }

    /// Where each of `ids` stands in the organisation directory (`users/search` with
    /// `accountIds`, 100 a request). Someone the search does not return is not in the
    /// directory; a status this does not know (or none) leaves the person out, so nothing is
    /// planned for them.
    pub async fn org_users(
        &self,
        ids: &[AccountId],
    ) -> Result<BTreeMap<AccountId, OrgUser>, ApiError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(IDS_PER_SEARCH) {
            let asked: Vec<&str> = chunk.iter().map(AccountId::as_str).collect();
            let mut body = serde_json::Map::new();
            body.insert("accountIds".into(), json!(asked));
            let mut seen = BTreeSet::new();
            for u in self.search::<AdminUser>("users", body).await? {
                let Some(id) = chunk.iter().find(|a| a.as_str() == u.account_id) else {
                    // Only the asked accounts are believed.
                    continue;
                };
                seen.insert(id.clone());
                let status = match u.membership_status.as_deref() {
                    Some("active") => OrgStatus::Active,
                    Some("suspended") => OrgStatus::Suspended,
                    Some("no_membership") => OrgStatus::NoMembership,
                    other => {
                        tracing::warn!(account_id = %id, status = ?other, "unknown organisation membership status; this person's suspension is left as it is");
                        continue;
                    }
                };
                out.insert(
                    id.clone(),
                    OrgUser {
                        status,
                        name: u.name.unwrap_or_default(),
                    },
                );
            }
            for id in chunk.iter().filter(|a| !seen.contains(*a)) {
                out.insert(
                    id.clone(),
                    OrgUser {
                        status: OrgStatus::NoMembership,
                        name: String::new(),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Suspends (`suspend`) or restores (`restore`) someone's access in the directory.
    pub async fn set_suspended(
        &self,
        who: &AccountId,
        suspend: bool,
    ) -> Result<Written, WriteError> {
        let verb = if suspend { "suspend" } else { "restore" };
        let answer = self
            .client
            .send_expecting(
                Method::POST,
                &self.dir_url(&["users", who.as_str(), verb]),
                Body::None,
                expect::no_content,
            )
            .await?;
        match answer.status {
            s if s.is_success() => Ok(Written::Done),
            // Already so.
            StatusCode::CONFLICT => Ok(Written::AlreadyDone),
            _ => Err(answer.error().into()),
        }
    }

    /// How many of `names` the organisation directory holds (the detection's signal).
    pub async fn find_by_names(&self, names: &[String]) -> Result<usize, ApiError> {
        Ok(self.find_groups(names).await?.len())
    }

    /// The directory id of a managed group, searched for when not known yet.
    async fn group_id(&self, slug: &GroupSlug) -> Result<String, ApiError> {
        if let Some(id) = self.ids.lock().ok().and_then(|m| m.get(slug).cloned()) {
            return Ok(id);
        }
        let name = self
            .names
            .get(slug)
            .cloned()
            .unwrap_or_else(|| slug.as_str().to_owned());
        self.find_groups(&[name]).await?;
        self.ids
            .lock()
            .ok()
            .and_then(|m| m.get(slug).cloned())
            .ok_or_else(|| ApiError::Decode {
                method: "POST".into(),
                endpoint: self.dir_url(&["groups", "search"]),
                detail: format!("no group named like {slug:?} in the organisation directory"),
            })
    }

    /// Groups and members, every managed group in one paged users search.
    async fn read(&self) -> Result<BTreeMap<GroupSlug, ActualGroup>, ApiError> {
        let names: Vec<String> = self.names.values().cloned().collect();
        let groups = self.find_groups(&names).await?;
        let by_id: HashMap<&str, GroupSlug> = groups
            .iter()
            .map(|g| (g.id.as_str(), GroupSlug::from_name(&g.name)))
            .collect();
        let mut out: BTreeMap<GroupSlug, ActualGroup> = groups
            .iter()
            .map(|g| {
                (
                    GroupSlug::from_name(&g.name),
                    ActualGroup {
                        name: g.name.clone(),
                        members: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        for chunk in ids.chunks(IDS_PER_SEARCH) {
            let mut body = serde_json::Map::new();
            body.insert("groupIds".into(), json!(chunk));
            body.insert("expand".into(), json!(["groups"]));
            for user in self.search::<AdminUser>("users", body).await? {
                let Some(user_groups) = &user.groups else {
                    // Without the groups a user is in, the page cannot say whose member
                    // they are: nothing is guessed.
                    return Err(ApiError::Decode {
                        method: "POST".into(),
                        endpoint: self.dir_url(&["users", "search"]),
                        detail: "a user without the \"groups\" asked for by expand".into(),
                    });
                };
                let Ok(id) = AccountId::parse(&user.account_id) else {
                    tracing::warn!(
                        account = user.account_id,
                        "directory user without a usable account id; left untouched"
                    );
                    continue;
                };
                for g in user_groups {
                    if let Some(group) = by_id.get(g.id()).and_then(|s| out.get_mut(s)) {
                        group.members.insert(
                            id.clone(),
                            ActualMember {
                                display_name: user.name.clone().unwrap_or_default(),
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, slug: &GroupSlug, name: &str) -> Result<Written, ApiError> {
        let body = json!({ "name": name });
        let answer = self
            .client
            .send_expecting(
                Method::POST,
                &self.dir_url(&["groups"]),
                Body::Json(&body),
                expect::any,
            )
            .await?;
        match answer.status {
            s if s.is_success() => {
                if let Ok(g) = answer.json::<AdminGroup>() {
                    if let Ok(mut ids) = self.ids.lock() {
                        ids.insert(slug.clone(), g.id);
                    }
                }
                Ok(Written::Done)
            }
            // "Already there" is done, once the search finds it.
            StatusCode::CONFLICT => {
                self.group_id(slug).await?;
                Ok(Written::AlreadyDone)
            }
            _ => Err(answer.error()),
        }
    }

    async fn add(&self, group: &GroupSlug, who: &AccountId) -> Result<Written, WriteError> {
        let id = self.group_id(group).await?;
        let body = json!({ "accountId": who.as_str() });
        let answer = self
            .client
            .send_expecting(
                Method::POST,
                &self.dir_url(&["groups", &id, "memberships"]),
                Body::Json(&body),
                expect::any,
            )
            .await?;
        match answer.status {
            s if s.is_success() => Ok(Written::Done),
            // A re-add: the membership is there.
            StatusCode::CONFLICT => Ok(Written::AlreadyDone),
            _ => Err(answer.error().into()),
        }
    }

    async fn remove(&self, group: &GroupSlug, who: &AccountId) -> Result<Written, WriteError> {
        let id = self.group_id(group).await?;
        let answer = self
            .client
            .send_expecting(
                Method::DELETE,
                &self.dir_url(&["groups", &id, "memberships", who.as_str()]),
                Body::None,
                expect::no_content,
            )
            .await?;
        match answer.status {
            s if s.is_success() => Ok(Written::Done),
            // Not a member (any more): the group exists (its id was just found).
            StatusCode::NOT_FOUND => Ok(Written::AlreadyDone),
            _ => Err(answer.error().into()),
        }
    }
}

impl MembershipBackend for AdminApi {
    fn name(&self) -> &'static str {
        "Admin API"
    }

    fn write_family(&self) -> ApiFamily {
        ApiFamily::AdminApi
    }

    fn read_groups(&self) -> BoxFuture<'_, Result<BTreeMap<GroupSlug, ActualGroup>, ApiError>> {
        Box::pin(self.read())
    }

    fn create_group<'a>(
        &'a self,
        slug: &'a GroupSlug,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Written, WriteError>> {
        Box::pin(async move { Ok(self.create(slug, name).await?) })
    }

    fn add_member<'a>(
        &'a self,
        group: &'a GroupSlug,
        who: &'a AccountId,
    ) -> BoxFuture<'a, Result<Written, WriteError>> {
        Box::pin(self.add(group, who))
    }

    fn remove_member<'a>(
        &'a self,
        group: &'a GroupSlug,
        who: &'a AccountId,
    ) -> BoxFuture<'a, Result<Written, WriteError>> {
        Box::pin(self.remove(group, who))
    }

    fn not_members<'a>(
        &'a self,
        ids: &'a [AccountId],
    ) -> BoxFuture<'a, Result<BTreeSet<AccountId>, ApiError>> {
        self.lookup.not_members(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_taken_bare_or_out_of_a_next_url() {
        assert_eq!(cursor_of("abc=="), "abc==");
        assert_eq!(
            cursor_of("https://api.atlassian.com/admin/v1/orgs/o/users?cursor=xyz%3D&limit=2"),
            "xyz="
        );
    }

    #[test]
    fn users_name_their_groups_as_objects_or_ids() {
        let u: AdminUser = serde_json::from_str(
            r#"{"accountId":"a","groups":[{"id":"g1","name":"x"},"g2",{"groupId":"g3"}]}"#,
        )
        .expect("user");
        let ids: Vec<&str> = u.groups.iter().flatten().map(GroupRef::id).collect();
        assert_eq!(ids, ["g1", "g2", "g3"]);
        let old: AdminUser = serde_json::from_str(r#"{"account_id":"b"}"#).expect("v1 user");
        assert_eq!(old.account_id, "b");
        assert!(old.groups.is_none());
    }
}
