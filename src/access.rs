//! Access control: bearer tokens and what each may do, read from a tokens
//! file at start-up (`eventhub serve --tokens FILE`).
//!
//! Each line of the file is a token followed by its grants, separated by
//! whitespace; `#` starts a comment:
//!
//! ```text
//! # token                                          grants
//! 3f9c2a7e5b1d48c0a6e2f7b9d3c1e5a8b0d2f4c6e8a1b3d5  append:orders read:orders
//! 8b1e4d7a0c3f6e9b2d5a8c1f4e7b0d3a6c9f2e5b8d1a4c7f  read:*
//! ```
//!
//! A grant is `read`, `append` or `admin`, a colon and a topic pattern: a
//! topic name, a prefix ending in `*`, or `*` alone. `read` allows
//! ReadPartition, ReadKey, Surface, GetTopic and ListTopics (which lists only
//! the topics the token may read); `append` allows Append, which creates a
//! missing topic unless the hub is started with `--no-auto-create`; `admin`
//! allows all of that and CreateTopic and Invalidate. Calls without a
//! known token fail with UNAUTHENTICATED, calls a token does not allow with
//! PERMISSION_DENIED. The health and reflection services need no token.

use std::collections::HashMap;
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// What a call does to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Append,
    Admin,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Append => "append",
            Action::Admin => "admin",
        }
    }
}

/// One grant of a token: an action on the topics a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    action: Action,
    /// The topic name, or a prefix when `prefix` is set (empty: every topic).
    pattern: String,
    prefix: bool,
}

impl Grant {
    fn allows(&self, action: Action, topic: &str) -> bool {
        let matches = if self.prefix {
            topic.starts_with(&self.pattern)
        } else {
            topic == self.pattern
        };
        matches && (self.action == action || self.action == Action::Admin)
    }
}

/// A call on one topic: what it does, and to which topic. The service
/// implements it for each request type, so that the access rule of every
/// call is written once, in one table.
pub trait Guarded {
    const ACTION: Action;
    fn topic(&self) -> &str;
}

/// The hub's access check, which every call goes through: authentication
/// by bearer token, then authorisation of the call's action on its topic.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// `None` serves every caller.
    tokens: Option<Arc<Tokens>>,
}

impl Gate {
    pub fn new(tokens: Option<Arc<Tokens>>) -> Self {
        Gate { tokens }
    }

    /// The caller of `request`: UNAUTHENTICATED without a token this hub
    /// knows.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller<'_>, Status> {
        match &self.tokens {
            None => Ok(Caller(None)),
            Some(tokens) => tokens
                .authenticate(request.metadata())
                .map(|g| Caller(Some(g))),
        }
    }

    /// The message of a call on one topic, once its caller may make it:
    /// UNAUTHENTICATED without a known token, PERMISSION_DENIED when the
    /// token does not allow the call (checked before the topic is looked
    /// up, so that a refused caller does not learn whether it exists).
    pub fn admit<T: Guarded>(&self, request: Request<T>) -> Result<T, Status> {
        self.caller(&request)?
            .may(T::ACTION, request.get_ref().topic())?;
        Ok(request.into_inner())
    }
}

/// Who makes a call: the grants of its token, or anyone when the hub
/// takes no tokens.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a>(Option<&'a [Grant]>);

impl Caller<'_> {
    /// PERMISSION_DENIED unless the caller may do `action` to `topic`.
    pub fn may(&self, action: Action, topic: &str) -> Result<(), Status> {
        self.0.map_or(Ok(()), |g| authorize(g, action, topic))
    }

    /// Whether the caller may do `action` to `topic`.
    pub fn can(&self, action: Action, topic: &str) -> bool {
        self.0.is_none_or(|g| allows(g, action, topic))
    }
}

/// Shortest token accepted: guessing one must be out of reach.
const MIN_TOKEN_CHARS: usize = 16;

/// The tokens of a tokens file and their grants.
#[derive(Default)]
pub struct Tokens {
    grants: HashMap<String, Vec<Grant>>,
}

/// Never prints a token.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.grants.len())
    }
}

