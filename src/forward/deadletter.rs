//! STUB
#![allow(missing_docs, unused_variables, dead_code)]
use crate::buffer::Buffer;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter I/O error at {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub files: usize,
    pub runs: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DeadLetterSummary {
    pub files: usize,
    pub runs: u64,
    pub bytes: u64,
}

pub struct DeadLetterStore {}
impl DeadLetterStore {
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        unimplemented!()
    }
}
pub fn summarize(dir: &Path) -> Result<DeadLetterSummary, DeadLetterError> {
    unimplemented!()
}
pub async fn replay(dir: &Path, buffer: &Buffer) -> Result<ReplayReport, DeadLetterError> {
    unimplemented!()
}
