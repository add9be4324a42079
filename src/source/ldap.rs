//! The live LDAP / Active Directory source (ldap3).
//!
//! Two paged searches (RFC 2696), one for people and one for groups, streamed page by page;
//! optionally a third for people matching a "disabled" filter. Nested groups are resolved
//! locally from the one bulk group read (no query per group) by the resolver the LDIF source
//! shares.
//!
//! Fail closed: every page must end with result code 0 (success). Size or time limits (4, 3),
//! referrals (10, or continuation references in the stream), busy/unavailable (51, 52), a dropped
//! connection, a timeout, a page without the paged-results control while a cookie was expected,
//! or a panic inside the client all fail the whole read. slapd caps paged searches at the
//! account's `size.prtotal`; ldap3's stream then simply ends, and only the final result code
//! tells, which is why each page's code is checked.

use super::{Entry, Schema, SourceError};
use crate::config::{LdapSettings, SearchScope, SearchSettings};
use crate::model::Dn;
use crate::secret::Secret;
use ldap3::asn1::{StructureTag, PL};
use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchEntry};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

/// Called after each page: (search name, pages so far, entries so far).
pub type PageHook = Arc<dyn Fn(&str, usize, usize) + Send + Sync>;

/// The LDAP reader: its settings, the schema, and an optional progress hook.
#[derive(Clone)]
pub struct LdapSource {
    pub cfg: LdapSettings,
    pub schema: Schema,
    /// Progress callback (tests use it to kill the server mid-read).
    pub on_page: Option<PageHook>,
}

impl std::fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSource")
            .field("cfg", &self.cfg)
            .field("hook", &self.on_page.is_some())
            .finish_non_exhaustive()
    }
}

/// The LDAP result codes a reader meets, named, with what to do.
fn describe_rc(rc: u32) -> String {
    let (name, hint) = match rc {
        3 => ("timeLimitExceeded", "the server's time limit cut the search; raise it for the bind account"),
        4 => ("sizeLimitExceeded", "the bind account's size limit cut the search; give it unlimited size limits (slapd: size=unlimited, including size.prtotal for paged searches)"),
        10 => ("referral", "the base DN lives on another server; point source.users_base / groups_base at this server's naming context"),
        11 => ("adminLimitExceeded", "an administrative limit cut the search"),
        12 => ("unavailableCriticalExtension", "the server does not support paged results"),
        32 => ("noSuchObject", "the base DN does not exist"),
        49 => ("invalidCredentials", "check source.bind_dn and the bind password"),
        50 => ("insufficientAccessRights", "the bind account may not read these entries"),
        51 => ("busy", "the server is busy; the next run will retry"),
        52 => ("unavailable", "the server is unavailable; the next run will retry"),
        _ => ("", ""),
    };
    if name.is_empty() {
        format!("result code {rc}")
    } else {
        format!("result code {rc} ({name}): {hint}")
    }
}

/// `member;range=0-1499` -> ("member", 0, Some(1499)); `member;range=1500-*` -> (.., None).
pub fn parse_range(attr: &str) -> Option<(String, u64, Option<u64>)> {
    let (base, opts) = attr.split_once(';')?;
    let range = opts.split(';').find_map(|o| {
        o.strip_prefix("range=")
            .or_else(|| o.strip_prefix("Range="))
    })?;
    let (lo, hi) = range.split_once('-')?;
    let lo = lo.parse().ok()?;
    let hi = if hi == "*" {
        None
    } else {
        Some(hi.parse().ok()?)
    };
    Some((base.to_ascii_lowercase(), lo, hi))
}

