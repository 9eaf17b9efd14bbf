//! Call metadata: a small map of string keys to bytes that travels with a
//! request, for interceptors on both sides (an auth token, a tenant, a
//! request id), never for a method's arguments.
//!
//! **Bounds**, checked as entries are added and again as a request is read:
//! at most [`MAX_ENTRIES`] entries, keys of 1 to [`MAX_KEY_LEN`] bytes of
//! lowercase ASCII letters, digits, `-`, `_` and `.` (as gRPC's metadata
//! keys), and at most [`MAX_ENCODED_LEN`] bytes encoded in all.
//!
//! **On the wire** metadata rides inside the sealed record of its request:
//! someone on the path without the cookie can neither read, alter nor add
//! it. A peer holding the cookie can send any metadata it likes, under any
//! node's call: a server interceptor that trusts a token in it trusts the
//! token, not the connection. A request past the bounds closes the
//! connection that carried it (our nodes never send one). A request without
//! metadata is encoded byte for byte as before metadata existed.
//!
//! The encoding: `count u8`, then per entry `key_len u8, key, value_len u16
//! (little-endian), value`.

use std::fmt;

use crate::Error;

/// Most entries a call's metadata holds.
pub const MAX_ENTRIES: usize = 16;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Largest metadata, encoded (keys, values and their lengths), in bytes.
pub const MAX_ENCODED_LEN: usize = 4096;

/// The metadata of one call: keys to bytes, in insertion order, each key
/// at most once.
///
/// ```
/// use malla_runtime::Metadata;
///
/// let mut metadata = Metadata::new();
/// metadata.insert("authorization", b"Bearer s3cret".to_vec())?;
/// assert_eq!(metadata.get("authorization"), Some(&b"Bearer s3cret"[..]));
/// assert!(metadata.insert("Not A Key", vec![]).is_err());
/// # Ok::<(), malla_runtime::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(Box<str>, Box<[u8]>)>,
}

impl Metadata {
    /// No entries; allocates nothing.
    pub const fn new() -> Self {
        Metadata { entries: Vec::new() }
    }

    /// Sets `key` to `value`, replacing a value it had. Fails, changing
    /// nothing, on a key that is not one (see the module docs) or when the
    /// metadata would pass its bounds.
    pub fn insert(&mut self, key: &str, value: impl Into<Box<[u8]>>) -> Result<(), Error> {
        check_key(key.as_bytes()).map_err(invalid)?;
        let value = value.into();
        let replaced = self.entries.iter().position(|(k, _)| &**k == key);
        let old_len = replaced.map_or(0, |at| entry_len(&self.entries[at].0, &self.entries[at].1));
        let entries = self.entries.len() + usize::from(replaced.is_none());
        if entries > MAX_ENTRIES {
            return Err(invalid(format!("more than {MAX_ENTRIES} entries")));
        }
        let encoded = self.encoded_len() - old_len + entry_len(key, &value);
        if value.len() > usize::from(u16::MAX) || encoded > MAX_ENCODED_LEN {
            return Err(invalid(format!(
                "`{key}` would make it {encoded} bytes encoded, more than {MAX_ENCODED_LEN}"
            )));
        }
        match replaced {
            Some(at) => self.entries[at].1 = value,
            None => self.entries.push((key.into(), value)),
        }
        Ok(())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Box<[u8]>> {
        let at = self.entries.iter().position(|(k, _)| &**k == key)?;
        Some(self.entries.remove(at).1)
    }

    /// The entries, in the order they were first set.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Its size on the wire; 0 when empty (nothing is sent).
    pub fn encoded_len(&self) -> usize {
        match self.entries.len() {
            0 => 0,
            _ => 1 + self.entries.iter().map(|(k, v)| entry_len(k, v)).sum::<usize>(),
        }
    }

    /// Appends the wire encoding to `out`; nothing when empty.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        if self.entries.is_empty() {
            return;
        }
        out.reserve(self.encoded_len());
        // Bounded by MAX_ENTRIES, MAX_KEY_LEN and u16::MAX on insert.
        out.push(self.entries.len() as u8);
        for (key, value) in &self.entries {
            out.push(key.len() as u8);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    /// The metadata `bytes` encode, checked as [`validate`] checks them.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Metadata, MetadataError> {
        let mut metadata = Metadata::new();
        for_each_entry(bytes, |key, value| {
            metadata.entries.push((key.into(), value.into()));
        })?;
        Ok(metadata)
    }
}

impl fmt::Debug for Metadata {
    /// Keys and sizes only: values are often secrets (tokens).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, Bytes(v.len()))))
            .finish()
    }
}

/// A value's size, shown in its place.
struct Bytes(usize);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// Why received metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error("metadata of {0} bytes, more than {MAX_ENCODED_LEN}")]
    TooLarge(usize),
    #[error("metadata of {0} entries, more than {MAX_ENTRIES}")]
    TooMany(usize),
    #[error("metadata ends inside an entry")]
    Truncated,
    #[error("metadata has bytes after its last entry")]
    Trailing,
    #[error("metadata key: {0}")]
    BadKey(String),
    #[error("metadata key `{0}` twice")]
    Repeated(String),
}

/// Checks encoded metadata without allocating: what a connection does to
/// every request that carries some, before anything runs.
pub(crate) fn validate(bytes: &[u8]) -> Result<(), MetadataError> {
    for_each_entry(bytes, |_, _| {})
}

