//! Errors of the Envoy-config reader.

use std::fmt;
use std::path::PathBuf;

/// What is wrong with a field, in a [`ConfigError::Field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A key or value that Envoy may accept but vessel does not implement.
    Unsupported,
    /// A required field is absent (or null).
    Missing,
    /// A value of the wrong type, out of range, or malformed.
    Invalid,
    /// Two entries that must be unique collide (listener or cluster names,
    /// domains, environment variable keys, ...).
    Duplicate,
    /// A reference to something that does not exist, e.g. a route naming an
    /// unknown cluster.
    UnknownReference,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unsupported => "unsupported",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Duplicate => "duplicate",
            Self::UnknownReference => "unknown reference",
        })
    }
}

/// Why an Envoy bootstrap could not be loaded.
///
/// [`ConfigError::Field`] names the offending field by its path in the YAML
/// document, e.g.
/// `static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file that was being read.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML (or has duplicate keys, a bad merge key,
    /// or an unsupported tag); the error has the line and column.
    #[error("invalid YAML: {0}")]
    Yaml(#[from] crate::YamlError),
    /// A field is unsupported, missing, invalid, duplicated, or refers to
    /// something unknown.
    #[error("{path}: {message}")]
    Field {
        /// What kind of problem this is.
        kind: ErrorKind,
        /// Where in the YAML: dotted keys and `[index]`es from the document
        /// root (`<root>` for the document itself).
        path: String,
        /// What is wrong, in words.
        message: String,
    },
}

impl ConfigError {
    /// The YAML path of a [`ConfigError::Field`] error.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Field { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The kind of a [`ConfigError::Field`] error.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Field { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The message of a [`ConfigError::Field`] error (without the path).
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Field { message, .. } => Some(message),
            _ => None,
        }
    }
}
