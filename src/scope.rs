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

use std::collections::BTreeSet;
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
pub struct Scopes(Arc<BTreeSet<String>>);

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
        let mut set = BTreeSet::new();
        for token in tokens {
            let token = token.as_ref();
            if !is_scope_token(token) {
                return Err(InvalidScope);
            }
            set.insert(token.to_owned());
        }
        Ok(Self(Arc::new(set)))
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// The scopes of `required` that this set does not hold.
    pub fn missing(&self, required: &Scopes) -> Scopes {
        Scopes(Arc::new(required.0.difference(&self.0).cloned().collect()))
    }

    /// Whether every scope of this set is in `other`. Allocates nothing.
    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes present in both sets.
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(Arc::new(self.0.intersection(&other.0).cloned().collect()))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scope tokens, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub(crate) fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
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
        fn parse_never_panics_and_round_trips(s in "\\PC*") {
            if let Ok(scopes) = Scopes::parse(&s) {
                let again = Scopes::parse(&scopes.to_string()).unwrap();
                prop_assert_eq!(again, scopes);
            }
        }
    }
}
