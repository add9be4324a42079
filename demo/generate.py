#!/usr/bin/env python3
"""Writes the demo's bundled data: seed.json (the emulated Bitbucket workspace) and
directory.ldif (the company directory). Deterministic; run it after editing the lists below."""
import json, uuid

NS = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
def acc(name): return "557058:" + str(uuid.uuid5(NS, "acc-" + name))
def uid(name): return "{" + str(uuid.uuid5(NS, "uuid-" + name)) + "}"

# name, display, directory groups, disabled?
people = [
    ("admin", "IT Admin", [], False),
    ("ann", "Ann Lee", ["backend"], False),
    ("bob", "Bob Stone", ["backend", "data"], True),      # left the company: nsAccountLock
    ("cid", "Cid Moreau", ["frontend"], False),
    ("dee", "Dee Patel", ["frontend"], False),
    ("eve", "Eve Novak", ["backend"], False),
    ("fay", "Fay Okafor", ["data"], False),
    ("gus", "Gus Lind", ["data"], False),
    ("hal", "Hal Berg", ["platform-leads"], False),
    ("ivy", "Ivy Chen", ["backend"], False),               # new hire: not yet in Bitbucket groups
    ("kim", "Kim Ross", ["contractors"], False),
    ("lou", "Lou Silva", ["contractors"], False),
    ("max", "Max Weber", ["contractors"], False),          # new contractor
    ("ned", "Ned Price", [], False),                       # moved to sales: still in Bitbucket developers
    ("oli", "Oli Grant", ["frontend"], False),
]
projects = [("PROJ", "Platform", 20), ("WEB", "Web", 12), ("DATA", "Data", 10), ("OPS", "Operations", 8)]
names = {
    "PROJ": ["api", "auth", "billing", "catalog", "checkout", "config", "events", "gateway", "inventory",
             "ledger", "mailer", "notify", "orders", "payments", "pricing", "search", "session", "shipping",
             "tax", "users"],
    "WEB": ["web-app", "web-admin", "web-docs", "web-components", "web-e2e", "web-landing", "web-mobile",
            "web-shop", "web-styles", "web-i18n", "web-analytics", "web-status"],
    "DATA": ["data-lake", "data-etl", "data-models", "data-dash", "data-quality", "data-ingest", "data-export",
             "data-ml", "data-notebooks", "data-schemas"],
    "OPS": ["ops-terraform", "ops-ansible", "ops-runbooks", "ops-monitoring", "ops-ci", "ops-secrets",
            "ops-backup", "ops-dns"],
}
repos = [{"slug": s, "name": s, "project": k} for k, _, _ in projects for s in names[k]]
assert len(repos) == 50

people_by = {p[0]: p for p in people}
seed = {
    "workspace": {"slug": "acme", "uuid": "{" + str(uuid.uuid5(NS, "ws-acme")) + "}", "name": "Acme",
                  "organisation_managed": False, "owner": acc("admin"), "admins": [acc("admin")]},
    "users": [{"account_id": acc(n), "uuid": uid(n), "display_name": d, "nickname": n,
               "email": f"{n}@acme.test"} for n, d, _, _ in people],
    "projects": [{"key": k, "name": n} for k, n, _ in projects],
    "repositories": repos,
    "groups": [
        # bob (leaver) and ned (moved to sales) still here; ivy (new hire) missing
        {"name": "Developers", "slug": "developers", "permission": None,
         "members": [acc(n) for n in ["ann", "bob", "cid", "dee", "eve", "ned", "oli", "hal"]]},
        {"name": "Contractors", "slug": "contractors", "permission": None, "members": [acc("kim"), acc("lou")]},
        # not managed by bbsync: must stay exactly as it is
        {"name": "Release Bots", "slug": "release-bots", "permission": None, "members": [acc("admin")]},
    ],
    "group_grants": (
        [{"repo": s, "group": "developers", "permission": "write"} for s in names["PROJ"][:12]]
        + [{"repo": "payments", "group": "contractors", "permission": "admin"}]      # drift: admin -> write
        + [{"repo": "web-docs", "group": "contractors", "permission": "read"}]       # managed, unwanted: revoked
        # manual grant outside the managed scope (OPS is selected by no rule): untouched
        + [{"repo": "ops-terraform", "group": "contractors", "permission": "read"}]
        + [{"repo": s, "group": "release-bots", "permission": "admin"} for s in names["OPS"]]
    ),
    "user_grants": [{"repo": "ops-runbooks", "account_id": acc("hal"), "permission": "admin"}],
    "project_group_grants": [],
    "project_user_grants": [],
    "credentials": [
        {"id": "demo-admin", "kind": "api_token", "email": "admin@acme.test", "token": "demo-token",
         "account_id": acc("admin"),
         "scopes": ["read:repository:bitbucket", "admin:repository:bitbucket", "read:project:bitbucket",
                    "admin:project:bitbucket", "read:workspace:bitbucket", "read:permission:bitbucket",
                    "write:permission:bitbucket", "delete:permission:bitbucket"]},
    ],
    "rate_limit_per_hour": 1000,
    "group_writes_require_oauth": False,
    "default_pagelen": 10,
}
with open("seed.json", "w") as f:
    json.dump(seed, f, indent=2)
    f.write("\n")

out = ["version: 1", "", "# Acme's directory, as an LDAP export. Bob Stone has left (nsAccountLock).", ""]
out += ["dn: ou=people,dc=acme,dc=test", "objectClass: organizationalUnit", "ou: people", ""]
out += ["dn: ou=groups,dc=acme,dc=test", "objectClass: organizationalUnit", "ou: groups", ""]
for n, d, _, disabled in people:
    if n == "admin":
        continue
    out += [f"dn: uid={n},ou=people,dc=acme,dc=test", "objectClass: inetOrgPerson",
            "objectClass: atlassianAccount", f"uid: {n}", f"cn: {d}", f"sn: {d.split()[-1]}",
            f"mail: {n}@acme.test", f"atlassianAccountId: {acc(n)}"]
    if disabled:
        out.append("nsAccountLock: TRUE")
    out.append("")
groups = {}
for n, _, gs, _ in people:
    for g in gs:
        groups.setdefault(g, []).append(n)
nested = {"engineering": ["backend", "frontend", "platform-leads"]}
for g in sorted(set(groups) | set(nested)):
    out += [f"dn: cn={g},ou=groups,dc=acme,dc=test", "objectClass: groupOfNames", f"cn: {g}"]
    out += [f"member: uid={m},ou=people,dc=acme,dc=test" for m in groups.get(g, [])]
    out += [f"member: cn={c},ou=groups,dc=acme,dc=test" for c in nested.get(g, [])]
    out.append("")
with open("directory.ldif", "w") as f:
    f.write("\n".join(out))
