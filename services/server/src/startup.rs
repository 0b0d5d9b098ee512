//! [`StartError`]: what can keep the server from starting (or stop it once started),
//! by the step that failed, each with a message that says what and where, and the
//! lower error that caused it as its `source`.

use std::{error::Error as StdError, fmt};

/// A lower error of any kind.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why the server did not start, or stopped by itself. Its `Debug` form is what `main`
/// prints: the message, then the errors under it (`Caused by:`), as anyhow prints them.
#[derive(thiserror::Error)]
pub enum StartError {
    /// A setting: its value, the config file, or settings that only go together.
    #[error(transparent)]
    Config(Cause),
    /// The TLS certificate, key or client CA files.
    #[error(transparent)]
    Tls(Cause),
    /// Logs and traces: `RUST_LOG` and the `OTEL_*` variables.
    #[error(transparent)]
    Telemetry(Cause),
    /// The metrics recorder or the metrics listener.
    #[error(transparent)]
    Metrics(Cause),
    /// Connecting to the database, migrating it, or the first reads.
    #[error(transparent)]
    Database(Cause),
    /// Binding the API listener, or building the services behind it.
    #[error(transparent)]
    Listen(Cause),
    /// The running server failed (or its task panicked).
    #[error(transparent)]
    Serve(Cause),
}

impl fmt::Debug for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut causes = Vec::new();
        let mut source = StdError::source(self);
        while let Some(error) = source {
            causes.push(error.to_string());
            source = error.source();
        }
        match causes.as_slice() {
            [] => Ok(()),
            [cause] => write!(f, "\n\nCaused by:\n    {cause}"),
            _ => {
                write!(f, "\n\nCaused by:")?;
                for (i, cause) in causes.iter().enumerate() {
                    write!(f, "\n    {i}: {cause}")?;
                }
                Ok(())
            }
        }
    }
}

/// A step of start-up: the variant of [`StartError`] its errors are.
pub type Step = fn(Cause) -> StartError;

/// What went wrong: a message and the error under it, or the lower error alone (whose
/// message and sources are then the cause's own).
#[derive(Debug)]
pub struct Cause {
    message: Option<String>,
    source: Option<BoxError>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (Some(message), _) => f.write_str(message),
            (None, Some(source)) => source.fmt(f),
            (None, None) => Ok(()),
        }
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source = self
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static));
        if self.message.is_some() {
            source
        } else {
            source.and_then(|s| s.source())
        }
    }
}

impl StartError {
    /// A failure of `step` that `message` says all of.
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        step(Cause {
            message: Some(message.into()),
            source: None,
        })
    }

    /// A failure of `step` that `error` says all of.
    pub fn from_error(step: Step, error: impl Into<BoxError>) -> Self {
        step(Cause {
            message: None,
            source: Some(error.into()),
        })
    }

    /// The message and the lower errors, `message: cause: cause …`, for a log line.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = StdError::source(self);
        while let Some(error) = source {
            text.push_str(&format!(": {error}"));
            source = error.source();
        }
        text
    }
}

/// Turns a lower error into a [`StartError`] of a step.
pub trait Context<T> {
    /// A failure of `step` that `message()` says, caused by the error.
    fn context(self, step: Step, message: impl FnOnce() -> String) -> Result<T, StartError>;
    /// A failure of `step` that the error says all of.
    fn during(self, step: Step) -> Result<T, StartError>;
}

impl<T, E: Into<BoxError>> Context<T> for Result<T, E> {
    fn context(self, step: Step, message: impl FnOnce() -> String) -> Result<T, StartError> {
        self.map_err(|error| {
            step(Cause {
                message: Some(message()),
                source: Some(error.into()),
            })
        })
    }

    fn during(self, step: Step) -> Result<T, StartError> {
        self.map_err(|error| StartError::from_error(step, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn a_step_error_says_what_failed_and_keeps_its_cause() {
        let error = Err::<(), _>(missing())
            .context(StartError::Tls, || {
                "cannot read the TLS key file k.pem".into()
            })
            .unwrap_err();
        assert!(matches!(error, StartError::Tls(_)));
        assert_eq!(error.to_string(), "cannot read the TLS key file k.pem");
        assert_eq!(
            error.chain(),
            "cannot read the TLS key file k.pem: no such file"
        );
        assert_eq!(
            format!("{error:?}"),
            "cannot read the TLS key file k.pem\n\nCaused by:\n    no such file"
        );
    }

    #[test]
    fn a_lower_error_alone_is_the_message() {
        let error = Err::<(), _>(missing())
            .during(StartError::Database)
            .unwrap_err();
        assert!(matches!(error, StartError::Database(_)));
        assert_eq!(error.to_string(), "no such file");
        assert_eq!(format!("{error:?}"), "no such file");
        let plain = StartError::new(
            StartError::Config,
            "tls_cert_file is set but tls_key_file is not",
        );
        assert_eq!(format!("{plain:?}"), plain.to_string());
    }
}
