//! The membership seam: reading a workspace's groups with their members and writing
//! memberships, by account id and group slug only. The plan and the applier's loop speak to
//! [`MembershipBackend`]; how a backend names people in its own API stays inside it (1.0
//! groups want the member's `{uuid}` in the path, resolved here at apply time). The Atlassian
//! Admin API backend for organisation-managed workspaces plugs in beside [`V1Groups`].

use super::{ApiError, ApiFamily, Client, Written};
use crate::model::{AccountId, BbUuid, GroupSlug};
use crate::plan::{ActualGroup, ActualMember};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future: keeps the seams object-safe (`&dyn MembershipBackend`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a membership write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The person is not a member of the workspace: the backend cannot name them.
    #[error("not a member of the workspace")]
    NotInWorkspace,
    /// The workspace members, needed to name the person, could not be read.
    #[error("cannot read the workspace members to find the person: {0}")]
    MembersUnreadable(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Groups and memberships of one workspace.
pub trait MembershipBackend: Send + Sync {
    /// For logs and plans: `1.0 groups`, `Admin API`.
    fn name(&self) -> &'static str;
    /// The family whose credential performs the writes.
    fn write_family(&self) -> ApiFamily;
    /// Every group with its members by account id (members without a usable account id
    /// cannot match anyone in the directory and are left out: they are never touched).
    fn read_groups(&self) -> BoxFuture<'_, Result<BTreeMap<GroupSlug, ActualGroup>, ApiError>>;
    /// Creates a group; an existing one counts as done.
    fn create_group<'a>(
        &'a self,
        slug: &'a GroupSlug,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Written, WriteError>>;
    fn add_member<'a>(
        &'a self,
        group: &'a GroupSlug,
        who: &'a AccountId,
    ) -> BoxFuture<'a, Result<Written, WriteError>>;
    fn remove_member<'a>(
        &'a self,
        group: &'a GroupSlug,
        who: &'a AccountId,
    ) -> BoxFuture<'a, Result<Written, WriteError>>;
    /// Which of `ids` cannot be added because they are not members of the workspace.
    fn not_members<'a>(
        &'a self,
        ids: &'a [AccountId],
    ) -> BoxFuture<'a, Result<BTreeSet<AccountId>, ApiError>>;
}

/// How long a failed member listing is believed before it is read again.
const LISTING_RETRY: std::time::Duration = std::time::Duration::from_secs(20);

enum Listing {
    Read,
    Failed(String, tokio::time::Instant),
}

/// Bitbucket's 1.0 groups API (classic workspaces).
pub struct V1Groups {
    read: Arc<Client>,
    write: Arc<Client>,
    members: Arc<Client>,
    /// account id -> UUID: from the group read, then (once, when an add needs someone who is
    /// in no group yet) from the workspace member listing.
    uuids: std::sync::Mutex<HashMap<AccountId, BbUuid>>,
    /// The member listing, read once per backend when it succeeds. A failure is kept for
    /// [`LISTING_RETRY`] only: a broken listing is not one request per add, and one bad answer
    /// does not block every membership change for the rest of the run either.
    listing: tokio::sync::Mutex<Option<Listing>>,
}

impl V1Groups {
    /// `read` serves groups_read, `write` groups_write, `members` members_read.
    pub fn new(read: Arc<Client>, write: Arc<Client>, members: Arc<Client>) -> V1Groups {
        V1Groups {
            read,
            write,
            members,
            uuids: std::sync::Mutex::new(HashMap::new()),
            listing: tokio::sync::Mutex::new(None),
        }
    }

    fn known_uuid(&self, who: &AccountId) -> Option<BbUuid> {
        self.uuids.lock().ok()?.get(who).cloned()
    }

    fn learn(&self, pairs: impl IntoIterator<Item = (AccountId, BbUuid)>) {
        if let Ok(mut m) = self.uuids.lock() {
            m.extend(pairs);
        }
    }

    /// The UUID 1.0 wants for `who`, reading workspace members the first time someone unknown
    /// is asked for.
    async fn uuid(&self, who: &AccountId) -> Result<BbUuid, WriteError> {
        if let Some(u) = self.known_uuid(who) {
            return Ok(u);
        }
        match self.load_listing().await {
            Err(e) => Err(WriteError::MembersUnreadable(e)),
            Ok(()) => self.known_uuid(who).ok_or(WriteError::NotInWorkspace),
        }
    }
}

impl V1Groups {
    /// Reads the workspace members (for names 1.0 needs): once when it works, again after
    /// [`LISTING_RETRY`] when it failed.
    async fn load_listing(&self) -> Result<(), String> {
        let mut listing = self.listing.lock().await;
        match &*listing {
            Some(Listing::Read) => return Ok(()),
            Some(Listing::Failed(e, at)) if at.elapsed() < LISTING_RETRY => return Err(e.clone()),
            _ => {}
        }
        match self.members.list_members().await {
            Ok(members) => {
                self.learn(members.into_iter().filter_map(|m| {
                    let id = AccountId::parse(m.user.account_id.as_deref()?).ok()?;
                    Some((id, BbUuid::braced(m.user.uuid.as_deref()?)))
                }));
                *listing = Some(Listing::Read);
                Ok(())
            }
            Err(e) => {
                let e = e.to_string();
                *listing = Some(Listing::Failed(e.clone(), tokio::time::Instant::now()));
                Err(e)
            }
        }
    }
}

