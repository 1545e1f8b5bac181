//! Tokens: refresh tokens (`<family_id>.<secret>`), their hashes, access JWTs and the JWKS,
//! and the sealing of a rotation's successor for grace replays.
//!
//! Pure functions and key holders; no HTTP, no store. Nothing here logs a token.

use std::{fmt, path::Path};

use aws_lc_rs::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    digest,
    rand::{self, SecureRandom as _},
    signature::{Ed25519KeyPair, KeyPair as _},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Why a token or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("signing key: {0}")]
    Key(String),
    #[error("could not sign the access token")]
    Sign,
    #[error("the operating system's random generator failed")]
    Random,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TokenError> {
    let mut buf = [0u8; N];
    rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| TokenError::Random)?;
    Ok(buf)
}

/// A fresh 128-bit identifier, base64url (families, JWT ids, user ids).
pub fn new_id() -> Result<String, TokenError> {
    Ok(B64.encode(random_bytes::<16>()?))
}

/// 64 random bytes: a cookie master key.
pub fn random_cookie_key() -> Result<Vec<u8>, TokenError> {
    Ok(random_bytes::<64>()?.to_vec())
}

/// A refresh token: the family it belongs to and a 256-bit secret, and the generation the
/// store gave it. `Debug` hides the secret.
///
/// The generation lets the store tell a token that is *ahead* of it (the store lost its last
/// write, DESIGN.md §5 "Lost writes") from a replayed older one. It travels beside the token
/// in the sealed cookie, not in the token's text (`<family_id>.<secret>`, as before): a
/// gateway from before generations still reads every token, so instances can be upgraded
/// one at a time. A cookie without one (written by such a gateway) has `None`.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub family_id: String,
    pub generation: Option<u64>,
    secret: String,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("family_id", &self.family_id)
            .field("generation", &self.generation)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl RefreshToken {
    /// A new token for `family_id` at `generation` with a fresh secret.
    pub fn generate(family_id: &str, generation: u64) -> Result<Self, TokenError> {
        Ok(Self {
            family_id: family_id.to_owned(),
            generation: Some(generation),
            secret: B64.encode(random_bytes::<32>()?),
        })
    }

    /// The same secret at the generation the store gave it (or the cookie says).
    pub fn at_generation(mut self, generation: impl Into<Option<u64>>) -> Self {
        self.generation = generation.into();
        self
    }

    /// Parses `<family_id>.<secret>`: 16 and 32 bytes of base64url. No generation: that comes
    /// from beside the token ([`RefreshToken::at_generation`]).
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let (family_id, secret) = text.split_once('.').ok_or(TokenError::Malformed)?;
        let fid_ok = B64.decode(family_id).is_ok_and(|b| b.len() == 16);
        let secret_ok = B64.decode(secret).is_ok_and(|b| b.len() == 32);
        if !(fid_ok && secret_ok) {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            family_id: family_id.to_owned(),
            generation: None,
            secret: secret.to_owned(),
        })
    }

    /// The text form, for the cookie only (without the generation).
    pub fn expose(&self) -> String {
        format!("{}.{}", self.family_id, self.secret)
    }

    /// SHA-256 of the secret, base64url: the only form the store sees. The generation is not
    /// part of it: the store gives a successor its generation after the hash is written.
    pub fn secret_hash(&self) -> String {
        B64.encode(digest::digest(&digest::SHA256, self.secret.as_bytes()))
    }
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The claims of an access JWT (DESIGN.md §4).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub email: String,
    pub roles: Vec<String>,
}

/// Reads the claims of one of our own access tokens without checking its signature.
///
/// Only for tokens taken out of the sealed cookie: the cookie's AEAD already proves they
/// came from this gateway (DESIGN.md §4).
pub fn peek_claims(jwt: &str) -> Result<AccessClaims, TokenError> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// The gateway's Ed25519 signing key: mints access JWTs and publishes the JWKS.
pub struct Signer {
    /// The key pair, parsed once: `jsonwebtoken::encode` re-parses its key (and derives the
    /// public key) at every call, 18 % of a rotation's instructions.
    pair: Ed25519KeyPair,
    /// `base64url({"typ":"JWT","alg":"EdDSA","kid":…}) + "."`: the same for every token.
    header_prefix: String,
    kid: String,
    public_x: String,
    /// JWKs of earlier keys: published, never used to sign.
    previous: Vec<serde_json::Value>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh key (lost on restart).
    pub fn generate() -> Result<Self, TokenError> {
        Self::from_pkcs8_der(generate_ed25519_pkcs8()?.as_slice())
    }

