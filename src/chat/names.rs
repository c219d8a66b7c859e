//! Names: what is valid, and who holds which name. Pure.
//!
//! A [`Name`] is stored inline (24 bytes + length), and the [`Roster`] is a
//! `Vec` indexed by `ClientId` — engines hand out small dense ids — so a
//! member costs about 26 bytes and no allocation of its own. Uniqueness is a
//! linear scan: a few microseconds at 10,000 members, and only on a join or
//! a rename, never on a chat line.

use std::fmt;

use crate::app::ClientId;

/// The longest name, in characters.
pub const MAX_NAME: usize = 24;

/// Why a name was refused; `Display` is the text after `! `.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    Invalid,
    Taken(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Invalid => write!(
                f,
                "invalid name: use 1-{MAX_NAME} characters from A-Z a-z 0-9 _ -"
            ),
            NameError::Taken(name) => write!(f, "name taken: {name}"),
        }
    }
}

impl std::error::Error for NameError {}

/// 1-24 characters of `[A-Za-z0-9_-]`.
pub fn is_valid(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A valid name, held inline: no heap allocation per member.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl Name {
    pub fn new(name: &str) -> Result<Name, NameError> {
        if !is_valid(name) {
            return Err(NameError::Invalid);
        }
        let mut bytes = [0; MAX_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Name {
            len: name.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII from `is_valid` is ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Who is here and under which name; names unique ignoring ASCII case.
#[derive(Debug, Default)]
pub struct Roster {
    /// Slot `i` is client `ClientId(i)`'s name, if it is here.
    by_id: Vec<Option<Name>>,
    /// How many slots are `Some`.
    count: usize,
}

impl Roster {
    pub fn get(&self, client: ClientId) -> Option<&Name> {
        self.by_id.get(client.0)?.as_ref()
    }

    /// Who holds `name`, ignoring case.
    pub fn holder(&self, name: &str) -> Option<ClientId> {
        self.iter()
            .find(|(_, held)| held.as_str().eq_ignore_ascii_case(name))
            .map(|(id, _)| id)
    }

    /// Give `client` the name `name` (joining, or renaming). Refused if the
    /// name is invalid or someone else holds it. Returns the previous name.
    pub fn set(&mut self, client: ClientId, name: &str) -> Result<Option<Name>, NameError> {
        let new = Name::new(name)?;
        if self.holder(name).is_some_and(|holder| holder != client) {
            return Err(NameError::Taken(name.to_string()));
        }
        if self.by_id.len() <= client.0 {
            self.by_id.resize(client.0 + 1, None);
        }
        let old = self.by_id[client.0].replace(new);
        if old.is_none() {
            self.count += 1;
        }
        Ok(old)
    }

    pub fn remove(&mut self, client: ClientId) -> Option<Name> {
        let old = self.by_id.get_mut(client.0)?.take();
        if old.is_some() {
            self.count -= 1;
        }
        old
    }

    /// Everyone here, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &Name)> + '_ {
        self.by_id
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((ClientId(i), name.as_ref()?)))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        assert!(is_valid("alice_B-7"));
        assert!(is_valid(&"x".repeat(24)));
        assert!(!is_valid(""));
        assert!(!is_valid(&"x".repeat(25)));
        assert!(!is_valid("al ice"));
        assert!(!is_valid("émile"));
    }

    #[test]
    fn names_are_held_inline() {
        let name = Name::new("Alice").unwrap();
        assert_eq!(name.as_str(), "Alice");
        assert!(std::mem::size_of::<Option<Name>>() <= 26);
        assert_eq!(Name::new("no way"), Err(NameError::Invalid));
    }

    #[test]
    fn uniqueness_ignores_case_and_allows_own_recase() {
        let mut r = Roster::default();
        assert_eq!(r.set(ClientId(1), "Alice"), Ok(None));
        assert_eq!(
            r.set(ClientId(2), "ALICE"),
            Err(NameError::Taken("ALICE".into()))
        );
        let old = r.set(ClientId(1), "alice").unwrap();
        assert_eq!(old.map(|n| n.to_string()), Some("Alice".into()));
        r.remove(ClientId(1));
        assert!(r.set(ClientId(2), "alice").is_ok());
        assert_eq!(r.holder("ALICE"), Some(ClientId(2)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn iter_and_count_follow_joins_and_leaves() {
        let mut r = Roster::default();
        r.set(ClientId(5), "e").unwrap();
        r.set(ClientId(0), "a").unwrap();
        assert_eq!(r.len(), 2);
        let ids: Vec<usize> = r.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![0, 5]);
        assert!(r.remove(ClientId(5)).is_some());
        assert!(r.remove(ClientId(5)).is_none());
        assert_eq!(r.len(), 1);
    }
}
