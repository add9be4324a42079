//! The in-memory store and its operations. Pure (no HTTP, no clock), unit-tested.

use crate::seed::{
    group_slug_for, Seed, SeedGroup, SeedGroupGrant, SeedProject, SeedProjectGroupGrant,
    SeedProjectUserGrant, SeedRepo, SeedUser, SeedUserGrant, PROJECT_PERMISSIONS, REPO_PERMISSIONS,
};
use std::collections::BTreeSet;

/// Failure of a store operation; the HTTP layer maps it to a status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound(String),
    BadRequest(String),
    Conflict(String),
    PaymentRequired(String),
}

/// Fields of a 1.0 group update (`PUT /1.0/groups/{ws}/{group}/`); `None` = unchanged.
#[derive(Clone, Debug, Default)]
pub struct GroupPatch {
    pub name: Option<String>,
    /// `Some(None)` sets the permission to null.
    pub permission: Option<Option<String>>,
    pub auto_add: Option<bool>,
    pub email_forwarding_disabled: Option<bool>,
}

/// The emulated workspace. Holds a normalized [`Seed`].
#[derive(Debug)]
pub struct Store {
    pub seed: Seed,
    /// Positions of users, groups and repositories by key, so that a listing of 100k people's
    /// memberships is not a linear search per member. Only a hint: every hit is checked
    /// against the element it points at, and a miss or a stale hit falls back to the linear
    /// search (and drops the index, rebuilt at the next lookup), so lookups answer exactly as
    /// a search of `seed` would, whatever changed it (`seed` is public).
    index: std::sync::Mutex<Option<std::sync::Arc<Index>>>,
}

impl Clone for Store {
    fn clone(&self) -> Store {
        Store {
            seed: self.seed.clone(),
            index: std::sync::Mutex::new(None),
        }
    }
}

/// See [`Store::index`]. The first element of a key wins, as in a linear search.
#[derive(Debug, Default)]
struct Index {
    users_by_account: std::collections::HashMap<String, usize>,
    /// Lower-cased braced uuids.
    users_by_uuid: std::collections::HashMap<String, usize>,
    groups: std::collections::HashMap<String, usize>,
    repos: std::collections::HashMap<String, usize>,
    projects: std::collections::HashMap<String, usize>,
}

impl Index {
    fn build(seed: &Seed) -> Index {
        fn first(keys: impl Iterator<Item = String>) -> std::collections::HashMap<String, usize> {
            let mut out = std::collections::HashMap::new();
            for (i, k) in keys.enumerate() {
                out.entry(k).or_insert(i);
            }
            out
        }
        Index {
            users_by_account: first(seed.users.iter().map(|u| u.account_id.clone())),
            users_by_uuid: first(seed.users.iter().map(|u| u.uuid.to_lowercase())),
            groups: first(
                seed.groups
                    .iter()
                    .map(|g| g.slug.clone().unwrap_or_default()),
            ),
            repos: first(seed.repositories.iter().map(|r| r.slug.clone())),
            projects: first(seed.projects.iter().map(|p| p.key.clone())),
        }
    }
}

/// Rank of a repository permission (read < write < admin); 0 for none/unknown.
pub fn repo_rank(p: &str) -> u8 {
    match p {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 0,
    }
}

/// Repository permission implied by a project permission.
fn project_to_repo(p: &str) -> &'static str {
    match p {
        "admin" => "admin",
        "write" => "write",
        _ => "read", // read, create-repo
    }
}

impl Store {
    /// Validates and normalizes the seed.
    pub fn new(seed: &Seed) -> Result<Store, String> {
        seed.validate()?;
        Ok(Store {
            seed: seed.normalized(),
            index: std::sync::Mutex::new(None),
        })
    }

    fn index(&self) -> std::sync::Arc<Index> {
        let mut slot = self.index.lock().unwrap_or_else(|e| e.into_inner());
        std::sync::Arc::clone(
            slot.get_or_insert_with(|| std::sync::Arc::new(Index::build(&self.seed))),
        )
    }