/// What ranged retrieval still has to fetch for one entry: for every `attr;range=lo-hi` with a
/// finite `hi`, the next request is `attr;range=(hi+1)-*`. Values are merged under `attr`. A
/// range option that cannot be read is an error: its values must not be dropped silently.
pub fn absorb_ranges(entry: &mut Entry) -> Result<Vec<String>, String> {
    let ranged: Vec<String> = entry
        .attribute_names()
        .filter(|n| n.contains(";range="))
        .map(str::to_owned)
        .collect();
    let mut next = Vec::new();
    for name in ranged {
        let values = entry.take(&name);
        let Some((base, _, hi)) = parse_range(&name) else {
            return Err(format!(
                "{}: cannot read the range in attribute {name:?}",
                entry.dn
            ));
        };
        for v in values {
            entry.push(&base, v);
        }
        if let Some(hi) = hi {
            next.push(format!("{base};range={}-*", hi + 1));
        }
    }
    Ok(next)
}

/// The AD in-chain filter: people who are members of `group_dn` directly or through nesting.
pub fn in_chain_filter(users_filter: &str, group_dn: &str) -> String {
    format!(
        "(&{users_filter}(memberOf:1.2.840.113556.1.4.1941:={}))",
        ldap3::ldap_escape(group_dn)
    )
}

/// Hex text of a binary value (AD `objectGUID`), so it stays comparable text.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes a search result entry (RFC 4511 SearchResultEntry: a DN and a list of attributes,
/// each a type and a set of values) straight into an [`Entry`]: the DN, the names and the
/// values move out of the decoded message without a copy and without an intermediate map
/// (ldap3's `SearchEntry::construct` copies every value and builds a `HashMap` per entry). An
/// attribute with any value that is not UTF-8 has all its values as hex, like
/// `SearchEntry::bin_attrs`. A message of another shape is an error, not a panic.
fn decode_entry(re: ResultEntry) -> Result<Entry, String> {
    fn bytes(t: Option<StructureTag>, what: &str) -> Result<Vec<u8>, String> {
        match t {
            Some(StructureTag {
                payload: PL::P(b), ..
            }) => Ok(b),
            _ => Err(format!("malformed search result entry: no {what}")),
        }
    }
    fn parts(t: Option<StructureTag>, what: &str) -> Result<Vec<StructureTag>, String> {
        match t {
            Some(StructureTag {
                payload: PL::C(c), ..
            }) => Ok(c),
            _ => Err(format!("malformed search result entry: no {what}")),
        }
    }
    if re.0.id != 4 {
        return Err(format!(
            "unexpected message in the search results (protocol op {})",
            re.0.id
        ));
    }
    let mut top = parts(Some(re.0), "entry")?.into_iter();
    let dn = String::from_utf8(bytes(top.next(), "DN")?)
        .map_err(|_| "a search result entry's DN is not UTF-8".to_owned())?;
    let attrs = parts(top.next(), "attribute list")?;
    let mut e = Entry::with_capacity(Dn::from_string(dn), attrs.len());
    for a in attrs {
        let mut pa = parts(Some(a), "attribute")?.into_iter();
        let name = String::from_utf8(bytes(pa.next(), "attribute type")?)
            .map_err(|_| "an attribute type is not UTF-8".to_owned())?;
        let raw = parts(pa.next(), "attribute values")?;
        let mut values: Vec<String> = Vec::with_capacity(raw.len());
        let mut binary = false;
        for v in raw {
            let v = bytes(Some(v), "attribute value")?;
            if binary {
                values.push(hex(&v));
                continue;
            }
            match String::from_utf8(v) {
                Ok(text) => values.push(text),
                Err(not_text) => {
                    binary = true;
                    for earlier in values.iter_mut() {
                        *earlier = hex(earlier.as_bytes());
                    }
                    values.push(hex(not_text.as_bytes()));
                }
            }
        }
        e.push_all(name, values);
    }
    Ok(e)
}

fn scope(s: SearchScope) -> Scope {
    match s {
        SearchScope::Base => Scope::Base,
        SearchScope::One => Scope::OneLevel,
        SearchScope::Sub => Scope::Subtree,
    }
}

