//! Files and folders a journal makes: its owner's only.

use std::{
    fs::{self, OpenOptions},
    path::Path,
};

use crate::JournalError;

/// `options`, creating files readable and writable by their owner only
/// (0600 on Unix): what a journal holds is the program's own.
pub fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Makes `dir` and its missing parents, those it makes for their owner
/// only (0700 on Unix).
pub fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| JournalError::io(dir, e))
}