impl Tokens {
    /// Parses a tokens file's text; the error names the line and what is
    /// wrong with it.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut grants = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(token) = words.next() else {
                continue;
            };
            let at = |what: String| format!("line {}: {what}", i + 1);
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(at(format!(
                    "a token is {} characters long; tokens must have at least {MIN_TOKEN_CHARS} \
                     (make one with `openssl rand -hex 24`)",
                    token.chars().count()
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(at(
                    "a token must be printable ASCII (it travels in a gRPC header)".into(),
                ));
            }
            let mut list = Vec::new();
            for word in words {
                list.push(parse_grant(word).map_err(at)?);
            }
            if list.is_empty() {
                return Err(at(
                    "the token has no grants; add some, such as read:* or append:orders".into(),
                ));
            }
            if grants.insert(token.to_owned(), list).is_some() {
                return Err(at("this token is already on an earlier line".into()));
            }
        }
        if grants.is_empty() {
            return Err("the file has no tokens; every call would be refused".into());
        }
        Ok(Tokens { grants })
    }

    /// The grants of the call's bearer token.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<&[Grant], Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated(
                "this hub requires a token: send the metadata \"authorization: Bearer <token>\"",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be \"Bearer <token>\"")
            })?;
        self.grants.get(token).map(Vec::as_slice).ok_or_else(|| {
            Status::unauthenticated(
                "the bearer token is not one this hub knows (it reads its tokens file at start-up)",
            )
        })
    }
}

fn parse_grant(word: &str) -> Result<Grant, String> {
    let Some((action, pattern)) = word.split_once(':') else {
        return Err(format!(
            "{word:?} is not a grant; write ACTION:TOPIC, such as read:orders, append:billing.* or admin:*"
        ));
    };
    let action = match action {
        "read" => Action::Read,
        "append" => Action::Append,
        "admin" => Action::Admin,
        other => {
            return Err(format!(
                "{other:?} is not an action; the actions are read, append and admin"
            ));
        }
    };
    let (pattern, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if pattern.contains('*') || (!prefix && pattern.is_empty()) {
        return Err(format!(
            "{word:?}: a pattern is a topic name, a prefix ending in *, or * alone"
        ));
    }
    Ok(Grant {
        action,
        pattern: pattern.to_owned(),
        prefix,
    })
}

/// Whether `grants` allow `action` on `topic`, or PERMISSION_DENIED saying
/// what grant is missing.
fn authorize(grants: &[Grant], action: Action, topic: &str) -> Result<(), Status> {
    if allows(grants, action, topic) {
        return Ok(());
    }
    if topic.len() > 200 {
        // Longer than any topic name: not echoed back.
        return Err(Status::permission_denied(format!(
            "this token may not {} a topic named with {} bytes",
            action.name(),
            topic.len()
        )));
    }
    Err(Status::permission_denied(format!(
        "this token may not {verb} topic {topic:?}: that needs {name}:{topic} or a pattern \
         covering it (such as {name}:*, or admin:...) in the hub's tokens file",
        verb = match action {
            Action::Read => "read",
            Action::Append => "append to",
            Action::Admin => "administer (CreateTopic, Invalidate)",
        },
        name = action.name(),
    )))
}

/// Whether `grants` allow `action` on `topic`.
fn allows(grants: &[Grant], action: Action, topic: &str) -> bool {
    grants.iter().any(|g| g.allows(action, topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn grants_match_names_prefixes_and_everything() {
        let tokens = Tokens::parse(&format!(
            "# comment\n\n{A} append:orders read:orders.* # trailing\n{B} admin:*\n"
        ))
        .unwrap();
        let a = &tokens.grants[A];
        assert!(allows(a, Action::Append, "orders"));
        assert!(!allows(a, Action::Append, "orders2"));
        assert!(!allows(a, Action::Read, "orders"));
        assert!(allows(a, Action::Read, "orders.eu"));
        assert!(!allows(a, Action::Admin, "orders"));
        let b = &tokens.grants[B];
        for action in [Action::Read, Action::Append, Action::Admin] {
            assert!(allows(b, action, "anything"));
        }
    }

    #[test]
    fn bad_files_say_which_line_and_why() {
        for (text, expected) in [
            ("short read:*", "line 1: a token is 5 characters long"),
            (A, "line 1: the token has no grants"),
            (
                &format!("{A} write:*"),
                "line 1: \"write\" is not an action",
            ),
            (&format!("{A} read"), "line 1: \"read\" is not a grant"),
            (&format!("{A} read:a*b"), "a pattern is a topic name"),
            (&format!("{A} read:"), "a pattern is a topic name"),
            (
                &format!("{A} read:*\n{A} append:*"),
                "line 2: this token is already",
            ),
            ("# nothing\n", "the file has no tokens"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
