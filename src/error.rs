//! The hub's one error type and its mapping to gRPC statuses.

use tonic::{Code, Status};

/// Everything a request can fail with. Client-facing variants carry a
/// message a person can act on; storage causes are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// A position past the end of what is stored.
    #[error("{0}")]
    OutOfRange(String),
    /// An expected key version did not hold.
    #[error("key {key:?} is at version {actual}, {expected}")]
    VersionConflict {
        key: String,
        actual: u64,
        /// What was expected, in words ("expected version 2").
        expected: String,
    },
    #[error("{0}")]
    Unavailable(String),
    /// A failure that retrying would not cure; the cause is in the log.
    #[error("{0}")]
    Internal(String),
    /// The database was lost while it committed: the write may or may not
    /// have happened.
    #[error("{0}")]
    MaybeStored(String),
    #[error("storage error")]
    Storage(#[from] sqlx::Error),
    #[error("storage migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl HubError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        HubError::InvalidArgument(msg.into())
    }

    pub fn topic_not_found(topic: &str) -> Self {
        HubError::NotFound(format!(
            "topic {topic:?} does not exist (create it with CreateTopic or by appending to it)"
        ))
    }

    /// True when the failure is the storage being out of reach (the call may
    /// succeed when retried), as opposed to a bad request or a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            HubError::Unavailable(_) | HubError::MaybeStored(_) => true,
            HubError::Storage(e) => Self::storage_unavailable(e),
            _ => false,
        }
    }

    /// The error every append of a group commit gets when the commit failed.
    pub fn not_stored(cause: &HubError) -> Self {
        match cause {
            HubError::Storage(e) if Self::storage_unavailable(e) => HubError::Unavailable(format!(
                "the hub's database is unavailable ({e}); the append was not stored, retry later"
            )),
            HubError::Unavailable(m) => {
                HubError::Unavailable(format!("the append was not stored: {m}; retry"))
            }
            HubError::MaybeStored(m) => HubError::MaybeStored(m.clone()),
            other => {
                tracing::error!(error = ?other, "append not stored");
                HubError::Internal(format!(
                    "the append was not stored: the database refused it ({other}); see the hub's log"
                ))
            }
        }
    }

    /// Whether a failed write lost its connection, rather than hearing the
    /// database refuse it (then it rolled back).
    pub fn lost_connection(&self) -> bool {
        self.is_unavailable() && !matches!(self, HubError::Storage(sqlx::Error::Database(_)))
    }

    /// Whether PostgreSQL answered that it ended the session (shutting down,
    /// restarting after a crash, or an idle session timing out): the
    /// backend is gone, so nothing it had not committed will be.
    pub fn session_ended(&self) -> bool {
        matches!(
            self.database_code().as_deref(),
            Some("57P01" | "57P02" | "57P05")
        )
    }

    /// Whether a failed COMMIT may have stored the transaction all the
    /// same: SQLite wrote it to the WAL and then failed to fsync it
    /// (`SQLITE_IOERR_FSYNC`, `SQLITE_IOERR_DIR_FSYNC`). That process no
    /// longer sees it and writes over it, but after a crash the frames may
    /// be recovered.
    pub fn maybe_synced(&self) -> bool {
        matches!(self.database_code().as_deref(), Some("1034" | "1290"))
    }

    /// The code the database answered with, if it answered.
    fn database_code(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            HubError::Storage(sqlx::Error::Database(db)) => db.code(),
            _ => None,
        }
    }

    fn storage_unavailable(err: &sqlx::Error) -> bool {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // PostgreSQL SQLSTATEs (always 5 characters): connection
                // exceptions (08), insufficient resources (53), operator
                // intervention such as a shutting-down server (57P), and
                // serialization failures and deadlocks (40).
                Some(c) if c.len() == 5 => {
                    c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                        || c.starts_with("40")
                }
                // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_FULL (13),
                // SQLITE_IOERR (10) and their extended codes.
                Some(c) => matches!(c.parse::<i64>().map(|c| c & 0xff), Ok(5 | 6 | 10 | 13)),
                None => false,
            },
            _ => false,
        }
    }
}

impl From<HubError> for Status {
    fn from(err: HubError) -> Status {
        match err {
            HubError::InvalidArgument(m) => Status::invalid_argument(m),
            HubError::NotFound(m) => Status::not_found(m),
            HubError::AlreadyExists(m) => Status::already_exists(m),
            HubError::ResourceExhausted(m) => Status::resource_exhausted(m),
            HubError::OutOfRange(m) => Status::out_of_range(m),
            HubError::VersionConflict { .. } => {
                let HubError::VersionConflict { key, actual, .. } = &err else {
                    unreachable!()
                };
                let mut status = Status::failed_precondition(err.to_string());
                let md = status.metadata_mut();
                if let Ok(v) = actual.to_string().parse() {
                    md.insert("eventhub-actual-version", v);
                }
                // Keys are UTF-8; metadata values must be visible ASCII.
                if let Ok(v) = percent_encode(key).parse() {
                    md.insert("eventhub-key", v);
                }
                status
            }
            HubError::Unavailable(m) => Status::unavailable(m),
            HubError::Internal(m) => Status::internal(m),
            // UNAVAILABLE, whose retries gRPC leaves to the caller for
            // operations that are not idempotent; the message says why.
            HubError::MaybeStored(m) => Status::unavailable(m),
            HubError::Storage(e) if HubError::storage_unavailable(&e) => {
                tracing::warn!(error = %e, "storage unavailable");
                Status::unavailable(format!(
                    "the hub's database is unavailable ({e}); retry later"
                ))
            }
            HubError::Storage(e) => {
                tracing::error!(error = ?e, "storage error");
                Status::new(Code::Internal, "internal storage error; see the hub's log")
            }
            HubError::Migrate(e) => {
                tracing::error!(error = ?e, "migration error");
                Status::new(Code::Internal, "internal storage error; see the hub's log")
            }
        }
    }
}

/// Writes every byte outside `!`..`~`, and `%` itself, as `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;