impl MembershipBackend for V1Groups {
    fn name(&self) -> &'static str {
        "1.0 groups"
    }

    fn write_family(&self) -> ApiFamily {
        ApiFamily::GroupsWrite
    }

    fn read_groups(&self) -> BoxFuture<'_, Result<BTreeMap<GroupSlug, ActualGroup>, ApiError>> {
        Box::pin(async move {
            let mut out = BTreeMap::new();
            let mut seen = Vec::new();
            for g in self.read.list_groups().await? {
                let mut members = BTreeMap::new();
                for u in g.members {
                    match (u.account_id.as_deref().map(AccountId::parse), u.uuid) {
                        (Some(Ok(id)), Some(uuid)) => {
                            seen.push((id.clone(), BbUuid::braced(&uuid)));
                            members.insert(
                                id,
                                ActualMember {
                                    display_name: u.display_name.unwrap_or_default(),
                                },
                            );
                        }
                        // Unknown identity: it cannot match anyone in the directory.
                        _ => {
                            tracing::warn!(group = g.slug, member = ?u.display_name, "group member without a usable account id; left untouched")
                        }
                    }
                }
                out.insert(
                    GroupSlug::from_name(&g.slug),
                    ActualGroup {
                        name: g.name,
                        members,
                    },
                );
            }
            self.learn(seen);
            Ok(out)
        })
    }

    fn create_group<'a>(
        &'a self,
        slug: &'a GroupSlug,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Written, WriteError>> {
        Box::pin(async move {
            match self.write.create_group(name).await {
                Ok(g) => {
                    if g.slug != slug.as_str() {
                        tracing::warn!(expected = %slug, got = g.slug, "Bitbucket generated an unexpected group slug");
                    }
                    Ok(Written::Done)
                }
                // "An existing name answers 400": a create that raced another one is done if
                // the group is there now. A 5xx or a timeout may have created it too (the
                // answer was lost on the way back): look before calling it failed.
                Err(e) if e.status() == Some(400) || e.may_have_been_processed() => {
                    match self.read.get_group(slug).await {
                        Ok(Some(_)) if e.status() == Some(400) => Ok(Written::AlreadyDone),
                        Ok(Some(_)) => {
                            tracing::warn!(group = %slug, error = %e, "the group create got no good answer, but the group exists: counting it created");
                            Ok(Written::Done)
                        }
                        // Nothing happened (an HTML page answered 200, a 5xx before the
                        // work): the create is sent once more, now that we know it is safe.
                        Ok(None) if e.may_have_been_processed() => {
                            tracing::warn!(group = %slug, error = %e, "the group create got no good answer and the group is not there: sending it once more");
                            match self.write.create_group(name).await {
                                Ok(_) => Ok(Written::Done),
                                // The first one landed late after all.
                                Err(e2) if e2.status() == Some(400) => {
                                    match self.read.get_group(slug).await {
                                        Ok(Some(_)) => Ok(Written::Done),
                                        _ => Err(e2.into()),
                                    }
                                }
                                Err(e2) => Err(e2.into()),
                            }
                        }
                        // A spent budget is the answer that matters: the work is deferred.
                        Err(lookup) if lookup.spent().is_some() => Err(lookup.into()),
                        Ok(None) | Err(_) => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn add_member<'a>(
        &'a self,
        group: &'a GroupSlug,
        who: &'a AccountId,
    ) -> BoxFuture<'a, Result<Written, WriteError>> {
        Box::pin(async move {
            let uuid = self.uuid(who).await?;
            Ok(self.write.add_member(group, &uuid).await?)
        })
    }

    fn remove_member<'a>(
        &'a self,
        group: &'a GroupSlug,
        who: &'a AccountId,
    ) -> BoxFuture<'a, Result<Written, WriteError>> {
        Box::pin(async move {
            let uuid = self.uuid(who).await?;
            Ok(self.write.remove_member(group, &uuid).await?)
        })
    }

    fn not_members<'a>(
        &'a self,
        ids: &'a [AccountId],
    ) -> BoxFuture<'a, Result<BTreeSet<AccountId>, ApiError>> {
        Box::pin(async move {
            let unknown: Vec<&AccountId> = ids
                .iter()
                .filter(|id| self.known_uuid(id).is_none())
                .collect();
            if unknown.is_empty() {
                return Ok(BTreeSet::new());
            }
            if let Err(e) = self.load_listing().await {
                return Err(ApiError::Decode {
                    method: "GET".into(),
                    endpoint: "/2.0/workspaces/{ws}/members".into(),
                    detail: format!("cannot read the workspace members: {e}"),
                });
            }
            Ok(unknown
                .into_iter()
                .filter(|id| self.known_uuid(id).is_none())
                .cloned()
                .collect())
        })
    }
}