    /// The first element of `items` that `is` holds for, through the index's position
    /// `hint` when it is right, else by a linear search (which then drops a stale index).
    fn find<'a, T>(
        &self,
        items: &'a [T],
        hint: impl FnOnce(&Index) -> Option<usize>,
        is: impl Fn(&T) -> bool,
    ) -> Option<&'a T> {
        // Keys are unique in a store (the seed's validation, and every create and rename
        // checks), so an element at the hinted position with the key is the one a search
        // finds.
        if let Some(i) = hint(&self.index()) {
            if items.get(i).is_some_and(&is) {
                return items.get(i);
            }
        }
        let found = items.iter().find(|x| is(x));
        if found.is_some() {
            *self.index.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        found
    }

    pub fn to_seed(&self) -> Seed {
        self.seed.clone()
    }

    // ----- lookups -----

    pub fn user_by_account(&self, account_id: &str) -> Option<&SeedUser> {
        self.find(
            &self.seed.users,
            |ix| ix.users_by_account.get(account_id).copied(),
            |u| u.account_id == account_id,
        )
    }

    /// A braced uuid (case-insensitive).
    pub fn user_by_uuid(&self, uuid: &str) -> Option<&SeedUser> {
        self.find(
            &self.seed.users,
            |ix| ix.users_by_uuid.get(&uuid.to_lowercase()).copied(),
            |u| u.uuid.eq_ignore_ascii_case(uuid),
        )
    }

    /// A braced uuid or an account_id.
    pub fn user_by_id(&self, id: &str) -> Option<&SeedUser> {
        if id.starts_with('{') {
            self.user_by_uuid(id)
        } else {
            self.user_by_account(id)
        }
    }

    pub fn is_owner(&self, account_id: &str) -> bool {
        self.seed.workspace.owner == account_id
    }

    pub fn is_admin(&self, account_id: &str) -> bool {
        self.is_owner(account_id) || self.seed.workspace.admins.iter().any(|a| a == account_id)
    }

    pub fn group(&self, slug: &str) -> Option<&SeedGroup> {
        self.find(
            &self.seed.groups,
            |ix| ix.groups.get(slug).copied(),
            |g| g.slug.as_deref() == Some(slug),
        )
    }

    fn group_mut(&mut self, slug: &str) -> Option<&mut SeedGroup> {
        self.seed
            .groups
            .iter_mut()
            .find(|g| g.slug.as_deref() == Some(slug))
    }

    pub fn repo(&self, slug: &str) -> Option<&SeedRepo> {
        self.find(
            &self.seed.repositories,
            |ix| ix.repos.get(slug).copied(),
            |r| r.slug == slug,
        )
    }

    pub fn project(&self, key: &str) -> Option<&SeedProject> {
        self.find(
            &self.seed.projects,
            |ix| ix.projects.get(key).copied(),
            |p| p.key == key,
        )
    }

    pub fn groups_of(&self, account_id: &str) -> Vec<&SeedGroup> {
        self.seed
            .groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == account_id))
            .collect()
    }

    // ----- 1.0 groups -----

    pub fn create_group(&mut self, name: &str) -> Result<SeedGroup, StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::BadRequest(
                "name: This field is required.".into(),
            ));
        }
        let slug = group_slug_for(name);
        if self
            .seed
            .groups
            .iter()
            .any(|g| g.name.eq_ignore_ascii_case(name))
        {
            return Err(StoreError::BadRequest(format!(
                "A group named {name} already exists."
            )));
        }
        if self.group(&slug).is_some() {
            return Err(StoreError::BadRequest(format!(
                "A group with slug {slug} already exists."
            )));
        }
        let id = (self.seed.workspace.organisation_managed && self.seed.organisation.is_some())
            .then(|| self.fresh_group_id(&slug));
        let g = SeedGroup {
            name: name.to_string(),
            slug: Some(slug),
            permission: None,
            auto_add: false,
            email_forwarding_disabled: false,
            members: Vec::new(),
            id,
            ..Default::default()
        };
        self.seed.groups.push(g.clone());
        Ok(g)
    }

    pub fn update_group(&mut self, slug: &str, patch: GroupPatch) -> Result<SeedGroup, StoreError> {
        if self.group(slug).is_none() {
            return Err(StoreError::NotFound(format!("No group with slug {slug}")));
        }
        if let Some(name) = &patch.name {
            let name = name.trim();
            if name.is_empty() {
                return Err(StoreError::BadRequest(
                    "name: This field is required.".into(),
                ));
            }
            if self
                .seed
                .groups
                .iter()
                .any(|g| g.slug.as_deref() != Some(slug) && g.name.eq_ignore_ascii_case(name))
            {
                return Err(StoreError::BadRequest(format!(
                    "A group named {name} already exists."
                )));
            }
        }
        if let Some(Some(p)) = &patch.permission {
            if !REPO_PERMISSIONS.contains(&p.as_str()) {
                return Err(StoreError::BadRequest(format!(
                    "permission: Select a valid choice. {p} is not one of the available choices."
                )));
            }
        }
        let g = self
            .group_mut(slug)
            .ok_or_else(|| StoreError::NotFound(format!("No group with slug {slug}")))?;
        if let Some(name) = patch.name {
            g.name = name.trim().to_string();
        }
        if let Some(p) = patch.permission {
            g.permission = p;
        }
        if let Some(a) = patch.auto_add {
            g.auto_add = a;
        }
        if let Some(e) = patch.email_forwarding_disabled {
            g.email_forwarding_disabled = e;
        }
        Ok(g.clone())
    }

    /// Deletes a group and every grant (repository and project) it had.
    pub fn delete_group(&mut self, slug: &str) -> Result<(), StoreError> {
        let before = self.seed.groups.len();
        self.seed.groups.retain(|g| g.slug.as_deref() != Some(slug));
        if self.seed.groups.len() == before {
            return Err(StoreError::NotFound(format!("No group with slug {slug}")));
        }
        self.seed.group_grants.retain(|g| g.group != slug);
        self.seed.project_group_grants.retain(|g| g.group != slug);
        self.seed.invitations.retain(|i| i.group != slug);
        Ok(())
    }

    pub fn add_member(&mut self, slug: &str, account_id: &str) -> Result<(), StoreError> {
        if self.user_by_account(account_id).is_none() {
            return Err(StoreError::NotFound(format!("No user {account_id}")));
        }
        let g = self
            .group_mut(slug)
            .ok_or_else(|| StoreError::NotFound(format!("No group with slug {slug}")))?;
        if g.members.iter().any(|m| m == account_id) {
            return Err(StoreError::Conflict(
                "The user is already a member of this group.".into(),
            ));
        }
        g.members.push(account_id.to_string());
        Ok(())
    }

    pub fn remove_member(&mut self, slug: &str, account_id: &str) -> Result<(), StoreError> {
        let g = self
            .group_mut(slug)
            .ok_or_else(|| StoreError::NotFound(format!("No group with slug {slug}")))?;
        let before = g.members.len();
        g.members.retain(|m| m != account_id);
        if g.members.len() == before {
            return Err(StoreError::NotFound(
                "The user is not a member of this group.".into(),
            ));
        }
        Ok(())
    }

    // ----- repository grants -----

    fn check_repo_perm(p: &str) -> Result<(), StoreError> {
        if REPO_PERMISSIONS.contains(&p) {
            Ok(())
        } else {
            Err(StoreError::BadRequest(format!(
                "Invalid permission '{p}': expected one of read, write, admin"
            )))
        }
    }

    fn check_project_perm(p: &str) -> Result<(), StoreError> {
        if PROJECT_PERMISSIONS.contains(&p) {
            Ok(())
        } else {
            Err(StoreError::BadRequest(format!(
                "Invalid permission '{p}': expected one of read, write, create-repo, admin"
            )))
        }
    }

    fn need_repo(&self, repo: &str) -> Result<(), StoreError> {
        self.repo(repo)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound(format!("Repository {repo} not found")))
    }

    fn need_project(&self, key: &str) -> Result<(), StoreError> {
        self.project(key)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound(format!("Project {key} not found")))
    }

    fn need_group(&self, slug: &str) -> Result<(), StoreError> {
        self.group(slug)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound(format!("Group {slug} not found")))
    }

    /// The explicit repository grant of a group.
    pub fn repo_group_grant(&self, repo: &str, group: &str) -> Option<&SeedGroupGrant> {
        self.seed
            .group_grants
            .iter()
            .find(|g| g.repo == repo && g.group == group)
    }

    pub fn set_repo_group_grant(
        &mut self,
        repo: &str,
        group: &str,
        permission: &str,
    ) -> Result<SeedGroupGrant, StoreError> {
        self.need_repo(repo)?;
        self.need_group(group)?;
        Self::check_repo_perm(permission)?;
        if let Some(g) = self
            .seed
            .group_grants
            .iter_mut()
            .find(|g| g.repo == repo && g.group == group)
        {
            g.permission = permission.to_string();
            return Ok(g.clone());
        }
        let g = SeedGroupGrant {
            repo: repo.to_string(),
            group: group.to_string(),
            permission: permission.to_string(),
        };
        self.seed.group_grants.push(g.clone());
        Ok(g)
    }

    pub fn remove_repo_group_grant(&mut self, repo: &str, group: &str) -> Result<(), StoreError> {
        self.need_repo(repo)?;
        self.need_group(group)?;
        let before = self.seed.group_grants.len();
        self.seed
            .group_grants
            .retain(|g| !(g.repo == repo && g.group == group));
        if before == self.seed.group_grants.len() {
            return Err(StoreError::NotFound(format!(
                "Group {group} has no explicit permission on {repo}"
            )));
        }
        Ok(())
    }

    pub fn repo_user_grant(&self, repo: &str, account_id: &str) -> Option<&SeedUserGrant> {
        self.seed
            .user_grants
            .iter()
            .find(|g| g.repo == repo && g.account_id == account_id)
    }

    /// Checks that a user grant may be written: member, not the owner.
    fn check_grantee(&self, account_id: &str) -> Result<(), StoreError> {
        if self.user_by_account(account_id).is_none() {
            return Err(StoreError::NotFound(format!(
                "User {account_id} is not a member of the workspace"
            )));
        }
        if self.is_owner(account_id) {
            return Err(StoreError::BadRequest(
                "The workspace owner's permission cannot be changed.".into(),
            ));
        }
        Ok(())
    }

    /// Accounts with any explicit user grant or any group membership.
    pub fn people_with_access(&self) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for g in &self.seed.groups {
            s.extend(g.members.iter().cloned());
        }
        s.extend(self.seed.user_grants.iter().map(|g| g.account_id.clone()));
        s.extend(
            self.seed
                .project_user_grants
                .iter()
                .map(|g| g.account_id.clone()),
        );
        s
    }

    /// 402 check: giving `account_id` a first grant when the plan is full.
    fn check_user_limit(&self, account_id: &str) -> Result<(), StoreError> {
        let Some(limit) = self.seed.user_limit else {
            return Ok(());
        };
        let people = self.people_with_access();
        if people.contains(account_id) || self.is_admin(account_id) {
            return Ok(());
        }
        if people.len() as u64 >= u64::from(limit) {
            return Err(StoreError::PaymentRequired(format!(
                "Your plan's user limit ({limit}) has been reached. Upgrade your plan to grant access to more users."
            )));
        }
        Ok(())
    }

    pub fn set_repo_user_grant(
        &mut self,
        repo: &str,
        account_id: &str,
        permission: &str,
    ) -> Result<SeedUserGrant, StoreError> {
        self.need_repo(repo)?;
        self.check_grantee(account_id)?;
        Self::check_repo_perm(permission)?;
        if let Some(g) = self
            .seed
            .user_grants
            .iter_mut()
            .find(|g| g.repo == repo && g.account_id == account_id)
        {
            g.permission = permission.to_string();
            return Ok(g.clone());
        }
        self.check_user_limit(account_id)?;
        let g = SeedUserGrant {
            repo: repo.to_string(),
            account_id: account_id.to_string(),
            permission: permission.to_string(),
        };
        self.seed.user_grants.push(g.clone());
        Ok(g)
    }

    pub fn remove_repo_user_grant(
        &mut self,
        repo: &str,
        account_id: &str,
    ) -> Result<(), StoreError> {
        self.need_repo(repo)?;
        self.check_grantee(account_id)?;
        let before = self.seed.user_grants.len();
        self.seed
            .user_grants
            .retain(|g| !(g.repo == repo && g.account_id == account_id));
        if before == self.seed.user_grants.len() {
            return Err(StoreError::NotFound(format!(
                "User {account_id} has no explicit permission on {repo}"
            )));
        }
        Ok(())
    }

    // ----- project grants -----

    pub fn project_group_grant(
        &self,
        project: &str,
        group: &str,
    ) -> Option<&SeedProjectGroupGrant> {
        self.seed
            .project_group_grants
            .iter()
            .find(|g| g.project == project && g.group == group)
    }

    pub fn set_project_group_grant(
        &mut self,
        project: &str,
        group: &str,
        permission: &str,
    ) -> Result<SeedProjectGroupGrant, StoreError> {
        self.need_project(project)?;
        self.need_group(group)?;
        Self::check_project_perm(permission)?;
        if let Some(g) = self
            .seed
            .project_group_grants
            .iter_mut()
            .find(|g| g.project == project && g.group == group)
        {
            g.permission = permission.to_string();
            return Ok(g.clone());
        }
        let g = SeedProjectGroupGrant {
            project: project.to_string(),
            group: group.to_string(),
            permission: permission.to_string(),
        };
        self.seed.project_group_grants.push(g.clone());
        Ok(g)
    }

    pub fn remove_project_group_grant(
        &mut self,
        project: &str,
        group: &str,
    ) -> Result<(), StoreError> {
        self.need_project(project)?;
        self.need_group(group)?;
        let before = self.seed.project_group_grants.len();
        self.seed
            .project_group_grants
            .retain(|g| !(g.project == project && g.group == group));
        if before == self.seed.project_group_grants.len() {
            return Err(StoreError::NotFound(format!(
                "Group {group} has no explicit permission on project {project}"
            )));
        }
        Ok(())
    }

    pub fn project_user_grant(
        &self,
        project: &str,
        account_id: &str,
    ) -> Option<&SeedProjectUserGrant> {
        self.seed
            .project_user_grants
            .iter()
            .find(|g| g.project == project && g.account_id == account_id)
    }

    pub fn set_project_user_grant(
        &mut self,
        project: &str,
        account_id: &str,
        permission: &str,
    ) -> Result<SeedProjectUserGrant, StoreError> {
        self.need_project(project)?;
        self.check_grantee(account_id)?;
        Self::check_project_perm(permission)?;
        if let Some(g) = self
            .seed
            .project_user_grants
            .iter_mut()
            .find(|g| g.project == project && g.account_id == account_id)
        {
            g.permission = permission.to_string();
            return Ok(g.clone());
        }
        self.check_user_limit(account_id)?;
        let g = SeedProjectUserGrant {
            project: project.to_string(),
            account_id: account_id.to_string(),
            permission: permission.to_string(),
        };
        self.seed.project_user_grants.push(g.clone());
        Ok(g)
    }

    pub fn remove_project_user_grant(
        &mut self,
        project: &str,
        account_id: &str,
    ) -> Result<(), StoreError> {
        self.need_project(project)?;
        self.check_grantee(account_id)?;
        let before = self.seed.project_user_grants.len();
        self.seed
            .project_user_grants
            .retain(|g| !(g.project == project && g.account_id == account_id));
        if before == self.seed.project_user_grants.len() {
            return Err(StoreError::NotFound(format!(
                "User {account_id} has no explicit permission on project {project}"
            )));
        }
        Ok(())
    }

    // ----- derived views -----

    /// Effective repository permission of a person: the highest of workspace admin (admin),
    /// explicit user grant, grants of the person's groups, and project grants (user and group;
    /// `create-repo` counts as read). `None` = no access.
    pub fn effective_repo_permission(&self, account_id: &str, repo: &str) -> Option<&'static str> {
        let r = self.repo(repo)?;
        if self.is_admin(account_id) {
            return Some("admin");
        }
        let groups: Vec<String> = self
            .groups_of(account_id)
            .iter()
            .filter_map(|g| g.slug.clone())
            .collect();
        let mut best = 0u8;
        for g in &self.seed.user_grants {
            if g.repo == repo && g.account_id == account_id {
                best = best.max(repo_rank(&g.permission));
            }
        }
        for g in &self.seed.group_grants {
            if g.repo == repo && groups.contains(&g.group) {
                best = best.max(repo_rank(&g.permission));
            }
        }
        for g in &self.seed.project_user_grants {
            if g.project == r.project && g.account_id == account_id {
                best = best.max(repo_rank(project_to_repo(&g.permission)));
            }
        }
        for g in &self.seed.project_group_grants {
            if g.project == r.project && groups.contains(&g.group) {
                best = best.max(repo_rank(project_to_repo(&g.permission)));
            }
        }
        match best {
            1 => Some("read"),
            2 => Some("write"),
            3 => Some("admin"),
            _ => None,
        }
    }

    /// Workspace role: `owner` (owner and admins), `member` (in a group, or no explicit
    /// grants), `collaborator` (only explicit repository/project grants).
    pub fn workspace_role(&self, account_id: &str) -> &'static str {
        self.workspace_roles()(account_id)
    }

    /// [`Store::workspace_role`] for many people: who is in a group and who has a direct
    /// grant is gathered once (a listing of 100k members asks for every one's role).
    pub fn workspace_roles(&self) -> impl Fn(&str) -> &'static str + '_ {
        let grouped: std::collections::HashSet<&str> = self
            .seed
            .groups
            .iter()
            .flat_map(|g| g.members.iter().map(String::as_str))
            .collect();
        let direct: std::collections::HashSet<&str> = self
            .seed
            .user_grants
            .iter()
            .map(|g| g.account_id.as_str())
            .chain(
                self.seed
                    .project_user_grants
                    .iter()
                    .map(|g| g.account_id.as_str()),
            )
            .collect();
        move |account_id| {
            if self.is_admin(account_id) {
                "owner"
            } else if grouped.contains(account_id) || !direct.contains(account_id) {
                "member"
            } else {
                "collaborator"
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store() -> Store {
        let seed: Seed = serde_json::from_str(
            r#"{"workspace":{"slug":"acme","owner":"o"},
                "users":[{"account_id":"o"},{"account_id":"a"},{"account_id":"b"},{"account_id":"c"}],
                "projects":[{"key":"P"}],
                "repositories":[{"slug":"api","project":"P"},{"slug":"web","project":"P"}],
                "groups":[{"name":"Dev Team","members":["a"]}],
                "group_grants":[{"repo":"api","group":"dev-team","permission":"write"}],
                "user_limit": 2}"#,
        )
        .unwrap();
        Store::new(&seed).unwrap()
    }

    #[test]
    fn group_lifecycle_and_grant_cleanup() {
        let mut s = store();
        assert!(matches!(
            s.create_group("dev team"),
            Err(StoreError::BadRequest(_))
        ));
        let g = s.create_group("Ops People").unwrap();
        assert_eq!(g.slug.as_deref(), Some("ops-people"));
        s.set_repo_group_grant("web", "ops-people", "read").unwrap();
        s.delete_group("ops-people").unwrap();
        assert!(s.repo_group_grant("web", "ops-people").is_none());
        assert!(matches!(
            s.delete_group("ops-people"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn members() {
        let mut s = store();
        assert!(matches!(
            s.add_member("dev-team", "a"),
            Err(StoreError::Conflict(_))
        ));
        s.add_member("dev-team", "b").unwrap();
        s.remove_member("dev-team", "b").unwrap();
        assert!(matches!(
            s.remove_member("dev-team", "b"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.add_member("dev-team", "zz"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn user_grants_owner_and_limit() {
        let mut s = store();
        assert!(matches!(
            s.set_repo_user_grant("api", "o", "read"),
            Err(StoreError::BadRequest(_))
        ));
        assert!(matches!(
            s.set_repo_user_grant("api", "b", "none"),
            Err(StoreError::BadRequest(_))
        ));
        s.set_repo_user_grant("api", "b", "read").unwrap(); // people: a, b
        s.set_repo_user_grant("web", "b", "admin").unwrap(); // b already counted
        assert!(matches!(
            s.set_repo_user_grant("api", "c", "read"),
            Err(StoreError::PaymentRequired(_))
        ));
        assert_eq!(s.effective_repo_permission("a", "api"), Some("write"));
        assert_eq!(s.effective_repo_permission("a", "web"), None);
        assert_eq!(s.effective_repo_permission("o", "web"), Some("admin"));
        assert_eq!(s.workspace_role("b"), "collaborator");
        assert_eq!(s.workspace_role("a"), "member");
        assert_eq!(s.workspace_role("o"), "owner");
        s.remove_repo_user_grant("api", "b").unwrap();
        assert!(matches!(
            s.remove_repo_user_grant("api", "b"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn project_grants() {
        let mut s = store();
        s.set_project_group_grant("P", "dev-team", "create-repo")
            .unwrap();
        assert!(matches!(
            s.set_project_group_grant("P", "dev-team", "none"),
            Err(StoreError::BadRequest(_))
        ));
        assert!(matches!(
            s.set_project_group_grant("Q", "dev-team", "read"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.effective_repo_permission("a", "web"), Some("read"));
        s.remove_project_group_grant("P", "dev-team").unwrap();
        assert_eq!(s.effective_repo_permission("a", "web"), None);
    }
}
