//! Cookies as secrets: never printed, wiped from memory when dropped, and
//! long enough that the handshake's proofs give an offline guesser nothing
//! to work with; files holding them readable by their owner only.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::Error;

/// The shortest cookie a node accepts, in bytes. Every handshake and every
/// gossip datagram lets whoever records it test guesses offline, as fast as
/// they can compute HMACs; 16 random bytes (128 bits) put that out of reach.
/// `malla cookie` makes 32.
pub const MIN_COOKIE_LEN: usize = 16;

/// A cookie (or any secret the node is given): its bytes are wiped when the
/// last copy is dropped, and `Debug` prints `Secret(..)`.
///
/// ```
/// use malla_runtime::Secret;
///
/// let cookie = Secret::from("a-long-random-cluster-cookie");
/// assert_eq!(format!("{cookie:?}"), "Secret(..)");
/// assert_eq!(cookie.expose(), b"a-long-random-cluster-cookie");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` if it is long enough to be a cookie; `what` names it in the error.
    pub(crate) fn check_cookie(&self, what: &str) -> Result<(), Error> {
        if self.len() >= MIN_COOKIE_LEN {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{what} is {} bytes long; a cookie needs at least {MIN_COOKIE_LEN} (random ones: `malla cookie` makes one)",
            self.len()
        )))
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret::from(text.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret::from(text.as_bytes().to_vec())
    }
}

impl From<&String> for Secret {
    fn from(text: &String) -> Self {
        Secret::from(text.as_str())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

/// The cookie in `file`, trailing whitespace (a final newline) ignored.
/// Refused, as Erlang refuses `~/.erlang.cookie`, if the group or others
/// may read it: a cookie anyone on the machine can read is no secret.
pub(crate) fn read_cookie_file(file: &Path) -> Result<Secret, Error> {
    let cannot = |e: std::io::Error| Error::Config(format!("cannot read the cookie file {}: {e}", file.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).map_err(cannot)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Config(format!(
                "the cookie file {} may be read by its group or others (mode {:o}): `chmod 600 {}`",
                file.display(),
                mode & 0o777,
                file.display()
            )));
        }
    }
    let mut bytes = Zeroizing::new(std::fs::read(file).map_err(cannot)?);
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    bytes.truncate(end);
    Ok(Secret(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("malla-secret-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        path
    }

    #[test]
    fn a_secret_is_never_printed() {
        let secret = Secret::from("hunter2-hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", Some(secret)), "Some(Secret(..))");
    }

    #[test]
    fn short_cookies_are_refused_with_what_to_do() {
        let err = Secret::from("short")
            .check_cookie("the cookie")
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 bytes") && err.contains("malla cookie"), "{err}");
        assert!(Secret::from("0123456789abcdef").check_cookie("the cookie").is_ok());
    }

    #[test]
    fn a_cookie_file_others_may_read_is_refused() {
        let open = temp("open", "0123456789abcdef0123\n", 0o644);
        let err = read_cookie_file(&open).unwrap_err().to_string();
        std::fs::remove_file(&open).ok();
        if cfg!(unix) {
            assert!(
                err.contains("may be read by its group or others") && err.contains("chmod 600"),
                "{err}"
            );
        }
        let private = temp("private", "0123456789abcdef0123\n", 0o600);
        let secret = read_cookie_file(&private).unwrap();
        std::fs::remove_file(&private).ok();
        assert_eq!(secret.expose(), b"0123456789abcdef0123", "the final newline dropped");
    }
}
