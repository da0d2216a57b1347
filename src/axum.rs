//! axum extractors and a ready token endpoint (feature `axum`).
//!
//! | extractor | gives | when the request has no valid identity |
//! | --- | --- | --- |
//! | [`Authenticated<U, X>`] | user + claims | the error response (401/400) |
//! | `Option<Authenticated<U, X>>` | `None` when no credentials were sent | bad credentials: 401 |
//! | [`Scoped<R, U, X>`] | identity holding every scope of `R` | 401, or 403 `insufficient_scope` |
//! | [`Claims<X>`] | the verified claims | needs [`AuthLayer`](crate::AuthLayer) upstream |
//!
//! Handlers: [`token_endpoint`] (OAuth2 password grant), [`session_login`]
//! (the same, setting the session cookie instead of returning the token) and
//! [`logout`] (clearing it). A handler's own response can carry a
//! [`Renewal`] decision: `(Renewal::Skip, StatusCode::NO_CONTENT)`.
//!
//! Under an optional [`AuthLayer`](crate::AuthLayer), a request whose
//! credentials the layer refused reaches the handler; the extractors above
//! answer with the layer's refusal (the same 401 the required layer sends),
//! `Option<Authenticated>` included: a refused token is never anonymous.
//! The token endpoint and the session login ignore bearer credentials
//! altogether, so a stale token never blocks a new login.
//!
//! The two login handlers throttle failed logins per client by the peer
//! address: serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()` (they turn axum's
//! `ConnectInfo<SocketAddr>` into the [`ClientAddr`] the
//! [`throttle`](crate::throttle) reads; without it, only the per-username
//! budget applies).
//!
//! The identity extractors use what [`AuthLayer`](crate::AuthLayer) put into
//! the request; without the layer they run the [`Authenticator`] taken from
//! the router state (`FromRef`), like FastAPI's `Depends`. Either way the
//! rejections are the authenticator's error responses. Router state `()`
//! without the layer is a programming error: 500 with a message saying so.
//!
//! ```
//! use axum::{routing::{get, post}, Router};
//! use tower_auth::{axum::token_endpoint, Authenticated, Authenticator, SimpleUser};
//!
//! async fn me(auth: Authenticated<SimpleUser>) -> String {
//!     auth.user.username.clone()
//! }
//!
//! fn app(auth: Authenticator<SimpleUser>) -> Router {
//!     Router::new()
//!         .route("/token", post(token_endpoint::<SimpleUser, ()>))
//!         .route("/me", get(me))
//!         .with_state(auth)
//! }
//! ```

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::Deref;

use std::convert::Infallible;

use axum::extract::{
    ConnectInfo, FromRef, FromRequestParts, OptionalFromRequestParts, Request, State,
};
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use http::request::Parts;

use crate::authenticator::{Authenticated, Authenticator};
use crate::error::{AuthError, ErrorRenderer};
use crate::layer::LayerContext;
use crate::refresh::Renewal;
use crate::scope::{Scopes, is_scope_token};
use crate::throttle::ClientAddr;
use crate::token::{Claims, ExtraClaims};
use crate::user::AuthUser;

/// Router states the identity extractors can take an [`Authenticator`] from:
/// every state that has one through `FromRef`, and `()` (relying on the
/// layer).
pub trait AuthenticatorState<U, X>: Send + Sync {
    /// The state's authenticator, if it has one.
    fn authenticator(&self) -> Option<Authenticator<U, X>>;
}

impl<S, U, X> AuthenticatorState<U, X> for S
where
    Authenticator<U, X>: FromRef<S>,
    S: Send + Sync,
{
    fn authenticator(&self) -> Option<Authenticator<U, X>> {
        Some(Authenticator::from_ref(self))
    }
}

impl<U, X> AuthenticatorState<U, X> for () {
    fn authenticator(&self) -> Option<Authenticator<U, X>> {
        None
    }
}

/// The layer's authenticator (it puts itself into the extensions), else the
/// state's.
fn find_authenticator<U, X, S>(parts: &Parts, state: &S) -> Option<Authenticator<U, X>>
where
    U: AuthUser,
    X: ExtraClaims,
    S: AuthenticatorState<U, X>,
{
    parts
        .extensions
        .get::<LayerContext>()
        .and_then(LayerContext::authenticator)
        .or_else(|| state.authenticator())
}

