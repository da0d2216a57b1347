//! Guards: tower layers that run after [`AuthLayer`](crate::AuthLayer) and
//! check what it found — [`RequireScopes`] (every listed scope, else 403
//! `insufficient_scope`; 401 for an anonymous request, which is never given
//! a 403, and the optional layer's recorded refusal for a request whose
//! credentials it refused) and [`RateLimitLayer`] (a per-subject request
//! rate, else 429; anonymous and refused requests are not limited: it is
//! for identified subjects, and a route that needs one asks for it).
//!
//! Build them from the [`Authenticator`] —
//! [`require_scopes`](Authenticator::require_scopes) and
//! [`limit_rate`](Authenticator::limit_rate) — so their rejections are
//! rendered like every other rejection. Every challenge [`RequireScopes`]
//! sends names its scopes (`Bearer realm="…", scope="me"`; see
//! [`error`](crate::error)).
//!
//! # They need `AuthLayer` in front of them
//!
//! A guard reads what the layer found; it does not authenticate. Mounted
//! without an [`AuthLayer`](crate::AuthLayer) around it — say in an app
//! whose handlers take the `Authenticated` extractor with the
//! [`Authenticator`] as router state, and no layer — it has nothing to
//! check, and it fails closed: every request gets a 500 whose body says
//! `… needs AuthLayer in front of it: add .layer(AuthLayer::optional(auth))
//! around the routes`, and the same text is logged at `error` level
//! (decision 17). Never a pass-through, never a 401 that would blame the
//! client's valid token.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_auth::{AuthLayer, Authenticator, SimpleUser};
//!
//! async fn purge() -> &'static str { "purged" }
//!
//! fn app(auth: Authenticator<SimpleUser>) -> Router {
//!     Router::new()
//!         .route("/admin/purge", get(purge).route_layer(auth.require_scopes(["admin"]).unwrap()))
//!         // The guard's layer: without it, /admin/purge answers 500.
//!         .layer(AuthLayer::optional(auth))
//! }
//! ```
//!
//! Why a runtime check rather than a type error: tower and axum compose
//! layers through `Layer<S>` and `Router::layer`/`route_layer`, which carry
//! no record of what wraps a service, so a guard cannot require at compile
//! time that an `AuthLayer` is outside it (a typed router would be a
//! framework of its own). A guard that authenticated by itself when the
//! layer is missing would hide a second authentication path with its own
//! renewals. So the mistake is made loud instead: the first request to the
//! route shows it, with the fix in the log and the body, and a test of the
//! route catches it.
//!
//! Like the layer, the guards let a CORS preflight through
//! ([`is_cors_preflight`]); any other `OPTIONS` is checked like every other
//! method.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::Authenticator;
use crate::error::{AuthError, ErrorRenderer};
use crate::layer::{EitherFuture, LayerContext};
use crate::limit::{LimitExceeded, RateLimit};
use crate::origin::is_cors_preflight;
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
/// [`AuthLayer`](crate::AuthLayer): without one it answers every request
/// with 500 ([why](self#they-need-authlayer-in-front-of-them)).
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
    // The usual case allocates nothing; only a refusal collects what is
    // missing.
    if required.is_subset(granted) {
        return Ok(());
    }
    Err(AuthError::InsufficientScope {
        required: required.clone(),
        missing: granted.missing(required),
    })
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
        if is_cors_preflight(req.method(), req.headers()) {
            return EitherFuture::inner(self.inner.call(req));
        }
        let RequireScopes { required, renderer } = &self.requirement;
        let Some(context) = req.extensions().get::<LayerContext>() else {
            return EitherFuture::rejected(without_layer(renderer, REQUIRE_SCOPES_WITHOUT_LAYER));
        };
        let verdict = match context.scopes() {
            Ok(granted) => check_scopes(required, Some(granted)),
            // Anonymous, or the refusal the optional layer recorded.
            Err(no_identity) => {
                return EitherFuture::rejected(renderer.render_for_scopes(no_identity, required));
            }
        };
        match verdict {
            Ok(()) => EitherFuture::inner(self.inner.call(req)),
            Err(err) => EitherFuture::rejected(renderer.render_for_scopes(&err, required)),
        }
    }
}