impl LdapSource {
    pub fn new(cfg: LdapSettings, schema: Schema) -> LdapSource {
        LdapSource {
            cfg,
            schema,
            on_page: None,
        }
    }

    fn err(&self, stage: &str, message: impl Into<String>) -> SourceError {
        SourceError::Ldap {
            url: self.cfg.url.clone(),
            stage: stage.to_owned(),
            message: message.into(),
        }
    }

    /// What the resolver reads from a person, and nothing else: the search says who is a
    /// person, so `objectClass` (often five or more values) is not asked for.
    fn user_attributes(&self) -> Vec<String> {
        let s = &self.schema;
        let mut a = vec![
            s.account_id_attribute.clone(),
            s.email_attribute.clone(),
            s.display_name_attribute.clone(),
            s.uid_attribute.clone(),
            "memberOf".into(),
        ];
        if s.ad_user_account_control {
            a.push("userAccountControl".into());
        }
        if s.ppolicy_locked {
            // Operational: returned only when asked for by name.
            a.push("pwdAccountLockedTime".into());
        }
        a.extend(s.disabled_attribute.clone());
        a.extend(s.stable_id_attribute.clone());
        a.extend(s.person_attributes.iter().cloned());
        a.sort();
        a.dedup();
        a
    }

    /// What the resolver reads from a group (its name and the three member attributes).
    fn group_attributes(&self) -> Vec<String> {
        vec![
            self.schema.group_name_attribute.clone(),
            "member".into(),
            "uniqueMember".into(),
            "memberUid".into(),
        ]
    }

