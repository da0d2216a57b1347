//! Scopes (RFC 6749 §3.3): sets of scope tokens.
//!
//! A [`Scopes`] value is a set of scope tokens. It travels in tokens as the
//! space-separated `scope` claim and is cheap to clone (the set sits behind an
//! `Arc`), so the layer can hand it to every check on a request without
//! copying strings.
//!
//! Route-level requirements are guards:
//! [`RequireScopes`](crate::guard::RequireScopes) and the axum `Scoped`
//! extractor check a request's scopes against a set of these.
//!
//! # The scopes in effect for a request
//!
//! A token's `scope` says what the user was granted at login; what the user
//! may do *now* is [`AuthUser::allowed_scopes`](crate::AuthUser::allowed_scopes)
//! of the user loaded for the request. The scopes in effect are the token's
//! scopes that the user still holds: the
//! [`Authenticator`](crate::Authenticator) narrows the claims on every
//! request (and on every [`recheck`](crate::Authenticator::recheck) of a
//! WebSocket), so `claims.scope`, the guards, the `Scoped` extractor and a
//! renewed token all see that set. Removing a scope from a user (token
//! version unchanged) takes effect on their next request; a renewal never
//! carries it again. Adding a scope does not widen existing tokens: the user
//! logs in again to be granted it.
//!
//! The usual case costs a subset check and no allocation: when the user
//! still holds every scope of the token, the token's verified claims are
//! used as they are; only a token with a removed scope gets narrowed claims
//! of its own.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of OAuth2 scope tokens, ordered and without duplicates.
///
/// Serialized as one space-separated string, as the `scope` claim and the
/// token endpoint's `scope` field spell it.
///
/// ```
/// use tower_auth::Scopes;
///
/// let granted = Scopes::parse("items me").unwrap();
/// assert!(granted.contains("me"));
/// assert_eq!(granted.to_string(), "items me");
/// assert!(Scopes::parse("bad\"scope").is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Arc<[Box<str>]>);

// A sorted slice rather than a `BTreeSet`: scope sets are small, built once
// per token and read on every request, where a binary search and a side by
// side walk of two slices cost a fraction of a B-tree's searches and
// iterators.

/// A scope string that is not a space-separated list of RFC 6749 scope tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope contains a character RFC 6749 §3.3 does not allow")]
pub struct InvalidScope;

impl Scopes {
    /// No scopes.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a space-separated scope string. Runs of spaces are tolerated;
    /// any character outside RFC 6749's `scope-token` set is an error.
    pub fn parse(s: &str) -> Result<Self, InvalidScope> {
        Self::try_from_iter(s.split(' ').filter(|t| !t.is_empty()))
    }

    /// Builds a set from individual scope tokens, checking each one.
    pub fn try_from_iter<I, T>(tokens: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut set = Vec::new();
        for token in tokens {
            let token = token.as_ref();
            if !is_scope_token(token) {
                return Err(InvalidScope);
            }
            set.push(Box::from(token));
        }
        set.sort_unstable();
        set.dedup();
        Ok(Self(set.into()))
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &str) -> bool {
        self.0
            .binary_search_by(|held| held.as_ref().cmp(scope))
            .is_ok()
    }

    /// The scopes of `required` that this set does not hold.
    pub fn missing(&self, required: &Scopes) -> Scopes {
        Scopes(
            required
                .0
                .iter()
                .filter(|scope| !self.contains(scope))
                .cloned()
                .collect(),
        )
    }

