//! Guards: tower layers that run after [`AuthLayer`](crate::AuthLayer) and
//! check what it found — [`RequireScopes`] (every listed scope, else 403
//! `insufficient_scope`; 401 for an anonymous request, which is never given
//! a 403) and [`RateLimitLayer`] (a per-subject request rate, else 429).
//!
//! Build them from the [`Authenticator`] —
//! [`require_scopes`](Authenticator::require_scopes) and
//! [`limit_rate`](Authenticator::limit_rate) — so their rejections are
//! rendered like every other rejection.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::Authenticator;
use crate::error::{AuthError, ErrorRenderer};
use crate::layer::{EitherFuture, LayerContext};
use crate::limit::RateLimit;
use crate::scope::{InvalidScope, Scopes};
use crate::token::ExtraClaims;
use crate::user::AuthUser;

// Defined here, not in `authenticator`, so that imports run one way: the
// guards use the authenticator, never the reverse.
impl<U: AuthUser, X: ExtraClaims> Authenticator<U, X> {
    /// A layer that requires every scope in `scopes`, rendering its
    /// rejections like this authenticator.
    pub fn require_scopes<I, T>(&self, scopes: I) -> Result<RequireScopes, InvalidScope>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        Ok(RequireScopes::new(
            Scopes::try_from_iter(scopes)?,
            self.renderer().clone(),
        ))
    }

    /// A layer limiting each authenticated subject to `limit`, rendering its
    /// 429s like this authenticator; see [`limit`](crate::limit).
    pub fn limit_rate(&self, limit: RateLimit) -> RateLimitLayer {
        RateLimitLayer::new(limit, self.renderer().clone())
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
    type Future = EitherFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.method() == http::Method::OPTIONS {
            return EitherFuture::inner(self.inner.call(req));
        }
        let granted = req
            .extensions()
            .get::<LayerContext>()
            .and_then(LayerContext::scopes);
        match self.requirement.check(granted) {
            Ok(()) => EitherFuture::inner(self.inner.call(req)),
            Err(err) => EitherFuture::rejected(self.requirement.renderer.render(&err)),
        }
    }
}

/// A tower layer limiting each subject's request rate; see the
/// [module docs](self). Build it with
/// [`Authenticator::limit_rate`](crate::Authenticator::limit_rate) and put it
/// inside an [`AuthLayer`](crate::AuthLayer).
///
/// ```
/// # use tower_auth::{AuthLayer, Authenticator, SimpleUser};
/// # use tower_auth::limit::RateLimit;
/// # fn app(auth: Authenticator<SimpleUser>, router: axum::Router) -> axum::Router {
/// router
///     .layer(auth.limit_rate(RateLimit::per_minute(600).expect("a valid rate")))
///     .layer(AuthLayer::required(auth))
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    limit: RateLimit,
    renderer: ErrorRenderer,
}

impl RateLimitLayer {
    pub(crate) fn new(limit: RateLimit, renderer: ErrorRenderer) -> Self {
        RateLimitLayer { limit, renderer }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = EitherFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let subject = req
            .extensions()
            .get::<LayerContext>()
            .and_then(LayerContext::subject);
        let verdict = match subject {
            Some(subject) => self.layer.limit.check(subject).map_err(AuthError::from),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => EitherFuture::inner(self.inner.call(req)),
            Err(err) => EitherFuture::rejected(self.layer.renderer.render(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