    async fn connect(&self) -> Result<Ldap, SourceError> {
        crate::tls::install_provider();
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.connect_timeout)
            .set_starttls(self.cfg.starttls);
        if !self.cfg.tls_verify {
            tracing::warn!(url = self.cfg.url, "LDAP TLS certificate verification is DISABLED (source.tls_verify = false): anyone on the path can read the directory and forge its answers");
            settings = settings.set_no_tls_verify(true);
        } else if let Some(ca) = &self.cfg.ca_file {
            let config =
                crate::tls::client_config_with_ca(ca).map_err(|m| self.err("TLS setup", m))?;
            settings = settings.set_config(Arc::new(config));
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
            .await
            .map_err(|e| self.err("connect", e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        if let Some(dn) = &self.cfg.bind_dn {
            let pw = self
                .cfg
                .bind_password
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default();
            let res = ldap
                .with_timeout(self.cfg.op_timeout)
                .simple_bind(dn, pw)
                .await
                .map_err(|e| self.err("bind", e.to_string()))?;
            if res.rc != 0 {
                return Err(self.err("bind", format!("as {dn}: {}", describe_rc(res.rc))));
            }
        }
        Ok(ldap)
    }

    /// One paged search, every page checked; entries go to `sink` in server order. Pipelined:
    /// the next page is requested before the entries of the previous one are decoded and
    /// handed over, so the client works while the server prepares the page. Returns the
    /// number of entries.
    async fn paged_search(
        &self,
        ldap: &mut Ldap,
        name: &str,
        spec: &SearchSettings,
        filter: &str,
        attrs: &[String],
        sink: &mut dyn FnMut(Entry),
    ) -> Result<usize, SourceError> {
        let stage = format!("search {name} under {} with {filter}", spec.base);
        let mut cookie: Vec<u8> = Vec::new();
        let mut pending: Vec<ldap3::ResultEntry> = Vec::new();
        let (mut count, mut pages) = (0usize, 0usize);
        let started = Instant::now();
        loop {
            let mut control: RawControl = PagedResults {
                size: i32::try_from(self.cfg.page_size).unwrap_or(i32::MAX),
                cookie: std::mem::take(&mut cookie),
            }
            .into();
            // Critical: a server that cannot page must refuse, not answer a truncated set.
            control.crit = true;
            let mut stream = ldap
                .with_controls(vec![control])
                .with_timeout(self.cfg.op_timeout)
                .streaming_search(&spec.base, scope(spec.scope), filter, attrs.to_vec())
                .await
                .map_err(|e| self.err(&stage, e.to_string()))?;
            // Let the connection task send the request, then decode the previous page.
            tokio::task::yield_now().await;
            for re in pending.drain(..) {
                sink(decode_entry(re).map_err(|m| self.err(&stage, m))?);
            }
            loop {
                match stream.next().await {
                    Ok(Some(re)) => {
                        if re.is_ref() {
                            let _ = stream.finish().await;
                            return Err(self.err(&stage, "the server returned a referral (not followed): part of the tree is elsewhere"));
                        }
                        count += 1;
                        pending.push(re);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(self.err(
                            &stage,
                            format!("read interrupted after {count} entries: {e}"),
                        ))
                    }
                }
            }
            let res = stream.finish().await;
            if res.rc != 0 {
                return Err(self.err(
                    &stage,
                    format!(
                        "page {} ended with {}{}",
                        pages + 1,
                        describe_rc(res.rc),
                        if res.text.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", res.text)
                        }
                    ),
                ));
            }
            pages += 1;
            if let Some(hook) = &self.on_page {
                hook(name, pages, count);
            }
            if pages % 20 == 0 {
                tracing::info!(search = name, pages, entries = count, "reading directory");
            }
            let next = res.ctrls.iter().find_map(|c| match c {
                Control(Some(ControlType::PagedResults), raw) => {
                    Some(raw.parse::<PagedResults>().cookie)
                }
                _ => None,
            });
            match next {
                Some(c) if !c.is_empty() => cookie = c,
                Some(_) => break,
                // The control was critical: a page without it means the server did not page as
                // asked, and nothing says the result set is complete.
                None => {
                    return Err(self.err(
                        &stage,
                        format!("page {pages} came back without the paged-results control; the result set may be incomplete"),
                    ))
                }
            }
        }
        for re in pending.drain(..) {
            sink(decode_entry(re).map_err(|m| self.err(&stage, m))?);
        }
        tracing::debug!(
            search = name,
            pages,
            entries = count,
            ms = started.elapsed().as_millis() as u64,
            "search done"
        );
        Ok(count)
    }

    async fn require_active_directory(&self, ldap: &mut Ldap) -> Result<(), SourceError> {
        const AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";
        let (res, _) = ldap
            .with_timeout(self.cfg.op_timeout)
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                vec!["supportedCapabilities"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.err("rootDSE", e.to_string()))?;
        let is_ad = res.into_iter().any(|e| {
            SearchEntry::construct(e).attrs.iter().any(|(k, vs)| {
                k.eq_ignore_ascii_case("supportedCapabilities")
                    && vs.iter().any(|v| v == AD_CAPABILITY)
            })
        });
        if is_ad {
            Ok(())
        } else {
            Err(self.err(
                "rootDSE",
                "source.ad_in_chain needs Active Directory (supportedCapabilities lacks 1.2.840.113556.1.4.800); elsewhere the in-chain rule matches nobody",
            ))
        }
    }

    /// Fetches the rest of ranged attributes (AD returns at most 1500 values per request).
    async fn complete_ranges(
        &self,
        ldap: &mut Ldap,
        entries: &mut [Entry],
    ) -> Result<(), SourceError> {
        for e in entries.iter_mut() {
            let mut next = absorb_ranges(e).map_err(|m| self.err("ranged retrieval", m))?;
            let mut rounds = 0;
            while !next.is_empty() {
                rounds += 1;
                if rounds > 10_000 {
                    return Err(
                        self.err("ranged retrieval", format!("{}: range never ended", e.dn))
                    );
                }
                let (res, _) = ldap
                    .with_timeout(self.cfg.op_timeout)
                    .search(e.dn.as_str(), Scope::Base, "(objectClass=*)", next.clone())
                    .await
                    .map_err(|err| self.err("ranged retrieval", format!("{}: {err}", e.dn)))?
                    .success()
                    .map_err(|err| self.err("ranged retrieval", format!("{}: {err}", e.dn)))?;
                let [one] = <[_; 1]>::try_from(res).map_err(|_| {
                    self.err(
                        "ranged retrieval",
                        format!("{}: expected exactly one entry", e.dn),
                    )
                })?;
                let mut more = decode_entry(one).map_err(|m| self.err("ranged retrieval", m))?;
                let follow =
                    absorb_ranges(&mut more).map_err(|m| self.err("ranged retrieval", m))?;
                for name in more
                    .attribute_names()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
                {
                    for v in more.take(&name) {
                        e.push(&name, v);
                    }
                }
                next = follow;
            }
        }
        Ok(())
    }

    /// Reads everything into `into`; returns how many person entries the server returned.
    async fn read_into(&self, into: &mut super::Resolver<'_>) -> Result<usize, SourceError> {
        let mut ldap = self.connect().await?;
        let users = self
            .paged_search(
                &mut ldap,
                "users",
                &self.cfg.users,
                &self.cfg.users.filter,
                &self.user_attributes(),
                &mut |e| into.add_person(e),
            )
            .await?;
        // A group goes to the resolver as its page is decoded, unless it has to be completed
        // first: ranged values (AD, over 1500 members) to fetch, or the in-chain rule to ask.
        let mut held = Vec::new();
        let in_chain = self.cfg.ad_in_chain;
        self.paged_search(
            &mut ldap,
            "groups",
            &self.cfg.groups,
            &self.cfg.groups.filter,
            &self.group_attributes(),
            &mut |e| {
                if in_chain || e.attribute_names().any(|n| n.contains(";range=")) {
                    held.push(e);
                } else {
                    into.add_group(e);
                }
            },
        )
        .await?;
        let mut groups = held;
        if self.cfg.ad_range_retrieval {
            self.complete_ranges(&mut ldap, &mut groups).await?;
        } else if let Some(g) = groups
            .iter()
            .find(|g| g.attribute_names().any(|n| n.contains(";range=")))
        {
            return Err(self.err(
                "search groups",
                format!("{} has ranged attributes (a group over 1500 members) but source.ad_range_retrieval is false", g.dn),
            ));
        }
        if self.cfg.ad_in_chain {
            // A server without the matching rule evaluates the filter as Undefined and answers
            // every group with nobody (rc 0): refuse unless it says it is Active Directory.
            self.require_active_directory(&mut ldap).await?;
            // The server resolves nesting: each group's members are the people in its chain.
            for g in groups.iter_mut() {
                let filter = in_chain_filter(&self.cfg.users.filter, g.dn.as_str());
                let mut members = Vec::new();
                self.paged_search(
                    &mut ldap,
                    "in-chain members",
                    &self.cfg.users,
                    &filter,
                    &["1.1".to_owned()],
                    &mut |m| members.push(m.dn),
                )
                .await?;
                g.take("member");
                g.take("uniquemember");
                for m in members {
                    g.push("member", m.as_str().to_owned());
                }
            }
        }
        for g in groups {
            into.add_group(g);
        }
        self.disabled_by_filter(&mut ldap, &mut |dn| into.add_disabled(dn))
            .await?;
        let _ = ldap.unbind().await;
        Ok(users)
    }

    /// The DNs of the people `source.disabled_filter` matches (none without one).
    async fn disabled_by_filter(
        &self,
        ldap: &mut Ldap,
        sink: &mut dyn FnMut(Dn),
    ) -> Result<(), SourceError> {
        let Some(f) = &self.cfg.disabled_filter else {
            return Ok(());
        };
        let filter = format!("(&{}{f})", self.cfg.users.filter);
        self.paged_search(
            ldap,
            "disabled users",
            &self.cfg.users,
            &filter,
            &["1.1".to_owned()],
            &mut |e| sink(e.dn),
        )
        .await?;
        Ok(())
    }

    /// Reads people and groups and resolves them, or fails.
    ///
    /// Runs on a thread of its own with a single-threaded runtime: the entries are allocated,
    /// resolved and freed by one thread (glibc's allocator is several times slower when a
    /// hundred thousand entries are freed across threads), the daemon's runtime stays free, and
    /// even a panic inside the LDAP client becomes an error instead of a partial result.
    pub async fn read_directory(&self) -> Result<super::Directory, SourceError> {
        let me = self.clone();
        let limit = self.cfg.read_timeout;
        let task = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| me.err("read", format!("cannot start the LDAP runtime: {e}")))?;
            rt.block_on(async {
                let started = Instant::now();
                let mut resolver = super::Resolver::new(&me.schema);
                let users = match tokio::time::timeout(limit, me.read_into(&mut resolver)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(me.err(
                            "read",
                            format!(
                                "did not finish within {} s (source.read_timeout_secs)",
                                limit.as_secs()
                            ),
                        ))
                    }
                };
                if users == 0 {
                    return Err(SourceError::Empty {
                        origin: format!("{} under {}", me.cfg.url, me.cfg.users.base),
                    });
                }
                let read_ms = started.elapsed().as_millis() as u64;
                let dir = resolver.finish();
                tracing::debug!(
                    read_ms,
                    finish_ms = started.elapsed().as_millis() as u64 - read_ms,
                    users,
                    "directory read"
                );
                Ok(dir)
            })
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(self.err("read", format!("the LDAP client failed: {e}"))),
        }
    }
}

