//! Names: what is valid, and who holds which name. Pure.

use std::collections::HashMap;

use crate::app::ClientId;

/// The longest name, in characters.
pub const MAX_NAME: usize = 24;

/// Why a name was refused; `Display` is the text after `! `.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    Invalid,
    Taken(String),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Invalid => write!(
                f,
                "invalid name: use 1-{MAX_NAME} characters from A-Z a-z 0-9 _ -"
            ),
            NameError::Taken(name) => write!(f, "name taken: {name}"),
        }
    }
}

/// 1-24 characters of `[A-Za-z0-9_-]`.
pub fn is_valid(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The names in use, unique ignoring ASCII case.
#[derive(Debug, Default)]
pub struct Names {
    /// Lower-cased name → holder, for the uniqueness check.
    by_folded: HashMap<Box<str>, ClientId>,
}

impl Names {
    /// Claim `name` for `client`. The caller releases the old name itself.
    pub fn claim(&mut self, name: &str, client: ClientId) -> Result<(), NameError> {
        if !is_valid(name) {
            return Err(NameError::Invalid);
        }
        let folded: Box<str> = name.to_ascii_lowercase().into();
        match self.by_folded.get(&folded) {
            Some(&holder) if holder != client => Err(NameError::Taken(name.to_string())),
            _ => {
                self.by_folded.insert(folded, client);
                Ok(())
            }
        }
    }

    pub fn release(&mut self, name: &str) {
        self.by_folded.remove(name.to_ascii_lowercase().as_str());
    }

    pub fn is_taken(&self, name: &str) -> bool {
        self.by_folded
            .contains_key(name.to_ascii_lowercase().as_str())
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
    fn uniqueness_ignores_case_and_allows_own_recase() {
        let mut n = Names::default();
        n.claim("Alice", ClientId(1)).unwrap();
        assert_eq!(
            n.claim("ALICE", ClientId(2)),
            Err(NameError::Taken("ALICE".into()))
        );
        assert!(n.claim("alice", ClientId(1)).is_ok());
        n.release("aLiCe");
        assert!(n.claim("alice", ClientId(2)).is_ok());
    }
}
