//! [`ConfigError`]: a configuration the crate refuses when it is built,
//! before any request. Every room's builder returns it, so it sits below
//! all of them.

/// A configuration the crate refuses when it is built, before any request.
///
/// `Debug` prints the same message as `Display`: a `main` that returns this
/// error (directly or boxed) prints `Error: the HMAC secret must be at least
/// 32 bytes`, not `Error: SecretTooShort`. Match on the variants to tell
/// them apart.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither crypto feature is enabled and no provider was given.
    #[error(
        "no jsonwebtoken crypto provider: enable tower-auth's `aws_lc_rs` or `rust_crypto` feature, or pass one to TokenCodecBuilder::crypto_provider"
    )]
    NoCryptoBackend,
    /// An HMAC secret shorter than [`MIN_HMAC_SECRET_LEN`](crate::token::MIN_HMAC_SECRET_LEN).
    #[error("the HMAC secret must be at least 32 bytes")]
    SecretTooShort,
    /// The key material does not fit the algorithm.
    #[error("the key is not a valid {0:?} key")]
    InvalidKey(jsonwebtoken::Algorithm),
    /// A constructor was given an algorithm of another family.
    #[error("{0:?} needs a different kind of key")]
    WrongKeyType(jsonwebtoken::Algorithm),
    /// The signing key is a verify-only key.
    #[error("the signing key has no private part")]
    NotASigningKey,
    /// A token signed with the signing key does not verify with its public
    /// part.
    #[error("the signing key's private and public parts do not match")]
    KeyPairMismatch,
    /// A key set of several keys has a key without `kid`.
    #[error("every key in a key set needs a kid")]
    MissingKid,
    /// Two keys share a `kid`.
    #[error("two keys share a kid")]
    DuplicateKid,
    /// The realm cannot stand in a `WWW-Authenticate` quoted-string.
    #[error("the realm must be non-empty visible ASCII without quotes or backslashes")]
    InvalidRealm,
    /// A lifetime or limit that cannot work.
    #[error("{0}")]
    Lifetime(&'static str),
    /// A credential source setting that cannot work.
    #[error("{0}")]
    Credentials(&'static str),
    /// A password-hashing setting that cannot work.
    #[error("{0}")]
    Password(&'static str),
    /// An allowed origin that is not `scheme://host[:port]`.
    #[error("{0}")]
    Origin(&'static str),
    /// A rate or connection limit that cannot work.
    #[error("{0}")]
    Limit(&'static str),
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fn main() -> Result<(), E>` prints `Error: {e:?}`: a configuration
    /// error returned from `main` must read as its message, not as
    /// `SecretTooShort`.
    #[test]
    fn debug_is_the_message_so_main_prints_it() {
        let err = ConfigError::SecretTooShort;
        assert_eq!(format!("{err:?}"), err.to_string());
        let boxed: Box<dyn std::error::Error> = Box::new(ConfigError::Lifetime("too short"));
        assert_eq!(format!("{boxed:?}"), "too short");
    }
}
