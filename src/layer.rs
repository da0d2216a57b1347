//! [`AuthLayer`] and [`AuthService`]: authenticate every request before the
//! inner service runs.
//!
//! - **Required** ([`AuthLayer::required`]): a request without a valid
//!   identity is answered by the authenticator's error response; the inner
//!   service never sees it.
//! - **Optional** ([`AuthLayer::optional`]): a request without credentials
//!   passes through anonymous; one with *bad* credentials is still refused
//!   with 401, so a client holding a broken token learns it instead of being
//!   silently served as anonymous.
//!
//! On success the request's extensions receive [`Authenticated<U, X>`]. The
//! layer also leaves one private record on every request it lets through,
//! for what runs after it without knowing the user type:
//! [`RequireScopes`](crate::RequireScopes) reads the granted scopes from it,
//! [`RateLimit`](crate::RateLimit) the subject, and the axum extractors the
//! claims and the [`Authenticator`] itself (so they work without it in the
//! router state). One record, not one extension per fact: every insert into
//! a request's extensions allocates, and this runs on every request.
//!
//! `OPTIONS` requests pass through untouched: CORS preflights never carry
//! credentials, and the CORS layer (outside this one) answers them.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::{Authenticated, Authenticator};
use crate::error::AuthError;
#[cfg(feature = "axum")]
use crate::error::ErrorRenderer;
use crate::scope::Scopes;
use crate::token::{Claims, ExtraClaims};
use crate::user::AuthUser;

/// Whether the layer refuses anonymous requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Required,
    Optional,
}

/// A tower layer that authenticates requests; see the [module docs](self).
///
/// ```
/// use axum::{routing::get, Extension, Router};
/// use tower_auth::{AuthLayer, Authenticated, Authenticator, SimpleUser};
///
/// // The identity the layer inserted (with the `axum` feature, take
/// // `Authenticated<SimpleUser>` directly as an extractor).
/// async fn me(Extension(auth): Extension<Authenticated<SimpleUser>>) -> String {
///     auth.user.username.clone()
/// }
///
/// fn app(auth: Authenticator<SimpleUser>) -> Router {
///     Router::new().route("/me", get(me)).layer(AuthLayer::required(auth))
/// }
/// ```
#[derive(Clone)]
pub struct AuthLayer<U, X = ()> {
    auth: Authenticator<U, X>,
    mode: Mode,
}

impl<U: AuthUser, X: ExtraClaims> AuthLayer<U, X> {
    /// Refuses requests without a valid identity.
    pub fn required(auth: Authenticator<U, X>) -> Self {
        AuthLayer {
            auth,
            mode: Mode::Required,
        }
    }

    /// Lets anonymous requests through; refuses bad credentials.
    pub fn optional(auth: Authenticator<U, X>) -> Self {
        AuthLayer {
            auth,
            mode: Mode::Optional,
        }
    }
}

impl<S, U: AuthUser, X: ExtraClaims> Layer<S> for AuthLayer<U, X> {
    type Service = AuthService<S, U, X>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            mode: self.mode,
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S, U, X = ()> {
    inner: S,
    auth: Authenticator<U, X>,
    mode: Mode,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, U, X, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S, U, X>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    U: AuthUser,
    X: ExtraClaims,
    ReqBody: Send + 'static,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Call the service that was polled ready; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if request.method() == Method::OPTIONS {
            let response = inner.call(request);
            return Box::pin(async move { response.await.map(|res| res.map(Either::Left)) });
        }
        let auth = self.auth.clone();
        let mode = self.mode;
        // Split before the future is made, so that it holds the parts and
        // not the whole request as well: it is allocated on every request.
        let (mut parts, body) = request.into_parts();
        Box::pin(async move {
            let identity = match auth.authenticate_optional(&parts).await {
                Ok(None) if mode == Mode::Required => Err(AuthError::MissingCredentials),
                identity => identity,
            };
            match identity {
                Ok(identity) => {
                    // Kept for sliding expiry once the response is known.
                    let renewal_basis = identity
                        .as_ref()
                        .filter(|_| auth.sliding_expiry_policy().is_some())
                        .map(|identity| (identity.claims.clone(), identity.credential));
                    parts
                        .extensions
                        .insert(LayerContext::new(&auth, identity.as_ref()));
                    if let Some(identity) = identity {
                        parts.extensions.insert(identity);
                    }
                    let mut response = inner.call(Request::from_parts(parts, body)).await?;
                    if let Some((claims, credential)) = &renewal_basis {
                        auth.apply_sliding_expiry(claims, *credential, &mut response);
                    }
                    Ok(response.map(Either::Left))
                }
                Err(err) => Ok(auth.error_response(&err).map(Either::Right)),
            }
        })
    }
}

