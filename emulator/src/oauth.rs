//! `POST /site/oauth2/access_token`: OAuth 2.0 client-credentials (and refresh-token) grant
//! for `oauth_consumer` credentials.

use crate::auth::{parse_basic, AuthState, IssuedToken};
use crate::http::{form_pairs, Reply};
use crate::seed::CredentialKind;
use crate::state::Store;
use serde_json::json;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default OAuth access-token lifetime (seconds).
pub const DEFAULT_TTL_SECS: u64 = 7200;

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// An unguessable-enough token string (std's randomly keyed hasher, no extra dependency).
pub fn random_token(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut parts = String::new();
    for i in 0..3u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(i);
        parts.push_str(&format!("{:016x}", h.finish()));
    }
    format!("{prefix}{parts}")
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// Handles a token request; answers the reply and the consumer's credential id when known.
pub fn handle(
    store: &Store,
    auth: &mut AuthState,
    now: Instant,
    authorization: Option<&str>,
    body: &[u8],
) -> (Reply, Option<String>) {
    let consumer = authorization
        .and_then(parse_basic)
        .and_then(|(key, secret)| {
            store.seed.credentials.iter().find(|c| {
                c.kind == CredentialKind::OauthConsumer
                    && c.key.as_deref() == Some(key.as_str())
                    && c.secret.as_deref() == Some(secret.as_str())
            })
        });
    let Some(consumer) = consumer else {
        return (
            oauth_error(401, "invalid_client", "Invalid OAuth client credentials")
                .with_header("www-authenticate", "Basic realm=\"Bitbucket.org HTTP\""),
            None,
        );
    };
    let id = Some(consumer.id.clone());
    let form = form_pairs(&String::from_utf8_lossy(body));
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let refresh = match get("grant_type") {
        Some("client_credentials") => random_token("rt-"),
        Some("refresh_token") => {
            let given = get("refresh_token").unwrap_or("");
            match auth.refresh_tokens.get(given) {
                Some(owner) if *owner == consumer.id => given.to_string(),
                _ => {
                    return (
                        oauth_error(400, "invalid_grant", "Invalid refresh_token"),
                        id,
                    )
                }
            }
        }
        None => {
            return (
                oauth_error(400, "invalid_request", "Missing grant_type parameter"),
                id,
            )
        }
        Some(other) => {
            return (
                oauth_error(
                    400,
                    "unsupported_grant_type",
                    &format!("Unsupported grant type: {other}"),
                ),
                id,
            )
        }
    };
    let ttl = consumer.token_ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    let token = random_token("oat-");
    auth.access_tokens.insert(
        token.clone(),
        IssuedToken {
            credential_id: consumer.id.clone(),
            expires_at: now.checked_add(Duration::from_secs(ttl)).unwrap_or(now),
        },
    );
    auth.refresh_tokens
        .insert(refresh.clone(), consumer.id.clone());
    let reply = Reply::json(
        200,
        json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ttl,
            "scopes": consumer.scopes.join(" "),
            "refresh_token": refresh,
            "state": "client_credentials",
        }),
    );
    (reply, id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let a = random_token("x-");
        let b = random_token("x-");
        assert_ne!(a, b);
        assert!(a.starts_with("x-") && a.len() == 2 + 48);
    }
}