/// The 500 for an extractor that has neither a layer nor state to work with:
/// a programming error, said plainly in the log and the body.
fn misconfigured(message: &'static str) -> Response {
    tracing::error!("{message}");
    ErrorRenderer::default()
        .render(&AuthError::Internal(message))
        .into_response()
}

const NO_AUTHENTICATOR: &str =
    "an Authenticated extractor needs AuthLayer or an Authenticator in the router state";

/// What an identity extractor found when it did not fail.
enum Found<U, X> {
    /// An identity.
    Identity(Authenticated<U, X>),
    /// No credentials at all; the renderer that answers for this request.
    Anonymous(ErrorRenderer),
}

/// The response for `error`; on a route that requires `scopes`, the
/// challenge names them.
fn render(
    renderer: &ErrorRenderer,
    error: &AuthError,
    scopes: Option<&'static [&'static str]>,
) -> Response {
    match scopes {
        // Only on a refusal are the scopes collected into a set.
        Some(scopes) => {
            let required = Scopes::try_from_iter(scopes).unwrap_or_default();
            renderer.render_for_scopes(error, &required)
        }
        None => renderer.render(error),
    }
    .into_response()
}

/// The request's identity: what the layer found (or the refusal it
/// recorded, rendered), else what the state's [`Authenticator`] finds now.
/// Refusals name `scopes` in their challenge.
async fn find_identity<U, X, S>(
    parts: &Parts,
    state: &S,
    scopes: Option<&'static [&'static str]>,
) -> Result<Found<U, X>, Response>
where
    U: AuthUser,
    X: ExtraClaims,
    S: AuthenticatorState<U, X>,
{
    if let Some(identity) = parts.extensions.get::<Authenticated<U, X>>() {
        return Ok(Found::Identity(identity.clone()));
    }
    if let Some(context) = parts.extensions.get::<LayerContext>()
        && context.subject().is_none()
    {
        // The layer has decided: anonymous, or refused (decision 6).
        return if context.is_refused() {
            Err(render(context.renderer(), context.no_identity(), scopes))
        } else {
            Ok(Found::Anonymous(context.renderer().clone()))
        };
    }
    // No layer (or a layer of other user or claim types): the state's.
    let auth = find_authenticator(parts, state).ok_or_else(|| misconfigured(NO_AUTHENTICATOR))?;
    match auth.authenticate_optional(parts).await {
        Ok(Some(identity)) => Ok(Found::Identity(identity)),
        Ok(None) => Ok(Found::Anonymous(auth.renderer().clone())),
        Err(err) => Err(render(auth.renderer(), &err, scopes)),
    }
}

impl<U, X, S> FromRequestParts<S> for Authenticated<U, X>
where
    U: AuthUser,
    X: ExtraClaims,
    S: AuthenticatorState<U, X>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match find_identity(parts, state, None).await? {
            Found::Identity(identity) => Ok(identity),
            Found::Anonymous(renderer) => {
                Err(render(&renderer, &AuthError::MissingCredentials, None))
            }
        }
    }
}

impl<U, X, S> OptionalFromRequestParts<S> for Authenticated<U, X>
where
    U: AuthUser,
    X: ExtraClaims,
    S: AuthenticatorState<U, X>,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match find_identity(parts, state, None).await? {
            Found::Identity(identity) => Ok(Some(identity)),
            Found::Anonymous(_) => Ok(None),
        }
    }
}

/// The scopes a [`Scoped`] extractor requires. Declare one with
/// [`scope_requirement!`](crate::scope_requirement), or by hand:
///
/// ```
/// use tower_auth::axum::ScopeRequirement;
///
/// struct ReadItems;
/// impl ScopeRequirement for ReadItems {
///     const SCOPES: &'static [&'static str] = &["me", "items"];
/// }
/// ```
///
/// A hand-written requirement is checked on its first use instead: a scope
/// that is not an RFC 6749 scope token makes every request to the route a
/// 500 that says so.
pub trait ScopeRequirement: Send + Sync + 'static {
    /// Every scope the identity must hold.
    const SCOPES: &'static [&'static str];
}

