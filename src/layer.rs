//! [`AuthLayer`] and [`AuthService`]: authenticate every request before the
//! inner service runs.
//!
//! - **Required** ([`AuthLayer::required`]): a request without a valid
//!   identity is answered by the authenticator's error response; the inner
//!   service never sees it.
//! - **Optional** ([`AuthLayer::optional`]): every request goes on. One
//!   without credentials is anonymous. One whose credentials are refused
//!   (expired, revoked, malformed, ...) is *not* anonymous: the layer
//!   records the refusal and lets the request on, and whatever asks for the
//!   identity answers with the refusal — the `Authenticated`,
//!   `Option<Authenticated>`, `Scoped` and `Claims` extractors, the
//!   [guards](crate::guard), [`Authenticated::from_layer`] — exactly as the
//!   required layer would have answered (status, challenge, body). Routes
//!   that never ask (the token endpoint, a health check, a 404) answer as
//!   usual, so a client whose fetch wrapper keeps sending its expired token
//!   can still log in again (decision 6). No refused request is ever
//!   renewed.
//!
//! On success the request's extensions receive [`Authenticated<U, X>`]. The
//! layer also leaves one private record on every request it lets through,
//! for what runs after it without knowing the user type:
//! [`RequireScopes`](crate::RequireScopes) reads the granted scopes (or the
//! refusal) from it, [`RateLimitLayer`](crate::guard::RateLimitLayer) the
//! subject, and the axum extractors the claims, the refusal and the
//! [`Authenticator`] itself (so they work without it in the router state).
//! One record, not one extension per fact: every insert into a request's
//! extensions allocates, and this runs on every request. Its presence also
//! tells the guards that the layer ran: a guard without it answers 500
//! (decision 17).
//!
//! Under the optional layer, `extensions().get::<Authenticated<U>>()` is
//! `None` for an anonymous *and* for a refused request: ask through the
//! extractors or [`Authenticated::from_layer`], never treat that `None` as
//! anonymous.
//!
//! Only a CORS preflight — `OPTIONS` with `Origin` and
//! `Access-Control-Request-Method` ([`is_cors_preflight`]) — passes through
//! untouched: browsers never attach credentials to a preflight, and the CORS
//! layer (outside this one) answers it. Any other `OPTIONS` is authenticated
//! like every other method (decision 14).

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Extensions, Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::{Authenticated, Authenticator};
use crate::error::{AuthError, ErrorRenderer};
use crate::origin::is_cors_preflight;
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

    /// Lets every request on: anonymous ones, and ones whose credentials
    /// were refused, with the refusal recorded for whatever asks for the
    /// identity (see the [module docs](self)).
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
    // Held while a due renewal reloads the user.
    ResBody: Send + 'static,
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
        if is_cors_preflight(request.method(), request.headers()) {
            let response = inner.call(request);
            return Box::pin(async move { response.await.map(|res| res.map(Either::Left)) });
        }
        let auth = self.auth.clone();
        let mode = self.mode;
        // Split before the future is made, so that it holds the parts and
        // not the whole request as well: it is allocated on every request.
        let (mut parts, body) = request.into_parts();
        Box::pin(async move {
            let (identity, refusal) = match auth.authenticate_optional(&parts).await {
                Ok(Some(identity)) => (Some(identity), None),
                Ok(None) if mode == Mode::Required => {
                    let err = AuthError::MissingCredentials;
                    return Ok(auth.error_response(&err).map(Either::Right));
                }
                Ok(None) => (None, None),
                Err(err) if mode == Mode::Required => {
                    return Ok(auth.error_response(&err).map(Either::Right));
                }
                // Recorded for whatever asks for the identity (decision 6).
                Err(err) => (None, Some(Arc::new(err))),
            };
            // Kept for sliding expiry once the response is known.
            let renewal_basis = identity
                .as_ref()
                .filter(|_| auth.sliding_expiry_policy().is_some())
                .map(|identity| (identity.claims.clone(), identity.credential));
            parts
                .extensions
                .insert(LayerContext::new(&auth, identity.as_ref(), refusal));
            if let Some(identity) = identity {
                parts.extensions.insert(identity);
            }
            let mut response = inner.call(Request::from_parts(parts, body)).await?;
            if let Some((claims, credential)) = &renewal_basis {
                auth.apply_sliding_expiry(claims, *credential, &mut response)
                    .await;
            }
            Ok(response.map(Either::Left))
        })
    }
}