    /// Loads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read(path)
            .map_err(|e| TokenError::Key(format!("cannot read {}: {e}", path.display())))?;
        let block = pem::parse(&text)
            .map_err(|e| TokenError::Key(format!("{} is not PEM: {e}", path.display())))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(TokenError::Key(format!(
                "{} holds a {:?} block, expected a PKCS#8 \"PRIVATE KEY\"",
                path.display(),
                block.tag()
            )));
        }
        Self::from_pkcs8_der(block.contents())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|_| TokenError::Key("not an Ed25519 PKCS#8 private key".into()))?;
        let public_x = B64.encode(pair.public_key().as_ref());
        // RFC 7638 thumbprint: members in lexicographic order, no whitespace.
        let thumb_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{public_x}"}}"#);
        let kid = B64.encode(digest::digest(&digest::SHA256, thumb_input.as_bytes()));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let header_json = serde_json::to_vec(&header)
            .map_err(|_| TokenError::Key("cannot encode the JWT header".into()))?;
        let header_prefix = format!("{}.", B64.encode(header_json));
        Ok(Self {
            pair,
            header_prefix,
            kid,
            public_x,
            previous: Vec::new(),
        })
    }

    /// Publishes the public halves of earlier signing keys (PEM files) beside this one.
    pub fn with_previous_files(mut self, paths: &[std::path::PathBuf]) -> Result<Self, TokenError> {
        for path in paths {
            let old = Self::from_pem_file(path)?;
            if old.kid != self.kid && !self.previous.iter().any(|k| k["kid"] == old.kid.as_str()) {
                self.previous.push(old.jwk());
            }
        }
        Ok(self)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` with EdDSA, `kid` in the header: a compact JWS (RFC 7515) exactly as
    /// `jsonwebtoken::encode` writes it, with the key parsed once instead of per token
    /// (`minted_jwt_verifies_with_the_published_key` checks it with jsonwebtoken).
    pub fn mint(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
        let mut token = String::with_capacity(self.header_prefix.len() + payload.len() * 2 + 90);
        token.push_str(&self.header_prefix);
        B64.encode_string(payload, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        B64.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// This key as a JWK (public part only).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": self.public_x,
        })
    }

    /// The JWKS document served at `/.well-known/jwks.json`: this key, then earlier ones.
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys = vec![self.jwk()];
        keys.extend(self.previous.iter().cloned());
        serde_json::json!({ "keys": keys })
    }
}

/// A new Ed25519 private key as PKCS#8 DER.
pub fn generate_ed25519_pkcs8() -> Result<Vec<u8>, TokenError> {
    let doc = Ed25519KeyPair::generate_pkcs8(&rand::SystemRandom::new())
        .map_err(|_| TokenError::Random)?;
    Ok(doc.as_ref().to_vec())
}

/// PEM text of a PKCS#8 DER private key.
pub fn pkcs8_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()))
}

/// Seals a rotation's successor token so that the store holds no usable secret: AES-256-GCM
/// under a key derived from the cookie key, bound to the family id.
pub struct Sealer {
    key: LessSafeKey,
    /// Keys derived from earlier cookie keys: they still open what they sealed.
    previous: Vec<LessSafeKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Derives the sealing key from the 64-byte cookie master key.
    pub fn new(master: &[u8]) -> Self {
        Self::with_previous(master, &[])
    }

    /// Like [`Sealer::new`]; successors sealed under `previous` cookie keys still open.
    pub fn with_previous(master: &[u8], previous: &[Vec<u8>]) -> Self {
        Self {
            key: Self::derive(master),
            previous: previous.iter().map(|k| Self::derive(k)).collect(),
        }
    }

    fn derive(master: &[u8]) -> LessSafeKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"bffgate successor seal v1\0");
        ctx.update(master);
        let derived = ctx.finish();
        UnboundKey::new(&AES_256_GCM, derived.as_ref())
            .map(LessSafeKey::new)
            .expect("a SHA-256 digest is a valid AES-256 key")
    }

    pub fn seal(&self, family_id: &str, token: &RefreshToken) -> Result<String, TokenError> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut data = token.expose().into_bytes();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(family_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| TokenError::Sign)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        Ok(B64.encode(out))
    }

    pub fn open(&self, family_id: &str, sealed: &str) -> Result<RefreshToken, TokenError> {
        let raw = B64.decode(sealed).map_err(|_| TokenError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(TokenError::Malformed);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let plain = std::iter::once(&self.key)
            .chain(&self.previous)
            .find_map(|key| {
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let mut body = body.to_vec();
                let len = key
                    .open_in_place(nonce, Aad::from(family_id.as_bytes()), &mut body)
                    .ok()?
                    .len();
                body.truncate(len);
                Some(body)
            })
            .ok_or(TokenError::Malformed)?;
        let text = std::str::from_utf8(&plain).map_err(|_| TokenError::Malformed)?;
        let token = RefreshToken::parse(text)?;
        if token.family_id != family_id {
            return Err(TokenError::Malformed);
        }
        Ok(token)
    }
}

/// Seconds since the epoch of a millisecond timestamp (JWT `iat`/`exp`).
pub fn unix_seconds(ms: Millis) -> i64 {
    ms.div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_round_trips_and_hides_its_secret() {
        let fid = new_id().unwrap();
        let t = RefreshToken::generate(&fid, 7).unwrap();
        let parsed = RefreshToken::parse(&t.expose()).unwrap();
        assert_eq!(parsed.generation, None, "the generation is not in the text");
        assert_eq!(parsed.at_generation(7), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_eq!(t.secret_hash().len(), 43);
    }

    #[test]
    fn the_generation_is_not_part_of_the_text_or_the_secret_hash() {
        let t = RefreshToken::generate(&new_id().unwrap(), 1).unwrap();
        let (text, hash) = (t.expose(), t.secret_hash());
        let later = t.at_generation(9);
        assert_eq!((later.expose(), later.secret_hash()), (text, hash));
    }

    #[test]
    fn malformed_refresh_tokens_are_rejected() {
        for bad in [
            "",
            "abc",
            "a.b",
            "....",
            &format!("{}.short", new_id().unwrap()),
            &format!("{}.-1.{}", new_id().unwrap(), "A".repeat(43)),
            &format!("{}.+1.{}", new_id().unwrap(), "A".repeat(43)),
            &format!("{}.01.{}", new_id().unwrap(), "A".repeat(43)),
            &format!("{}..{}", new_id().unwrap(), "A".repeat(43)),
            &format!(
                "{}.99999999999999999999.{}",
                new_id().unwrap(),
                "A".repeat(43)
            ),
            &format!("{}.1.{}.x", new_id().unwrap(), "A".repeat(43)),
        ] {
            assert!(RefreshToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn different_secrets_have_different_hashes() {
        let fid = new_id().unwrap();
        let a = RefreshToken::generate(&fid, 0).unwrap();
        let b = RefreshToken::generate(&fid, 0).unwrap();
        assert!(!hashes_equal(&a.secret_hash(), &b.secret_hash()));
        assert!(hashes_equal(&a.secret_hash(), &a.secret_hash()));
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "bffgate".into(),
            aud: "api".into(),
            sub: "u1".into(),
            sid: "f1".into(),
            iat: 1_700_000_000,
            exp: 4_000_000_000,
            jti: "j1".into(),
            email: "a@example.com".into(),
            roles: vec!["admin".into()],
        }
    }

    #[test]
    fn minted_jwt_verifies_with_the_published_key() {
        let signer = Signer::generate().unwrap();
        let jwt = signer.mint(&claims()).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(signer.jwks()).unwrap();
        let jwk = jwks.find(signer.kid()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&["api"]);
        v.set_issuer(&["bffgate"]);
        let data = jsonwebtoken::decode::<AccessClaims>(&jwt, &key, &v).unwrap();
        assert_eq!(data.claims, claims());
        assert_eq!(data.header.kid.as_deref(), Some(signer.kid()));
        assert_eq!(peek_claims(&jwt).unwrap(), claims());
    }

    #[test]
    fn signer_loads_pem_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pkcs8_pem(&generate_ed25519_pkcs8().unwrap())).unwrap();
        let a = Signer::from_pem_file(&path).unwrap();
        let b = Signer::from_pem_file(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
    }

    #[test]
    fn sealed_successor_opens_only_for_its_family_and_key() {
        let sealer = Sealer::new(&[1u8; 64]);
        let fid = new_id().unwrap();
        let t = RefreshToken::generate(&fid, 0).unwrap();
        let sealed = sealer.seal(&fid, &t).unwrap();
        assert!(!sealed.contains(&t.secret));
        assert_eq!(sealer.open(&fid, &sealed).unwrap().at_generation(0), t);
        assert!(sealer.open(&new_id().unwrap(), &sealed).is_err());
        assert!(Sealer::new(&[2u8; 64]).open(&fid, &sealed).is_err());
    }
}