/// Declares [`ScopeRequirement`]s for the [`Scoped`] extractor, one line
/// each: `Name: "scope", "scope";` becomes a unit struct `Name` requiring
/// those scopes. Attributes (doc comments) and a visibility go before the
/// name.
///
/// ```
/// use axum::{routing::get, Json, Router};
/// use tower_auth::axum::Scoped;
/// use tower_auth::{Authenticator, SimpleUser};
///
/// tower_auth::scope_requirement! {
///     /// FastAPI's `Security(get_current_active_user, scopes=["me", "items"])`.
///     pub ReadItems: "me", "items";
///     WriteNotes: "notes:write";
/// }
///
/// async fn read_own_items(me: Scoped<ReadItems, SimpleUser>) -> Json<Vec<String>> {
///     Json(vec![format!("{}'s item", me.user.username)])
/// }
///
/// fn app(auth: Authenticator<SimpleUser>) -> Router {
///     Router::new()
///         .route("/users/me/items", get(read_own_items))
///         .with_state(auth)
/// }
/// ```
///
/// Every scope is checked when the crate using it compiles (a `const`
/// assertion over [`is_scope_token`](crate::scope::is_scope_token)): a scope
/// with a space, a quote or a backslash, or an empty one, does not build.
///
/// ```compile_fail,E0080
/// tower_auth::scope_requirement!(ReadItems: "me items"); // two scopes in one string
/// ```
///
/// Why a macro that declares a type, rather than a value such as
/// `Scoped<["me"]>`: axum extractors are types, and stable Rust has no
/// `&str` or slice const generics, so each requirement must be a type of
/// its own; the macro writes the struct and its `impl` for you. It is named
/// after the trait it implements (`scopes!` would read as if it built a
/// [`Scopes`] value).
// Exported at the crate root, out of this module's `cfg`: say so on docs.rs.
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[macro_export]
macro_rules! scope_requirement {
    ($($(#[$attr:meta])* $vis:vis $name:ident: $($scope:literal),+ $(,)?);+ $(;)?) => {
        $(
            $(#[$attr])*
            $vis struct $name;

            impl $crate::axum::ScopeRequirement for $name {
                const SCOPES: &'static [&'static str] = &[$($scope),+];
            }

            // Evaluated when the crate compiles, whether or not the route
            // is ever requested.
            const _: () = {
                $(
                    ::core::assert!(
                        $crate::scope::is_scope_token($scope),
                        ::core::concat!(
                            "scope_requirement!: ",
                            ::core::stringify!($name),
                            " names a scope that is not an RFC 6749 scope token ",
                            "(one non-empty word of printable ASCII without space, '\"' or '\\'; ",
                            "write several scopes as several strings)"
                        )
                    );
                )+
            };
        )+
    };
}

/// An identity that holds every scope of `R`; 403 `insufficient_scope`
/// otherwise (401 when there is no identity). Derefs to [`Authenticated`].
///
/// The scopes checked are those in effect for the request (the token's
/// scopes that the user still holds; see
/// [`scope`](crate::scope#the-scopes-in-effect-for-a-request)), and every
/// challenge it sends — 401 or 403 — names `R`'s scopes:
/// `Bearer realm="…", scope="me"`.
pub struct Scoped<R, U, X = ()> {
    /// The identity.
    pub identity: Authenticated<U, X>,
    _requirement: PhantomData<fn() -> R>,
}

impl<R, U, X> Scoped<R, U, X> {
    /// The identity, by value.
    pub fn into_inner(self) -> Authenticated<U, X> {
        self.identity
    }
}

impl<R, U, X> Deref for Scoped<R, U, X> {
    type Target = Authenticated<U, X>;

    fn deref(&self) -> &Self::Target {
        &self.identity
    }
}

impl<R, U, X, S> FromRequestParts<S> for Scoped<R, U, X>
where
    R: ScopeRequirement,
    U: AuthUser,
    X: ExtraClaims,
    S: AuthenticatorState<U, X>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if !R::SCOPES.iter().all(|scope| is_scope_token(scope)) {
            return Err(misconfigured(
                "a ScopeRequirement names an invalid scope token",
            ));
        }
        let identity = match find_identity(parts, state, Some(R::SCOPES)).await? {
            Found::Identity(identity) => identity,
            Found::Anonymous(renderer) => {
                return Err(render(
                    &renderer,
                    &AuthError::MissingCredentials,
                    Some(R::SCOPES),
                ));
            }
        };
        let granted = &identity.claims.scope;
        if R::SCOPES.iter().any(|scope| !granted.contains(scope)) {
            // Only on the refusal path are the scopes collected into a set.
            let required = Scopes::try_from_iter(R::SCOPES).unwrap_or_default();
            let missing = granted.missing(&required);
            let err = AuthError::InsufficientScope { required, missing };
            let response = match find_authenticator(parts, state) {
                Some(auth) => auth.error_response(&err),
                None => ErrorRenderer::default().render(&err),
            };
            return Err(response.into_response());
        }
        Ok(Scoped {
            identity,
            _requirement: PhantomData,
        })
    }
}

