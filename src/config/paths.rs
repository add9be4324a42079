//! File paths as written: a relative path is relative to the configuration file, and the files
//! that hold credentials may also be written `${CREDENTIALS_DIRECTORY}/NAME` (or
//! `$CREDENTIALS_DIRECTORY/NAME`).
//!
//! Why: systemd's `LoadCredential=NAME:PATH` copies each secret into a private directory, named
//! by `$CREDENTIALS_DIRECTORY`, that only the service can read (normally
//! `/run/credentials/<unit>/`, but the unit's name is in it: a renamed or templated unit moves
//! it). Spelling the variable keeps one configuration right for every unit name.
//!
//! Deliberately small: only that one variable, only as the first component, only in the keys
//! that name credential files (every `*_file` secret: `credentials.*.token_file`,
//! `credentials.*.client_secret_file`, `source.bind_password_file`, `http.token_file`; and
//! `source.ca_file`, since a CA bundle may be a credential too). Nothing else is interpolated: a
//! credential file's path starting with any other `$` is a problem rather than a file quietly
//! looked for under that literal name, and the text anywhere past the start is literal.

use super::raw::Problems;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variable systemd sets for a service with `LoadCredential=` or `SetCredential=`.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// How the configuration's paths become paths on disk.
pub(super) struct Paths<'a> {
    /// The configuration file's directory.
    pub base: &'a Path,
    /// The environment; only [`CREDENTIALS_DIRECTORY`] is ever asked for. Injected so that
    /// tests need not change the process's environment.
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
}