fn for_each_entry<'a>(bytes: &'a [u8], mut entry: impl FnMut(&'a str, &'a [u8])) -> Result<(), MetadataError> {
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(MetadataError::TooLarge(bytes.len()));
    }
    let Some((&count, mut rest)) = bytes.split_first() else {
        return Err(MetadataError::Truncated);
    };
    let count = usize::from(count);
    if count == 0 || count > MAX_ENTRIES {
        return Err(MetadataError::TooMany(count));
    }
    // Keys seen so far, to refuse repeats: at most 16, so a scan is cheapest.
    let mut keys: [&str; MAX_ENTRIES] = [""; MAX_ENTRIES];
    for seen in 0..count {
        let (&key_len, after) = rest.split_first().ok_or(MetadataError::Truncated)?;
        let (key, after) = after
            .split_at_checked(usize::from(key_len))
            .ok_or(MetadataError::Truncated)?;
        check_key(key).map_err(MetadataError::BadKey)?;
        // `check_key` admits ASCII only.
        let key = std::str::from_utf8(key).map_err(|_| MetadataError::BadKey("not UTF-8".into()))?;
        if keys[..seen].contains(&key) {
            return Err(MetadataError::Repeated(key.to_owned()));
        }
        keys[seen] = key;
        let (len, after) = after.split_first_chunk::<2>().ok_or(MetadataError::Truncated)?;
        let (value, after) = after
            .split_at_checked(usize::from(u16::from_le_bytes(*len)))
            .ok_or(MetadataError::Truncated)?;
        entry(key, value);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(MetadataError::Trailing);
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!("{} bytes long, not 1 to {MAX_KEY_LEN}", key.len()));
    }
    match key
        .iter()
        .find(|&&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')))
    {
        Some(&b) => Err(format!(
            "`{}` has {:?}: keys are lowercase ASCII letters, digits, `-`, `_` and `.`",
            String::from_utf8_lossy(key),
            char::from(b)
        )),
        None => Ok(()),
    }
}

fn entry_len(key: &str, value: &[u8]) -> usize {
    1 + key.len() + 2 + value.len()
}

fn invalid(reason: String) -> Error {
    Error::InvalidMetadata { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(metadata: &Metadata) -> Vec<u8> {
        let mut out = Vec::new();
        metadata.encode_into(&mut out);
        out
    }

    #[test]
    fn metadata_round_trips_in_insertion_order() {
        let mut metadata = Metadata::new();
        metadata.insert("tenant", b"acme".to_vec()).unwrap();
        metadata.insert("authorization", b"Bearer x".to_vec()).unwrap();
        metadata.insert("tenant", b"globex".to_vec()).unwrap();
        let bytes = encoded(&metadata);
        assert_eq!(bytes.len(), metadata.encoded_len());
        let back = Metadata::decode(&bytes).unwrap();
        assert_eq!(back, metadata);
        let keys: Vec<_> = back.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["tenant", "authorization"]);
        assert_eq!(back.get("tenant"), Some(&b"globex"[..]));
    }

    #[test]
    fn empty_metadata_encodes_to_nothing() {
        assert!(encoded(&Metadata::new()).is_empty());
        assert_eq!(Metadata::new().encoded_len(), 0);
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let mut metadata = Metadata::new();
        for key in ["", "Upper", "sp ace", "ü", &"k".repeat(MAX_KEY_LEN + 1)] {
            let err = metadata.insert(key, vec![]).unwrap_err().to_string();
            assert!(err.contains("metadata"), "{err}");
        }
        assert!(metadata.is_empty());
        metadata.insert(&"k".repeat(MAX_KEY_LEN), vec![]).unwrap();
    }

    #[test]
    fn the_bounds_hold_and_a_refused_insert_changes_nothing() {
        let mut metadata = Metadata::new();
        for i in 0..MAX_ENTRIES {
            metadata.insert(&format!("k{i}"), vec![0; 10]).unwrap();
        }
        let err = metadata.insert("one-more", vec![]).unwrap_err();
        assert!(err.to_string().contains("more than 16 entries"), "{err}");
        // Replacing an entry is not one more.
        metadata.insert("k0", vec![1; 10]).unwrap();

        let mut big = Metadata::new();
        big.insert("a", vec![0; 3000]).unwrap();
        let err = big.insert("b", vec![0; 2000]).unwrap_err();
        assert!(err.to_string().contains("more than 4096"), "{err}");
        assert_eq!(big.len(), 1);
        // Shrinking a value that is there fits again.
        big.insert("a", vec![0; 10]).unwrap();
        big.insert("b", vec![0; 2000]).unwrap();
        assert!(big.encoded_len() <= MAX_ENCODED_LEN);
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let mut good = Metadata::new();
        good.insert("a", b"xy".to_vec()).unwrap();
        let bytes = encoded(&good);
        assert_eq!(validate(&bytes), Ok(()));
        for cut in 0..bytes.len() {
            assert!(validate(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(validate(&trailing), Err(MetadataError::Trailing));
        assert_eq!(validate(&[0]), Err(MetadataError::TooMany(0)));
        assert_eq!(validate(&[17]), Err(MetadataError::TooMany(17)));
        assert!(matches!(validate(&[1, 1, b'A', 0, 0]), Err(MetadataError::BadKey(_))));
        assert_eq!(
            validate(&[2, 1, b'a', 0, 0, 1, b'a', 0, 0]),
            Err(MetadataError::Repeated("a".into()))
        );
        assert_eq!(
            validate(&vec![1; MAX_ENCODED_LEN + 1]),
            Err(MetadataError::TooLarge(MAX_ENCODED_LEN + 1))
        );
    }

    #[test]
    fn debug_shows_no_values() {
        let mut metadata = Metadata::new();
        metadata.insert("authorization", b"s3cret".to_vec()).unwrap();
        let shown = format!("{metadata:?}");
        assert!(shown.contains("authorization") && !shown.contains("s3cret"), "{shown}");
    }
}
