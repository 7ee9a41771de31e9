//! The admin's session: a cookie holding an HMAC of the admin token under a key drawn at
//! process start (so a restart ends every session), never the token itself.
//!
//! The cookie's name carries a tag of this node's id ([`session_cookie`]): cookies are shared
//! by every port of a host, so several nodes on one machine would otherwise sign each other
//! out. Every form carries a token bound to the session ([`form_token`]) that each `POST`
//! checks, on top of `SameSite=Strict`.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use ring::hmac;

use crate::state::ApiState;

/// The start of the session cookie's name; [`session_cookie`] adds this node's tag.
pub const SESSION_COOKIE: &str = "amphi_session";
/// The cookie holding the reader's language choice (a language code; not a secret).
pub(super) const LANGUAGE_COOKIE: &str = "amphi_lang";
/// How long a session lasts, in seconds.
pub const SESSION_SECS: u64 = 12 * 60 * 60;

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The key sessions are signed with: drawn once per process, so a restart ends sessions.
fn session_key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()))
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A session cookie value for `token` issued at `issued` (Unix seconds): `issued.hmac`.
pub(super) fn session_value(token: &str, issued: u64) -> String {
    let tag = hmac::sign(session_key(), format!("{issued}.{token}").as_bytes());
    format!("{issued}.{}", hex::encode(tag.as_ref()))
}

/// Whether `value` is a session this node issued for `token`, not older than
/// [`SESSION_SECS`] at `now`. The tag is checked in constant time.
pub(super) fn session_valid(token: &str, value: &str, now: u64) -> bool {
    let Some((issued, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(issued), Ok(tag)) = (issued.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    let fresh = issued <= now + 60 && now.saturating_sub(issued) < SESSION_SECS;
    fresh && hmac::verify(session_key(), format!("{issued}.{token}").as_bytes(), &tag).is_ok()
}

/// Whether `given` is the admin token, compared in constant time (and independent of length:
/// both sides are compared as HMAC tags).
pub(super) fn token_matches(given: &str, token: &str) -> bool {
    let expected = hmac::sign(session_key(), token.as_bytes());
    hmac::verify(session_key(), given.as_bytes(), expected.as_ref()).is_ok()
}

/// This node's session cookie name: `amphi_session_` and 8 hex digits of a hash of its node
/// id, so two nodes on one host keep separate sessions.
pub fn session_cookie(node_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, node_id.as_bytes());
    format!("{SESSION_COOKIE}_{}", hex::encode(&digest.as_ref()[..4]))
}

/// The request's valid session cookie value, if it has one.
pub(super) fn session(s: &ApiState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, &session_cookie(&s.node_id))
        .filter(|v| session_valid(&s.token, v, unix_now()))
        .map(str::to_owned)
}

pub(super) fn signed_in(s: &ApiState, headers: &HeaderMap) -> bool {
    session(s, headers).is_some()
}

/// The token every form of `session` carries: an HMAC of the session value, so a page from
/// another site cannot know it and one session's token is useless in another.
pub(super) fn form_token(session: &str) -> String {
    let tag = hmac::sign(session_key(), format!("form.{session}").as_bytes());
    hex::encode(tag.as_ref())
}

/// Whether `given` is `session`'s form token, compared in constant time.
pub(super) fn form_token_valid(session: &str, given: &str) -> bool {
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    hmac::verify(session_key(), format!("form.{session}").as_bytes(), &given).is_ok()
}

/// The reader's language choice from its cookie, if any.
pub(super) fn language_choice(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, LANGUAGE_COOKIE)
}

pub(super) fn set_cookie(node_id: &str, value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        session_cookie(node_id)
    ))
    .expect("cookie values are hex and digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let now = 1_800_000_000;
        let v = session_value("secret-token", now);
        assert!(
            !v.contains("secret-token"),
            "the cookie never holds the token"
        );
        assert!(session_valid("secret-token", &v, now + 10));
        assert!(!session_valid("other-token", &v, now + 10));
        assert!(!session_valid("secret-token", &v, now + SESSION_SECS));
        let forged = format!("{}.{}", now + 5, v.split_once('.').unwrap().1);
        assert!(!session_valid("secret-token", &forged, now + 10));
        for junk in ["", ".", "x.y", "1", "1.zz"] {
            assert!(!session_valid("secret-token", junk, now));
        }
        assert!(token_matches("secret-token", "secret-token"));
        assert!(!token_matches("secret-toke", "secret-token"));
        assert!(!token_matches("", "secret-token"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; amphi_session=9.abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("9.abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn each_node_has_its_own_cookie_and_forms_carry_a_session_bound_token() {
        assert_ne!(session_cookie("node-a"), session_cookie("node-b"));
        assert!(session_cookie("node-a").starts_with("amphi_session_"));
        let (one, two) = (
            session_value("t", 1_800_000_000),
            session_value("t", 1_800_000_001),
        );
        let token = form_token(&one);
        assert!(form_token_valid(&one, &token));
        assert!(!form_token_valid(&two, &token), "bound to its session");
        assert!(!form_token_valid(&one, ""));
        assert!(!form_token_valid(&one, "zz"));
        assert!(!form_token_valid(&one, &token[..62]));
    }
}
