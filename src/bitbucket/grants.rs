//! The grant-state seam: the repository grants of groups, read behind one interface, so the
//! 1.0 group-privileges listing (one call for the whole workspace) and the 2.0
//! permissions-config listings (one paged call per repository) are interchangeable sources.

use super::membership::BoxFuture;
use super::{ApiError, Client};
use crate::model::{GroupSlug, Permission, RepoSlug};
use std::collections::BTreeMap;
use std::sync::Arc;

/// (repository, group) -> permission.
pub type GroupGrants = BTreeMap<(RepoSlug, GroupSlug), Permission>;

pub trait GrantState: Send + Sync {
    /// The group grants on `repos` (a reader may return grants on other repositories too;
    /// the plan only looks at the managed ones).
    fn read<'a>(&'a self, repos: &'a [RepoSlug]) -> BoxFuture<'a, Result<GroupGrants, ApiError>>;
}

fn insert(out: &mut GroupGrants, repo: RepoSlug, group: &str, permission: &str) {
    match Permission::parse(permission) {
        Some(p) => {
            out.insert((repo, GroupSlug::from_name(group)), p);
        }
        None => tracing::warn!(
            %repo,
            group,
            permission,
            "unknown permission; left untouched"
        ),
    }
}

/// `GET /1.0/group-privileges/{ws}`: every group grant of the workspace in one call.
pub struct V1GroupPrivileges(pub Arc<Client>);

impl GrantState for V1GroupPrivileges {
    fn read<'a>(&'a self, _repos: &'a [RepoSlug]) -> BoxFuture<'a, Result<GroupGrants, ApiError>> {
        Box::pin(async move {
            // Row by row as the listing streams in: only the grants are kept.
            self.0
                .fold_group_privileges(GroupGrants::new, |out, p| {
                    let slug = p.repo.rsplit_once('/').map_or(p.repo.as_str(), |(_, s)| s);
                    insert(out, RepoSlug::new(slug), &p.group.slug, &p.privilege);
                })
                .await
        })
    }
}

/// `GET /2.0/repositories/{ws}/{repo}/permissions-config/groups` for each repository.
pub struct PermissionsConfigGrants(pub Arc<Client>);

impl GrantState for PermissionsConfigGrants {
    fn read<'a>(&'a self, repos: &'a [RepoSlug]) -> BoxFuture<'a, Result<GroupGrants, ApiError>> {
        Box::pin(async move {
            let mut out = GroupGrants::new();
            for (i, repo) in repos.iter().enumerate() {
                let listed: Vec<super::dto::V2GroupPermission> = self
                    .0
                    .permissions(super::Target::Repo(repo), super::PrincipalKind::Groups)
                    .await?;
                for g in listed {
                    insert(&mut out, repo.clone(), &g.group.slug, &g.permission);
                }
                if (i + 1).is_multiple_of(100) {
                    tracing::info!(done = i + 1, total = repos.len(), "reading grants");
                }
            }
            Ok(out)
        })
    }
}
