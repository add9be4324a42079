//! The membership seam: reading a workspace's groups with their members and writing
//! memberships, by account id and group slug only. The plan and the applier's loop speak to
//! [`MembershipBackend`]; how a backend names people in its own API stays inside it (1.0
//! groups want the member's `{uuid}` in the path, resolved here at apply time). The Atlassian
//! Admin API backend for organisation-managed workspaces plugs in beside [`V1Groups`].

use super::{ApiError, ApiFamily, Client, Written};
use crate::model::{AccountId, BbUuid, GroupSlug};
use crate::plan::{ActualGroup, ActualMember};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// The groups read so far, and the UUID of every member they named.
type GroupsRead = (BTreeMap<GroupSlug, ActualGroup>, Vec<(AccountId, BbUuid)>);

/// One 1.0 group of the listing into what the plan compares (members by account id).
fn fold_group((out, seen): &mut GroupsRead, g: super::dto::V1Group) {
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

/// How long a failed member listing is believed before it is read again.
const LISTING_RETRY: std::time::Duration = std::time::Duration::from_secs(20);

/// Single member lookups in flight at once (the apply pool's default lane width): each still
/// takes its permit from the credential's budget, so this bounds sockets, not the pace.
const LOOKUPS_AT_ONCE: usize = 4;

/// Up to this many people are always looked up singly, however few members the group read
/// named: how long the listing is cannot be known before reading it (a cursor-paged collection
/// need not say its `size`), and a workspace whose groups name few of its members may still
/// take 100 pages at 10,000 people. Wrong the other way (a workspace of one page) it costs at
/// most 9 requests more than the listing.
const SINGLE_LOOKUPS_AT_LEAST: usize = 10;

enum Listing {
    Read,
    Failed(String, tokio::time::Instant),
}

/// How the UUIDs of people the run has seen in no group are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// `GET /2.0/workspaces/{ws}/members/{account_id}` per person: one request each.
    Single,
    /// The paged `GET /2.0/workspaces/{ws}/members` listing, once: one request a page.
    Listing,
}

impl Lookup {
    /// By count: `unknown` people to find, `known` members already named (by the group read;
    /// all of them are on the listing, so it takes at least `known / page` pages, and at least
    /// one). Single lookups while they cannot cost more than those pages, or while they are
    /// [`SINGLE_LOOKUPS_AT_LEAST`] or fewer. Returns the choice and the listing's lower bound.
    fn choose(unknown: usize, known: usize) -> (Lookup, usize) {
        let pages = known.div_ceil(Client::MEMBERS_PAGE_LEN).max(1);
        let lookup = if unknown <= pages.max(SINGLE_LOOKUPS_AT_LEAST) {
            Lookup::Single
        } else {
            Lookup::Listing
        };
        (lookup, pages)
    }
}