// Defined here, not in `authenticator`, so that imports run one way: it
// reads what the layer left.
impl<U: AuthUser, X: ExtraClaims> Authenticated<U, X> {
    /// The identity [`AuthLayer`] found for a request, for code after the
    /// layer that is not an axum extractor (a plain tower or hyper
    /// service):
    ///
    /// - `Ok(Some(identity))`: authenticated;
    /// - `Ok(None)`: anonymous (the optional layer, no credentials);
    /// - `Err(response)`: the optional layer refused the request's
    ///   credentials — answer with `response`, the one the required layer
    ///   would have sent (401 `invalid_token`, 400, 403, 503) — or there is
    ///   no `AuthLayer` in front (500, logged: a programming error).
    ///
    /// ```
    /// use tower_auth::{Authenticated, SimpleUser};
    ///
    /// fn greeting<B>(request: &http::Request<B>) -> Result<String, http::Response<http_body_util::Full<bytes::Bytes>>> {
    ///     Ok(match Authenticated::<SimpleUser>::from_layer(request.extensions())? {
    ///         Some(me) => format!("hello {}", me.user.username),
    ///         None => "hello stranger".to_owned(),
    ///     })
    /// }
    /// ```
    #[expect(
        clippy::result_large_err,
        reason = "the error is the response to send, as axum's rejections are; \
                  boxing it would cost every caller an unwrap"
    )]
    pub fn from_layer(extensions: &Extensions) -> Result<Option<Self>, Response<Full<Bytes>>> {
        if let Some(identity) = extensions.get::<Self>() {
            return Ok(Some(identity.clone()));
        }
        let Some(context) = extensions.get::<LayerContext>() else {
            let message = "Authenticated::from_layer needs AuthLayer in front of it: \
                 add .layer(AuthLayer::optional(auth)) around the routes";
            tracing::error!("{message}");
            return Err(ErrorRenderer::default().render(&AuthError::Internal(message)));
        };
        if context.subject().is_some() {
            let message = "Authenticated::from_layer's user or claim type is not the AuthLayer's";
            tracing::error!("{message}");
            return Err(context.renderer().render(&AuthError::Internal(message)));
        }
        if context.is_refused() {
            return Err(context.renderer().render(context.no_identity()));
        }
        Ok(None)
    }
}

/// What the layer leaves on every request it lets through (see the
/// [module docs](self)); its presence also says the layer has run.
#[derive(Clone)]
pub(crate) struct LayerContext {
    /// The identity's claims; `None` for an anonymous or refused request.
    claims: Option<Arc<dyn IdentityClaims>>,
    /// Why the optional layer refused the request's credentials; `None`
    /// when it did not.
    refusal: Option<Arc<AuthError>>,
    /// The layer's `Authenticator<U, X>`, without its types.
    #[cfg(feature = "axum")]
    authenticator: Arc<dyn Any + Send + Sync>,
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
        refusal: Option<Arc<AuthError>>,
    ) -> Self {
        LayerContext {
            claims: identity.map(|identity| -> Arc<dyn IdentityClaims> { identity.claims.clone() }),
            refusal,
            // Only the axum extractors need the authenticator.
            #[cfg(feature = "axum")]
            authenticator: auth.erase(),
            renderer: auth.renderer().clone(),
        }
    }

    /// The authenticated subject (`sub`); `None` when anonymous or refused.
    pub(crate) fn subject(&self) -> Option<&str> {
        self.claims.as_deref().map(IdentityClaims::subject)
    }

    /// The scopes in effect, or why there are none (see
    /// [`no_identity`](Self::no_identity)).
    pub(crate) fn scopes(&self) -> Result<&Scopes, &AuthError> {
        match self.claims.as_deref() {
            Some(claims) => Ok(claims.scopes()),
            None => Err(self.no_identity()),
        }
    }

    /// Why a request the layer let on has no identity: the refusal the
    /// optional layer recorded, else no credentials at all. (Meaningless
    /// for a request that has one.)
    pub(crate) fn no_identity(&self) -> &AuthError {
        static NO_CREDENTIALS: AuthError = AuthError::MissingCredentials;
        self.refusal.as_deref().unwrap_or(&NO_CREDENTIALS)
    }

    /// Whether the optional layer refused the request's credentials.
    pub(crate) fn is_refused(&self) -> bool {
        self.refusal.is_some()
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
