//! Reading a configuration-like text file (the config, a bootenv, the API
//! tokens file) whose errors name the file: the one place that turns an
//! unreadable path into the caller's own "cannot read" error.

use std::path::{Path, PathBuf};

/// Reads `path` as UTF-8 text and hands it to `parse`; when it cannot be
/// read, `unreadable` makes the caller's error from the path and the cause.
pub fn load<T, E>(
    path: &Path,
    unreadable: impl FnOnce(PathBuf, std::io::Error) -> E,
    parse: impl FnOnce(&Path, &str) -> Result<T, E>,
) -> Result<T, E> {
    let text = std::fs::read_to_string(path).map_err(|source| unreadable(path.into(), source))?;
    parse(path, &text)
}