/// Bitbucket's 1.0 groups API (classic workspaces).
pub struct V1Groups {
    read: Arc<Client>,
    write: Arc<Client>,
    members: Arc<Client>,
    /// account id -> UUID: from the group read, then (when an add needs someone who is in no
    /// group yet) from single member lookups or the workspace member listing.
    uuids: std::sync::Mutex<HashMap<AccountId, BbUuid>>,
    /// People a single lookup found not to be workspace members (404).
    absent: std::sync::Mutex<HashSet<AccountId>>,
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
            absent: std::sync::Mutex::new(HashSet::new()),
            listing: tokio::sync::Mutex::new(None),
        }
    }

    fn known_uuid(&self, who: &AccountId) -> Option<BbUuid> {
        self.uuids.lock().ok()?.get(who).cloned()
    }

    fn known_count(&self) -> usize {
        self.uuids.lock().map_or(0, |m| m.len())
    }

    pub(crate) fn learn(&self, pairs: impl IntoIterator<Item = (AccountId, BbUuid)>) {
        if let Ok(mut m) = self.uuids.lock() {
            m.extend(pairs);
        }
    }

    /// Notes people known not to be workspace members (a parked snapshot's, read back).
    pub(crate) fn learn_absent(&self, ids: impl IntoIterator<Item = AccountId>) {
        if let Ok(mut a) = self.absent.lock() {
            a.extend(ids);
        }
    }

    /// What this backend has learnt: account id -> UUID, and who is not a member.
    pub(crate) fn cache(&self) -> (Vec<(AccountId, BbUuid)>, Vec<AccountId>) {
        let uuids = self.uuids.lock().map_or_else(
            |_| Vec::new(),
            |m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        );
        let absent = self
            .absent
            .lock()
            .map_or_else(|_| Vec::new(), |a| a.iter().cloned().collect());
        (uuids, absent)
    }

    /// Whether `who`, whose UUID is not known, is known not to be a workspace member: a single
    /// lookup answered 404, or the listing was read and did not name them.
    fn known_absent(&self, who: &AccountId, listing_read: bool) -> bool {
        listing_read || self.absent.lock().is_ok_and(|a| a.contains(who))
    }

    async fn listing_read(&self) -> bool {
        matches!(&*self.listing.lock().await, Some(Listing::Read))
    }

    /// The UUID 1.0 wants for `who`, looking them up the first time someone unknown is asked
    /// for (the plan's [`MembershipBackend::not_members`] has usually found them already).
    async fn uuid(&self, who: &AccountId) -> Result<BbUuid, WriteError> {
        if let Some(u) = self.known_uuid(who) {
            return Ok(u);
        }
        self.find(std::slice::from_ref(who))
            .await
            .map_err(|e| WriteError::MembersUnreadable(e.to_string()))?;
        self.known_uuid(who).ok_or(WriteError::NotInWorkspace)
    }

    /// Finds the UUIDs of those of `ids` not known yet, singly or from the listing (chosen by
    /// count, see [`Lookup::choose`]); afterwards each of them is either known or known not to
    /// be a workspace member. Any failure but "not a member" is an error: nothing is guessed.
    async fn find(&self, ids: &[AccountId]) -> Result<(), ApiError> {
        let listing_read = self.listing_read().await;
        let unknown: BTreeSet<&AccountId> = ids
            .iter()
            .filter(|id| self.known_uuid(id).is_none() && !self.known_absent(id, listing_read))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let known = self.known_count();
        let (lookup, pages) = Lookup::choose(unknown.len(), known);
        match lookup {
            Lookup::Single => {
                tracing::info!(
                    people = unknown.len(),
                    known_members = known,
                    listing_pages_at_least = pages,
                    requests = unknown.len(),
                    "finding the UUIDs of people to add: single member lookups"
                );
                self.look_up(unknown).await
            }
            Lookup::Listing => {
                tracing::info!(
                    people = unknown.len(),
                    known_members = known,
                    listing_pages_at_least = pages,
                    "finding the UUIDs of people to add: the workspace member listing"
                );
                self.load_listing().await.map_err(|e| ApiError::Decode {
                    method: "GET".into(),
                    endpoint: "/2.0/workspaces/{ws}/members".into(),
                    detail: format!("cannot read the workspace members: {e}"),
                })
            }
        }
    }

    /// One `GET .../members/{account_id}` per person, [`LOOKUPS_AT_ONCE`] at a time. The first
    /// error ends the lookups (the ones in flight are dropped) and is the answer.
    async fn look_up(&self, people: BTreeSet<&AccountId>) -> Result<(), ApiError> {
        use futures_util::stream::{self, StreamExt};
        // Owned ids: a closure taking a reference makes the seam's future not provably `Send`
        // for every lifetime (rust-lang/rust#102211).
        let mut answers = stream::iter(people.into_iter().cloned().collect::<Vec<_>>())
            .map(|id| async move {
                let answer = self.members.member(id.as_str()).await;
                (id, answer)
            })
            .buffer_unordered(LOOKUPS_AT_ONCE);
        while let Some((id, answer)) = answers.next().await {
            let Some(m) = answer? else {
                if let Ok(mut a) = self.absent.lock() {
                    a.insert(id);
                }
                continue;
            };
            match m.user.uuid.as_deref() {
                Some(uuid) if m.user.account_id.as_deref() == Some(id.as_str()) => {
                    self.learn([(id, BbUuid::braced(uuid))])
                }
                // Not something to write a membership with: a member answer that names
                // someone else, or no UUID.
                _ => {
                    return Err(ApiError::Decode {
                        method: "GET".into(),
                        endpoint: "/2.0/workspaces/{ws}/members/{account_id}".into(),
                        detail: format!(
                            "the member answer for {id} names account {:?} with UUID {:?}",
                            m.user.account_id, m.user.uuid
                        ),
                    })
                }
            }
        }
        Ok(())
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
                tracing::info!(
                    members = members.len(),
                    pages = members.len().div_ceil(Client::MEMBERS_PAGE_LEN).max(1),
                    "read the workspace member listing"
                );
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
            // Group by group as the listing streams in: its text and its members as
            // returned are never held whole.
            let (out, seen) = self
                .read
                .fold_groups(<GroupsRead as Default>::default, fold_group)
                .await?;
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
            self.find(ids).await?;
            let listing_read = self.listing_read().await;
            Ok(ids
                .iter()
                .filter(|id| self.known_uuid(id).is_none() && self.known_absent(id, listing_read))
                .cloned()
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_lookups_are_chosen_while_they_cost_no_more_than_the_listing_would() {
        // (people to find, members the group read named) -> (choice, listing pages at least)
        for (unknown, known, lookup, pages) in [
            // The case: 43 adds at ~9,800 members, 98 pages of listing.
            (43, 9_800, Lookup::Single, 98),
            (98, 9_800, Lookup::Single, 98),
            (99, 9_800, Lookup::Listing, 98),
            (3, 497, Lookup::Single, 5),
            (200, 300, Lookup::Listing, 3),
            // The group read named nobody: the listing is at least one page, and up to ten
            // people are looked up singly anyway.
            (1, 0, Lookup::Single, 1),
            (10, 0, Lookup::Single, 1),
            (11, 0, Lookup::Listing, 1),
            (11, 1_001, Lookup::Single, 11),
            (12, 1_001, Lookup::Listing, 11),
        ] {
            assert_eq!(
                Lookup::choose(unknown, known),
                (lookup, pages),
                "{unknown} people, {known} known"
            );
        }
    }
}