/// What the layer leaves on every request it lets through (see the
/// [module docs](self)); its presence also says the layer has run.
#[derive(Clone)]
pub(crate) struct LayerContext {
    /// The identity's claims; `None` for an anonymous request.
    claims: Option<Arc<dyn IdentityClaims>>,
    /// The layer's `Authenticator<U, X>`, without its types.
    #[cfg(feature = "axum")]
    authenticator: Arc<dyn Any + Send + Sync>,
    #[cfg(feature = "axum")]
    renderer: ErrorRenderer,
}

/// What the services after the layer read from any `Claims<X>`.
trait IdentityClaims: Any + Send + Sync {
    fn subject(&self) -> &str;
    fn scopes(&self) -> &Scopes;
}

impl<X: ExtraClaims> IdentityClaims for Claims<X> {
    fn subject(&self) -> &str {
        &self.sub
    }

    fn scopes(&self) -> &Scopes {
        &self.scope
    }
}

impl LayerContext {
    fn new<U: AuthUser, X: ExtraClaims>(
        auth: &Authenticator<U, X>,
        identity: Option<&Authenticated<U, X>>,
    ) -> Self {
        // Only the axum extractors need the authenticator.
        #[cfg(not(feature = "axum"))]
        let _ = auth;
        LayerContext {
            claims: identity.map(|identity| -> Arc<dyn IdentityClaims> { identity.claims.clone() }),
            #[cfg(feature = "axum")]
            authenticator: auth.erase(),
            #[cfg(feature = "axum")]
            renderer: auth.renderer().clone(),
        }
    }

    /// The authenticated subject (`sub`); `None` when anonymous.
    pub(crate) fn subject(&self) -> Option<&str> {
        self.claims.as_deref().map(IdentityClaims::subject)
    }

    /// The granted scopes; `None` when anonymous.
    pub(crate) fn scopes(&self) -> Option<&Scopes> {
        self.claims.as_deref().map(IdentityClaims::scopes)
    }

    /// The claims, if there is an identity and its claim type is `X`.
    #[cfg(feature = "axum")]
    pub(crate) fn claims<X: ExtraClaims>(&self) -> Option<&Claims<X>> {
        let claims: &dyn Any = self.claims.as_deref()?;
        claims.downcast_ref()
    }

    /// The layer's authenticator, if it has these types.
    #[cfg(feature = "axum")]
    pub(crate) fn authenticator<U: AuthUser, X: ExtraClaims>(&self) -> Option<Authenticator<U, X>> {
        Authenticator::unerase(&self.authenticator)
    }

    /// The layer's error renderer.
    #[cfg(feature = "axum")]
    pub(crate) fn renderer(&self) -> &ErrorRenderer {
        &self.renderer
    }
}

pin_project_lite::pin_project! {
    /// The future of a service that either calls its inner service or answers
    /// at once with a rejection.
    pub struct EitherFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<Full<Bytes>>>, _marker: PhantomData<fn() -> (B, E)> },
    }
}

impl<F, B, E> EitherFuture<F, B, E> {
    pub(crate) fn inner(future: F) -> Self {
        EitherFuture {
            state: State::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response<Full<Bytes>>) -> Self {
        EitherFuture {
            state: State::Rejected {
                response: Some(response),
                _marker: PhantomData,
            },
        }
    }
}

impl<F, B, E> Future for EitherFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(Either::Left)))
            }
            StateProj::Rejected { response, .. } => match response.take() {
                Some(response) => Poll::Ready(Ok(response.map(Either::Right))),
                None => Poll::Pending,
            },
        }
    }
}