    /// Whether every scope of this set is in `other`. Allocates nothing.
    ///
    /// It runs on every request whose token carries scopes, so it walks the
    /// two sorted sets side by side once, one comparison per step; sets of
    /// the same size (a login that granted every allowed scope: the usual
    /// case) are simply compared.
    pub fn is_subset(&self, other: &Scopes) -> bool {
        if self.0.len() >= other.0.len() {
            return self.0.len() == other.0.len() && self.0 == other.0;
        }
        let mut theirs = other.0.iter();
        'mine: for mine in self.0.iter() {
            for candidate in theirs.by_ref() {
                match candidate.cmp(mine) {
                    Ordering::Less => {}
                    Ordering::Equal => continue 'mine,
                    Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// The scopes present in both sets.
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(
            self.0
                .iter()
                .filter(|scope| other.contains(scope))
                .cloned()
                .collect(),
        )
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scope tokens, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(AsRef::as_ref)
    }
}

/// Which scopes a login that asks for none is granted. RFC 6749 §3.3 lets
/// the server choose ("the authorization server MUST either process the
/// request using a pre-defined default value or fail"); this crate never
/// fails such a login, and grants:
///
/// - [`AllAllowed`](Self::AllAllowed) (the default): every scope the user
///   holds — convenient for first-party clients;
/// - [`None`](Self::None): no scope at all, as FastAPI's OAuth2 scopes
///   tutorial does — a client must ask for what it needs (least
///   privilege);
/// - [`Fixed`](Self::Fixed): these scopes, of those the user holds.
///
/// A login that asks for scopes always gets the asked ones the user holds.
///
/// ```
/// use tower_auth::Scopes;
/// use tower_auth::scope::DefaultScopes;
///
/// let held = Scopes::parse("me items admin").unwrap();
/// assert_eq!(DefaultScopes::AllAllowed.granted(&held), held);
/// assert!(DefaultScopes::None.granted(&held).is_empty());
/// let fixed = DefaultScopes::Fixed(Scopes::parse("me billing").unwrap());
/// assert_eq!(fixed.granted(&held).to_string(), "me");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DefaultScopes {
    /// Every scope the user holds.
    #[default]
    AllAllowed,
    /// No scope.
    None,
    /// These scopes, of those the user holds.
    Fixed(Scopes),
}

impl DefaultScopes {
    /// The scopes granted to a user holding `held` who asked for none.
    pub fn granted(&self, held: &Scopes) -> Scopes {
        match self {
            Self::AllAllowed => held.clone(),
            Self::None => Scopes::none(),
            Self::Fixed(fixed) => fixed.intersection(held),
        }
    }
}

/// Whether `token` is one RFC 6749 §3.3 scope token:
/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )` — printable ASCII
/// without space, `"` and `\`.
///
/// A `const fn`, so that a requirement written in code is checked when it is
/// compiled: `tower_auth::scope_requirement!` (feature `axum`) asserts it
/// for every scope it names.
///
/// ```
/// use tower_auth::scope::is_scope_token;
///
/// const OK: bool = is_scope_token("items:write");
/// assert!(OK);
/// assert!(!is_scope_token("me items")); // two tokens
/// assert!(!is_scope_token(""));
/// ```
pub const fn is_scope_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    // A `while` loop: iterators are not available in a `const fn`.
    let mut i = 0;
    while i < bytes.len() {
        if !matches!(bytes[i], 0x21 | 0x23..=0x5B | 0x5D..=0x7E) {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Scopes::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_dedupes_and_orders() {
        let s = Scopes::parse("  b a  b ").unwrap();
        assert_eq!(s.to_string(), "a b");
    }

    #[test]
    fn missing_lists_only_absent_scopes() {
        let granted = Scopes::parse("me").unwrap();
        let required = Scopes::parse("me items").unwrap();
        assert_eq!(granted.missing(&required).to_string(), "items");
    }

    proptest! {
        #[test]
        fn is_subset_agrees_with_the_set_definition(
            mine in proptest::collection::btree_set("[a-e]{1,2}", 0..6),
            theirs in proptest::collection::btree_set("[a-e]{1,2}", 0..6),
        ) {
            let (a, b) = (
                Scopes::try_from_iter(&mine).unwrap(),
                Scopes::try_from_iter(&theirs).unwrap(),
            );
            prop_assert_eq!(a.is_subset(&b), mine.is_subset(&theirs));
            prop_assert!(a.is_subset(&a));
            prop_assert!(Scopes::none().is_subset(&b));
        }

        #[test]
        fn is_scope_token_is_the_rfc_6749_grammar(s in "\\PC{0,8}|[ -~]{0,8}") {
            let grammar = !s.is_empty()
                && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            prop_assert_eq!(is_scope_token(&s), grammar);
        }

        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC*") {
            if let Ok(scopes) = Scopes::parse(&s) {
                let again = Scopes::parse(&scopes.to_string()).unwrap();
                prop_assert_eq!(again, scopes);
            }
        }
    }
}
