//! Scopes (RFC 6749 §3.3) and route-level scope requirements.
//!
//! A [`Scopes`] value is a set of scope tokens. It travels in tokens as the
//! space-separated `scope` claim and is cheap to clone (the set sits behind an
//! `Arc`), so the layer can hand it to every check on a request without
//! copying strings.
//!
//! [`RequireScopes`] is a tower layer that answers 403 `insufficient_scope`
//! when the request's identity lacks a scope, and 401 when the request has no
//! identity at all (a 403 is never given to an anonymous request). Build it
//! with [`Authenticator::require_scopes`](crate::Authenticator::require_scopes)
//! so its rejections are rendered like every other rejection.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{AuthError, ErrorRenderer};
use crate::layer::LayerContext;

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

/// A tower layer that requires every listed scope; see the
/// [module docs](self). Place it inside (after) an
/// [`AuthLayer`](crate::AuthLayer).
///
/// ```
/// # use tower_auth::{Authenticator, MemoryUserStore, TokenCodec, Key, SimpleUser};
/// # fn demo(auth: Authenticator<SimpleUser>) {
/// let needs_me = auth.require_scopes(["me"]).expect("valid scope names");
/// # }
/// ```
#[derive(Clone)]
pub struct RequireScopes {
    required: Scopes,
    renderer: ErrorRenderer,
}

impl RequireScopes {
    pub(crate) fn new(required: Scopes, renderer: ErrorRenderer) -> Self {
        Self { required, renderer }
    }

    /// Checks `granted` (None for an anonymous request) against the
    /// requirement.
    pub fn check(&self, granted: Option<&Scopes>) -> Result<(), AuthError> {
        check_scopes(&self.required, granted)
    }
}

/// The one scope check: anonymous -> 401, lacking -> 403 naming what is
/// missing.
pub(crate) fn check_scopes(required: &Scopes, granted: Option<&Scopes>) -> Result<(), AuthError> {
    let granted = granted.ok_or_else(|| AuthError::MissingCredentials)?;
    let missing = granted.missing(required);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope {
            required: required.clone(),
            missing,
        })
    }
}

impl<S> Layer<S> for RequireScopes {
    type Service = RequireScopesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopesService {
            inner,
            requirement: self.clone(),
        }
    }
}

/// The service made by [`RequireScopes`].
#[derive(Clone)]
pub struct RequireScopesService<S> {
    inner: S,
    requirement: RequireScopes,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopesService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = crate::layer::EitherFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.method() == http::Method::OPTIONS {
            return crate::layer::EitherFuture::inner(self.inner.call(req));
        }
        let granted = req
            .extensions()
            .get::<LayerContext>()
            .and_then(LayerContext::scopes);
        match self.requirement.check(granted) {
            Ok(()) => crate::layer::EitherFuture::inner(self.inner.call(req)),
            Err(err) => {
                crate::layer::EitherFuture::rejected(self.requirement.renderer.render(&err))
            }
        }
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

    #[test]
    fn anonymous_is_401_not_403() {
        let required = Scopes::parse("me").unwrap();
        assert!(matches!(
            check_scopes(&required, None),
            Err(AuthError::MissingCredentials)
        ));
        let none = Scopes::none();
        assert!(matches!(
            check_scopes(&required, Some(&none)),
            Err(AuthError::InsufficientScope { .. })
        ));
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