impl Paths<'_> {
    /// `path`, relative to the configuration file's directory unless absolute.
    pub fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    /// A credential file named by `key`: a leading `${CREDENTIALS_DIRECTORY}/` or
    /// `$CREDENTIALS_DIRECTORY/` is replaced by that variable's value, any other path is
    /// [`Paths::resolve`]d. `None`, with a problem naming `key`, when the variable is needed but
    /// unset, empty or relative, or when the path starts with another variable.
    pub fn credential_file(&self, key: &str, path: PathBuf, p: &mut Problems) -> Option<PathBuf> {
        // Written paths come from TOML or environment strings, so they are UTF-8; anything else
        // cannot name the variable.
        let Some(text) = path.to_str() else {
            return Some(self.resolve(path));
        };
        let name = ["${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix));
        let Some(name) = name else {
            if text.starts_with('$') {
                p.push(
                    key,
                    format!("{text:?}: only a leading ${{{CREDENTIALS_DIRECTORY}}}/ is expanded, no other variable; write the path in full"),
                );
                return None;
            }
            return Some(self.resolve(path));
        };
        // `${CREDENTIALS_DIRECTORY}//x` is still `x` in the directory, not the absolute `/x`.
        let name = name.trim_start_matches('/');
        if name.is_empty() {
            p.push(
                key,
                format!("{text:?} names no file: add the credential's name (as in LoadCredential=NAME:...)"),
            );
            return None;
        }
        match (self.env)(CREDENTIALS_DIRECTORY).filter(|v| !v.is_empty()) {
            None => {
                p.push(
                    key,
                    format!("{text:?} needs ${CREDENTIALS_DIRECTORY}, which is not set: systemd sets it for a service with LoadCredential= (deploy/systemd/bbsync.service); elsewhere set {CREDENTIALS_DIRECTORY} to the directory holding the secret files, or write the file's full path"),
                );
                None
            }
            Some(dir) if !Path::new(&dir).is_absolute() => {
                p.push(
                    key,
                    format!(
                        "${CREDENTIALS_DIRECTORY} is {:?}, not an absolute path",
                        Path::new(&dir).display().to_string()
                    ),
                );
                None
            }
            Some(dir) => Some(PathBuf::from(dir).join(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Paths::credential_file`] with `CREDENTIALS_DIRECTORY` set to `dir` (`None`: unset),
    /// from `/etc/bbsync`: the path, or the problems.
    fn file(dir: Option<&str>, written: &str) -> Result<PathBuf, Vec<String>> {
        let env = |name: &str| {
            assert_eq!(name, CREDENTIALS_DIRECTORY, "no other variable is read");
            dir.map(OsString::from)
        };
        let paths = Paths {
            base: Path::new("/etc/bbsync"),
            env: &env,
        };
        let mut p = Problems::default();
        match paths.credential_file("credentials.admin.token_file", written.into(), &mut p) {
            Some(path) => {
                assert!(p.is_empty());
                Ok(path)
            }
            None => Err(p.into_messages()),
        }
    }

    const RUN: Option<&str> = Some("/run/credentials/bbsync.service");

    #[test]
    fn both_spellings_of_the_variable_expand_to_its_value() {
        for written in [
            "${CREDENTIALS_DIRECTORY}/bitbucket-token",
            "$CREDENTIALS_DIRECTORY/bitbucket-token",
            "${CREDENTIALS_DIRECTORY}//bitbucket-token",
        ] {
            assert_eq!(
                file(RUN, written),
                Ok(PathBuf::from(
                    "/run/credentials/bbsync.service/bitbucket-token"
                )),
                "{written}"
            );
        }
        assert_eq!(
            file(Some("/tmp/creds/"), "${CREDENTIALS_DIRECTORY}/a/b"),
            Ok(PathBuf::from("/tmp/creds/a/b"))
        );
    }

    #[test]
    fn an_unset_or_empty_variable_is_a_problem_naming_the_key_and_load_credential() {
        for dir in [None, Some("")] {
            let problems =
                file(dir, "${CREDENTIALS_DIRECTORY}/bitbucket-token").expect_err("unset");
            assert_eq!(problems.len(), 1, "{problems:?}");
            let msg = &problems[0];
            assert!(
                msg.starts_with("credentials.admin.token_file: "),
                "names the key: {msg}"
            );
            assert!(msg.contains("$CREDENTIALS_DIRECTORY"), "{msg}");
            assert!(msg.contains("LoadCredential="), "{msg}");
            assert!(msg.contains("set CREDENTIALS_DIRECTORY"), "{msg}");
        }
        let problems = file(Some("creds"), "$CREDENTIALS_DIRECTORY/x").expect_err("relative");
        assert!(
            problems[0].starts_with("credentials.admin.token_file: $CREDENTIALS_DIRECTORY is \"creds\", not an absolute path"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_text_anywhere_but_at_the_start_is_taken_literally() {
        for (written, expected) in [
            (
                "/etc/bbsync/${CREDENTIALS_DIRECTORY}/x",
                "/etc/bbsync/${CREDENTIALS_DIRECTORY}/x",
            ),
            (
                "secrets/$CREDENTIALS_DIRECTORY/x",
                "/etc/bbsync/secrets/$CREDENTIALS_DIRECTORY/x",
            ),
            ("token", "/etc/bbsync/token"),
            (
                "/run/credentials/bbsync.service/bitbucket-token",
                "/run/credentials/bbsync.service/bitbucket-token",
            ),
        ] {
            // Unset: a literal path does not need the variable.
            assert_eq!(
                file(None, written),
                Ok(PathBuf::from(expected)),
                "{written}"
            );
        }
    }

    #[test]
    fn another_variable_or_a_missing_name_is_a_problem_not_a_literal_file() {
        for written in [
            "$HOME/token",
            "${CREDENTIALS_DIR}/token",
            "$CREDENTIALS_DIRECTORYtoken",
            "${CREDENTIALS_DIRECTORY}",
        ] {
            let problems = file(RUN, written).expect_err(written);
            assert!(
                problems[0].contains("only a leading ${CREDENTIALS_DIRECTORY}/ is expanded"),
                "{written}: {problems:?}"
            );
        }
        for written in ["${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY//"] {
            let problems = file(RUN, written).expect_err(written);
            assert!(problems[0].contains("names no file"), "{problems:?}");
        }
    }
}
