//! Names: what is valid, and who holds which name. Pure.
//!
//! A [`Name`] is stored inline (24 bytes + length), and the [`Roster`] is a
//! `Vec` indexed by `ClientId` — engines hand out small dense ids — plus a
//! `HashMap` from the lower-cased name to its holder, so a member costs
//! about 26 + 40 bytes (and the map's spare room) and no allocation of its
//! own. Uniqueness is one lookup in that map: a join storm of N clients
//! costs O(N), where a scan of every name on each join made it O(N²).

use std::collections::HashMap;
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
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
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

    /// The same name in lower case: the key that makes `Alice` and `ALICE`
    /// one name. (Names are ASCII, so folding is byte by byte.)
    pub fn folded(mut self) -> Name {
        self.bytes.make_ascii_lowercase();
        self
    }
}

/// By the text, byte by byte (`ab` < `b`), as a sort of the strings would;
/// a derived order would compare the lengths first.
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
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
    /// Each held name, lower-cased, and who holds it: kept in step with
    /// `by_id` by `set` and `remove`, the only writers of either.
    by_folded: HashMap<Name, ClientId>,
}

impl Roster {
    pub fn get(&self, client: ClientId) -> Option<&Name> {
        self.by_id.get(client.0)?.as_ref()
    }

    /// Who holds `name`, ignoring case.
    pub fn holder(&self, name: &str) -> Option<ClientId> {
        // An invalid name matches no held one, all of which are valid.
        let name = Name::new(name).ok()?;
        self.by_folded.get(&name.folded()).copied()
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
        match old {
            Some(old) => {
                self.by_folded.remove(&old.folded());
            }
            None => self.count += 1,
        }
        self.by_folded.insert(new.folded(), client);
        Ok(old)
    }

    pub fn remove(&mut self, client: ClientId) -> Option<Name> {
        let old = self.by_id.get_mut(client.0)?.take()?;
        self.count -= 1;
        self.by_folded.remove(&old.folded());
        Some(old)
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

    /// Names order as their text does, so folded names sort as `/who`
    /// always listed them.
    #[test]
    fn names_order_by_their_text() {
        let n = |s| Name::new(s).unwrap();
        assert!(n("ab") < n("b"), "not shorter first");
        assert!(n("a") < n("ab"));
        assert_eq!(n("Bob").folded(), n("bob"));
        assert!(n("Zed").folded() > n("amy"));
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

    /// The index follows every join, rename and leave: a name is found in
    /// any case while held, and is free again once let go.
    #[test]
    fn the_name_index_follows_renames_and_leaves() {
        let mut r = Roster::default();
        for i in 0..1000 {
            r.set(ClientId(i), &format!("user{i}")).unwrap();
        }
        assert_eq!(r.holder("USER999"), Some(ClientId(999)));
        assert_eq!(r.holder("user1000"), None);
        assert_eq!(r.holder("not valid!"), None);
        // A rename frees the old name and takes the new one.
        r.set(ClientId(7), "Seven").unwrap();
        assert_eq!(r.holder("user7"), None);
        assert_eq!(r.holder("sEVEN"), Some(ClientId(7)));
        assert!(r.set(ClientId(8), "user7").is_ok(), "the old name is free");
        assert_eq!(r.holder("user8"), None);
        // A leave frees the name; a refused rename changes nothing.
        r.remove(ClientId(7));
        assert_eq!(r.holder("seven"), None);
        assert_eq!(
            r.set(ClientId(9), "USER7"),
            Err(NameError::Taken("USER7".into()))
        );
        assert_eq!(r.holder("user9"), Some(ClientId(9)));
        // Every held name is found, under its own id, and nothing else is.
        for (id, name) in r.iter() {
            assert_eq!(r.holder(name.as_str()), Some(id));
        }
        assert_eq!(r.by_folded.len(), r.len());
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
