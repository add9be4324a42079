//! `[credentials.NAME]`: the Bitbucket credentials, by name. `kind` picks which keys apply;
//! every secret may be inline, from the environment, or in a `*_file`.

use super::paths::Paths;
use super::raw::{keys, Field, Problems, RawTable, Table};
use super::{Credential, Secret};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[credentials.NAME]` as written: `kind` picks the variant, and with it the keys that apply.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum RawCredential {
    /// An admin's Atlassian API token, sent as HTTP Basic `email:token`.
    ApiToken(RawApiToken),
    /// A workspace, project or repository access token, sent as Bearer.
    AccessToken(RawAccessToken),
    /// An OAuth 2.0 consumer using the client-credentials grant.
    #[serde(rename = "oauth")]
    OAuth(RawOAuth),
}

impl RawTable for RawCredential {
    fn kinds() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("api_token", keys::<RawApiToken>()),
            ("access_token", keys::<RawAccessToken>()),
            ("oauth", keys::<RawOAuth>()),
        ]
    }

    const KIND_NOTE: &'static str = " (app passwords were removed by Atlassian on 2026-07-28)";
}

/// `kind = "api_token"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawApiToken {
    /// The admin's Atlassian account email: the Basic auth user name.
    email: Field<String>,
    /// The API token itself (inline or from the environment).
    token: Field<String>,
    /// A file holding the API token (container and systemd credentials).
    token_file: Field<PathBuf>,
}

/// `kind = "access_token"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAccessToken {
    /// The access token itself (inline or from the environment).
    token: Field<String>,
    /// A file holding the access token.
    token_file: Field<PathBuf>,
}

/// `kind = "oauth"`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawOAuth {
    /// The consumer's key.
    client_id: Field<String>,
    /// The consumer's secret (inline or from the environment).
    client_secret: Field<String>,
    /// A file holding the consumer's secret.
    client_secret_file: Field<PathBuf>,
}

/// `[credentials.*]`: every credential that is complete, by name.
pub(super) fn validate(
    raw: Field<BTreeMap<String, Table<RawCredential>>>,
    paths: &Paths,
    p: &mut Problems,
) -> BTreeMap<String, Credential> {
    let mut credentials = BTreeMap::new();
    for (name, table) in raw.get("credentials", p).unwrap_or_default() {
        let key = format!("credentials.{name}");
        let credential = match table.read(&key, p) {
            Some(RawCredential::ApiToken(c)) => {
                let email_key = format!("{key}.email");
                let email = c.email.text(&email_key, p);
                if email.as_deref().is_none_or(|e| !e.contains('@')) && !p.any_under(&email_key) {
                    p.push(
                        email_key,
                        "an API token is sent as Basic auth with the Atlassian account email; set the admin's email",
                    );
                }
                let token =
                    required_secret(&format!("{key}.token"), c.token, c.token_file, paths, p);
                match (email, token) {
                    (Some(email), Some(token)) => Some(Credential::ApiToken { email, token }),
                    _ => None,
                }
            }
            Some(RawCredential::AccessToken(c)) => {
                required_secret(&format!("{key}.token"), c.token, c.token_file, paths, p)
                    .map(|token| Credential::AccessToken { token })
            }
            Some(RawCredential::OAuth(c)) => {
                let id_key = format!("{key}.client_id");
                let id = c.client_id.text(&id_key, p);
                if id.is_none() && !p.any_under(&id_key) {
                    p.required(id_key, "for an OAuth consumer");
                }
                let secret = required_secret(
                    &format!("{key}.client_secret"),
                    c.client_secret,
                    c.client_secret_file,
                    paths,
                    p,
                );
                match (id, secret) {
                    (Some(client_id), Some(client_secret)) => Some(Credential::OAuth {
                        client_id,
                        client_secret,
                    }),
                    _ => None,
                }
            }
            None => None,
        };
        if let Some(c) = credential {
            credentials.insert(name, c);
        }
    }
    credentials
}

/// [`read_secret`], where giving neither `key` nor `key_file` is a problem too.
fn required_secret(
    key: &str,
    inline: Field<String>,
    file: Field<PathBuf>,
    paths: &Paths,
    p: &mut Problems,
) -> Option<Secret> {
    let before = p.len();
    let secret = read_secret(key, inline, file, paths, p);
    if secret.is_none() && p.len() == before {
        p.say(key, format!("{key} (or {key}_file) is required"));
    }
    secret
}

/// A secret given inline (or by the environment) as `key`, or in the file `key_file` (container
/// and systemd credentials, which may be written `${CREDENTIALS_DIRECTORY}/NAME`: see
/// [`Paths::credential_file`]; one trailing newline dropped). `None` when neither is set; both
/// set, an unreadable or an empty file are problems naming the key.
pub(super) fn read_secret(
    key: &str,
    inline: Field<String>,
    file: Field<PathBuf>,
    paths: &Paths,
    p: &mut Problems,
) -> Option<Secret> {
    let file_key = format!("{key}_file");
    let before = p.len();
    let inline = inline.text(key, p);
    let file = file.get(&file_key, p);
    if p.len() > before {
        return None;
    }
    match (inline, file) {
        (Some(_), Some(_)) => {
            p.say(key, format!("{key} and {file_key} are both set: keep one"));
            None
        }
        (Some(v), None) => Some(Secret::new(v)),
        (None, Some(f)) => {
            let f = paths.credential_file(&file_key, f, p)?;
            match std::fs::read_to_string(&f) {
                Ok(s) if !s.trim().is_empty() => {
                    Some(Secret::new(s.trim_end_matches(['\r', '\n']).to_owned()))
                }
                Ok(_) => {
                    p.push(file_key, format!("{} is empty", f.display()));
                    None
                }
                Err(e) => {
                    p.push(file_key, format!("cannot read {}: {e}", f.display()));
                    None
                }
            }
        }
        (None, None) => None,
    }
}
