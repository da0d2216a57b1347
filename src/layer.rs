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
//! On success the request's extensions receive [`Authenticated<U, X>`], the
//! claims as `Arc<Claims<X>>`, [`GrantedScopes`] and the
//! [`Subject`] (for per-user limits). The layer also puts
//! the [`Authenticator`] itself there, so the axum extractors work without
//! it in the router state.
//!
//! `OPTIONS` requests pass through untouched: CORS preflights never carry
//! credentials, and the CORS layer (outside this one) answers them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::{Authenticated, Authenticator};
#[cfg(feature = "axum")]
use crate::error::ErrorRenderer;
use crate::limit::Subject;
use crate::scope::GrantedScopes;
use crate::token::ExtraClaims;
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
///     auth.user.username
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
        let auth = self.auth.clone();
        let mode = self.mode;
        Box::pin(async move {
            if request.method() == Method::OPTIONS {
                return inner.call(request).await.map(|res| res.map(Either::Left));
            }
            let (mut parts, body) = request.into_parts();
            let identity = match mode {
                Mode::Required => auth.authenticate(&parts).await.map(Some),
                Mode::Optional => auth.authenticate_optional(&parts).await,
            };
            match identity {
                Ok(identity) => {
                    // Kept for sliding expiry once the response is known.
                    let renewal_basis = identity
                        .as_ref()
                        .filter(|_| auth.sliding_expiry_policy().is_some())
                        .map(|identity| (identity.claims.clone(), identity.credential));
                    if let Some(identity) = identity {
                        insert_identity(&mut parts.extensions, identity);
                    }
                    #[cfg(feature = "axum")]
                    parts
                        .extensions
                        .insert(LayerRenderer(auth.renderer().clone()));
                    parts.extensions.insert(auth.clone());
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

/// Marks a request the layer has seen, with the renderer for extractors
/// that do not know the user type.
#[cfg(feature = "axum")]
#[derive(Clone)]
pub(crate) struct LayerRenderer(pub(crate) ErrorRenderer);

fn insert_identity<U: AuthUser, X: ExtraClaims>(
    extensions: &mut http::Extensions,
    identity: Authenticated<U, X>,
) {
    extensions.insert(GrantedScopes(identity.claims.scope.clone()));
    extensions.insert(Subject(identity.claims.sub.clone()));
    extensions.insert(identity.claims.clone());
    extensions.insert(identity);
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
