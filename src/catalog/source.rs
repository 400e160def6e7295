//! Reading the user-edited YAML files of the catalog, with errors that point at a line.
//!
//! The catalog is data that people edit by hand; an error that says only "invalid pack" sends
//! them hunting. Every problem found while loading or cross-checking is therefore a
//! [`ConfigError`] carrying the file and, whenever the parser gives one, the line and column.
//! `marked-yaml` keeps those positions on every value we wrap in [`Spanned`], so semantic
//! checks made long after parsing (an unknown taxonomy label in a pack) still know where the
//! offending value was written.

use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::{LoaderOptions, Spanned};
use serde::de::DeserializeOwned;

/// One problem in one data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ConfigError { file: file.into(), line: None, column: None, message: message.into() }
    }

    /// An error about a value whose position `marked-yaml` recorded.
    pub fn at<T>(file: &Path, value: &Spanned<T>, message: impl Into<String>) -> Self {
        let mark = value.span().start();
        ConfigError {
            file: file.to_path_buf(),
            line: mark.map(|m| m.line()),
            column: mark.map(|m| m.column()),
            message: message.into(),
        }
    }

    pub fn at_line(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), line, column: None, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one pass, so a user fixes them in one round instead of one per run.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok(value)` when nothing was recorded; errors come sorted by file and line.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.sorted())
        }
    }

    pub fn sorted(mut self) -> ConfigErrors {
        self.0.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        self.0.dedup();
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Reads and deserialises one YAML file, refusing duplicate keys (a silently shadowed label
/// mapping is exactly the kind of mistake a catalog review misses).
pub fn read_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, format!("cannot read file: {e}")))?;
    parse_yaml(path, &text)
}

pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    marked_yaml::from_yaml_with_options(0, text, options).map_err(|e| yaml_error(path, e))
}

fn yaml_error(path: &Path, err: marked_yaml::FromYamlError) -> ConfigError {
    use marked_yaml::{FromYamlError, LoadError};
    let mark = match &err {
        FromYamlError::FromNode(e) => e.start_mark(),
        FromYamlError::ParseYaml(le) => match le {
            LoadError::TopLevelMustBeMapping(m)
            | LoadError::TopLevelMustBeSequence(m)
            | LoadError::UnexpectedAnchor(m)
            | LoadError::MappingKeyMustBeScalar(m)
            | LoadError::UnexpectedTag(m)
            | LoadError::ScanError(m, _) => Some(*m),
            LoadError::DuplicateKey(d) => d.key.span().start().copied(),
        },
    };
    ConfigError {
        file: path.to_path_buf(),
        line: mark.map(|m| m.line()),
        column: mark.map(|m| m.column()),
        message: err.to_string(),
    }
}

/// Line of a spanned value, for errors raised after deserialisation.
pub fn line_of<T>(v: &Spanned<T>) -> Option<usize> {
    v.span().start().map(|m| m.line())
}