impl<X, S> FromRequestParts<S> for Claims<X>
where
    X: ExtraClaims,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(context) = parts.extensions.get::<LayerContext>() else {
            return Err(misconfigured(
                "the Claims extractor needs AuthLayer in front of the route",
            ));
        };
        if let Some(claims) = context.claims::<X>() {
            return Ok(claims.clone());
        }
        if context.subject().is_some() {
            return Err(misconfigured(
                "the Claims extractor's claim type is not the AuthLayer's",
            ));
        }
        // The layer ran (optional mode): no credentials, or refused ones.
        Err(render(context.renderer(), context.no_identity(), None))
    }
}

/// A handler says "this response logs out or revokes: renew nothing" (or
/// "renew now") in one line, returning the decision beside its response:
///
/// ```
/// use axum::http::StatusCode;
/// use tower_auth::{Authenticated, Renewal, SimpleUser};
///
/// async fn logout_everywhere(me: Authenticated<SimpleUser>) -> (Renewal, StatusCode) {
///     let _ = me.user; // ... raise their token version in the store ...
///     (Renewal::Skip, StatusCode::NO_CONTENT)
/// }
/// ```
///
/// Sliding expiry already reloads the user before it renews, so a handler
/// that revoked the caller's tokens gets no renewal either way; the marker
/// says so where the handler is written, and also covers revocations the
/// store does not show yet (a revocation list fed asynchronously).
impl IntoResponseParts for Renewal {
    type Error = Infallible;

    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Infallible> {
        parts.extensions_mut().insert(self);
        Ok(parts)
    }
}

/// The peer address axum recorded (`ConnectInfo<SocketAddr>`) as the
/// [`ClientAddr`] the login throttle reads, unless one is there already.
fn with_client_addr(mut request: Request) -> Request {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| ClientAddr::from(*addr));
    if let Some(peer) = peer
        && request.extensions().get::<ClientAddr>().is_none()
    {
        request.extensions_mut().insert(peer);
    }
    request
}

/// The token endpoint as an axum handler: `post(token_endpoint::<User, ()>)`
/// on a router whose state provides an [`Authenticator`]. See
/// [`login`](crate::login) for the request and responses; serve with
/// connect info so that failed logins are throttled per client (see the
/// [module docs](self)).
pub async fn token_endpoint<U: AuthUser, X: ExtraClaims>(
    State(auth): State<Authenticator<U, X>>,
    request: Request,
) -> Response {
    crate::login::token_endpoint(&auth, with_client_addr(request))
        .await
        .into_response()
}

/// [`login::session_login_endpoint`](crate::login::session_login_endpoint)
/// as an axum handler: the token endpoint that also sets the session cookie,
/// `post(session_login::<User, ()>)` on a router whose state provides an
/// [`Authenticator`] whose credentials include a cookie source.
pub async fn session_login<U: AuthUser, X: ExtraClaims>(
    State(auth): State<Authenticator<U, X>>,
    request: Request,
) -> Response {
    crate::login::session_login_endpoint(&auth, with_client_addr(request))
        .await
        .into_response()
}

/// [`login::logout_endpoint`](crate::login::logout_endpoint) as an axum
/// handler: `post(logout::<User, ()>)`; revokes the request's session
/// (bearer or cookie), then 204 and a `Set-Cookie` deleting each cookie the
/// authenticator uses. Needs no valid token (an expired cookie must still be
/// clearable): do not put it behind a required [`AuthLayer`](crate::AuthLayer).
pub async fn logout<U: AuthUser, X: ExtraClaims>(
    State(auth): State<Authenticator<U, X>>,
    parts: Parts,
) -> Response {
    crate::login::logout_endpoint(&auth, &parts)
        .await
        .into_response()
}
