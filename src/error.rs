//! The error type of every fallible call in the library.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sigmax. wgpu's validation and out-of-memory errors are
/// caught in error scopes and returned here instead of panicking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the requested choice.
    #[error("no GPU adapter found for `{choice}`{hint}")]
    NoAdapter {
        /// The adapter choice as the user wrote it.
        choice: String,
        /// Extra advice on how to get an adapter, starting with "; ".
        hint: String,
    },

    /// The adapter refused to create a device.
    #[error("failed to create a device on adapter `{adapter}`: {source}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's error.
        source: wgpu::RequestDeviceError,
    },

    /// wgpu reported a validation error, which is a bug in sigmax or in the caller's buffers.
    #[error("wgpu validation error during {operation}: {message}")]
    Validation {
        /// The operation that failed, such as `compiling softmax.wgsl`.
        operation: String,
        /// wgpu's description.
        message: String,
    },

    /// The device ran out of memory.
    #[error("the device ran out of memory during {operation}: {message}")]
    OutOfMemory {
        /// The operation that failed.
        operation: String,
        /// wgpu's description.
        message: String,
    },

    /// wgpu reported an internal error, such as a shader that the driver failed to compile.
    #[error("wgpu internal error during {operation}: {message}")]
    Internal {
        /// The operation that failed.
        operation: String,
        /// wgpu's description.
        message: String,
    },

    /// Mapping a staging buffer for readback failed.
    #[error("failed to read results back from the device: {0}")]
    Readback(String),

    /// Waiting for the device failed, for example because it was lost.
    #[error("failed to wait for the device: {0}")]
    Poll(#[from] wgpu::PollError),

    /// The input is larger than what the device or the kernels support.
    #[error("input too large: {0}")]
    TooLarge(String),

    /// The caller passed arguments that do not fit together, such as a buffer shorter than
    /// the shape.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Reading or writing a file failed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The problem and, where possible, the fix.
        message: String,
    },
}

impl Error {
    /// Converts an error caught by a wgpu error scope.
    pub(crate) fn from_wgpu(operation: &str, error: wgpu::Error) -> Self {
        let operation = operation.to_owned();
        match error {
            wgpu::Error::OutOfMemory { source } => Error::OutOfMemory {
                operation,
                message: source.to_string(),
            },
            wgpu::Error::Validation { description, .. } => Error::Validation {
                operation,
                message: description,
            },
            wgpu::Error::Internal { description, .. } => Error::Internal {
                operation,
                message: description,
            },
        }
    }
}