const REQUIRE_SCOPES_WITHOUT_LAYER: &str = "RequireScopes needs AuthLayer in front of it: \
     add .layer(AuthLayer::optional(auth)) around the routes";

const RATE_LIMIT_WITHOUT_LAYER: &str = "RateLimitLayer needs AuthLayer in front of it: \
     add .layer(AuthLayer::optional(auth)) around the routes";

/// The answer of a guard that finds no [`AuthLayer`](crate::AuthLayer) in
/// front of it: a programming error, said plainly in the log and the body.
fn without_layer(renderer: &ErrorRenderer, message: &'static str) -> Response<Full<Bytes>> {
    tracing::error!("{message}");
    renderer.render(&AuthError::Internal(message))
}

/// A tower layer limiting each subject's request rate; see the
/// [module docs](self). Build it with
/// [`Authenticator::limit_rate`](crate::Authenticator::limit_rate) and put it
/// inside an [`AuthLayer`](crate::AuthLayer): without one it answers every
/// request with 500 ([why](self#they-need-authlayer-in-front-of-them)).
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

/// A limit is local or shared: a local one answers in `call` (no future of
/// its own, as before limits could be shared); a shared one waits for its
/// store, then calls the inner service, which is why the service must be
/// `Clone` (the ready one is moved into the future, as tower's own
/// middleware does).
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = RateLimitFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if is_cors_preflight(req.method(), req.headers()) {
            return RateLimitFuture::done(EitherFuture::inner(self.inner.call(req)));
        }
        let Some(context) = req.extensions().get::<LayerContext>() else {
            return RateLimitFuture::done(EitherFuture::rejected(without_layer(
                &self.layer.renderer,
                RATE_LIMIT_WITHOUT_LAYER,
            )));
        };
        let Some(subject) = context.subject() else {
            return RateLimitFuture::done(EitherFuture::inner(self.inner.call(req)));
        };
        match self.layer.limit.check_now(subject, 1) {
            Some(Ok(())) => RateLimitFuture::done(EitherFuture::inner(self.inner.call(req))),
            Some(Err(refusal)) => RateLimitFuture::done(EitherFuture::rejected(
                self.layer.renderer.render(&AuthError::from(refusal)),
            )),
            None => {
                let check = self.layer.limit.check_shared(subject.to_owned(), 1);
                // The ready service goes with the request; a fresh clone
                // waits for the next `poll_ready`.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                RateLimitFuture {
                    state: RateState::Checking {
                        check,
                        pending: Some((inner, req)),
                        renderer: self.layer.renderer.clone(),
                    },
                }
            }
        }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), LimitExceeded>> + Send + 'static>>;

pin_project_lite::pin_project! {
    /// The future of [`RateLimitService`]: a shared limit's check, then the
    /// inner service's response (or the refusal).
    pub struct RateLimitFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        #[pin]
        state: RateState<S, ReqBody, ResBody>,
    }
}

pin_project_lite::pin_project! {
    #[project = RateStateProj]
    enum RateState<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        Checking {
            check: CheckFuture,
            pending: Option<(S, Request<ReqBody>)>,
            renderer: ErrorRenderer,
        },
        Done { #[pin] future: EitherFuture<S::Future, ResBody, S::Error> },
    }
}

impl<S, ReqBody, ResBody> RateLimitFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    fn done(future: EitherFuture<S::Future, ResBody, S::Error>) -> Self {
        RateLimitFuture {
            state: RateState::Done { future },
        }
    }
}

impl<S, ReqBody, ResBody> Future for RateLimitFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                RateStateProj::Done { future } => return future.poll(cx),
                RateStateProj::Checking {
                    check,
                    pending,
                    renderer,
                } => {
                    let verdict = ready!(check.as_mut().poll(cx));
                    match (verdict, pending.take()) {
                        (Ok(()), Some((mut inner, req))) => EitherFuture::inner(inner.call(req)),
                        (Err(refusal), _) => {
                            EitherFuture::rejected(renderer.render(&AuthError::from(refusal)))
                        }
                        // Polled again after it finished: a bug in the caller.
                        (Ok(()), None) => return Poll::Pending,
                    }
                }
            };
            self.as_mut()
                .project()
                .state
                .set(RateState::Done { future: next });
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