impl LdapSource {
    /// The light read of the off-boarding poll: the people modified at or after `since`
    /// (`modifyTimestamp`, the server's clock), resolved like a full read (so the same
    /// attributes, `userAccountControl` and ppolicy locks make someone disabled), and the DNs
    /// of everyone matching `source.disabled_filter` (DNs only, not limited by time: a filter
    /// on group membership changes no person entry). Groups are not read.
    pub async fn read_leavers(&self, since: &str) -> Result<Leavers, SourceError> {
        // Like the full read, on a thread of its own (the page sink is not `Send`).
        let me = self.clone();
        let since = since.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| me.err("poll", format!("cannot start the LDAP runtime: {e}")))?;
            rt.block_on(me.read_leavers_here(&since))
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(self.err("poll", format!("the LDAP client failed: {e}"))),
        }
    }

    async fn read_leavers_here(&self, since: &str) -> Result<Leavers, SourceError> {
        let limit = self.cfg.read_timeout;
        let read = async {
            let mut ldap = self.connect().await?;
            let mut resolver = super::Resolver::new(&self.schema);
            let filter = format!("(&{}(modifyTimestamp>={since}))", self.cfg.users.filter);
            self.paged_search(
                &mut ldap,
                "changed users",
                &self.cfg.users,
                &filter,
                &self.user_attributes(),
                &mut |e| resolver.add_person(e),
            )
            .await?;
            let mut by_filter = Vec::new();
            self.disabled_by_filter(&mut ldap, &mut |dn| by_filter.push(dn))
                .await?;
            let _ = ldap.unbind().await;
            let dir = resolver.finish();
            Ok(Leavers {
                disabled: dir
                    .people
                    .into_values()
                    .filter_map(|p| p.disabled.map(|why| (p.account_id, p.dn, why)))
                    .collect(),
                by_filter,
            })
        };
        match tokio::time::timeout(limit, read).await {
            Ok(r) => r,
            Err(_) => Err(self.err(
                "poll",
                format!(
                    "did not finish within {} s (source.read_timeout_secs)",
                    limit.as_secs()
                ),
            )),
        }
    }
}

/// Who the off-boarding poll found disabled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leavers {
    /// Disabled people: account id, the entry's DN (the poll acts only when it is the entry
    /// the last full read had for that id; a second entry with the same id makes it
    /// ambiguous, which only a full read can see), and why.
    pub disabled: Vec<(crate::model::AccountId, Dn, String)>,
    /// DNs matching `source.disabled_filter` (their account ids are those of the last full
    /// read).
    pub by_filter: Vec<Dn>,
}

impl Leavers {
    /// Every DN found: the disabled entries', then the filter's.
    pub fn dns(&self) -> impl Iterator<Item = &Dn> {
        self.disabled
            .iter()
            .map(|(_, dn, _)| dn)
            .chain(&self.by_filter)
    }
}

/// `t` as an LDAP GeneralizedTime (`20261201135500Z`).
pub fn generalized_time(t: std::time::SystemTime) -> String {
    let rfc = crate::time::format_rfc3339(t);
    // 2026-12-01T13:55:00.123Z -> 20261201135500Z
    let digits: String = rfc[..19].chars().filter(char::is_ascii_digit).collect();
    format!("{digits}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_active_directory_sends_them() {
        assert_eq!(
            parse_range("member;range=0-1499"),
            Some(("member".into(), 0, Some(1499)))
        );
        assert_eq!(
            parse_range("member;range=1500-*"),
            Some(("member".into(), 1500, None))
        );
        assert_eq!(
            parse_range("Member;Range=3000-4499"),
            Some(("member".into(), 3000, Some(4499)))
        );
        assert_eq!(parse_range("member"), None);
        assert_eq!(parse_range("member;binary"), None);
    }

    /// The shape AD returns for a group over 1500 members: an empty `member` and a ranged one.
    #[test]
    fn ranged_values_merge_and_name_the_next_request() {
        let mut e = Entry::new(Dn::new("CN=Big,OU=Groups,DC=corp,DC=test"));
        e.push("objectClass", "group".into());
        e.push("cn", "Big".into());
        for i in 0..1500 {
            e.push(
                "member;range=0-1499",
                format!("CN=u{i},OU=People,DC=corp,DC=test"),
            );
        }
        assert_eq!(
            absorb_ranges(&mut e).expect("ranges"),
            ["member;range=1500-*"]
        );
        assert_eq!(e.get("member").len(), 1500);

        // The last answer: the range ends with `*`, nothing more to fetch.
        let mut last = Entry::new(Dn::new("CN=Big,OU=Groups,DC=corp,DC=test"));
        for i in 1500..1700 {
            last.push(
                "member;range=1500-*",
                format!("CN=u{i},OU=People,DC=corp,DC=test"),
            );
        }
        assert!(absorb_ranges(&mut last).expect("ranges").is_empty());
        assert_eq!(last.get("member").len(), 200);
    }

    #[test]
    fn an_unreadable_range_is_an_error_not_a_loss() {
        let mut e = Entry::new(Dn::new("CN=Big,DC=corp"));
        e.push("member;range=0-x", "CN=a".into());
        assert!(absorb_ranges(&mut e).is_err());
    }

    #[test]
    fn the_in_chain_filter_escapes_the_group_dn() {
        assert_eq!(
            in_chain_filter("(objectClass=user)", "CN=R&D (EU),OU=Groups,DC=corp"),
            "(&(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:=CN=R&D \\28EU\\29,OU=Groups,DC=corp))"
        );
    }

    #[test]
    fn generalized_time_is_what_modify_timestamp_compares_with() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_449_155_123);
        assert_eq!(generalized_time(t), "20261123155235Z");
    }

    #[test]
    fn result_codes_say_what_to_do() {
        assert!(describe_rc(4).contains("sizeLimitExceeded"));
        assert!(describe_rc(4).contains("size.prtotal"));
        assert!(describe_rc(10).contains("referral"));
        assert_eq!(describe_rc(99), "result code 99");
    }
}
